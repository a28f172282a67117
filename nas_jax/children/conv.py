"""Stride-1 ``SAME`` convolutions with a hand-written backward pass.

Why this module exists: child networks choose their ops with ``nn.switch``
(``lax.switch``, see :class:`~nas_jax.children.ops.SwitchOp`). On XLA:CPU the
convolutions that JAX's autodiff emits for the backward pass (the input and
kernel gradients) keep, inside a ``lax.switch`` branch, a dimension layout
that the CPU backend cannot hand to its fast (Eigen) convolution kernel; it
falls back to a generic loop that was measured 35-60x slower than the same
gradient convolution at top level (one 3x3 conv: 43 ms vs 1.2 ms). The
forward convolution is not affected.

:func:`conv2d` therefore defines its VJP with :func:`jax.custom_vjp` and
writes both gradients as ordinary ``NHWC``/``HWIO`` convolutions (with
explicit transposes where the roles of the axes change), a form the CPU
backend runs fast wherever it appears. Depthwise convolutions (one channel
per group, as in ``SepConv``) are slow on XLA:CPU as grouped convolutions
anywhere, forward included, so for them the forward and the input gradient
are sums of shifted slices instead (``_DEPTHWISE_AS_SHIFTS``). The kernel
gradients (dense and depthwise) run on CPU as native single-pass kernels
(:mod:`~nas_jax.children.cpu_kernels`, 3-10x faster than any XLA form
measured) and elsewhere, or without a C++ compiler, as the ``jax.numpy``
forms ``_dense_kernel_grad`` and ``_depthwise_kernel_grad``. The values are
autodiff's; ``tests/test_conv.py`` checks them against ``jax.grad`` of
``lax.conv_general_dilated`` and :class:`flax.linen.Conv`.

Only what the op library uses is supported: stride 1, ``SAME`` padding, a
kernel dilation, and feature groups (depthwise convolutions).
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from nas_jax.children import cpu_kernels

_NHWC = ("NHWC", "HWIO", "NHWC")

# Depthwise convolutions (one channel per group) as shifted multiply-adds
# instead of grouped convolutions; see _forward for why.
_DEPTHWISE_AS_SHIFTS = True


def _same_padding(kernel_hw: Sequence[int],
                  dilation: Sequence[int]) -> list[tuple[int, int]]:
  """``SAME`` padding at stride 1 (extra pixel after, as XLA and Flax pad)."""
  pads = []
  for k, d in zip(kernel_hw, dilation):
    total = (k - 1) * d
    pads.append((total // 2, total - total // 2))
  return pads


def _is_depthwise(kernel: jax.Array, feature_group_count: int) -> bool:
  """One input and one output channel per group (multiplier 1)."""
  return (_DEPTHWISE_AS_SHIFTS and feature_group_count > 1
          and kernel.shape[2] == 1 and kernel.shape[3] == feature_group_count)


def _shifted_windows(padded: jax.Array, kernel_hw: Sequence[int],
                     dilation: Sequence[int], out_hw: Sequence[int],
                     flip: bool = False):
  """Yields ``(i, j, window)``: the ``[B, H, W, C]`` slice tap ``(i, j)`` sees.

  With ``flip`` the taps are mirrored, as the input gradient needs.
  """
  (kh, kw), (dh, dw), (h, w) = kernel_hw, dilation, out_hw
  for i in range(kh):
    for j in range(kw):
      si = (kh - 1 - i if flip else i) * dh
      sj = (kw - 1 - j if flip else j) * dw
      yield i, j, padded[:, si:si + h, sj:sj + w, :]


def _pad_hw(x: jax.Array, pads: Sequence[tuple[int, int]]) -> jax.Array:
  return jnp.pad(x, ((0, 0), *pads, (0, 0)))


def _is_pointwise(kernel: jax.Array, feature_group_count: int) -> bool:
  """A dense ``1 x 1`` convolution: a matrix product over the channels."""
  return kernel.shape[:2] == (1, 1) and feature_group_count == 1


def _forward(x: jax.Array, kernel: jax.Array, dilation: tuple[int, int],
             feature_group_count: int) -> jax.Array:
  pads = _same_padding(kernel.shape[:2], dilation)
  if _is_pointwise(kernel, feature_group_count):
    return x @ kernel[0, 0]  # [B, H, W, C_out]
  if _is_depthwise(kernel, feature_group_count):
    # XLA:CPU runs grouped convolutions with a slow generic kernel (a
    # measured 34 ms vs 0.35 ms as shifted multiply-adds for a 3x3 depthwise
    # conv on [64, 28, 28, 16]), switch or not; k*k fused multiply-adds of
    # shifted slices give the same values.
    xp = _pad_hw(x, pads)
    y = jnp.zeros_like(x)
    for i, j, win in _shifted_windows(xp, kernel.shape[:2], dilation,
                                      x.shape[1:3]):
      y = y + win * kernel[i, j, 0]
    return y
  if feature_group_count == 1:
    return cpu_kernels.conv(x, kernel, dilation, pads, portable=functools.partial(
        _xla_conv, dilation=dilation, pads=pads))
  return _xla_conv(x, kernel, dilation, pads, feature_group_count)


def _xla_conv(x, kernel, dilation, pads, feature_group_count=1):
  return lax.conv_general_dilated(
      x, kernel, window_strides=(1, 1), padding=pads, rhs_dilation=dilation,
      dimension_numbers=_NHWC, feature_group_count=feature_group_count)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv2d(x, kernel, dilation, feature_group_count):
  return _forward(x, kernel, dilation, feature_group_count)


def _conv2d_fwd(x, kernel, dilation, feature_group_count):
  return _forward(x, kernel, dilation, feature_group_count), (x, kernel)


def _depthwise_kernel_grad(x, g, kernel_hw, dilation, pads):
  """``[kh, kw, C]``: one reduction over batch and pixels per tap."""
  xp = _pad_hw(x, pads)
  taps = {(i, j): jnp.sum(win * g, axis=(0, 1, 2))
          for i, j, win in _shifted_windows(xp, kernel_hw, dilation,
                                            x.shape[1:3])}
  return jnp.stack([jnp.stack([taps[i, j] for j in range(kernel_hw[1])])
                    for i in range(kernel_hw[0])])


def _dense_kernel_grad(x, g, dilation, pads):
  """``[kh, kw, Cin, Cout]``: dkernel[t, i, o] = sum over batch and pixels
  of x_pad[pixel + t*d, i] * g[pixel, o], as a conv whose "batch" is x's
  channels, whose contracted features are the batch, whose window is g's
  image and whose output positions (stride d) are the kernel taps. The
  transposes put the operands in plain NHWC/HWIO form, the one the CPU
  backend runs fast."""
  lhs = x.transpose(3, 1, 2, 0)  # [Cin, H, W, B]
  rhs = g.transpose(1, 2, 0, 3)  # [H, W, B, Cout]
  dk = lax.conv_general_dilated(
      lhs, rhs, window_strides=dilation, padding=pads,
      dimension_numbers=_NHWC)  # [Cin, kh, kw, Cout]
  return dk.transpose(1, 2, 0, 3)


def _conv2d_bwd(dilation, feature_group_count, residuals, g):
  x, kernel = residuals
  kh, kw, cin_per_group, cout = kernel.shape
  groups = feature_group_count
  pads = _same_padding((kh, kw), dilation)

  if _is_pointwise(kernel, groups):
    # As matrix products: the kernel gradient as a convolution (below) was
    # measured 4.5x slower than x^T g as one [C_in, N] x [N, C_out] product.
    cin = x.shape[-1]
    dx = g @ kernel[0, 0].T
    dk = x.reshape(-1, cin).T @ g.reshape(-1, cout)  # [C_in, C_out]
    return dx, dk[None, None].astype(kernel.dtype)

  if _is_depthwise(kernel, groups):
    # The grouped convolutions below are slow on XLA:CPU for the same reason
    # as the forward's; the shifted-slice forms are exact rewrites of them.
    hw = x.shape[1:3]
    gp = _pad_hw(g, [(hi, lo) for lo, hi in pads])
    dx = jnp.zeros_like(x)
    for i, j, win in _shifted_windows(gp, (kh, kw), dilation, hw, flip=True):
      dx = dx + win * kernel[i, j, 0]
    dk = cpu_kernels.depthwise_kernel_grad(
        x, g, (kh, kw), dilation, pads,
        portable=functools.partial(_depthwise_kernel_grad, kernel_hw=(kh, kw),
                                   dilation=dilation, pads=pads))
    return dx, dk[:, :, None, :].astype(kernel.dtype)

  # dx is the forward conv's transpose: a conv of g with the spatially
  # flipped kernel whose in/out roles are swapped within each group, padded
  # (hi, lo) instead of (lo, hi) because the flip mirrors the window.
  k = kernel[::-1, ::-1].reshape(kh, kw, cin_per_group, groups, cout // groups)
  k = k.transpose(0, 1, 4, 3, 2).reshape(kh, kw, cout // groups,
                                         groups * cin_per_group)
  flipped_pads = [(hi, lo) for lo, hi in pads]
  if groups == 1:
    dx = cpu_kernels.conv(g, k, dilation, flipped_pads,
                          portable=functools.partial(
                              _xla_conv, dilation=dilation,
                              pads=flipped_pads))
  else:
    dx = _xla_conv(g, k, dilation, flipped_pads, groups)

  if groups == 1:
    dk = cpu_kernels.dense_kernel_grad(
        x, g, (kh, kw), dilation, pads,
        portable=functools.partial(_dense_kernel_grad, dilation=dilation,
                                   pads=pads))
  else:
    # As _dense_kernel_grad; each group contracts only its own channels: fold the groups into the
    # feature axis (group-major) and let feature_group_count keep them apart.
    b, h, w, cin = x.shape
    lhs = x.reshape(b, h, w, groups, cin_per_group).transpose(4, 1, 2, 3, 0)
    lhs = lhs.reshape(cin_per_group, h, w, groups * b)  # [Cin/G, H, W, G*B]
    rhs = g.transpose(1, 2, 0, 3)  # [H, W, B, Cout]
    dk = lax.conv_general_dilated(
        lhs, rhs, window_strides=dilation, padding=pads,
        dimension_numbers=_NHWC,
        feature_group_count=groups)  # [Cin/G, kh, kw, Cout]
    dk = dk.transpose(1, 2, 0, 3)
  return dx, dk.astype(kernel.dtype)


_conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


def conv2d(x: jax.Array, kernel: jax.Array, *,
           dilation: tuple[int, int] | int = (1, 1),
           feature_group_count: int = 1) -> jax.Array:
  """A stride-1 ``SAME`` convolution, ``NHWC`` input and ``HWIO`` kernel.

  Same values and gradients as ``lax.conv_general_dilated`` with those
  settings; the gradients come from :func:`_conv2d_bwd` (see the module
  docstring for why).

  Args:
    x: ``[B, H, W, C_in]``.
    kernel: ``[kh, kw, C_in / feature_group_count, C_out]``.
    dilation: the kernel (``rhs``) dilation, an int or ``(dh, dw)``.
    feature_group_count: the number of feature groups (``C_in`` for a
      depthwise convolution).

  Returns:
    ``[B, H, W, C_out]``.
  """
  if isinstance(dilation, int):
    dilation = (dilation, dilation)
  dilation = tuple(int(d) for d in dilation)
  if x.ndim != 4 or kernel.ndim != 4:
    raise ValueError(f"conv2d expects NHWC x and HWIO kernel, got shapes "
                     f"{x.shape} and {kernel.shape}")
  groups = int(feature_group_count)
  if (x.shape[-1] != kernel.shape[2] * groups or kernel.shape[3] % groups):
    raise ValueError(
        f"channels do not match: x {x.shape}, kernel {kernel.shape}, "
        f"feature_group_count={groups}")
  return _conv2d(x, kernel, dilation, groups)


class Conv(nn.Module):
  """A drop-in for stride-1 ``nn.Conv(padding="SAME")``, via :func:`conv2d`.

  The parameters (``kernel [kh, kw, C_in / groups, features]`` and optional
  ``bias [features]``) have ``nn.Conv``'s names, shapes and initializers, so
  checkpoints and parameter trees do not change.

  Attributes:
    features: output channels.
    kernel_size: ``(kh, kw)`` (or an int for a square kernel).
    dilation: the kernel dilation, an int or ``(dh, dw)``.
    feature_group_count: feature groups (``C_in`` makes it depthwise).
    use_bias: whether to add a bias.
    kernel_init: the kernel initializer (``nn.Conv``'s default).
    bias_init: the bias initializer (``nn.Conv``'s default).
  """

  features: int
  kernel_size: int | Sequence[int]
  dilation: int | Sequence[int] = 1
  feature_group_count: int = 1
  use_bias: bool = False
  kernel_init: Callable = nn.initializers.lecun_normal()
  bias_init: Callable = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel_size = self.kernel_size
    if isinstance(kernel_size, int):
      kernel_size = (kernel_size, kernel_size)
    dilation = self.dilation
    if isinstance(dilation, int):
      dilation = (dilation, dilation)
    in_features = x.shape[-1]
    if in_features % self.feature_group_count:
      raise ValueError(
          f"input channels {in_features} are not divisible by "
          f"feature_group_count={self.feature_group_count}")
    kernel = self.param(
        "kernel", self.kernel_init,
        (*kernel_size, in_features // self.feature_group_count,
         self.features), jnp.float32)
    kernel = kernel.astype(x.dtype)
    y = conv2d(x, kernel, dilation=tuple(dilation),
               feature_group_count=self.feature_group_count)
    if self.use_bias:
      bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
      y = y + bias.astype(x.dtype)
    return y
