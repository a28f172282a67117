"""The LSTM policy: validity, exact re-scoring, uniformity at zero logits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_jax.controllers import make_controller
from nas_jax.spaces import base, registry

SMALL = {"nasbench201": {}, "enas_micro": {"num_nodes": 2},
         "enas_macro": {"num_layers": 4}, "enas_rnn": {"num_nodes": 4},
         "nasnet": {"num_blocks": 2}, "nasrl": {"num_layers": 3},
         "seed003_small": {}, "seed003_large": {}, "nasrl_rnn": {"base": 2},
         "blockqnn": {"max_layers": 3}}


def _sample(ctrl, params, n, seed=1):
  keys = jax.random.split(jax.random.key(seed), n)
  return jax.jit(jax.vmap(ctrl.sample, (None, 0)))(params, keys)


@pytest.mark.parametrize("name", registry.names())
def test_samples_valid_and_rescored_exactly(name):
  space = registry.get(name, **SMALL[name])
  ctrl = make_controller(space, hidden_size=16, num_layers=2,
                         temperature=5.0, tanh_constant=2.5)
  params = ctrl.init(jax.random.key(0))
  r = _sample(ctrl, params, 256)
  assert r.arch.shape == (256, space.num_decisions)
  assert r.arch.dtype == jnp.int32
  assert bool(jnp.all(space.is_valid(r.arch)))
  for a in np.asarray(r.arch[:8]):
    space.validate(a)
  lp = jax.jit(jax.vmap(ctrl.log_prob, (None, 0)))(params, r.arch)
  np.testing.assert_allclose(lp, r.log_prob, rtol=1e-5, atol=1e-5)
  assert bool(jnp.all(r.log_prob < 0)) or space.num_architectures == 1
  # The entropy of the sampling distribution is at most that of uniform.
  max_ent = np.sum(np.log(space.num_choices))
  assert bool(jnp.all(r.entropy <= max_ent + 1e-4))


@pytest.mark.parametrize("name", ["enas_rnn", "nasrl", "enas_micro"])
def test_unrolled_and_scanned_rollouts_agree(name):
  space = registry.get(name, **SMALL[name])
  kw = dict(hidden_size=16, tanh_constant=2.5)
  cu = make_controller(space, unroll=True, **kw)
  cs = make_controller(space, unroll=False, **kw)
  params = cu.init(jax.random.key(3))
  ru, rs = _sample(cu, params, 64), _sample(cs, params, 64)
  np.testing.assert_array_equal(ru.arch, rs.arch)
  np.testing.assert_allclose(ru.log_prob, rs.log_prob, atol=1e-5)
  np.testing.assert_allclose(ru.entropy, rs.entropy, atol=1e-5)
  lp = jax.jit(jax.vmap(cs.log_prob, (None, 0)))(params, ru.arch)
  np.testing.assert_allclose(lp, ru.log_prob, atol=1e-5)


def _zero_logits(params):
  """Heads and attention vector at zero: every logit is exactly 0."""
  params = dict(params)
  for k in ("heads_w", "heads_b", "attn_v"):
    params[k] = jnp.zeros_like(params[k])
  return params


def test_zero_logits_give_uniform_distribution():
  # enas_rnn(4): OP decisions of 4 choices and POINTER decisions of 1..3.
  space = registry.get("enas_rnn", num_nodes=4)
  ctrl = make_controller(space, hidden_size=16)
  params = _zero_logits(ctrl.init(jax.random.key(0)))
  n = 20000
  r = _sample(ctrl, params, n)
  expected_lp = -np.sum(np.log(space.num_choices))
  np.testing.assert_allclose(r.log_prob, expected_lp, rtol=1e-5)
  np.testing.assert_allclose(r.entropy, -expected_lp, rtol=1e-5)
  arch = np.asarray(r.arch)
  for t, d in enumerate(space.decisions):
    counts = np.bincount(arch[:, t], minlength=d.num_choices)
    p = 1.0 / d.num_choices
    # 5 standard deviations of a binomial frequency.
    tol = 5 * np.sqrt(p * (1 - p) / n)
    np.testing.assert_allclose(counts / n, p, atol=tol, err_msg=d.name)
  # Joint uniformity on a pair of decisions (not just the marginals).
  pair = arch[:, 0] * 4 + arch[:, 2]
  np.testing.assert_allclose(np.bincount(pair, minlength=16) / n, 1 / 16,
                             atol=5 * np.sqrt(1 / 16 * 15 / 16 / n))


def test_zero_logit_skip_bits_are_fair_coins():
  space = registry.get("nasrl", num_layers=3, search_strides=False)
  ctrl = make_controller(space, hidden_size=8)
  params = _zero_logits(ctrl.init(jax.random.key(0)))
  r = _sample(ctrl, params, 8000)
  skip_t = [t for t, d in enumerate(space.decisions) if d.kind == base.SKIP]
  assert len(skip_t) == 3
  freq = np.asarray(r.arch)[:, skip_t].mean(0)
  np.testing.assert_allclose(freq, 0.5, atol=5 * np.sqrt(0.25 / 8000))


def test_sampling_is_deterministic_in_the_key():
  space = registry.get("enas_micro", num_nodes=2)
  ctrl = make_controller(space, hidden_size=8)
  params = ctrl.init(jax.random.key(0))
  sample = jax.jit(jax.vmap(ctrl.sample, (None, 0)))
  a, b, c = (sample(params, jax.random.split(jax.random.key(s), 32))
             for s in (7, 7, 8))
  np.testing.assert_array_equal(a.arch, b.arch)
  assert not np.array_equal(a.arch, c.arch)


def test_logit_shaping_bounds_the_logits():
  """With tanh_constant c every logit lies in [-c, c], so no decision's
  probability can drop below exp(-2c) / n relative to uniform."""
  space = registry.get("nasbench201")
  ctrl = make_controller(space, hidden_size=8, tanh_constant=0.5)
  params = ctrl.init(jax.random.key(0))
  params = jax.tree.map(lambda x: 100.0 * x, params)  # huge raw logits
  r = _sample(ctrl, params, 64)
  per_decision_min = np.log(np.exp(-0.5) / (np.exp(-0.5) + 4 * np.exp(0.5)))
  assert bool(jnp.all(r.log_prob >= 6 * per_decision_min - 1e-4))


def test_params_shapes_follow_the_space():
  space = registry.get("enas_micro", num_nodes=3)
  ctrl = make_controller(space, hidden_size=12, num_layers=2)
  p = ctrl.init(jax.random.key(0))
  assert p["lstm_0_w"].shape == (24, 48) and p["lstm_1_w"].shape == (24, 48)
  assert p["heads_w"].shape == (1, 12, 5)  # one shared ENAS op head
  assert p["init_anchors"].shape == (4, 12)  # 2 inputs x 2 cells
  assert p["embedding"].shape == (5, 12)


def test_log_prob_is_differentiable_and_jits_once_for_all_archs():
  space = registry.get("enas_rnn", num_nodes=4)
  ctrl = make_controller(space, hidden_size=8)
  params = ctrl.init(jax.random.key(0))
  traces = []

  @jax.jit
  def grad_fn(p, arch):
    traces.append(1)
    return jax.grad(ctrl.log_prob)(p, arch)

  archs = _sample(ctrl, params, 10).arch
  for a in archs:
    g = grad_fn(params, a)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(g))
  assert len(traces) == 1
