"""The native XLA:CPU kernel gradients (``nas_jax.children.cpu_kernels``)
against the ``jax.numpy`` forms they replace, and their fallbacks."""

import functools
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from nas_jax.children import conv
from nas_jax.children import cpu_kernels

needs_native = pytest.mark.skipif(
    cpu_kernels._compiler() is None,
    reason="no C++ compiler: the native CPU kernels cannot be built")


@pytest.fixture(autouse=True)
def _native_built_where_a_compiler_exists():
  # A compiler that cannot build the kernels is a failure, not a skip.
  if cpu_kernels._compiler() is not None:
    assert cpu_kernels.available(), cpu_kernels.status()


def _same_pads(kernel_hw, dilation):
  return conv._same_padding(kernel_hw, dilation)


def _depthwise(x, g, kernel_hw, dilation):
  pads = _same_pads(kernel_hw, dilation)
  return cpu_kernels.depthwise_kernel_grad(
      x, g, kernel_hw, dilation, pads, portable=functools.partial(
          conv._depthwise_kernel_grad, kernel_hw=kernel_hw,
          dilation=dilation, pads=pads))


def _dense(x, g, kernel_hw, dilation):
  pads = _same_pads(kernel_hw, dilation)
  return cpu_kernels.dense_kernel_grad(
      x, g, kernel_hw, dilation, pads, portable=functools.partial(
          conv._dense_kernel_grad, dilation=dilation, pads=pads))


def _lowered(fn, *args) -> str:
  return jax.jit(fn).lower(*args).as_text()


def _operands(shape_x, c_out, seed=0):
  kx, kg = jax.random.split(jax.random.key(seed))
  x = jax.random.normal(kx, shape_x, jnp.float32)
  g = jax.random.normal(kg, (*shape_x[:-1], c_out), jnp.float32)
  return x, g


def _autodiff_kernel_grad(x, g, kernel_shape, dilation, groups):
  """The kernel gradient by JAX's own autodiff of XLA's convolution."""
  kernel = jnp.zeros(kernel_shape, jnp.float32)
  f = lambda k: lax.conv_general_dilated(
      x, k, (1, 1), _same_pads(kernel_shape[:2], dilation),
      rhs_dilation=dilation, dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=groups)
  return jax.vjp(f, kernel)[1](g)[0]


@needs_native
@pytest.mark.parametrize("shape,kernel_hw,dilation", [
    ((2, 7, 9, 16), (3, 3), (1, 1)),
    ((3, 8, 8, 20), (5, 5), (1, 1)),   # a partial 16-channel block
    ((2, 9, 6, 3), (3, 3), (2, 2)),    # dilated, fewer than 16 channels
    ((1, 5, 5, 36), (7, 7), (1, 1)),   # the widest kernel it takes
])
def test_depthwise_kernel_grad_equals_autodiff(shape, kernel_hw, dilation):
  x, g = _operands(shape, shape[-1])
  fn = lambda x, g: _depthwise(x, g, kernel_hw, dilation)
  assert "nas_jax_depthwise_kernel_grad" in _lowered(fn, x, g)
  native = jax.jit(fn)(x, g)
  ref = _autodiff_kernel_grad(x, g, (*kernel_hw, 1, shape[-1]), dilation,
                              shape[-1])
  assert native.shape == (*kernel_hw, shape[-1]) and native.dtype == jnp.float32
  np.testing.assert_allclose(native, ref[:, :, 0, :], rtol=1e-5, atol=1e-4)


@needs_native
@pytest.mark.parametrize("shape,c_out,kernel_hw,dilation", [
    ((2, 7, 9, 16), 16, (3, 3), (1, 1)),
    ((2, 8, 8, 3), 16, (3, 3), (1, 1)),    # the stem: 3 input channels
    ((3, 6, 6, 20), 36, (5, 5), (1, 1)),   # partial blocks both ways
    ((2, 9, 7, 16), 10, (1, 7), (1, 1)),   # factorised 1x7
    ((2, 7, 9, 17), 16, (7, 1), (1, 1)),
    ((2, 9, 9, 16), 16, (3, 3), (2, 2)),   # dil_conv_3x3
])
def test_dense_kernel_grad_equals_autodiff(shape, c_out, kernel_hw, dilation):
  x, g = _operands(shape, c_out, seed=1)
  fn = lambda x, g: _dense(x, g, kernel_hw, dilation)
  assert "nas_jax_dense_kernel_grad" in _lowered(fn, x, g)
  native = jax.jit(fn)(x, g)
  ref = _autodiff_kernel_grad(x, g, (*kernel_hw, shape[-1], c_out), dilation,
                              1)
  assert native.shape == (*kernel_hw, shape[-1], c_out)
  np.testing.assert_allclose(native, ref, rtol=1e-5, atol=1e-4)


def _conv(x, kernel, dilation):
  pads = _same_pads(kernel.shape[:2], dilation)
  return cpu_kernels.conv(x, kernel, dilation, pads, portable=functools.partial(
      conv._xla_conv, dilation=dilation, pads=pads))


@needs_native
@pytest.mark.parametrize("shape,kernel_shape,dilation", [
    ((2, 7, 9, 16), (3, 3, 16, 16), (1, 1)),   # rows of 9: a tile and 1 more
    ((2, 8, 8, 3), (3, 3, 3, 16), (1, 1)),     # the stem
    ((3, 6, 13, 20), (5, 5, 20, 10), (1, 1)),  # a partial output block
    ((2, 9, 7, 16), (1, 7, 16, 16), (1, 1)),
    ((2, 9, 9, 5), (3, 3, 5, 16), (2, 2)),     # dilated
])
def test_conv_equals_xla(shape, kernel_shape, dilation):
  x, _ = _operands(shape, 1, seed=5)
  kernel = jax.random.normal(jax.random.key(6), kernel_shape)
  fn = lambda x, k: _conv(x, k, dilation)
  assert "nas_jax_conv" in _lowered(fn, x, kernel)
  want = conv._xla_conv(x, kernel, dilation,
                        _same_pads(kernel_shape[:2], dilation))
  np.testing.assert_allclose(jax.jit(fn)(x, kernel), want, rtol=1e-5,
                             atol=1e-4)


def test_wide_convolutions_stay_with_xla():
  x, _ = _operands((2, 6, 6, 16), 1, seed=7)
  kernel = jnp.ones((3, 3, 16, cpu_kernels.MAX_CONV_OUT_CHANNELS + 1))
  assert "nas_jax_conv" not in _lowered(
      lambda x, k: _conv(x, k, (1, 1)), x, kernel)


@needs_native
def test_vmapped_calls_equal_one_call_per_element():
  x, g = _operands((3, 2, 6, 6, 16), 16, seed=2)  # 3 vmapped children
  dense = lambda x, g: _dense(x, g, (3, 3), (1, 1))
  depth = lambda x, g: _depthwise(x, g, (3, 3), (1, 1))
  kernels = jax.random.normal(jax.random.key(8), (3, 3, 3, 16, 16))
  convolve = lambda x, g: _conv(x, kernels[0] * jnp.sum(g), (1, 1))
  for fn in (dense, depth, convolve):
    batched = jax.jit(jax.vmap(fn))(x, g)
    for i in range(3):
      np.testing.assert_allclose(batched[i], jax.jit(fn)(x[i], g[i]),
                                 rtol=1e-6, atol=1e-6)


@needs_native
def test_conv2d_gradients_use_the_native_kernels_and_match_lax():
  x, g = _operands((2, 8, 8, 16), 16, seed=3)
  kernel = jax.random.normal(jax.random.key(4), (3, 3, 16, 16))
  dk = jax.jit(lambda x, k, g: jax.vjp(lambda k: conv.conv2d(x, k), k)[1](g)[0])
  hlo = dk.lower(x, kernel, g).as_text()
  assert "nas_jax_dense_kernel_grad" in hlo
  np.testing.assert_allclose(
      dk(x, kernel, g), _autodiff_kernel_grad(x, g, kernel.shape, (1, 1), 1),
      rtol=1e-5, atol=1e-4)


@needs_native
def test_the_library_is_built_once_and_reused(tmp_path, monkeypatch):
  monkeypatch.setenv(cpu_kernels.CACHE_ENV, str(tmp_path))
  first = cpu_kernels._build(cpu_kernels._compiler())
  mtime = first.stat().st_mtime_ns
  second = cpu_kernels._build(cpu_kernels._compiler())
  assert second == first and second.stat().st_mtime_ns == mtime
  assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temp left


@needs_native
def test_a_damaged_cached_library_is_rebuilt(tmp_path):
  env = dict(os.environ, **{cpu_kernels.CACHE_ENV: str(tmp_path)})
  env.pop(cpu_kernels.ENV, None)
  probe = ("from nas_jax.children import cpu_kernels as c; "
           "print(c.available(), c.status())")
  first = subprocess.run([sys.executable, "-c", probe], env=env,
                         capture_output=True, text=True, timeout=300)
  assert first.stdout.startswith("True loaded"), first.stderr[-2000:]
  (library,) = tmp_path.glob("*.so")
  library.write_bytes(b"not a shared library")
  again = subprocess.run([sys.executable, "-c", probe], env=env,
                         capture_output=True, text=True, timeout=300)
  assert again.stdout.startswith("True loaded"), again.stderr[-2000:]
  assert "do not load" in again.stderr and "rebuilding" in again.stderr
  assert library.stat().st_size > 1000


_FALLBACK = textwrap.dedent("""
    import json, logging
    logging.basicConfig()
    import jax, jax.numpy as jnp
    from jax import lax
    from nas_jax.children import conv, cpu_kernels
    x = jax.random.normal(jax.random.key(0), (2, 6, 6, 16))
    g = jax.random.normal(jax.random.key(1), (2, 6, 6, 16))
    k = jnp.zeros((3, 3, 1, 16))
    f = lambda k: conv.conv2d(x, k, feature_group_count=16)
    ref = lambda k: lax.conv_general_dilated(
        x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=16)
    got = jax.jit(lambda k: jax.vjp(f, k)[1](g)[0])(k)
    want = jax.vjp(ref, k)[1](g)[0]
    print(json.dumps({"status": cpu_kernels.status(),
                      "err": float(jnp.abs(got - want).max())}))
""")


@pytest.mark.parametrize("env,status", [
    ({cpu_kernels.ENV: "0"}, "off: $NAS_JAX_CPU_KERNELS is off"),
    ({"CXX": "/bin/false"}, "off: build or load failed"),
])
def test_without_the_native_kernels_gradients_are_unchanged(tmp_path, env,
                                                            status):
  full_env = dict(os.environ, **env)
  full_env[cpu_kernels.CACHE_ENV] = str(tmp_path)  # nothing cached there
  proc = subprocess.run([sys.executable, "-c", _FALLBACK], env=full_env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out["status"].startswith(status), out
  assert out["err"] < 1e-4
  if "CXX" in env:
    assert "using XLA's CPU path" in proc.stderr
