"""The candidate operations of the cell search spaces, as Flax Linen modules.

Every op maps ``[B, H, W, C] -> [B, H, W, C]``: stride 1, ``SAME`` padding and
the same number of channels, so any op can replace any other at a node and one
compiled network serves every architecture (DESIGN.md, abstraction 5).
Reductions (stride 2) are done by the networks between cells, not by ops.

Definitions follow the papers that introduced the op lists:

* NASNet (Zoph et al., "Learning Transferable Architectures for Scalable
  Image Recognition", CVPR 2018, Sec. 3 and Appendix A.4): the 13 ops of
  ``nas_jax.spaces.nasnet.OPS``; convolutions use the ReLU-conv-BN order and
  "each depthwise separable convolution is applied twice".
* ENAS (Pham et al., ICML 2018, Sec. 2.3-2.4): the same ReLU-conv-BN order and
  two stacked separable convolutions in the micro space.
* DARTS (Liu et al., ICLR 2019, Sec. 3.1 and its ``operations.py``): the
  concrete module layouts used here: ``ReLUConvBN``, ``SepConv`` (twice
  ReLU - depthwise - pointwise - BN) and the factorized ``1xk`` then ``kx1``
  convolution.

Choices worth knowing:

* ``dil_conv_3x3`` is a plain (full) 3x3 convolution with dilation 2, as the
  NASNet list names it ("3x3 dilated convolution"); DARTS's ``dil_conv`` is a
  dilated *separable* convolution instead.
* Pooling ops carry no BN and no ReLU (NASNet, ENAS); ``avg_pool`` averages
  over the valid pixels only (padding excluded from the count, as in
  NASNet's and DARTS's ``count_include_pad=False``), so border pixels are not
  darkened.
* Even-sized pools (``2x2``, seed 003) with ``SAME`` padding and stride 1 pad
  one pixel after (bottom/right), so the output keeps the input's size.
* BatchNorm uses momentum 0.9 (PyTorch's 0.1): children train for few steps,
  and Flax's default 0.99 would leave the running statistics near their
  initial values.

Every module is called as ``op(x, train)``; :data:`OPS` maps names to
factories ``channels -> module``.
"""

from __future__ import annotations

import functools
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from nas_jax.children import conv as conv_lib

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5
# Recompute the chosen op's forward in the backward pass instead of keeping
# its activations: lax.switch's residuals are the union over branches and
# the chosen branch fills the others' with zeros. Measured 5-9% faster at
# 28x28, batch 64, but the main job (8x8 digits, batch 32) 15-25% slower, so
# off (benchmarks/README.md, "Speed against plain PyTorch").
REMAT_BRANCHES = False


@jax.custom_vjp
def relu(x: jax.Array) -> jax.Array:
  """``max(x, 0)`` whose gradient mask is taken from the output.

  Same values and gradients as ``jax.nn.relu`` (``g`` where ``x > 0``, else
  0; ``y > 0`` exactly when ``x > 0``). Why: autodiff of ``jax.nn.relu``
  saves a separate boolean mask per op, computed in the forward pass, and
  XLA:CPU writes those slowly (up to 1.9 ms per [64, 32, 32, 16] mask, a
  large seed-003 child's step had 6 ms of them); the output is kept anyway
  as the next convolution's input, so the backward pass reads it instead.
  """
  return jnp.maximum(x, 0)


def _relu_fwd(x):
  y = jnp.maximum(x, 0)
  return y, y


def _relu_bwd(y, g):
  return (jnp.where(y > 0, g, jnp.zeros_like(g)),)


relu.defvjp(_relu_fwd, _relu_bwd)


def _batch_norm(train: bool, name: str | None = None) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM,
                      epsilon=BN_EPSILON, name=name)


class Identity(nn.Module):
  """The identity op (NASNet "identity", DARTS ``skip_connect`` at stride 1)."""

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    del train
    return x


class ReLUConvBN(nn.Module):
  """ReLU, a ``k x k`` (optionally dilated) conv, BN (DARTS ``ReLUConvBN``).

  Attributes:
    channels: output channels (equal to the input's in every space here).
    kernel_size: ``(kh, kw)``.
    dilation: the kernel dilation (2 for ``dil_conv_3x3``).
  """

  channels: int
  kernel_size: tuple[int, int]
  dilation: int = 1

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = relu(x)
    # No bias: the BN that follows has its own shift.
    x = conv_lib.Conv(self.channels, self.kernel_size,
                      dilation=self.dilation)(x)
    return _batch_norm(train)(x)


class FactorizedConv(nn.Module):
  """ReLU, ``1 x k`` conv, ``k x 1`` conv, BN (NASNet "1x7 then 7x1").

  The layout is DARTS's ``conv_7x1_1x7``: one ReLU and one BN around the pair,
  which sees a ``k x k`` receptive field with ``2k`` instead of ``k^2``
  weights per channel pair.
  """

  channels: int
  kernel: int

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = relu(x)
    x = conv_lib.Conv(self.channels, (1, self.kernel))(x)
    x = conv_lib.Conv(self.channels, (self.kernel, 1))(x)
    return _batch_norm(train)(x)


class SepConv(nn.Module):
  """Depthwise-separable convolution, stacked ``repeats`` times.

  Each repeat is ReLU, depthwise ``k x k`` conv, pointwise ``1 x 1`` conv, BN.
  NASNet (Appendix A.4: "we found it beneficial to apply the operation twice")
  ENAS and DARTS all stack two, so ``repeats=2`` is the default for every
  ``sep_conv_*`` in :data:`OPS`, including seed 003's "3x3
  depthwise-separable conv".

  Attributes:
    channels: input and output channels.
    kernel: the depthwise kernel size ``k``.
    repeats: how many ReLU-depthwise-pointwise-BN units are stacked.
  """

  channels: int
  kernel: int
  repeats: int = 2

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    for _ in range(self.repeats):
      x = relu(x)
      # feature_group_count == channels makes the conv depthwise.
      x = conv_lib.Conv(x.shape[-1], (self.kernel, self.kernel),
                        feature_group_count=x.shape[-1])(x)
      x = conv_lib.Conv(self.channels, (1, 1))(x)
      x = _batch_norm(train)(x)
    return x


class Pool(nn.Module):
  """``k x k`` max or average pooling, stride 1, ``SAME`` padding.

  Average pooling excludes the padding from the count (NASNet, DARTS
  ``count_include_pad=False``).

  Attributes:
    kind: ``"max"`` or ``"avg"``.
    kernel: the window size ``k``.
  """

  kind: str
  kernel: int

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    del train
    window = (self.kernel, self.kernel)
    if self.kind == "max":
      return nn.max_pool(x, window, strides=(1, 1), padding="SAME")
    if self.kind == "avg":
      return nn.avg_pool(x, window, strides=(1, 1), padding="SAME",
                         count_include_pad=False)
    raise ValueError(f"pool kind must be 'max' or 'avg', got {self.kind!r}")


def _no_channels(module: type[nn.Module],
                 **kwargs) -> Callable[[int], nn.Module]:
  """A factory for ops without weights: the channel count is not needed."""
  return lambda channels: module(**kwargs)


# Name -> factory(channels) -> module; the names are those of the spaces
# (nas_jax.spaces.nasnet.OPS, enas.MICRO_OPS / MACRO_OPS, seed003.OPS).
OPS: dict[str, Callable[[int], nn.Module]] = {
    "identity": _no_channels(Identity),
    "conv_1x3_3x1": functools.partial(FactorizedConv, kernel=3),
    "conv_1x7_7x1": functools.partial(FactorizedConv, kernel=7),
    "conv_1x1": functools.partial(ReLUConvBN, kernel_size=(1, 1)),
    "conv_3x3": functools.partial(ReLUConvBN, kernel_size=(3, 3)),
    "conv_5x5": functools.partial(ReLUConvBN, kernel_size=(5, 5)),
    "conv_7x7": functools.partial(ReLUConvBN, kernel_size=(7, 7)),
    "dil_conv_3x3": functools.partial(ReLUConvBN, kernel_size=(3, 3),
                                      dilation=2),
    "sep_conv_3x3": functools.partial(SepConv, kernel=3),
    "sep_conv_5x5": functools.partial(SepConv, kernel=5),
    "sep_conv_7x7": functools.partial(SepConv, kernel=7),
    **{f"{kind}_pool_{k}x{k}": _no_channels(Pool, kind=kind, kernel=k)
       for kind in ("max", "avg") for k in (2, 3, 5, 7)},
}


def make_op(name: str, channels: int) -> nn.Module:
  """The op ``name`` with ``channels`` channels; a clear error if unknown."""
  try:
    factory = OPS[name]
  except KeyError:
    raise ValueError(
        f"unknown op {name!r}; known ops: {', '.join(OPS)}") from None
  return factory(channels)


class SwitchOp(nn.Module):
  """Applies ``names[index]`` to ``x`` where ``index`` is a traced int.

  All candidate ops are submodules, so the variables hold every op's weights
  and BN statistics; ``nn.switch`` (Flax's lifted ``lax.switch``) runs only the
  chosen op, and one compiled program serves every index (DESIGN.md,
  abstraction 5). Unchosen ops get zero gradients and keep their BN
  statistics, as in ENAS's shared weights.

  An out-of-range index is clamped by ``lax.switch``; validate architectures
  with the space before training. Under ``jax.vmap`` over the index (a
  different child per batch row) ``lax.switch`` becomes a ``select`` that
  runs every branch: correct but costly, so give each device its own child
  with ``shard_map`` instead (DESIGN.md, "Multi-device").

  Attributes:
    names: the candidate op names (keys of :data:`OPS`), in the order of the
      decision's choices.
    channels: input and output channels.
  """

  names: tuple[str, ...]
  channels: int

  def setup(self):
    if not self.names:
      raise ValueError("SwitchOp needs at least one op name")
    self.ops = [make_op(name, self.channels) for name in self.names]

  def __call__(self, x: jax.Array, index: jax.Array,
               train: bool) -> jax.Array:
    if len(self.ops) == 1:
      return self.ops[0](x, train)
    if self.is_initializing():
      # nn.switch needs every branch's variables to exist already: run each
      # op once so init creates all params and batch_stats; branch 0 stands
      # in for the output (all branches have the same shape).
      outs = [op(x, train) for op in self.ops]
      return outs[0]
    # Branch k is called as fn(module, x); `train` is static, so it is closed
    # over rather than passed as an operand.
    branches = [
        functools.partial(_apply_op, k=k, train=train)
        for k in range(len(self.ops))
    ]
    if REMAT_BRANCHES and train:
      branches = [nn.checkpoint(b) for b in branches]
    return nn.switch(jnp.asarray(index, jnp.int32), branches, self, x)


def _apply_op(module: SwitchOp, x: jax.Array, *, k: int,
              train: bool) -> jax.Array:
  return module.ops[k](x, train)


class Stem(nn.Module):
  """The input stem: a 3x3 convolution to ``channels``, then BN.

  No ReLU: every op starts with its own (ReLU-conv-BN order, NASNet/DARTS).
  """

  channels: int

  @nn.compact
  def __call__(self, images: jax.Array, train: bool) -> jax.Array:
    x = conv_lib.Conv(self.channels, (3, 3))(images)
    return _batch_norm(train)(x)


class Classifier(nn.Module):
  """ReLU, global average pooling, ``Dense(num_classes)``; returns logits."""

  num_classes: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = relu(x)
    x = jnp.mean(x, axis=(1, 2))  # [B, C]
    return nn.Dense(self.num_classes)(x)  # [B, num_classes]
