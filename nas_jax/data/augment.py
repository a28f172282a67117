"""Batch image augmentations in pure jax.numpy, with explicit keys.

Every function takes a key and a batch ``[N, H, W, C]`` (float32 in the input
pipeline; any dtype works), draws independent randomness for each image, and
returns a batch of the same shape and dtype. They are jitted (sizes are
static arguments), trace into a caller's ``jit``, and ``vmap`` over extra
leading axes (e.g. one batch per device) with a batch of keys.

Apply them to normalized images, as the NASNet / ENAS / DARTS CIFAR-10
pipelines apply cutout: zero then means the data set's mean colour, both in
the crop padding and in the cutout square.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax


def _check_batch(images: jax.Array) -> None:
  if images.ndim != 4:
    raise ValueError(f"expected images [N, H, W, C], got shape {images.shape}")


@functools.partial(jax.jit, static_argnames=("padding",))
def random_crop(key: jax.Array, images: jax.Array, padding: int) -> jax.Array:
  """Zero-pads each side by ``padding``, then crops back to H x W at a
  uniformly random offset per image (padding 0 is the identity)."""
  _check_batch(images)
  if padding < 0:
    raise ValueError(f"padding must be >= 0, got {padding}")
  if padding == 0:
    return images
  n, h, w, c = images.shape
  padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding),
                            (0, 0)))
  offsets = jax.random.randint(key, (n, 2), 0, 2 * padding + 1)
  crop = lambda img, o: lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, c))
  return jax.vmap(crop)(padded, offsets)


@jax.jit
def random_flip(key: jax.Array, images: jax.Array) -> jax.Array:
  """Mirrors each image left-right with probability 1/2."""
  _check_batch(images)
  flip = jax.random.bernoulli(key, 0.5, (images.shape[0],))
  return jnp.where(flip[:, None, None, None], images[:, :, ::-1, :], images)


@functools.partial(jax.jit, static_argnames=("size",))
def cutout_at(images: jax.Array, centers: jax.Array, size: int) -> jax.Array:
  """Zeros a ``size`` x ``size`` square centred at ``centers`` (int [N, 2],
  row and column) in each image, clipped where it crosses the border.

  The square covers rows ``cy - size // 2`` to ``cy - size // 2 + size - 1``
  (likewise for columns), so for odd sizes it is centred exactly.
  """
  _check_batch(images)
  if size < 0:
    raise ValueError(f"size must be >= 0, got {size}")
  _, h, w, _ = images.shape
  top = centers[:, 0, None] - size // 2           # [N, 1]
  left = centers[:, 1, None] - size // 2
  rows = jnp.arange(h)[None, :]
  cols = jnp.arange(w)[None, :]
  in_rows = (rows >= top) & (rows < top + size)   # [N, H]
  in_cols = (cols >= left) & (cols < left + size)  # [N, W]
  mask = in_rows[:, :, None, None] & in_cols[:, None, :, None]
  return jnp.where(mask, jnp.zeros((), images.dtype), images)


@functools.partial(jax.jit, static_argnames=("size",))
def cutout(key: jax.Array, images: jax.Array, size: int) -> jax.Array:
  """Cutout (DeVries & Taylor, 2017): zeros a ``size`` x ``size`` square at a
  uniformly random centre per image. As in the paper the centre may lie near
  the border, so the square is clipped there and can cover fewer pixels."""
  _check_batch(images)
  if size == 0:
    return images
  n, h, w, _ = images.shape
  kr, kc = jax.random.split(key)
  centers = jnp.stack([jax.random.randint(kr, (n,), 0, h),
                       jax.random.randint(kc, (n,), 0, w)], axis=1)
  return cutout_at(images, centers, size)


@functools.partial(jax.jit, static_argnames=("cutout_size",))
def standard_cifar(key: jax.Array, images: jax.Array,
                   cutout_size: int = 0) -> jax.Array:
  """The standard CIFAR-10 augmentation of NAS papers: random crop with 4
  pixels of zero padding, random horizontal flip, then cutout when
  ``cutout_size`` > 0 (NASNet, ENAS and DARTS use 16)."""
  k_crop, k_flip, k_cut = jax.random.split(key, 3)
  images = random_flip(k_flip, random_crop(k_crop, images, 4))
  if cutout_size:
    images = cutout(k_cut, images, cutout_size)
  return images
