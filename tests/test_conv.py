"""Tests of :mod:`nas_jax.children.conv`: same values and gradients as JAX.

The custom VJP must reproduce autodiff of ``lax.conv_general_dilated`` for
every convolution the op library uses, at top level, under ``jit`` and inside
a ``lax.switch`` branch (the case it was written for).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from nas_jax.children import conv

# (kernel_size, dilation, depthwise)
CASES = [
    ((1, 1), 1, False),
    ((3, 3), 1, False),
    ((5, 5), 1, False),
    ((7, 7), 1, False),
    ((1, 3), 1, False),
    ((3, 1), 1, False),
    ((1, 7), 1, False),
    ((7, 1), 1, False),
    ((3, 3), 2, False),
    ((3, 3), 1, True),
    ((5, 5), 1, True),
    ((7, 7), 1, True),
    ((3, 3), 2, True),
]
SHAPES = [(2, 9, 9, 4), (3, 8, 6, 5), (1, 4, 7, 3)]
ATOL = 1e-4


def _ids(case):
  (kh, kw), d, dw = case
  return f"{kh}x{kw}-d{d}" + ("-dw" if dw else "")


def _setup(case, shape, out_features=None, seed=0):
  (kh, kw), d, depthwise = case
  c = shape[-1]
  groups = c if depthwise else 1
  cout = c if (depthwise or out_features is None) else out_features
  kx, kk, kg = jax.random.split(jax.random.key(seed), 3)
  x = jax.random.normal(kx, shape)
  kernel = jax.random.normal(kk, (kh, kw, c // groups, cout))
  g = jax.random.normal(kg, shape[:-1] + (cout,))
  return x, kernel, g, d, groups


def _reference(x, kernel, d, groups):
  return lax.conv_general_dilated(
      x, kernel, (1, 1), "SAME", rhs_dilation=(d, d),
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=groups)


def _ours(x, kernel, d, groups):
  return conv.conv2d(x, kernel, dilation=(d, d), feature_group_count=groups)


def _grads(fn, x, kernel, g, d, groups):
  loss = lambda x, k: jnp.sum(fn(x, k, d, groups) * g)
  return jax.grad(loss, argnums=(0, 1))(x, kernel)


def _assert_close(a, b):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=ATOL,
                             rtol=1e-4)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_forward_and_gradients_match_autodiff(case, shape):
  x, kernel, g, d, groups = _setup(case, shape, out_features=6)
  _assert_close(_ours(x, kernel, d, groups), _reference(x, kernel, d, groups))
  for ours, ref in zip(_grads(_ours, x, kernel, g, d, groups),
                       _grads(_reference, x, kernel, g, d, groups)):
    assert ours.shape == ref.shape
    _assert_close(ours, ref)


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_gradients_match_under_jit_and_inside_switch(case):
  x, kernel, g, d, groups = _setup(case, (2, 9, 9, 4), seed=1)

  def switched(fn):
    # Branch 1 holds the conv; branch 0 is a decoy so the switch is real.
    def loss(x, k, index):
      branches = [lambda x, k: jnp.sum(x) * 0.0 + jnp.sum(k) * 0.0,
                  lambda x, k: jnp.sum(fn(x, k, d, groups) * g)]
      return lax.switch(index, branches, x, k)
    return jax.jit(jax.grad(loss, argnums=(0, 1)))

  expected = _grads(_reference, x, kernel, g, d, groups)
  jitted = jax.jit(lambda x, k: _grads(_ours, x, k, g, d, groups))(x, kernel)
  in_switch = switched(_ours)(x, kernel, jnp.int32(1))
  for got in (jitted, in_switch):
    for ours, ref in zip(got, expected):
      _assert_close(ours, ref)
  zero = switched(_ours)(x, kernel, jnp.int32(0))
  assert all(not bool(jnp.any(z)) for z in zero)


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_module_is_a_drop_in_for_flax_conv(case):
  (kh, kw), d, depthwise = case
  x = jax.random.normal(jax.random.key(2), (2, 9, 9, 4))
  groups = 4 if depthwise else 1
  features = 4 if depthwise else 6
  ours = conv.Conv(features, (kh, kw), dilation=d,
                   feature_group_count=groups)
  ref = nn.Conv(features, (kh, kw), padding="SAME", kernel_dilation=d,
                feature_group_count=groups, use_bias=False)
  key = jax.random.key(3)
  v_ours, v_ref = ours.init(key, x), ref.init(key, x)
  # Same names, shapes and initial values (the same initializer and key).
  assert jax.tree.structure(v_ours) == jax.tree.structure(v_ref)
  _assert_close(v_ours["params"]["kernel"], v_ref["params"]["kernel"])
  _assert_close(ours.apply(v_ref, x), ref.apply(v_ref, x))

  def loss(module, variables, x):
    return jnp.sum(jnp.sin(module.apply(variables, x)))

  g_ours = jax.grad(loss, argnums=(1, 2))(ours, v_ref, x)
  g_ref = jax.grad(loss, argnums=(1, 2))(ref, v_ref, x)
  for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_ref)):
    _assert_close(a, b)


def test_bias_matches_flax_conv():
  x = jax.random.normal(jax.random.key(4), (2, 5, 5, 3))
  ours = conv.Conv(4, 3, use_bias=True)
  ref = nn.Conv(4, (3, 3), padding="SAME", use_bias=True)
  v = ref.init(jax.random.key(5), x)
  assert (jax.tree.structure(ours.init(jax.random.key(5), x))
          == jax.tree.structure(v))
  _assert_close(ours.apply(v, x), ref.apply(v, x))


def test_rejects_mismatched_channels():
  with pytest.raises(ValueError, match="channels do not match"):
    conv.conv2d(jnp.zeros((1, 4, 4, 3)), jnp.zeros((3, 3, 2, 4)))


@pytest.mark.parametrize("depthwise_as_shifts", [True, False])
@pytest.mark.parametrize("groups,cout", [(2, 6), (4, 4), (4, 8)])
def test_grouped_convolutions(monkeypatch, groups, cout, depthwise_as_shifts):
  """Both depthwise code paths, and groups with several channels each."""
  monkeypatch.setattr(conv, "_DEPTHWISE_AS_SHIFTS", depthwise_as_shifts)
  kx, kk, kg = jax.random.split(jax.random.key(6), 3)
  x = jax.random.normal(kx, (2, 7, 8, 4))
  for (kh, kw), d in (((3, 3), 1), ((5, 5), 1), ((3, 3), 2), ((1, 7), 1)):
    kernel = jax.random.normal(kk, (kh, kw, 4 // groups, cout))
    g = jax.random.normal(kg, (2, 7, 8, cout))
    _assert_close(_ours(x, kernel, d, groups),
                  _reference(x, kernel, d, groups))
    for ours, ref in zip(_grads(_ours, x, kernel, g, d, groups),
                         _grads(_reference, x, kernel, g, d, groups)):
      _assert_close(ours, ref)
