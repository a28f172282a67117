"""The factorised (per-decision softmax) policy: hand-computed log-probs,
entropies and REINFORCE / PPO updates, exact re-scoring, sampling
frequencies."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nas_jax import algorithms
from nas_jax.controllers import make_controller
from nas_jax.spaces import registry


def _np_log_softmax(x):
  x = np.asarray(x, np.float64)
  return x - np.log(np.sum(np.exp(x)))


def _params(ctrl, table):
  params = ctrl.init(jax.random.key(0))
  return {"logits": jnp.asarray(table, jnp.float32).reshape(
      params["logits"].shape)}


NB201 = registry.get("nasbench201")  # 6 decisions x 5 ops
TABLE = np.array([[1.0, 0.0, 0.0, 0.0, 0.0],
                  [0.0, 2.0, 0.0, -1.0, 0.0],
                  [0.0] * 5,
                  [0.5, 0.5, 0.0, 0.0, 0.0],
                  [0.0] * 5,
                  [0.0, 0.0, 0.0, 0.0, 3.0]])


def test_log_prob_and_entropy_match_hand_computation():
  ctrl = make_controller(NB201, policy="factorized", temperature=2.0)
  params = _params(ctrl, TABLE)
  arch = np.array([0, 1, 2, 3, 4, 4])
  r = ctrl.rescore(params, jnp.asarray(arch))
  rows = [_np_log_softmax(row / 2.0) for row in TABLE]
  lp = sum(row[a] for row, a in zip(rows, arch))
  ent = -sum(np.sum(np.exp(row) * row) for row in rows)
  np.testing.assert_allclose(float(r.log_prob), lp, rtol=1e-6)
  np.testing.assert_allclose(float(r.entropy), ent, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(r.log_probs),
                             [row[a] for row, a in zip(rows, arch)],
                             rtol=1e-6)
  # Golden: row 0 at temperature 2, op 0: 0.5 - log(e^0.5 + 4).
  np.testing.assert_allclose(float(r.log_probs[0]),
                             0.5 - np.log(np.exp(0.5) + 4), rtol=1e-6)


def test_init_is_nb201_scale_and_padded_choices_never_sampled():
  # enas_rnn(4): pointer decisions with 1..3 choices beside 4-way OPs.
  space = registry.get("enas_rnn", num_nodes=4)
  ctrl = make_controller(space, policy="factorized")
  params = ctrl.init(jax.random.key(0))
  assert params["logits"].shape == (space.num_decisions,
                                    int(space.num_choices.max()))
  assert float(jnp.std(params["logits"])) < 3e-3  # 1e-3 * N(0, 1)
  zero = {"logits": jnp.zeros_like(params["logits"])}
  keys = jax.random.split(jax.random.key(1), 2000)
  r = jax.jit(jax.vmap(ctrl.sample, (None, 0)))(zero, keys)
  assert bool(jnp.all(space.is_valid(r.arch)))
  np.testing.assert_allclose(r.log_prob, -np.sum(np.log(space.num_choices)),
                             rtol=1e-6)


@pytest.mark.parametrize("name,kw", [("nasbench201", {}),
                                     ("nasrl", {}), ("nasnet", {})])
def test_sampled_log_prob_is_bit_identical_to_rescore(name, kw):
  space = registry.get(name, **kw)
  ctrl = make_controller(space, policy="factorized", init_scale=0.5)
  params = ctrl.init(jax.random.key(2))
  r = jax.jit(jax.vmap(ctrl.sample, (None, 0)))(
      params, jax.random.split(jax.random.key(3), 64))
  rs = jax.jit(jax.vmap(ctrl.rescore, (None, 0)))(params, r.arch)
  np.testing.assert_array_equal(np.asarray(r.log_prob), np.asarray(rs.log_prob))
  np.testing.assert_array_equal(np.asarray(r.entropy), np.asarray(rs.entropy))


def test_sampling_frequencies_follow_the_softmax():
  ctrl = make_controller(NB201, policy="factorized")
  params = _params(ctrl, TABLE)
  n = 20000
  r = jax.jit(jax.vmap(ctrl.sample, (None, 0)))(
      params, jax.random.split(jax.random.key(4), n))
  arch = np.asarray(r.arch)
  for t in (0, 1, 5):
    p = np.exp(_np_log_softmax(TABLE[t]))
    freq = np.bincount(arch[:, t], minlength=5) / n
    np.testing.assert_allclose(freq, p, atol=5 * np.sqrt(0.25 / n))


def test_reinforce_step_with_factorized_policy_matches_hand_gradient():
  # SGD makes the update the plain gradient: for REINFORCE with one
  # architecture, d(-A log p(a))/d logits_t = -A (onehot(a_t) - softmax_t).
  ctrl = make_controller(NB201, policy="factorized")
  params = _params(ctrl, TABLE)
  lr, decay = 0.5, 0.9
  algo = algorithms.reinforce(ctrl, batch_size=2, baseline_decay=decay,
                              optimizer=optax.sgd(lr))
  state = algo.init(jax.random.key(0))._replace(
      params=params, baseline=jnp.asarray(0.6),
      num_updates=jnp.asarray(3, jnp.int32))
  state = state._replace(opt_state=optax.sgd(lr).init(params))
  archs = np.array([[0, 1, 2, 3, 4, 4], [1, 1, 0, 0, 2, 3]])
  rewards = np.array([0.9, 0.5])
  new = jax.jit(algo.feedback)(state, jnp.asarray(archs),
                               jnp.asarray(rewards))
  probs = np.exp(np.stack([_np_log_softmax(r) for r in TABLE]))
  grad = np.zeros_like(TABLE)
  for a, rwd in zip(archs, rewards):
    adv = rwd - 0.6  # baseline_update="after": the old baseline
    grad += -adv * (np.eye(5)[a] - probs) / 2
  np.testing.assert_allclose(np.asarray(new.params["logits"]),
                             TABLE - lr * grad, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(float(new.baseline), 0.9 * 0.6 + 0.1 * 0.7,
                             rtol=1e-6)


def test_ppo_first_step_with_factorized_policy_is_reinforce_step():
  ctrl = make_controller(NB201, policy="factorized")
  params = _params(ctrl, TABLE)
  archs = jnp.asarray([[0, 1, 2, 3, 4, 4], [1, 1, 0, 0, 2, 3]])
  rewards = jnp.asarray([0.9, 0.5])
  out = []
  for ratio in ("architecture", "decision"):
    algo = algorithms.ppo(ctrl, batch_size=2, num_epochs=1, ratio=ratio,
                          optimizer=optax.sgd(0.5))
    s = algo.init(jax.random.key(0))._replace(params=params)
    s = s._replace(opt_state=optax.sgd(0.5).init(params))
    out.append(jax.jit(algo.feedback)(s, archs, rewards).params["logits"])
  rf = algorithms.reinforce(ctrl, batch_size=2, optimizer=optax.sgd(0.5))
  s = rf.init(jax.random.key(0))._replace(params=params)
  s = s._replace(opt_state=optax.sgd(0.5).init(params))
  want = jax.jit(rf.feedback)(s, archs, rewards).params["logits"]
  for got in out:
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5,
                               atol=1e-7)


def test_unknown_policy_and_bad_values_name_the_field():
  with pytest.raises(ValueError, match="controller.policy"):
    make_controller(NB201, policy="gru")
  with pytest.raises(ValueError, match="controller.temperature"):
    make_controller(NB201, policy="factorized", temperature=0.0)


def test_policy_mode_is_the_argmax_of_valid_choices():
  from nas_jax.controllers import factorized
  space = registry.get("enas_rnn", num_nodes=4)  # 1..3-way pointers
  ctrl = make_controller(space, policy="factorized")
  logits = np.zeros(ctrl.init(jax.random.key(0))["logits"].shape)
  logits[:, -1] = 5.0  # the padded last column must never win
  logits[0, 0] = 1.0
  mode = np.asarray(factorized.policy_mode(space, {"logits": jnp.asarray(
      logits, jnp.float32)}))
  nc = np.asarray(space.num_choices)
  want = np.where(nc == logits.shape[1], logits.shape[1] - 1, 0)
  want[0] = 0 if nc[0] < logits.shape[1] else logits.shape[1] - 1
  np.testing.assert_array_equal(mode, want)
  assert bool(space.is_valid(jnp.asarray(mode)[None])[0])
