"""The ENAS image networks (Pham et al., ICML 2018, Sec. 2.3-2.4), as one
shared-weight supernet per space and as fixed stand-alone networks.

Both networks take the architecture as an input::

    net = MicroNet(num_classes=10)                    # supernet
    variables = net.init(key, images, arch, train=False)
    logits, upd = net.apply(variables, images, arch, train=True,
                            mutable=["batch_stats"])

    fixed = MicroNet(num_classes=10, fixed_arch=tuple(arch))   # retrain

* **Supernet** (``fixed_arch=None``): ``arch`` is a traced ``int32[T]``; every
  (cell, node, side) holds the weights of every candidate op and
  :class:`~nas_jax.children.ops.SwitchOp` (a lifted ``lax.switch``) runs only
  the chosen one -- never a weighted sum of all ops -- so one compiled
  program serves every child and two children that use the same op at the
  same place read the same parameters (the paper's sharing). Inputs are
  picked with ``lax.switch`` too (``cell_net._select``).
* **Fixed network** (``fixed_arch`` a tuple of ints): ops and inputs are
  Python constants, only the chosen ops are built (no switch), and the
  parameter names match the supernet's chosen branch up to the ``ops_<k>``
  level. It adds the retraining recipe's ScheduledDropPath (Zoph et al.
  2018, Sec. 4.1) and optional auxiliary head.

Micro (cells, Sec. 2.4): a stem (3x3 conv to ``stem_multiplier * channels``,
BN), then ``num_reductions + 1`` stages of ``num_cells`` normal cells with a
reduction cell between stages (the authors' search: 2 normal cells per stage,
2 reductions, 20 channels, B = 5). Channels double at each reduction. A cell
first calibrates its two inputs to its width (ReLU-1x1 conv-BN, or a
factorized reduction when ``h[i-2]`` is twice the size of ``h[i-1]``); node
``i`` is ``op_a(input_a) + op_b(input_b)``. The cell output concatenates the
*loose ends* (nodes no other node reads) and projects them back to width
with a 1x1 conv; a 1x1 conv of a concatenation is a sum of per-node 1x1
convs, so with a data-dependent set of loose ends the supernet computes
``BN(sum_j mask_j * conv1x1_j(relu(h_j)))`` in one program (the authors'
``micro_child.py`` gathers the rows of one 1x1 kernel the same way). Cell
inputs that no node reads are not part of the output (the paper's text and
our picture; the authors' code also concatenates them). The reduction cell
is the authors' layout: the previous cell's output goes through a factorized
reduction (doubling its channels) before the reduce cell runs its stride-1
ops on the two (now equally small) inputs.

Macro (whole network, Sec. 2.3): a stem (3x3 conv, BN), then ``num_layers``
layers; layer ``i`` applies one of the six ops to layer ``i - 1``'s output
and, for ``i > 0``, adds the tensors its skip bits select, then BN. As in the
authors' ``general_child.py``, skip bit ``j`` of layer ``i`` selects the
*input* of layer ``j`` (the stem for ``j = 0``, else layer ``j - 1``), so a
layer never re-adds its own input. After layers ``L//3 - 1`` and
``2L//3 - 1`` every stored tensor goes through a factorized reduction
(stride 2), so later skips still match in shape.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nas_jax.children import cell_net
from nas_jax.children import conv as conv_lib
from nas_jax.children import ops as ops_lib
from nas_jax.spaces import enas as enas_space


class ImpossibleSizeError(ValueError):
  """The network reduces the image more often than its size allows."""


def check_image_size(image_hw: Sequence[int], num_reductions: int,
                     what: str) -> None:
  """Raises :class:`ImpossibleSizeError` if ``num_reductions`` stride-2
  reductions do not leave at least one pixel (the error names the fix)."""
  h = min(int(s) for s in image_hw)
  if num_reductions < 0:
    raise ImpossibleSizeError(
        f"{what}: the number of reductions must be >= 0, got "
        f"{num_reductions}")
  if 2 ** num_reductions > h:
    raise ImpossibleSizeError(
        f"{what}: {num_reductions} stride-2 reductions need images of at "
        f"least {2 ** num_reductions} pixels, but these are "
        f"{tuple(image_hw)}; use at most {int(np.log2(h))} reductions for "
        f"this data set, or larger images")


def _batch_norm(train: bool, name: str | None = None) -> nn.BatchNorm:
  return ops_lib._batch_norm(train, name)  # pylint: disable=protected-access


class FactorizedReduce(nn.Module):
  """Halves H and W with two offset 1x1 convolutions (stride 2), each giving
  half the channels, then BN (ENAS ``_factorized_reduction``; DARTS
  ``FactorizedReduce``). Offsetting the second path by one pixel makes the
  pair see every input pixel; odd sizes round up, like ``SAME`` padding."""

  channels: int

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = nn.relu(x)
    half = self.channels // 2
    a = conv_lib.Conv(half, (1, 1))(x[:, ::2, ::2])
    shifted = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))[:, 1::2, 1::2]
    b = conv_lib.Conv(self.channels - half, (1, 1))(shifted)
    return _batch_norm(train)(jnp.concatenate([a, b], -1))


class ReLUConv1x1BN(nn.Module):
  channels: int

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = conv_lib.Conv(self.channels, (1, 1))(nn.relu(x))
    return _batch_norm(train)(x)


def drop_path(x: jax.Array, rate: jax.Array, rng: jax.Array) -> jax.Array:
  """Drops whole examples' paths with probability ``rate`` and rescales the
  kept ones by ``1 / (1 - rate)`` (ScheduledDropPath, Zoph et al. 2018,
  Sec. 4.1; the rate grows linearly over training, set by the caller)."""
  keep = 1.0 - rate
  mask = jax.random.bernoulli(rng, keep, (x.shape[0], 1, 1, 1))
  return jnp.where(mask, x / jnp.maximum(keep, 1e-6), 0.0)


def loose_ends(cell_arch: jax.Array, num_nodes: int) -> jax.Array:
  """``bool[num_nodes]``: nodes of a micro cell that no node reads.

  ``cell_arch`` is one cell's ``4 * num_nodes`` codes (per node: input_a,
  input_b, op_a, op_b); input ``k`` is slot ``k`` (0, 1: the cell inputs;
  ``2 + j``: node ``j``). Works on numpy and traced arrays. The last node is
  always a loose end.
  """
  xp = np if isinstance(cell_arch, np.ndarray) else jnp
  inputs = xp.stack([cell_arch[0::4], cell_arch[1::4]])  # [2, N]
  slots = xp.arange(num_nodes) + 2
  read = (inputs[None, :, :] == slots[:, None, None]).any(axis=(1, 2))
  return ~read


class MicroCell(nn.Module):
  """One ENAS micro cell (normal or reduction: the ops are stride 1 both
  ways; the network reduces the inputs of a reduction cell).

  Attributes:
    num_nodes: ``B``.
    channels: the cell's width.
    fixed: this cell's ``4 * num_nodes`` codes as Python ints (a fixed
      network), or None (supernet: codes come as the traced ``arch``).
  """

  num_nodes: int
  channels: int
  fixed: tuple[int, ...] | None = None

  @nn.compact
  def __call__(self, h_prev: jax.Array, h: jax.Array, arch: jax.Array | None,
               train: bool, drop_rate: jax.Array | float = 0.0
               ) -> jax.Array:
    C, B = self.channels, self.num_nodes
    if h_prev.shape[1] != h.shape[1]:
      h_prev = FactorizedReduce(C, name="calibrate_prev")(h_prev, train)
    else:
      h_prev = ReLUConv1x1BN(C, name="calibrate_prev")(h_prev, train)
    h = ReLUConv1x1BN(C, name="calibrate")(h, train)
    states = [h_prev, h]
    codes = self.fixed if self.fixed is not None else arch
    for i in range(B):
      node = 0.0
      for s, side in enumerate(("a", "b")):
        src, op = codes[4 * i + s], codes[4 * i + 2 + s]
        name = f"node{i}_{side}"
        if self.fixed is None:
          x = cell_net._select(states, src)  # pylint: disable=protected-access
          x = ops_lib.SwitchOp(enas_space.MICRO_OPS, C, name=name)(
              x, op, train)
        else:
          op_name = enas_space.MICRO_OPS[op]
          # A one-op SwitchOp calls its op directly: no switch.
          x = ops_lib.SwitchOp((op_name,), C, name=name)(states[src], None,
                                                         train)
          no_drop = isinstance(drop_rate, (int, float)) and drop_rate == 0
          if train and op_name != "identity" and not no_drop:
            x = drop_path(x, drop_rate, self.make_rng("drop_path"))
        node = node + x
      states.append(node)
    # Loose ends -> concat -> 1x1 conv, written as a masked sum of per-node
    # 1x1 convs (equal to the concatenation's conv, see module doc).
    if self.fixed is None:
      mask = loose_ends(arch.reshape(-1), B).astype(h.dtype)  # [B]
      out = sum(mask[j] * conv_lib.Conv(C, (1, 1), name=f"out{j}")(
          nn.relu(states[2 + j])) for j in range(B))
    else:
      mask = loose_ends(np.asarray(self.fixed), B)
      out = sum(conv_lib.Conv(C, (1, 1), name=f"out{j}")(
          nn.relu(states[2 + j])) for j in range(B) if mask[j])
    return _batch_norm(train, name="out_bn")(out)


class AuxHead(nn.Module):
  """The auxiliary classifier used in retraining (Szegedy et al. 2016; ENAS
  ``--child_use_aux_heads``, loss weight 0.4): ReLU, 5x5 average pool
  (stride 3, ``VALID`` where the map is large enough), 1x1 conv to 128, BN,
  ReLU, global pool, dense."""

  num_classes: int

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = nn.relu(x)
    if min(x.shape[1:3]) >= 5:
      x = nn.avg_pool(x, (5, 5), strides=(3, 3), padding="VALID")
    x = ReLUConv1x1BN(128)(x, train)
    x = nn.relu(jnp.mean(x, axis=(1, 2)))
    return nn.Dense(self.num_classes)(x)


class MicroNet(nn.Module):
  """The micro-space network: supernet or fixed (see module doc).

  ``images [B, H, W, C], arch int32[8 * num_nodes] -> logits [B, classes]``.
  With ``aux_head`` and ``train``, the auxiliary logits are sown to
  ``intermediates/aux_logits``.

  Attributes:
    num_classes: classifier outputs.
    num_nodes: ``B`` (must match the space's).
    num_cells: normal cells per stage (the authors' search: 2, i.e.
      ``--child_num_layers=6``; their final network: 5).
    channels: width of the first stage (search: 20; final: 36).
    num_reductions: reduction cells (2 in the paper).
    stem_multiplier: the stem has ``stem_multiplier * channels`` channels.
    fixed_arch: the architecture as Python ints for a fixed network; None
      for the supernet.
    aux_head: add the auxiliary head after the last reduction.
    dropout: dropout rate before the classifier (training only).
  """

  num_classes: int = 10
  num_nodes: int = 5
  num_cells: int = 2
  channels: int = 20
  num_reductions: int = 2
  stem_multiplier: int = 3
  fixed_arch: tuple[int, ...] | None = None
  aux_head: bool = False
  dropout: float = 0.0

  @nn.compact
  def __call__(self, images: jax.Array, arch: Any, train: bool,
               drop_rate: jax.Array | float = 0.0) -> jax.Array:
    n = 8 * self.num_nodes
    check_image_size(images.shape[1:3], self.num_reductions,
                     type(self).__name__)
    if self.fixed_arch is not None:
      if len(self.fixed_arch) != n:
        raise ValueError(f"{type(self).__name__}: fixed_arch has "
                         f"{len(self.fixed_arch)} codes, expected {n}")
      cells = (tuple(self.fixed_arch[:n // 2]), tuple(self.fixed_arch[n // 2:]))
      arch = None
    else:
      arch = cell_net._check_arch(arch, n, type(self).__name__)  # pylint: disable=protected-access
      cells = (None, None)
    x = conv_lib.Conv(self.stem_multiplier * self.channels, (3, 3),
                      name="stem_conv")(images)
    x = _batch_norm(train, name="stem_bn")(x)
    h_prev, h = x, x
    C = self.channels
    index = 0
    for stage in range(self.num_reductions + 1):
      if stage > 0:
        # The authors' reduction: factorize-reduce the last output, then run
        # the reduction cell on (h[i-1], reduced h[i]).
        C *= 2
        reduced = FactorizedReduce(C, name=f"reduce{stage}_input")(h, train)
        h_prev, h = h, reduced
        h_prev, h = h, MicroCell(
            self.num_nodes, C, cells[1], name=f"cell{index}_reduce")(
                h_prev, h, None if arch is None else arch[n // 2:], train,
                drop_rate)
        index += 1
        if self.aux_head and stage == self.num_reductions and (
            train or self.is_initializing()):
          aux = AuxHead(self.num_classes, name="aux_head")(h, train)
          if train:
            self.sow("intermediates", "aux_logits", aux)
      for _ in range(self.num_cells):
        h_prev, h = h, MicroCell(
            self.num_nodes, C, cells[0], name=f"cell{index}")(
                h_prev, h, None if arch is None else arch[:n // 2], train,
                drop_rate)
        index += 1
    x = nn.relu(h)
    x = jnp.mean(x, axis=(1, 2))  # [B, C]
    if self.dropout and train:
      x = nn.Dropout(self.dropout, deterministic=False)(x)
    return nn.Dense(self.num_classes, name="classifier")(x)


def macro_offsets(num_layers: int) -> list[int]:
  """Position of layer ``i``'s op code in a macro architecture; its skip bits
  follow at ``offset + 1 ... offset + i``."""
  return [i + i * (i - 1) // 2 for i in range(num_layers)]


def macro_pool_layers(num_layers: int) -> tuple[int, ...]:
  """The layers after which the macro network reduces (authors:
  ``pool_distance = L // 3``, pools after layers ``d - 1`` and ``2d - 1``)."""
  d = num_layers // 3
  return tuple(sorted({d - 1, 2 * d - 1} - {-1}))


class MacroNet(nn.Module):
  """The macro-space network: supernet or fixed (see module doc).

  ``images, arch int32[L + L(L-1)/2] -> logits``.

  Attributes:
    num_classes: classifier outputs.
    num_layers: ``L`` (search: 12).
    channels: width (search: 36; the final networks: 96 with 24 layers).
    fixed_arch: Python ints for a fixed network, None for the supernet.
    grow_channels: double the width at each reduction (the authors' fixed
      networks do; their search keeps it constant).
    dropout: dropout rate before the classifier (training only).
  """

  num_classes: int = 10
  num_layers: int = 12
  channels: int = 36
  fixed_arch: tuple[int, ...] | None = None
  grow_channels: bool = False
  dropout: float = 0.0

  @nn.compact
  def __call__(self, images: jax.Array, arch: Any, train: bool,
               drop_rate: jax.Array | float = 0.0) -> jax.Array:
    del drop_rate  # no paths to drop: layers are a chain
    L = self.num_layers
    n = L + L * (L - 1) // 2
    pools = macro_pool_layers(L)
    check_image_size(images.shape[1:3], len(pools), type(self).__name__)
    fixed = self.fixed_arch
    if fixed is not None:
      if len(fixed) != n:
        raise ValueError(f"{type(self).__name__}: fixed_arch has {len(fixed)} "
                         f"codes, expected {n}")
    else:
      arch = cell_net._check_arch(arch, n, type(self).__name__)  # pylint: disable=protected-access
    offsets = macro_offsets(L)
    C = self.channels
    x = conv_lib.Conv(C, (3, 3), name="stem_conv")(images)
    x = _batch_norm(train, name="stem_bn")(x)
    stored = [x]  # stored[j]: the input of layer j (the stem for j = 0)
    for i in range(L):
      o = offsets[i]
      name = f"layer{i}"
      if fixed is None:
        out = ops_lib.SwitchOp(enas_space.MACRO_OPS, C, name=name)(
            stored[-1], arch[o], train)
      else:
        out = ops_lib.SwitchOp((enas_space.MACRO_OPS[fixed[o]],), C,
                               name=name)(stored[-1], None, train)
      if i > 0:
        if fixed is None:
          bits = arch[o + 1:o + 1 + i].astype(out.dtype)  # [i]
          out = out + sum(bits[j] * stored[j] for j in range(i))
        else:
          out = out + sum(stored[j] for j in range(i) if fixed[o + 1 + j])
        out = _batch_norm(train, name=f"{name}_bn")(out)
      stored.append(out)
      if i in pools:
        if self.grow_channels:
          C *= 2
        stored = [FactorizedReduce(C, name=f"pool{i}_from{j}")(s, train)
                  for j, s in enumerate(stored)]
    x = nn.relu(stored[-1])
    x = jnp.mean(x, axis=(1, 2))
    if self.dropout and train:
      x = nn.Dropout(self.dropout, deterministic=False)(x)
    return nn.Dense(self.num_classes, name="classifier")(x)


def make_network(space_name: str, **kwargs: Any) -> nn.Module:
  """``MicroNet`` for ``"enas_micro"``, ``MacroNet`` for ``"enas_macro"``."""
  nets = {"enas_micro": MicroNet, "enas_macro": MacroNet}
  if space_name not in nets:
    raise ValueError(f"no ENAS image network for space {space_name!r}; "
                     f"known: {', '.join(nets)}")
  return nets[space_name](**kwargs)


def check_network(space, network: nn.Module) -> None:
  """Raises a ValueError if the network's size does not match the space."""
  if isinstance(network, MicroNet):
    expected = 8 * network.num_nodes
  else:
    expected = network.num_layers * (network.num_layers + 1) // 2
  if space.num_decisions != expected:
    raise ValueError(
        f"the network expects {expected} decisions but space {space.name!r} "
        f"has {space.num_decisions}; set space_kwargs (num_nodes / "
        f"num_layers) and network.num_nodes / num_layers to the same value")


def param_count(tree) -> int:
  return int(sum(np.prod(np.shape(x)) for x in jax.tree.leaves(tree)))


def fixed_variables(network: nn.Module, variables: Any, arch: Any) -> Any:
  """The supernet ``variables`` restricted to child ``arch``, laid out for
  the fixed network ``network`` (built with ``fixed_arch=arch``).

  Every switch ``.../<node>/ops_<k>/...`` of the supernet becomes the fixed
  network's one-op switch ``.../<node>/ops_0/...`` with ``k`` the chosen op;
  everything else is copied. ``fixed.apply(fixed_variables(...))`` then
  computes exactly what ``supernet.apply(variables, arch=arch)`` does -- the
  test that the supernet runs only the chosen op, and the benchmark's
  "same network built statically".
  """
  arch = [int(v) for v in np.asarray(arch)]
  if isinstance(network, MicroNet):
    half = len(arch) // 2

    def codes(cell):
      return arch[half:] if cell.endswith("_reduce") else arch[:half]

    def choice(path):
      i, side = path[-1][len("node"):].split("_")
      return codes(path[-2])[4 * int(i) + 2 + (side == "b")]

    def unused(path, key):  # the 1x1 projections of nodes that are read
      if len(path) != 1 or not key.startswith("out") or key == "out_bn":
        return False
      mask = loose_ends(np.asarray(codes(path[0])), network.num_nodes)
      return not mask[int(key[len("out"):])]
  else:
    offsets = macro_offsets(network.num_layers)

    def choice(path):
      return arch[offsets[int(path[-1][len("layer"):])]]

    def unused(path, key):
      del path, key
      return False

  def walk(tree, path):
    if not hasattr(tree, "items"):
      return tree
    if tree and all(k.startswith("ops_") for k in tree):
      chosen = f"ops_{choice(path)}"
      # Ops without weights (pools, identity) have no entry at all.
      return {"ops_0": walk(tree[chosen], path)} if chosen in tree else None
    out = {k: walk(v, path + [k]) for k, v in tree.items()
           if not unused(path, k)}
    return {k: v for k, v in out.items() if v is not None}

  return {col: walk(tree, []) for col, tree in variables.items()}
