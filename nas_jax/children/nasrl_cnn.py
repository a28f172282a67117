"""The NAS-RL layered CNN (Zoph & Le, "Neural Architecture Search with
Reinforcement Learning", ICLR 2017, Sec. 3.1 and 3.3) for the space
``nasrl`` (``nas_jax.spaces.nasrl``).

Layer ``i`` is a ``filter_height x filter_width`` convolution with
``num_filters`` filters and (if searched) a stride, then BN and ReLU. Its
input is the depth concatenation of the earlier layers its skip bits select,
with the paper's rules (Sec. 3.3):

* inputs of different spatial sizes are zero-padded to the largest (we pad
  at the bottom and right, so every tensor keeps its top-left corner);
* a layer with no input takes the image (layer 0 always does);
* the layers that no later layer reads are concatenated (zero-padded to a
  common size) and sent to the classifier (global average pool, dense).

Without skip connections (``skip_connections=False``) layer ``i`` reads
layer ``i - 1``. A stride-``s`` layer keeps every ``s``-th row and column of
its stride-1 ``SAME`` convolution, starting at the first: ``floor(h / s)``
rows (a trailing partial stride is dropped), so stride products larger than
the image leave no pixel -- :func:`validate` and :func:`check_image_size`
reject such codes and configs before anything is compiled.

One program for every child of a depth (``NasrlCNN`` with ``fixed_arch=None``,
the arch a traced ``int32`` array; DESIGN.md, abstraction 5):

* every layer output lives on an image-sized canvas ``[B, H, W, 64]``: the
  child's tensor in the top-left ``h x w`` corner, zeros elsewhere (which is
  exactly the paper's zero padding to a common size);
* kernels are ``7 x 7 x C_in_max x 64``, multiplied by a mask that keeps the
  centred ``fh x fw`` window, the selected sources' real channels and the
  layer's ``num_filters`` outputs. The concatenation of selected inputs is
  the concatenation of *all* earlier canvases times their skip bits: one
  conv on it equals the conv of the child's concatenation (the masked rows
  see zeros or are zero);
* the stride is a gather of rows ``0, s, 2s, ...`` of the full-resolution
  convolution and a mask of the ``floor(h / s)`` valid rows; BN statistics
  are taken over the valid region only (``BatchNorm(mask=...)``);
* kernels are initialised with the child's own fan-in (LeCun normal), so a
  padded child starts from the same distribution as the static one.

The static network (``fixed_arch`` a tuple of ints) builds only the chosen
sizes with plain ``flax.linen.Conv``; :func:`static_variables` cuts a padded
network's variables down to it, and ``tests/test_nasrl_cnn.py`` checks that
both compute the same outputs and gradients.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nas_jax.children import conv as conv_lib
from nas_jax.children import ops as ops_lib
from nas_jax.spaces import base
from nas_jax.spaces import nasrl

MAX_KERNEL = max(nasrl.FILTER_SIZES)
MAX_FILTERS = max(nasrl.NUM_FILTERS)
# lecun_normal's truncated normal (in [-2, 2]) has this standard deviation.
_TRUNC_STD = 0.87962566103423978


class Layout(NamedTuple):
  """Where layer ``i``'s decisions sit in an arch of the space."""

  height: tuple[int, ...]
  width: tuple[int, ...]
  filters: tuple[int, ...]
  stride: tuple[int, ...] | None  # None: strides are not searched (all 1)
  skips: tuple[int, ...] | None  # offset of layer i's first skip bit


def layout(num_layers: int, search_strides: bool,
           skip_connections: bool) -> Layout:
  """Positions of each layer's decisions (``nasrl.space``'s order)."""
  h, w, f, s, k = [], [], [], [], []
  pos = 0
  for i in range(num_layers):
    h.append(pos)
    w.append(pos + 1)
    f.append(pos + 2)
    pos += 3
    if search_strides:
      s.append(pos)
      pos += 1
    if skip_connections:
      k.append(pos)
      pos += i
  return Layout(tuple(h), tuple(w), tuple(f),
                tuple(s) if search_strides else None,
                tuple(k) if skip_connections else None)


def code_length(num_layers: int, search_strides: bool,
                skip_connections: bool) -> int:
  n = num_layers * (3 + bool(search_strides))
  return n + (num_layers * (num_layers - 1) // 2 if skip_connections else 0)


class Child(NamedTuple):
  """A decoded code: per layer sizes and input sets (Python ints)."""

  height: tuple[int, ...]
  width: tuple[int, ...]
  filters: tuple[int, ...]
  stride: tuple[int, ...]
  inputs: tuple[tuple[int, ...], ...]  # () means "the image"
  loose: tuple[int, ...]  # layers no later layer reads: the classifier's
  sizes: tuple[tuple[int, int], ...]  # each layer's output (h, w)


def decode(arch: Sequence[int], num_layers: int, search_strides: bool,
           skip_connections: bool,
           image_hw: Sequence[int] | None = None) -> Child:
  """The child of ``arch`` (numbers, not indices); sizes need ``image_hw``.

  ``sizes`` may contain zeros for an invalid code; :func:`validate` raises.
  """
  arch = [int(v) for v in np.asarray(arch).reshape(-1)]
  n = code_length(num_layers, search_strides, skip_connections)
  if len(arch) != n:
    raise base.InvalidArchitectureError(
        f"a nasrl code of {num_layers} layers (search_strides="
        f"{bool(search_strides)}, skip_connections={bool(skip_connections)}) "
        f"has {n} values, got {len(arch)}; build the network with the "
        f"space's num_layers / search_strides / skip_connections")
  lay = layout(num_layers, search_strides, skip_connections)
  fh = tuple(nasrl.FILTER_SIZES[arch[p]] for p in lay.height)
  fw = tuple(nasrl.FILTER_SIZES[arch[p]] for p in lay.width)
  nf = tuple(nasrl.NUM_FILTERS[arch[p]] for p in lay.filters)
  st = (tuple(nasrl.STRIDES[arch[p]] for p in lay.stride)
        if lay.stride is not None else (1,) * num_layers)
  inputs = []
  for i in range(num_layers):
    if lay.skips is None:
      inputs.append((i - 1,) if i else ())
    else:
      inputs.append(tuple(j for j in range(i) if arch[lay.skips[i] + j]))
  read = {j for ins in inputs for j in ins}
  loose = tuple(i for i in range(num_layers) if i not in read)
  sizes = []
  if image_hw is not None:
    for i in range(num_layers):
      srcs = [sizes[j] for j in inputs[i]] or [tuple(image_hw)]
      hc = max(s[0] for s in srcs)
      wc = max(s[1] for s in srcs)
      sizes.append((hc // st[i], wc // st[i]))
  return Child(fh, fw, nf, st, tuple(inputs), loose, tuple(sizes))


def validate(arch: Sequence[int], image_hw: Sequence[int], num_layers: int,
             search_strides: bool = True,
             skip_connections: bool = True) -> Child:
  """The decoded child; raises if its strides leave a layer without pixels.

  Raises:
    InvalidArchitectureError: naming the layer and the fix.
  """
  child = decode(arch, num_layers, search_strides, skip_connections,
                 image_hw)
  for i, (h, w) in enumerate(child.sizes):
    if h < 1 or w < 1:
      raise base.InvalidArchitectureError(
          f"nasrl child: the strides {child.stride[:i + 1]} shrink the "
          f"{tuple(image_hw)} image to {h}x{w} pixels at layer {i}; use "
          f"fewer stride>1 layers, larger input images, or "
          f"search_strides=False")
  return child


def check_image_size(image_hw: Sequence[int], num_layers: int,
                     search_strides: bool, what: str = "nasrl") -> None:
  """Raises a ValueError unless *every* code of the space keeps a pixel.

  The worst code is a chain of stride-3 layers (a layer with no input reads
  the full image, so skips never shrink more than the chain); cheap, for a
  binary's ``check_config``.
  """
  if not search_strides:
    return
  h = min(int(v) for v in image_hw)
  worst = max(nasrl.STRIDES) ** num_layers
  if worst > h:
    most = int(np.floor(np.log(h) / np.log(max(nasrl.STRIDES)) + 1e-9))
    raise ValueError(
        f"{what}: with search_strides=True, {num_layers} layers of stride "
        f"{max(nasrl.STRIDES)} shrink {tuple(image_hw)} images below 1 pixel "
        f"({max(nasrl.STRIDES)}^{num_layers} = {worst} > {h}); use at most "
        f"{most} layers, larger input images, or search_strides=False")


def _lecun(fan_in):
  """LeCun-normal init with a (possibly traced) fan-in."""

  def init(key, shape, dtype=jnp.float32):
    x = jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype)
    return x * (jnp.sqrt(1.0 / fan_in) / _TRUNC_STD).astype(dtype)

  return init


def _batch_norm(train: bool, name: str) -> nn.BatchNorm:
  return ops_lib._batch_norm(train, name)  # pylint: disable=protected-access


class NasrlCNN(nn.Module):
  """The NAS-RL CNN: one padded program or a static child (module doc).

  ``images [B, H, W, C], arch int32[code_length] -> logits [B, classes]``.

  Attributes:
    num_layers: the space's ``num_layers``.
    search_strides: the space's ``search_strides``.
    skip_connections: the space's ``skip_connections``.
    num_classes: classifier outputs.
    fixed_arch: the code as Python ints for a static child (only the chosen
      sizes exist); None for the padded network with ``arch`` as input.
  """

  num_layers: int = 6
  search_strides: bool = True
  skip_connections: bool = True
  num_classes: int = 10
  fixed_arch: tuple[int, ...] | None = None

  @nn.compact
  def __call__(self, images: jax.Array, arch: Any, train: bool,
               drop_rate: Any = 0.0) -> jax.Array:
    del drop_rate  # a chain of layers has no paths to drop
    L = self.num_layers
    n = code_length(L, self.search_strides, self.skip_connections)
    image_hw = images.shape[1:3]
    if self.fixed_arch is not None:
      child = validate(self.fixed_arch, image_hw, L, self.search_strides,
                       self.skip_connections)
      return self._static(images, child, train)
    check_image_size(image_hw, L, self.search_strides, type(self).__name__)
    arch = jnp.asarray(arch)
    if arch.shape != (n,):
      raise ValueError(f"{type(self).__name__} expects an architecture of "
                       f"shape ({n},), got {arch.shape}")
    return self._padded(images, arch.astype(jnp.int32), train)

  def _static(self, images, child: Child, train: bool) -> jax.Array:
    outs = []
    for i in range(self.num_layers):
      x = self._concat([outs[j] for j in child.inputs[i]] or [images])
      k = (child.height[i], child.width[i])
      s = child.stride[i]
      x = nn.Conv(child.filters[i], k, strides=(s, s),
                  padding=[((k[0] - 1) // 2,) * 2, ((k[1] - 1) // 2,) * 2],
                  use_bias=False, name=f"layer{i}_conv")(x)
      x = x[:, :child.sizes[i][0], :child.sizes[i][1]]
      x = _batch_norm(train, f"layer{i}_bn")(x)
      outs.append(nn.relu(x))
    x = self._concat([outs[j] for j in child.loose])
    x = jnp.mean(x, axis=(1, 2))  # [B, sum of the loose layers' filters]
    return nn.Dense(self.num_classes, name="classifier")(x)

  @staticmethod
  def _concat(xs: list[jax.Array]) -> jax.Array:
    """Depth concatenation, zero-padding smaller maps at bottom/right."""
    h = max(x.shape[1] for x in xs)
    w = max(x.shape[2] for x in xs)
    return jnp.concatenate(
        [jnp.pad(x, ((0, 0), (0, h - x.shape[1]), (0, w - x.shape[2]),
                     (0, 0))) for x in xs], axis=-1)

  def _padded(self, images, arch: jax.Array, train: bool) -> jax.Array:
    L, F, K = self.num_layers, MAX_FILTERS, MAX_KERNEL
    lay = layout(L, self.search_strides, self.skip_connections)
    B, H, W, C = images.shape
    sizes_f = jnp.asarray(nasrl.FILTER_SIZES, jnp.int32)
    fh = sizes_f[arch[jnp.asarray(lay.height)]]  # [L]
    fw = sizes_f[arch[jnp.asarray(lay.width)]]  # [L]
    nf = jnp.asarray(nasrl.NUM_FILTERS, jnp.int32)[
        arch[jnp.asarray(lay.filters)]]  # [L]
    if lay.stride is None:
      st = jnp.ones((L,), jnp.int32)
    else:
      st = jnp.asarray(nasrl.STRIDES, jnp.int32)[
          arch[jnp.asarray(lay.stride)]]  # [L]
    # bits[i, j]: layer i reads layer j (< i).
    if lay.skips is None:
      bits = jnp.eye(L, k=-1, dtype=jnp.int32)
    else:
      rows = []
      for i in range(L):
        row = arch[lay.skips[i]:lay.skips[i] + i]
        rows.append(jnp.pad(row, (0, L - i)))
      bits = jnp.stack(rows)  # [L, L]
    taps = jnp.arange(K)
    chan = jnp.arange(F)
    rows_hw = jnp.arange(H)
    cols_hw = jnp.arange(W)
    outs, hs, ws = [], [], []
    for i in range(L):
      sel = bits[i, :i].astype(bool)  # [i]
      no_input = ~jnp.any(sel)
      # The masked concatenation [image | layer 0 | ... | layer i-1].
      srcs = [images * no_input.astype(images.dtype)]
      in_mask = [jnp.full((C,), no_input)]
      fan = C * no_input.astype(jnp.int32)
      hc = jnp.where(no_input, H, 0)
      wc = jnp.where(no_input, W, 0)
      for j in range(i):
        srcs.append(outs[j] * sel[j].astype(images.dtype))
        in_mask.append(sel[j] & (chan < nf[j]))
        fan = fan + sel[j] * nf[j]
        hc = jnp.maximum(hc, jnp.where(sel[j], hs[j], 0))
        wc = jnp.maximum(wc, jnp.where(sel[j], ws[j], 0))
      x = jnp.concatenate(srcs, axis=-1)  # [B, H, W, C + 64 i]
      in_mask = jnp.concatenate(in_mask)  # [C + 64 i]
      # The centred fh x fw window of the 7x7 kernel (sizes are odd).
      off_h, off_w = (K - fh[i]) // 2, (K - fw[i]) // 2
      win_h = (taps >= off_h) & (taps < off_h + fh[i])
      win_w = (taps >= off_w) & (taps < off_w + fw[i])
      mask = (win_h[:, None, None, None] & win_w[None, :, None, None]
              & in_mask[None, None, :, None]
              & (chan < nf[i])[None, None, None, :])  # [K, K, Cin, F]
      kernel = self.param(f"layer{i}_kernel",
                          _lecun(fan * fh[i] * fw[i]), (K, K, x.shape[-1], F))
      y = conv_lib.conv2d(x, kernel * mask.astype(kernel.dtype))  # [B,H,W,F]
      # Stride s: rows 0, s, 2s, ... of the stride-1 conv.
      s = st[i]
      y = jnp.take(y, jnp.minimum(rows_hw * s, H - 1), axis=1)
      y = jnp.take(y, jnp.minimum(cols_hw * s, W - 1), axis=2)
      h_out, w_out = hc // s, wc // s
      valid = ((rows_hw < h_out)[:, None] & (cols_hw < w_out)[None, :])
      valid = valid[None, :, :, None]  # [1, H, W, 1]
      y = _batch_norm(train, f"layer{i}_bn")(
          y, mask=jnp.broadcast_to(valid, y.shape))
      y = nn.relu(y) * (valid & (chan < nf[i])).astype(y.dtype)
      outs.append(y)
      hs.append(h_out)
      ws.append(w_out)
    # The loose ends, padded to their common size, global-average-pooled.
    read = jnp.any(bits.astype(bool), axis=0)  # [L]: someone reads layer j
    loose = ~read
    hs, ws = jnp.stack(hs), jnp.stack(ws)
    hc = jnp.max(jnp.where(loose, hs, 0))
    wc = jnp.max(jnp.where(loose, ws, 0))
    area = jnp.maximum(hc * wc, 1).astype(images.dtype)
    feats = jnp.concatenate(
        [jnp.sum(outs[j], axis=(1, 2)) / area * loose[j].astype(images.dtype)
         for j in range(L)], axis=-1)  # [B, 64 L]
    fan = jnp.sum(jnp.where(loose, nf, 0))
    return nn.Dense(self.num_classes, kernel_init=_lecun(fan),
                    name="classifier")(feats)


def static_variables(network: NasrlCNN, variables: Any, arch: Any,
                     image_hw: Sequence[int], image_channels: int) -> Any:
  """The padded network's ``variables`` cut down to the static child
  ``arch`` (``NasrlCNN(fixed_arch=arch)``'s layout): the chosen kernel
  window, the selected sources' channels and the layer's filters."""
  child = decode(arch, network.num_layers, network.search_strides,
                 network.skip_connections, image_hw)
  K, F, C = MAX_KERNEL, MAX_FILTERS, image_channels
  params = variables["params"]
  out = {"params": {}, "batch_stats": {}}
  for i in range(network.num_layers):
    kernel = np.asarray(params[f"layer{i}_kernel"])
    oh, ow = (K - child.height[i]) // 2, (K - child.width[i]) // 2
    kernel = kernel[oh:oh + child.height[i], ow:ow + child.width[i]]
    if child.inputs[i]:
      rows = np.concatenate([C + F * j + np.arange(child.filters[j])
                             for j in child.inputs[i]])
    else:
      rows = np.arange(C)
    kernel = kernel[:, :, rows, :child.filters[i]]
    out["params"][f"layer{i}_conv"] = {"kernel": kernel}
    for col in ("params", "batch_stats"):
      out[col][f"layer{i}_bn"] = jax.tree.map(
          lambda v, i=i: np.asarray(v)[:child.filters[i]],
          variables[col][f"layer{i}_bn"])
  rows = np.concatenate([F * j + np.arange(child.filters[j])
                         for j in child.loose])
  cls = params["classifier"]
  out["params"]["classifier"] = {"kernel": np.asarray(cls["kernel"])[rows],
                                 "bias": np.asarray(cls["bias"])}
  return out


def child_param_count(space, params: Any, arch: Any) -> int:
  """Parameters of child ``arch`` (what its static network has) from the
  padded network's ``params``; the sizes come from the space and the
  parameter shapes, so no image is needed."""
  arch = space.validate(arch)
  names = [d.name for d in space.decisions]
  num_layers = sum(1 for n in names if n.endswith("/filter_height"))
  search_strides = any(n.endswith("/stride") for n in names)
  skips = any("/skip_from" in n for n in names)
  child = decode(arch, num_layers, search_strides, skips)
  image_channels = np.shape(params["layer0_kernel"])[2]
  num_classes = np.shape(params["classifier"]["bias"])[0]
  total = 0
  for i in range(num_layers):
    cin = sum(child.filters[j] for j in child.inputs[i]) or image_channels
    total += child.height[i] * child.width[i] * cin * child.filters[i]
    total += 2 * child.filters[i]  # BN scale and bias
  features = sum(child.filters[j] for j in child.loose)
  return int(total + features * num_classes + num_classes)
