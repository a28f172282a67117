"""Native XLA:CPU kernels for the kernel gradients of stride-1 convolutions.

Why: the kernel (weight) gradients are where XLA:CPU falls furthest behind
a hand-tuned CPU library on the child networks' small-channel convolutions
(``cpu_kernels.cc`` says how, benchmarks/README.md "Speed against plain
PyTorch" measures it). This module compiles ``cpu_kernels.cc`` into a shared
library with the system C++ compiler the first time a gradient is traced,
caches it, and registers its two XLA FFI handlers for the CPU platform.
:func:`depthwise_kernel_grad` and :func:`dense_kernel_grad` then call them
on CPU (``lax.platform_dependent``: GPU and TPU keep XLA's own kernels) and
fall back to the same math in ``jax.numpy`` wherever the library is missing.
Values equal XLA's up to float32 summation order (``tests/test_cpu_kernels.py``).

Where the library lives: ``$NAS_JAX_KERNEL_CACHE``, else
``$XDG_CACHE_HOME/nas_jax/cpu_kernels`` (``~/.cache``), one file per source,
compiler, jaxlib and CPU (it is built with ``-march=native``). The compiler
is ``$CXX``, else ``c++`` or ``g++`` on ``PATH``. ``NAS_JAX_CPU_KERNELS=0``
turns the native kernels off; a failed build is logged once and the run goes
on with the ``jax.numpy`` path. A cached library that does not load (a
damaged file) is rebuilt.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import pathlib
import shutil
import subprocess
import tempfile
import threading
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
from jax import lax

ENV = "NAS_JAX_CPU_KERNELS"
CACHE_ENV = "NAS_JAX_KERNEL_CACHE"
SOURCE = pathlib.Path(__file__).with_suffix(".cc")
FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC")
_TARGETS = {"depthwise": ("nas_jax_depthwise_kernel_grad",
                          "NasJaxDepthwiseKernelGrad"),
            "dense": ("nas_jax_dense_kernel_grad", "NasJaxDenseKernelGrad"),
            "conv": ("nas_jax_conv", "NasJaxConv")}
MAX_DEPTHWISE_TAPS = 49  # the accumulators of cpu_kernels.cc (7x7)
# The native convolution keeps one block of 16 output channels in registers;
# with more, XLA's own (blocked for wide layers) was measured faster: 20
# channels 6.7 vs 3.6 ms, 64 channels 1.5 vs 1.1 ms (benchmarks/README.md).
MAX_CONV_OUT_CHANNELS = 16

_lock = threading.Lock()
_state: dict = {}
_log = logging.getLogger(__name__)


def cache_dir() -> pathlib.Path:
  if os.environ.get(CACHE_ENV):
    return pathlib.Path(os.environ[CACHE_ENV]).expanduser()
  root = os.environ.get("XDG_CACHE_HOME") or os.path.join(
      os.path.expanduser("~"), ".cache")
  return pathlib.Path(root) / "nas_jax" / "cpu_kernels"


def _compiler() -> str | None:
  for name in (os.environ.get("CXX"), "c++", "g++"):
    if name and shutil.which(name):
      return shutil.which(name)
  return None


def _cpu_signature() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith(("flags", "Features")):
          return line
  except OSError:
    pass
  return os.uname().machine


def _build(cxx: str) -> pathlib.Path:
  """Compiles the library unless a cached one exists; returns its path."""
  version = subprocess.run([cxx, "--version"], capture_output=True,
                           text=True, timeout=60).stdout
  key = hashlib.sha256("\0".join([
      SOURCE.read_text(), version, jax.__version__, jaxlib.__version__,
      _cpu_signature(), " ".join(FLAGS)]).encode()).hexdigest()[:16]
  out = cache_dir() / f"cpu_kernels_{key}.so"
  if out.exists():
    return out
  out.parent.mkdir(parents=True, exist_ok=True)
  # Build under a temporary name, then rename: concurrent processes (test
  # workers, hosts sharing a home directory) never load a half-written file.
  fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
  os.close(fd)
  try:
    proc = subprocess.run(
        [cxx, *FLAGS, "-I", jax.ffi.include_dir(), str(SOURCE), "-o", tmp],
        capture_output=True, text=True, timeout=600)
    if proc.returncode:
      raise RuntimeError(f"{cxx} failed:\n{proc.stderr[-2000:]}")
    os.replace(tmp, out)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return out


def status() -> str:
  """``"loaded <path>"``, ``"off: <reason>"`` or ``"not built yet"``."""
  return _state.get("status", "not built yet")


def available() -> bool:
  """Whether the native kernels are registered (building them on first
  call). Never raises: a failure is logged once and returns False."""
  if "ok" in _state:
    return _state["ok"]
  with _lock:
    if "ok" in _state:
      return _state["ok"]
    if os.environ.get(ENV, "").strip().lower() in ("0", "off", "false", "no"):
      _state.update(ok=False, status=f"off: ${ENV} is off")
      return False
    cxx = _compiler()
    if cxx is None:
      _state.update(ok=False, status="off: no C++ compiler ($CXX, c++, g++)")
      _log.warning("nas_jax: no C++ compiler found; convolution kernel "
                   "gradients use XLA's slower CPU path (install g++ or set "
                   "$CXX to get the native kernels)")
      return False
    try:
      path = _build(cxx)
      try:
        lib = ctypes.cdll.LoadLibrary(str(path))
      except OSError as e:  # a damaged cache file: build it again, once
        _log.warning("nas_jax: the cached native kernels %s do not load "
                     "(%s); rebuilding them", path, e)
        path.unlink(missing_ok=True)
        path = _build(cxx)
        lib = ctypes.cdll.LoadLibrary(str(path))
      for target, symbol in _TARGETS.values():
        jax.ffi.register_ffi_target(
            target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
    except Exception as e:  # noqa: BLE001  (any failure: fall back, loudly)
      _state.update(ok=False, status=f"off: build or load failed: {e}")
      _log.warning("nas_jax: native CPU kernels unavailable (%s); using "
                   "XLA's CPU path", e)
      return False
    _state.update(ok=True, status=f"loaded {path}", lib=lib)
    return True


def _varying_axes(a: jax.Array) -> set:
  """The shard_map mesh axes ``a`` varies over (empty outside)."""
  aval = jax.typeof(a)
  mat = getattr(aval, "mat", None)  # JAX >= 0.10: a ManualAxisType
  if mat is not None and hasattr(mat, "varying"):
    return set(mat.varying)
  return set(getattr(aval, "vma", ()))  # earlier releases


def _call(target: str, out_shape: Sequence[int], operands, **attrs
          ) -> jax.Array:
  """Calls an FFI target on float32 ``operands``; int64 attributes."""
  call = jax.ffi.ffi_call(
      target, jax.ShapeDtypeStruct(tuple(out_shape), jnp.float32),
      vmap_method="broadcast_all")
  out = call(*(a.astype(jnp.float32) for a in operands),
             **{k: np.int64(v) for k, v in attrs.items()})
  # Inside shard_map the inputs vary over mesh axes; a custom call's result
  # carries no such type, so give it the inputs' (as any jnp op would).
  varying = tuple(sorted(set().union(*(_varying_axes(a) for a in operands))))
  return lax.pcast(out, varying, to="varying") if varying else out


def _kernel_grad(kind: str, x: jax.Array, g: jax.Array,
                 out_shape: Sequence[int], kernel_hw, dilation,
                 pads) -> jax.Array:
  (kh, kw), (dh, dw), ((ph, _), (pw, _)) = kernel_hw, dilation, pads
  return _call(_TARGETS[kind][0], out_shape, (x, g), kh=kh, kw=kw, dh=dh,
               dw=dw, ph=ph, pw=pw)


def _on_cpu(native: Callable, portable: Callable, *args) -> jax.Array:
  """``native`` where the computation runs on CPU, ``portable`` elsewhere."""
  return lax.platform_dependent(*args, cpu=native, default=portable)


def depthwise_kernel_grad(x: jax.Array, g: jax.Array, kernel_hw, dilation,
                          pads, portable: Callable) -> jax.Array:
  """``[kh, kw, C]``: sum over batch and pixels of the tap-shifted, padded
  ``x`` times ``g`` (both ``[B, H, W, C]``); ``portable(x, g)`` computes the
  same in ``jax.numpy`` and runs where the native kernel cannot."""
  kh, kw = kernel_hw
  if (kh * kw > MAX_DEPTHWISE_TAPS or x.dtype != jnp.float32
      or not available()):
    return portable(x, g)
  native = lambda x, g: _kernel_grad("depthwise", x, g,
                                     (kh, kw, x.shape[-1]), kernel_hw,
                                     dilation, pads)
  return _on_cpu(native, portable, x, g)


def dense_kernel_grad(x: jax.Array, g: jax.Array, kernel_hw, dilation, pads,
                      portable: Callable) -> jax.Array:
  """``[kh, kw, C_in, C_out]``: the kernel gradient of a dense stride-1
  ``SAME`` convolution of ``x [B, H, W, C_in]`` whose output gradient is
  ``g [B, H, W, C_out]``; ``portable(x, g)`` as above."""
  kh, kw = kernel_hw
  if x.dtype != jnp.float32 or not available():
    return portable(x, g)
  native = lambda x, g: _kernel_grad("dense", x, g,
                                     (kh, kw, x.shape[-1], g.shape[-1]),
                                     kernel_hw, dilation, pads)
  return _on_cpu(native, portable, x, g)


def conv(x: jax.Array, kernel: jax.Array, dilation, pads,
         portable: Callable) -> jax.Array:
  """``[B, H, W, C_out]``: the dense stride-1 convolution of ``x [B, H, W,
  C_in]`` with ``kernel [kh, kw, C_in, C_out]``, padded ``pads`` (``SAME``:
  output size = input size); ``portable(x, kernel)`` as above."""
  (ph, ph_after), (pw, pw_after) = pads
  kh, kw = kernel.shape[:2]
  same = (ph + ph_after == (kh - 1) * dilation[0]
          and pw + pw_after == (kw - 1) * dilation[1])
  if (not same or kernel.shape[-1] > MAX_CONV_OUT_CHANNELS
      or x.dtype != jnp.float32 or kernel.dtype != jnp.float32
      or not available()):
    return portable(x, kernel)

  native = lambda x, kernel: _call(
      _TARGETS["conv"][0], (*x.shape[:-1], kernel.shape[-1]), (x, kernel),
      dh=dilation[0], dw=dilation[1], ph=ph, pw=pw)
  return _on_cpu(native, portable, x, kernel)
