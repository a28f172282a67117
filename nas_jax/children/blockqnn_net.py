"""The child network of the Block-QNN space (Zhong et al., "Practical
Block-wise Neural Network Architecture Generation", CVPR 2018, Sec. 3.1 and
Fig. 3; seed 000): the searched block stacked in stages, with a stride-2 max
pool between stages.

The block code (``nas_jax.spaces.blockqnn``: ``(type, input1, input2)`` per
layer) is an ``int32`` input, so one compiled train step serves every block of
the space (DESIGN.md, abstraction 5)::

    net = make_network("blockqnn", num_cells=3, channels=16)
    variables = net.init(key, images, arch, False)  # arch int32[3 * M]

Layer ``i`` of a block picks its inputs among the block input and layers
``1..i-1`` with ``lax.switch`` on the pointer values and its type with a
lifted ``lax.switch`` over the 11 layer types of Table 1:

* convolutions are the paper's pre-activation unit ReLU-conv-BN
  (``ops.ReLUConvBN``), with ``channels`` filters;
* 1x1 max and average pooling at stride 1 are the identity, so they run it;
* elemental add sums the two inputs;
* concat concatenates the two inputs and, to keep every layer at
  ``channels`` (so any layer can feed any other in the one program), maps
  them back with a ReLU-conv1x1-BN (our choice; the paper lets widths grow);
* terminal ends the block: it and the layers after it output zeros that
  nothing reads.

The block output is the concatenation of the layers no later layer reads
("the layers without successors are concatenated", Sec. 3.1), again mapped
back to ``channels`` by a ReLU-conv1x1-BN. For a fixed shape the
concatenation holds every layer, multiplied by a 0/1 mask computed from the
code with jnp ops (:func:`block_outputs`); the masked channels add nothing.
An empty block (terminal first) outputs that projection of its input.

Channel counts stay at ``channels`` in every stage, as in
``cell_net``'s networks (our choice, kept small for CPU-sized searches).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from nas_jax.children import ops as ops_lib
from nas_jax.spaces import blockqnn

# Layer type -> the op it runs on its first input (``None``: computed from
# both inputs in ``BlockLayer``). A 1x1 pool at stride 1 is the identity.
TYPE_OPS = {
    "conv_1": "conv_1x1", "conv_3": "conv_3x3", "conv_5": "conv_5x5",
    "max_pool_1": "identity", "max_pool_3": "max_pool_3x3",
    "avg_pool_1": "identity", "avg_pool_3": "avg_pool_3x3",
    "identity": "identity", "add": "identity", "concat": "conv_1x1",
}
_ADD = blockqnn.TYPES.index("add")
_CONCAT = blockqnn.TYPES.index("concat")


def block_outputs(arch: jax.Array) -> jax.Array:
  """``bool[M + 1]``: which of (input, layer 1..M) form the block output.

  The layers before the first terminal that no such layer reads (a second
  input counts only for add and concat); the input alone when the block is
  empty. Jittable; ``arch`` is a ``blockqnn`` code ``int32[3 M]``.
  """
  kind, in1, in2 = arch[0::3], arch[1::3], arch[2::3]  # [M] each
  live = jnp.cumsum(kind == blockqnn.TERMINAL) == 0  # [M]: before terminal
  two = (kind == _ADD) | (kind == _CONCAT)
  slot = jnp.arange(arch.shape[0] // 3 + 1)[:, None]  # [M + 1, 1]
  reads = ((in1[None] == slot) | (two[None] & (in2[None] == slot))) & live
  out = jnp.concatenate([jnp.zeros((1,), bool), live]) & ~jnp.any(reads, 1)
  return out.at[0].set(~jnp.any(live))


class BlockLayer(nn.Module):
  """One layer of a block: ``type`` (a traced int) applied to two inputs.

  Submodule ``ops_<k>`` belongs to layer type ``k`` (as in
  :class:`~nas_jax.children.ops.SwitchOp`, so
  ``cell_net.child_param_count`` counts the chosen type's weights only).
  """

  channels: int

  def setup(self):
    self.ops = [ops_lib.make_op(TYPE_OPS[t], self.channels)
                for t in blockqnn.TYPES if t != "terminal"]

  def __call__(self, x1: jax.Array, x2: jax.Array, kind: jax.Array,
               train: bool) -> jax.Array:
    if self.is_initializing():
      # nn.switch needs every branch's variables to exist: create them all.
      for k, op in enumerate(self.ops):
        op(_concat(x1, x2) if k == _CONCAT else x1, train)
      return x1
    branches = [functools.partial(_apply_type, k=k, train=train)
                for k in range(len(blockqnn.TYPES))]
    return nn.switch(jnp.asarray(kind, jnp.int32), branches, self, x1, x2)


def _concat(x1: jax.Array, x2: jax.Array) -> jax.Array:
  return jnp.concatenate([x1, x2], axis=-1)  # [B, H, W, 2C]


def _apply_type(module: BlockLayer, x1: jax.Array, x2: jax.Array, *, k: int,
                train: bool) -> jax.Array:
  if k == _ADD:
    return x1 + x2
  if k == _CONCAT:
    return module.ops[k](_concat(x1, x2), train)
  if k == blockqnn.TERMINAL:
    return jnp.zeros_like(x1)
  return module.ops[k](x1, train)


class Block(nn.Module):
  """The searched block: ``[B, H, W, C], int32[3 M] -> [B, H, W, C]``."""

  channels: int

  @nn.compact
  def __call__(self, x: jax.Array, arch: jax.Array,
               train: bool) -> jax.Array:
    # cell_net imports this module to register the network.
    from nas_jax.children.cell_net import _select  # noqa: PLC0415
    states = [x]  # slot k holds the input (k = 0) or layer k
    for i in range(arch.shape[0] // 3):
      x1 = _select(states, arch[3 * i + 1])
      x2 = _select(states, arch[3 * i + 2])
      states.append(BlockLayer(self.channels, name=f"layer{i + 1}")(
          x1, x2, arch[3 * i], train))
    mask = block_outputs(arch).astype(x.dtype)  # [M + 1]
    out = jnp.concatenate([s * m for s, m in zip(states, mask)], axis=-1)
    return ops_lib.make_op("conv_1x1", self.channels)(out, train)


class BlockQNNNet(nn.Module):
  """Stem, ``num_cells`` blocks with a 2x2/2 max pool after every
  ``reduce_every`` of them (Block-QNN's "Block x N, Pooling" stages, Fig. 3),
  classifier. ``images [B, H, W, C_in], arch int32[3 M] -> logits``.

  Each block has its own weights; all share the code. ``M`` (the space's
  ``max_layers``) is read from the code's length.

  Attributes:
    num_cells: blocks in all (stages x N).
    channels: channels of the stem and of every layer.
    num_classes: classifier outputs.
    reduce_every: N, the blocks of a stage; 0 disables the pools.
  """

  num_cells: int = 3
  channels: int = 16
  num_classes: int = 10
  reduce_every: int = 1

  @nn.compact
  def __call__(self, images: jax.Array, arch: Any,
               train: bool) -> jax.Array:
    from nas_jax.children import cell_net  # noqa: PLC0415 (see Block)
    arch = jnp.asarray(arch)
    if arch.ndim != 1 or not arch.shape[0] or arch.shape[0] % 3:
      raise ValueError(f"BlockQNNNet expects a block code of shape (3 * "
                       f"max_layers,), got {arch.shape}")
    arch = arch.astype(jnp.int32)
    x = ops_lib.Stem(self.channels)(images, train)  # [B, H, W, C]
    for c in range(self.num_cells):
      if cell_net._needs_reduction(c, self.reduce_every):
        x = cell_net._reduce(x)
      x = Block(self.channels, name=f"block{c}")(x, arch, train)
    return ops_lib.Classifier(self.num_classes)(x)
