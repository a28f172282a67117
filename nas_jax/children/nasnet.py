"""The NASNet network (Zoph, Vasudevan, Shlens & Le, "Learning Transferable
Architectures for Scalable Image Recognition", CVPR 2018, Sec. 3 and 4.1)
for the space ``nasnet`` (``nas_jax.spaces.nasnet``), as one supernet for
the search and as fixed networks for retraining (NASNet-A by name)::

    net = NASNet(num_cells=1, channels=8)                     # search
    variables = net.init(key, images, arch, train=False)      # arch int32[50]
    logits, upd = net.apply(variables, images, arch, train=True,
                            mutable=["batch_stats"])

    space, arch, concat = nasnet_space.named("nasnet_a")      # retrain
    fixed = NASNet(num_cells=6, penultimate_filters=768, aux_head=True,
                   fixed_arch=tuple(arch), fixed_concat=concat)

Cells (Sec. 3, Fig. 3): a cell has two inputs, ``h_{i-1}`` (slot 0) and
``h_i`` (slot 1), the outputs of the two previous cells, first calibrated
to the cell's ``F`` filters (ReLU-1x1 conv-BN, or a factorized reduction
when ``h_{i-1}`` is twice the size of ``h_i``). Block ``b`` applies two ops
of the 13 (``children/ops.py``) to two states (the inputs or earlier blocks)
and combines them by addition or by concatenation; every state stays ``F``
wide, so a concatenation is followed by a 1x1 convolution back to ``F`` (our
choice: the paper does not say how later ops read a ``2F``-wide state).
The cell output concatenates the blocks that no block reads ("all of the
unused hidden states generated in the cell"); ``fixed_concat`` overrides
the list, as the released NASNet-A needs (``nasnet_space.NASNET_A_CONCAT``).

Reduction cells halve the resolution. We use ENAS's layout (``enas_cnn``):
the two inputs go through a factorized reduction (two offset stride-2 1x1
convolutions) and the cell's ops then run at stride 1 on the small maps,
instead of stride-2 ops applied to the inputs. It keeps every state of the
cell the same shape, so the supernet can pick inputs with ``lax.switch``,
and adds only the reduction's 1x1 convolutions to the parameter count.

Stacks (Fig. 2): CIFAR: a 3x3 conv stem (``stem_multiplier * channels``
filters), then ``num_reductions + 1`` stages of ``N = num_cells`` normal
cells with a reduction cell between stages; ImageNet (``stem="imagenet"``):
a 3x3 stride-2 conv (32 filters) and two reduction cells with ``F / 4`` and
``F / 2`` filters first. Filters double at each reduction. "N @ F" names a
network by ``N`` and the penultimate layer's width ``F`` (the last cell's
output): ``penultimate_filters`` derives ``channels`` from it for a fixed
architecture (NASNet-A 6 @ 768: 768 = 6 states x 32 x 4).

Supernet (``fixed_arch=None``): ``arch`` is a traced ``int32[10 B]`` (normal
cell, then reduction cell); ops are :class:`~nas_jax.children.ops.SwitchOp`
(only the chosen op runs), inputs are ``cell_net._select``, the combine is a
``where`` between the sum and the projected concatenation, and a cell's
output is the concatenation of *all* its blocks times a 0/1 mask of the
unread ones -- the next cells' 1x1 calibrations see zeros where the child
has no channels, so they compute what the child's narrower calibration
does. One compiled program serves every child.

Training extras (Sec. 4.1, used by ``train/retrain.py``): ScheduledDropPath
drops each op's output (not the identity's) with a probability the caller
raises linearly over training (``drop_rate``; ``enas_cnn.drop_path``), and
an auxiliary head (``enas_cnn.AuxHead``) on the last cell before the last
reduction, as in the released model.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nas_jax.children import cell_net
from nas_jax.children import conv as conv_lib
from nas_jax.children import enas_cnn
from nas_jax.children import ops as ops_lib
from nas_jax.spaces import nasnet as nasnet_space

CODES_PER_BLOCK = 5  # input_a, input_b, op_a, op_b, combine
IDENTITY = nasnet_space.OPS.index("identity")
IMAGENET_STEM_FILTERS = 32


def unread_blocks(cell_codes: Any, num_blocks: int) -> Any:
  """``bool[num_blocks]``: blocks no block of the cell reads (numpy or jnp).

  Input value ``k`` is slot ``k``: 0 and 1 the cell inputs, ``2 + b`` block
  ``b``. The last block is always unread.
  """
  xp = np if isinstance(cell_codes, (np.ndarray, tuple, list)) else jnp
  codes = xp.asarray(cell_codes).reshape(num_blocks, CODES_PER_BLOCK)
  inputs = codes[:, :2]  # [B, 2]
  slots = xp.arange(num_blocks) + 2
  return ~(inputs[None, :, :] == slots[:, None, None]).any(axis=(1, 2))


def output_slots(cell_codes: Sequence[int], num_blocks: int,
                 concat: Sequence[int] | None = None) -> tuple[int, ...]:
  """The slots a fixed cell concatenates: ``concat`` or the unread blocks."""
  if concat is not None:
    return tuple(int(s) for s in concat)
  mask = unread_blocks(np.asarray(cell_codes), num_blocks)
  return tuple(2 + b for b in range(num_blocks) if mask[b])


class Calibrate(nn.Module):
  """Brings a cell input to ``channels`` filters at the size ``hw``:
  factorized reductions (stride 2) while it is larger, else ReLU-1x1-BN."""

  channels: int
  hw: tuple[int, int]

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    if x.shape[1] == self.hw[0]:
      return enas_cnn.ReLUConv1x1BN(self.channels, name="conv")(x, train)
    k = 0
    while x.shape[1] > self.hw[0]:
      x = enas_cnn.FactorizedReduce(self.channels, name=f"reduce{k}")(x,
                                                                      train)
      k += 1
    if x.shape[1:3] != tuple(self.hw):
      raise ValueError(f"cannot bring a {x.shape[1:3]} map to {self.hw} by "
                       f"halving it")
    return x


def _half(hw: Sequence[int]) -> tuple[int, int]:
  return tuple((int(s) + 1) // 2 for s in hw)  # FactorizedReduce rounds up


class NASNetCell(nn.Module):
  """One normal or reduction cell (see the module doc).

  Attributes:
    num_blocks: ``B``.
    channels: the cell's ``F``.
    reduction: halve the resolution (factorized reduction of the inputs).
    fixed: this cell's ``5 B`` codes as Python ints, or None (supernet:
      the codes come as the traced ``codes`` argument).
    concat: for a fixed cell, the slots to concatenate (None: unread blocks).
  """

  num_blocks: int
  channels: int
  reduction: bool = False
  fixed: tuple[int, ...] | None = None
  concat: tuple[int, ...] | None = None

  @nn.compact
  def __call__(self, h_prev: jax.Array, h: jax.Array, codes: Any,
               train: bool, drop_rate: Any = 0.0) -> jax.Array:
    C, B = self.channels, self.num_blocks
    hw = h.shape[1:3]
    if self.reduction:
      hw = _half(hw)
    states = [Calibrate(C, hw, name="calibrate_prev")(h_prev, train),
              Calibrate(C, hw, name="calibrate")(h, train)]
    fixed = self.fixed is not None
    codes = self.fixed if fixed else codes
    no_drop = isinstance(drop_rate, (int, float)) and drop_rate == 0
    for b in range(B):
      base = CODES_PER_BLOCK * b
      outs = []
      for s, side in enumerate(("a", "b")):
        src, op = codes[base + s], codes[base + 2 + s]
        name = f"block{b}_{side}"
        if fixed:
          # A one-op SwitchOp calls its op directly: no switch.
          x = ops_lib.SwitchOp((nasnet_space.OPS[op],), C, name=name)(
              states[src], None, train)
        else:
          x = cell_net._select(states, src)  # pylint: disable=protected-access
          x = ops_lib.SwitchOp(nasnet_space.OPS, C, name=name)(x, op, train)
        if train and not no_drop and not (fixed and op == IDENTITY):
          dropped = enas_cnn.drop_path(x, drop_rate,
                                       self.make_rng("drop_path"))
          x = dropped if fixed else jnp.where(op == IDENTITY, x, dropped)
        outs.append(x)
      combine = codes[base + 4]
      added = outs[0] + outs[1]
      if fixed and nasnet_space.COMBINE[combine] == "add":
        states.append(added)
        continue
      proj = conv_lib.Conv(C, (1, 1), name=f"block{b}_concat")(
          jnp.concatenate(outs, axis=-1))
      states.append(proj if fixed else jnp.where(combine == 0, added, proj))
    if fixed:
      slots = output_slots(self.fixed, B, self.concat)
      return jnp.concatenate([states[k] for k in slots], axis=-1)
    mask = unread_blocks(codes, B).astype(h.dtype)  # [B]
    return jnp.concatenate([states[2 + b] * mask[b] for b in range(B)],
                           axis=-1)  # [N, H, W, B * C]


class NASNet(nn.Module):
  """The NASNet network: supernet or fixed (see the module doc).

  ``images [N, H, W, C], arch int32[10 B] -> logits [N, classes]``. With
  ``aux_head`` and ``train``, the auxiliary logits are sown to
  ``intermediates/aux_logits``.

  Attributes:
    num_classes: classifier outputs.
    num_blocks: ``B`` (must match the space's; the paper: 5).
    num_cells: ``N``, normal cells per stage.
    channels: ``F`` of the first stage's cells (the released CIFAR model:
      32). Ignored when ``penultimate_filters`` is set.
    penultimate_filters: the "@ F" of "N @ F" (0: use ``channels``); needs
      ``fixed_arch`` (the output width depends on the normal cell) and must
      be a multiple of ``states * 2 ** num_reductions``.
    num_reductions: reduction cells between stages (2).
    stem: ``"cifar"`` or ``"imagenet"``.
    stem_multiplier: the CIFAR stem has ``stem_multiplier * channels``
      filters (3).
    fixed_arch: the architecture as Python ints for a fixed network; None
      for the supernet.
    fixed_concat: per cell type (normal, reduction), the slots a fixed
      network concatenates as the cell output; None: the unread blocks.
    aux_head: add the auxiliary head (training only).
    dropout: dropout rate before the classifier (training only).
  """

  num_classes: int = 10
  num_blocks: int = 5
  num_cells: int = 6
  channels: int = 32
  penultimate_filters: int = 0
  num_reductions: int = 2
  stem: str = "cifar"
  stem_multiplier: int = 3
  fixed_arch: tuple[int, ...] | None = None
  fixed_concat: tuple[tuple[int, ...], tuple[int, ...]] | None = None
  aux_head: bool = False
  dropout: float = 0.0

  def base_channels(self) -> int:
    """The first stage's ``F``, from ``penultimate_filters`` if set."""
    check_sizes(self)
    return _base_channels(self)

  @nn.compact
  def __call__(self, images: jax.Array, arch: Any, train: bool,
               drop_rate: Any = 0.0) -> jax.Array:
    n = 2 * CODES_PER_BLOCK * self.num_blocks
    stem_reductions = 3 if self.stem == "imagenet" else 0
    enas_cnn.check_image_size(images.shape[1:3],
                              self.num_reductions + stem_reductions,
                              type(self).__name__)
    C = self.base_channels()
    if self.fixed_arch is not None:
      codes = (None, None)
      concat = self.fixed_concat or (None, None)
      cells = (tuple(self.fixed_arch[:n // 2]), tuple(self.fixed_arch[n // 2:]))
    else:
      arch = cell_net._check_arch(arch, n, type(self).__name__)  # pylint: disable=protected-access
      codes = (arch[:n // 2], arch[n // 2:])
      concat = (None, None)
      cells = (None, None)

    def cell(kind, filters, name, h_prev, h):
      return NASNetCell(self.num_blocks, filters, kind == 1, cells[kind],
                        concat[kind], name=name)(h_prev, h, codes[kind], train,
                                                 drop_rate)

    if self.stem == "imagenet":
      x = nn.Conv(IMAGENET_STEM_FILTERS, (3, 3), strides=(2, 2),
                  padding="VALID", use_bias=False, name="stem_conv")(images)
      x = ops_lib._batch_norm(train, name="stem_bn")(x)  # pylint: disable=protected-access
      s0 = cell(1, max(C // 4, 1), "stem_cell0", x, x)
      s1 = cell(1, max(C // 2, 1), "stem_cell1", x, s0)
      h_prev, h = s0, s1
    else:
      x = conv_lib.Conv(self.stem_multiplier * C, (3, 3),
                        name="stem_conv")(images)
      x = ops_lib._batch_norm(train, name="stem_bn")(x)  # pylint: disable=protected-access
      h_prev, h = x, x
    index = 0
    for stage in range(self.num_reductions + 1):
      if stage > 0:
        if (self.aux_head and stage == self.num_reductions
            and (train or self.is_initializing())):
          aux = enas_cnn.AuxHead(self.num_classes, name="aux_head")(h, train)
          if train:
            self.sow("intermediates", "aux_logits", aux)
        C *= 2
        h_prev, h = h, cell(1, C, f"cell{index}_reduce", h_prev, h)
        index += 1
      for _ in range(self.num_cells):
        h_prev, h = h, cell(0, C, f"cell{index}", h_prev, h)
        index += 1
    x = nn.relu(h)
    x = jnp.mean(x, axis=(1, 2))  # [N, penultimate filters]
    if self.dropout and train:
      x = nn.Dropout(self.dropout, deterministic=False)(x)
    return nn.Dense(self.num_classes, name="classifier")(x)


def _base_channels(network: NASNet) -> int:
  if not network.penultimate_filters:
    return network.channels
  n = CODES_PER_BLOCK * network.num_blocks
  concat = None if network.fixed_concat is None else network.fixed_concat[0]
  states = len(output_slots(network.fixed_arch[:n], network.num_blocks,
                            concat))
  return network.penultimate_filters // (states * 2 ** network.num_reductions)


def check_sizes(network: NASNet) -> None:
  """Raises a ValueError naming the field if the sizes do not fit (cheap:
  for a binary's ``check_config``)."""
  if network.stem not in ("cifar", "imagenet"):
    raise ValueError(f"network.stem must be 'cifar' or 'imagenet', got "
                     f"{network.stem!r}")
  for f in ("num_blocks", "num_cells", "channels"):
    v = getattr(network, f)
    if not isinstance(v, int) or v < 1:
      raise ValueError(f"network.{f} must be an int >= 1, got {v!r}")
  n = 2 * CODES_PER_BLOCK * network.num_blocks
  if network.fixed_arch is not None and len(network.fixed_arch) != n:
    raise ValueError(f"NASNet: fixed_arch has {len(network.fixed_arch)} "
                     f"codes, expected {n} (num_blocks={network.num_blocks})")
  if network.penultimate_filters:
    if network.fixed_arch is None:
      raise ValueError(
          "network.penultimate_filters needs a fixed architecture (the "
          "cell output's width depends on it); set network.channels for the "
          "search")
    concat = None if network.fixed_concat is None else network.fixed_concat[0]
    states = len(output_slots(network.fixed_arch[:n // 2], network.num_blocks,
                              concat))
    unit = states * 2 ** network.num_reductions
    if network.penultimate_filters % unit:
      raise ValueError(
          f"network.penultimate_filters must be a multiple of {unit} (the "
          f"normal cell concatenates {states} states, and "
          f"{network.num_reductions} reductions double the filters), got "
          f"{network.penultimate_filters}; e.g. "
          f"{max(1, round(network.penultimate_filters / unit)) * unit}")
  if network.stem == "imagenet" and _base_channels(network) < 8:
    raise ValueError(
        f"network: the imagenet stem's reduction cells have F / 4 filters, "
        f"so the first stage's F must be at least 8, got "
        f"{_base_channels(network)}; raise network.channels (or "
        f"network.penultimate_filters)")


def _cell_order(tree: Any) -> list[str]:
  """The network's cells in the order they run (stem cells first)."""
  stems = sorted(k for k in tree if k.startswith("stem_cell"))
  cells = sorted((k for k in tree if k.startswith("cell")),
                 key=lambda k: int(k[len("cell"):].split("_")[0]))
  return stems + cells


def child_variables(variables: Any, arch: Any, num_blocks: int = 5) -> Any:
  """The supernet ``variables`` cut down to the fixed network of ``arch``
  (``NASNet(fixed_arch=arch)``, the paper's concatenation rule, same
  ``channels``): each switch keeps its chosen op (as ``ops_0``), unused
  concatenation projections go, and the 1x1 calibrations keep the input rows
  of the blocks their source cell concatenates. ``fixed.apply`` on the
  result computes what ``supernet.apply(variables, arch)`` does."""
  arch = [int(v) for v in np.asarray(arch).reshape(-1)]
  n = CODES_PER_BLOCK * num_blocks
  kinds = {0: arch[:n], 1: arch[n:]}
  out_rows = {t: np.flatnonzero(unread_blocks(np.asarray(kinds[t]),
                                              num_blocks))
              for t in kinds}

  def kind(cell: str) -> int:
    return 1 if ("reduce" in cell or cell.startswith("stem_cell")) else 0

  def cut(tree, cell, path, source):
    """One cell's subtree; ``source``: cell name feeding this calibration."""
    if not hasattr(tree, "items"):
      if (source is not None and path[-1] == "kernel" and len(path) >= 2
          and np.ndim(tree) == 4 and np.shape(tree)[:2] == (1, 1)
          and (path[-3] in ("conv", "reduce0") if len(path) >= 3 else False)):
        return rows_of(tree, source)
      return tree
    codes = kinds[kind(cell)]
    if tree and all(k.startswith("ops_") for k in tree):
      b, side = path[-1][len("block"):].split("_")
      chosen = f"ops_{codes[CODES_PER_BLOCK * int(b) + 2 + (side == 'b')]}"
      return {"ops_0": tree[chosen]} if chosen in tree else None
    result = {}
    for k, v in tree.items():
      if k.endswith("_concat") and k.startswith("block"):
        b = int(k[len("block"):].split("_")[0])
        if nasnet_space.COMBINE[codes[CODES_PER_BLOCK * b + 4]] == "add":
          continue
      src = source
      if not path:  # the cell's top level: which input is calibrated
        src = (sources[cell][0] if k == "calibrate_prev" else
               sources[cell][1] if k == "calibrate" else None)
      r = cut(v, cell, path + [k], src)
      if r is not None:
        result[k] = r
    return result

  def rows_of(kernel, source):
    """A 1x1 conv / dense kernel reading cell ``source``'s output."""
    kernel = np.asarray(kernel)
    width = kernel.shape[-2] // num_blocks
    rows = np.concatenate([b * width + np.arange(width)
                           for b in out_rows[kind(source)]])
    return kernel[..., rows, :]

  out = {}
  for col, tree in variables.items():
    order = ["stem"] + _cell_order(tree)
    sources = {}
    for p, name in enumerate(order[1:], start=1):
      prev, h = order[max(p - 2, 0)], order[p - 1]
      sources[name] = (None if prev == "stem" else prev,
                       None if h == "stem" else h)
    out[col] = {k: (cut(v, k, [], None) if k in sources else v)
                for k, v in tree.items()}
    if col == "params" and "classifier" in tree:
      out[col]["classifier"] = dict(
          tree["classifier"],
          kernel=rows_of(tree["classifier"]["kernel"], order[-1]))
    if col == "params" and "aux_head" in tree:
      # It reads the last cell before the last reduction.
      last_reduce = max(p for p, k in enumerate(order) if "reduce" in k)
      aux = tree["aux_head"]
      conv = aux["ReLUConv1x1BN_0"]["Conv_0"]
      out[col]["aux_head"] = dict(aux, ReLUConv1x1BN_0=dict(
          aux["ReLUConv1x1BN_0"], Conv_0=dict(
              conv, kernel=rows_of(conv["kernel"], order[last_reduce - 1]))))
  return out


def child_param_count(space, params: Any, arch: Any) -> int:
  """Parameters of child ``arch`` of a supernet's ``params`` (what its fixed
  network has; the auxiliary head is not counted)."""
  arch = space.validate(arch)
  tree = child_variables({"params": params}, arch,
                         space.num_decisions // (2 * CODES_PER_BLOCK))
  tree = {k: v for k, v in tree["params"].items() if k != "aux_head"}
  return enas_cnn.param_count(tree)
