"""Child CNNs of the seed-003 study (Arora & Krone, "Learning to Design CNNs
with Reinforcement Learning"): a stem, a repeated cell, a classifier.

Both networks take the architecture as an ``int32`` input array and choose
ops with :class:`~nas_jax.children.ops.SwitchOp` (a lifted ``lax.switch``) and
inputs with ``lax.switch`` on the pointer value, so one compiled train step
serves every child of a space (DESIGN.md, abstraction 5)::

    net = make_network("seed003_small", num_cells=2, channels=16)
    variables = net.init(key, images, arch, train=False)
    logits, updates = net.apply(variables, images, arch, train=True,
                                mutable=["batch_stats"])

The cell design is shared by every cell of the network (a "pattern of
repeated operations"), but each cell has its own weights. Between groups of
``reduce_every`` cells a 2x2 max pool with stride 2 halves the resolution; the
channel count stays constant, so every op keeps its input's shape. The slides
fix neither of these details: they are our choices, kept small for MNIST.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nas_jax.children import blockqnn_net
from nas_jax.children import ops as ops_lib
from nas_jax.spaces import seed003


def _check_arch(arch: Any, length: int, what: str) -> jax.Array:
  """``arch`` as ``int32[length]``; the length is checked at trace time."""
  arch = jnp.asarray(arch)
  if arch.shape != (length,):
    raise ValueError(
        f"{what} expects an architecture of shape ({length},), got "
        f"{arch.shape}")
  return arch.astype(jnp.int32)


RESHAPE_POOL = True


def _reduce(x: jax.Array) -> jax.Array:
  """Halves H and W between cell groups (2x2 max pool, stride 2, ``SAME``).

  Written as a max over a ``[B, H/2, 2, W/2, 2, C]`` view: its gradient is an
  elementwise mask, where ``nn.max_pool``'s (a windowed reduction) lowers on
  XLA:CPU to an argmax over iota tensors and a scatter (measured about 2x
  slower, benchmarks/README.md). Odd sizes are padded with ``-inf`` after,
  as ``SAME`` pads.
  """
  if not RESHAPE_POOL:
    return nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
  b, h, w, c = x.shape
  if h % 2 or w % 2:
    x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)),
                constant_values=-jnp.inf)
  return jnp.max(x.reshape(b, (h + 1) // 2, 2, (w + 1) // 2, 2, c),
                 axis=(2, 4))


def _needs_reduction(cell: int, reduce_every: int) -> bool:
  return bool(reduce_every) and cell > 0 and cell % reduce_every == 0


# -- small space: two ops in a chain -----------------------------------------


class ChainCell(nn.Module):
  """``op2(op1(x))``: "2 operations applied consecutively define a cell".

  Kept plain, without a residual connection, as the study describes it.
  """

  space_ops: tuple[str, ...]
  channels: int

  @nn.compact
  def __call__(self, x: jax.Array, arch: jax.Array,
               train: bool) -> jax.Array:
    x = ops_lib.SwitchOp(self.space_ops, self.channels, name="op1")(
        x, arch[0], train)
    return ops_lib.SwitchOp(self.space_ops, self.channels, name="op2")(
        x, arch[1], train)


class ChainCellNet(nn.Module):
  """The child network of the 64-child space (``seed003_small``).

  ``images [B, H, W, C_in], arch int32[2] -> logits [B, num_classes]``; arch
  is ``(op1, op2)``, indices into ``space_ops``.

  Attributes:
    space_ops: the op vocabulary of the decisions (``seed003.OPS``).
    num_cells: how many cells are stacked.
    channels: channels of the stem and of every cell.
    num_classes: classifier outputs.
    reduce_every: a stride-2 max pool follows every ``reduce_every`` cells
      (never after the last); 0 disables reductions.
  """

  space_ops: tuple[str, ...] = seed003.OPS
  num_cells: int = 2
  channels: int = 16
  num_classes: int = 10
  reduce_every: int = 1

  @nn.compact
  def __call__(self, images: jax.Array, arch: Any,
               train: bool) -> jax.Array:
    arch = _check_arch(arch, 2, type(self).__name__)
    x = ops_lib.Stem(self.channels)(images, train)  # [B, H, W, C]
    for c in range(self.num_cells):
      if _needs_reduction(c, self.reduce_every):
        x = _reduce(x)
      x = ChainCell(tuple(self.space_ops), self.channels, name=f"cell{c}")(
          x, arch, train)
    return ops_lib.Classifier(self.num_classes)(x)


# -- large space: branching cells with skip connections ----------------------


def loose_ends(arch: jax.Array, num_nodes: int) -> jax.Array:
  """``bool[num_nodes]``: which nodes no later node reads (jittable).

  ``arch`` is a ``seed003_large`` code, ``(input, op)`` per node, where input
  ``0`` is the cell input and input ``j + 1`` is node ``j``. The last node is
  always a loose end, so at least one entry is true.
  """
  srcs = arch[0::2]  # [N]: the slot each node reads.
  node = jnp.arange(num_nodes)
  reads = srcs[None, :] == node[:, None] + 1  # [j, i]: node i reads node j.
  later = node[None, :] > node[:, None]  # Only later nodes count.
  return ~jnp.any(reads & later, axis=1)


def _select(states: list[jax.Array], index: jax.Array) -> jax.Array:
  """``states[index]`` for a traced index, without stacking copies.

  A ``lax.switch`` whose branches return one operand each: only the chosen
  tensor is read, and the gradient flows only to it.
  """
  if len(states) == 1:
    return states[0]
  branches = [lambda *s, k=k: s[k] for k in range(len(states))]
  return jax.lax.switch(index, branches, *states)


class BranchingCell(nn.Module):
  """A cell of the large space (``seed003_large``).

  Node ``i`` applies op ``arch[2i + 1]`` to the tensor picked by
  ``arch[2i]`` (the cell input or an earlier node); several nodes may read
  the same tensor (branching) and a node may read the cell input directly
  (a skip connection). The output is the mean of the loose ends, the nodes no
  later node reads (ENAS's recurrent cell, Pham et al. 2018, Sec. 2.1); the
  mask comes from ``arch`` with jnp ops, so it stays inside the one program.

  Attributes:
    space_ops: the op vocabulary.
    channels: input and output channels.
    num_nodes: nodes per cell.
    residual: add the cell input to the output (a ResNet-style identity
      path). Off by default: skip connections are part of the searched
      space, and the study describes no residual.
  """

  space_ops: tuple[str, ...]
  channels: int
  num_nodes: int
  residual: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, arch: jax.Array,
               train: bool) -> jax.Array:
    states = [x]  # Anchor slot k holds states[k].
    for i in range(self.num_nodes):
      inp = _select(states, arch[2 * i])
      states.append(ops_lib.SwitchOp(
          tuple(self.space_ops), self.channels, name=f"node{i}")(
              inp, arch[2 * i + 1], train))
    mask = loose_ends(arch, self.num_nodes).astype(x.dtype)  # [N]
    weights = mask / jnp.sum(mask)
    # Every node is computed once whatever the arch (it is either read by a
    # later node or a loose end), so this weighted sum wastes no op.
    out = jnp.tensordot(weights, jnp.stack(states[1:]), axes=1)  # [B,H,W,C]
    if self.residual:
      out = out + x
    return out


class BranchingCellNet(nn.Module):
  """The child network of the branching space (``seed003_large``).

  ``images [B, H, W, C_in], arch int32[2 * num_nodes] -> logits``.

  Attributes:
    num_nodes: nodes per cell (must match the space's).
    num_cells: how many cells are stacked.
    channels: channels of the stem and of every cell.
    num_classes: classifier outputs.
    space_ops: the op vocabulary (``seed003.OPS``).
    reduce_every: a stride-2 max pool follows every ``reduce_every`` cells
      (never after the last); 0 disables reductions.
    residual: see :class:`BranchingCell`.
  """

  num_nodes: int = 3
  num_cells: int = 2
  channels: int = 16
  num_classes: int = 10
  space_ops: tuple[str, ...] = seed003.OPS
  reduce_every: int = 1
  residual: bool = False

  @nn.compact
  def __call__(self, images: jax.Array, arch: Any,
               train: bool) -> jax.Array:
    arch = _check_arch(arch, 2 * self.num_nodes, type(self).__name__)
    x = ops_lib.Stem(self.channels)(images, train)  # [B, H, W, C]
    for c in range(self.num_cells):
      if _needs_reduction(c, self.reduce_every):
        x = _reduce(x)
      x = BranchingCell(tuple(self.space_ops), self.channels, self.num_nodes,
                        self.residual, name=f"cell{c}")(x, arch, train)
    return ops_lib.Classifier(self.num_classes)(x)


def _module(name: str):
  """``nas_jax.children.<name>``, imported when first used (``nasnet``
  builds on this module)."""
  import importlib  # pylint: disable=g-import-not-at-top
  return importlib.import_module(f"nas_jax.children.{name}")


_NETWORKS = {
    "nasrl": lambda **kw: _module("nasrl_cnn").NasrlCNN(**kw),
    "nasnet": lambda **kw: _module("nasnet").NASNet(**kw),
    "seed003_small": ChainCellNet,
    "seed003_large": BranchingCellNet,
    "blockqnn": blockqnn_net.BlockQNNNet,
}


def make_network(space_name: str, **kwargs: Any) -> nn.Module:
  """The child network for the space registered as ``space_name``.

  Args:
    space_name: ``"seed003_small"`` or ``"seed003_large"``.
    **kwargs: the network's attributes (``num_cells``, ``channels``, ...).

  Raises:
    ValueError: no network is known for ``space_name``.
  """
  try:
    cls = _NETWORKS[space_name]
  except (KeyError, TypeError):
    raise ValueError(
        f"no child network for space {space_name!r}; known: "
        f"{', '.join(_NETWORKS)}") from None
  return cls(**kwargs)


def child_param_count(space, params, arch) -> int:
  """Parameters of the child ``arch`` itself, not of every candidate op.

  A network holds the weights of all candidates of each ``SwitchOp`` (as
  ``ops_<k>``); only the chosen one belongs to the child. A switch named
  ``op1`` / ``node2`` / ``layer3`` reads the decision of that name (or
  ``node2/op``, ``layer3/type``).
  """
  # The nasrl and nasnet networks count their own (padded kernels,
  # concatenation widths).
  if space.name in ("nasrl", "nasnet"):
    module = _module("nasrl_cnn" if space.name == "nasrl" else "nasnet")
    return module.child_param_count(space, params, arch)
  arch = space.validate(arch)
  index = {d.name: t for t, d in enumerate(space.decisions)}

  def count(tree, name=None):
    if not isinstance(tree, Mapping):
      return int(np.prod(np.shape(tree)))
    if any(k.startswith("ops_") for k in tree):
      t = index.get(name, index.get(f"{name}/op",
                                    index.get(f"{name}/type")))
      if t is None:
        raise ValueError(f"switch {name!r} matches no decision of "
                         f"{space.name!r}")
      chosen = tree.get(f"ops_{int(arch[t])}")
      return 0 if chosen is None else count(chosen)
    return sum(count(v, k) for k, v in tree.items())

  return count(params)
