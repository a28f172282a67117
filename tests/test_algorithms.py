"""Tests of the search algorithms (nas_jax/algorithms).

The learning tests use toy spaces and toy reward tables with a unique best
architecture; the update tests recompute one optimizer step by hand from
per-architecture gradients of ``controller.log_prob`` and compare.

Compiled functions are built once at module level and reused, and they are
compiled with XLA's backend optimisation level 0: compilation, not execution,
dominates the run time of these tiny problems on a small CPU machine.
"""

from __future__ import annotations

import functools
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nas_jax import algorithms
from nas_jax.algorithms import evolution
from nas_jax.controllers import make_controller
from nas_jax.evaluators.tabular import TabularEvaluator
from nas_jax.spaces import base, registry
from nas_jax.train.search import make_search

# ``nas_jax.algorithms`` re-exports the factories under the modules' names.
rf_lib = importlib.import_module("nas_jax.algorithms.reinforce")
ppo_lib = importlib.import_module("nas_jax.algorithms.ppo")

_jit = functools.partial(
    jax.jit, compiler_options={"xla_backend_optimization_level": 0})

# -- toy problems -------------------------------------------------------------


def _toy_space(num_decisions: int, name: str) -> base.SearchSpace:
  return base.SearchSpace(name, [
      base.Decision(name=f"op{t}", choices=("a", "b", "c", "d"))
      for t in range(num_decisions)])


def _toy_table(space: base.SearchSpace, best: np.ndarray, seed: int):
  """Reward 1.0 for ``best``; every other code gets a value in [0, 0.6].

  The others rise with the number of decisions they share with ``best``
  (plus noise), so the landscape leads towards the best but has no ties.
  """
  rng = np.random.default_rng(seed)
  n = space.num_architectures
  codes = np.stack([space.from_index(i) for i in range(n)])
  matches = (codes == best).sum(-1)
  step = 0.5 / space.num_decisions
  reward = step * matches + rng.uniform(0.0, 0.1, n)
  best_index = int(space.index(jnp.asarray(best)))
  reward[best_index] = 1.0
  assert np.sum(reward == 1.0) == 1
  assert reward[np.arange(n) != best_index].max() <= 0.6
  return reward.astype(np.float32), best_index


# 3 OP decisions with 4 choices each: 64 architectures.
SPACE = _toy_space(3, "toy64")
BEST = np.array([2, 1, 3], np.int32)
REWARD, BEST_INDEX = _toy_table(SPACE, BEST, seed=0)
EVALUATOR = TabularEvaluator(SPACE, REWARD)
CTRL = make_controller(SPACE, hidden_size=16)

# 6 OP decisions with 4 choices: 4096 architectures, for evolution vs random.
BIG_SPACE = _toy_space(6, "toy4096")
BIG_BEST = np.array([3, 0, 2, 1, 1, 0], np.int32)
BIG_REWARD, _ = _toy_table(BIG_SPACE, BIG_BEST, seed=1)
BIG_EVALUATOR = TabularEvaluator(BIG_SPACE, BIG_REWARD)

NUM_UPDATES = 200
NUM_SEEDS = 4


def _tree_allclose(a, b, **kw):
  leaves = jax.tree.leaves(jax.tree.map(
      lambda x, y: np.allclose(np.asarray(x), np.asarray(y), **kw), a, b))
  return all(leaves)


def _tree_max_abs_diff(a, b):
  return max(float(jnp.max(jnp.abs(x - y)))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _as_numpy(x):
  x = jnp.asarray(x)
  if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  return np.asarray(x)


def _tree_equal(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  return len(la) == len(lb) and all(
      np.array_equal(_as_numpy(x), _as_numpy(y)) for x, y in zip(la, lb))


def _make_trainer(algo):
  """jit(vmap(key -> (P(best) at init, P(best) after training, params)))."""
  best = jnp.asarray(BEST)

  def train(key):
    k_init, k_run = jax.random.split(key)
    state0 = algo.init(k_init)

    def step(state, k):
      state, archs = algo.propose(state, k)
      return algo.feedback(state, archs, EVALUATOR(archs).reward), None

    state, _ = jax.lax.scan(step, state0,
                            jax.random.split(k_run, NUM_UPDATES))
    return (jnp.exp(CTRL.log_prob(state0.params, best)),
            jnp.exp(CTRL.log_prob(state.params, best)), state.params)

  return _jit(jax.vmap(train))


RF_TRAIN = _make_trainer(algorithms.reinforce(
    CTRL, batch_size=8, learning_rate=0.05, baseline_decay=0.9))
PPO_TRAIN = _make_trainer(algorithms.ppo(
    CTRL, batch_size=8, minibatch_size=4, num_epochs=2, learning_rate=0.05,
    baseline_decay=0.9))
TRAIN_KEYS = jax.random.split(jax.random.key(42), NUM_SEEDS)


@pytest.fixture(scope="module")
def rf_trained():
  return RF_TRAIN(TRAIN_KEYS)


@pytest.fixture(scope="module")
def ppo_trained():
  return PPO_TRAIN(TRAIN_KEYS)


# -- learning -----------------------------------------------------------------


@pytest.mark.parametrize("which", ["reinforce", "ppo"])
def test_policy_gradient_concentrates_on_the_best(which, request):
  p_init, p_final, _ = request.getfixturevalue(
      "rf_trained" if which == "reinforce" else "ppo_trained")
  p_init, p_final = np.asarray(p_init), np.asarray(p_final)
  # The initial policy is close to uniform over the 64 codes.
  np.testing.assert_allclose(p_init, 1 / 64, rtol=0.3)
  assert (p_final > 0.5).all(), (which, p_final)


def test_evolution_finds_the_best_and_beats_random_search():
  max_evals = 200
  keys = jax.random.split(jax.random.key(7), 10)
  rea = algorithms.regularized_evolution(BIG_SPACE, population_size=20,
                                         sample_size=5)
  rea_search = make_search(rea, BIG_EVALUATOR, BIG_SPACE.num_decisions,
                           max_evals=max_evals)
  rnd = algorithms.random_search(BIG_SPACE)
  rnd_search = make_search(rnd, BIG_EVALUATOR, BIG_SPACE.num_decisions,
                           max_evals=max_evals)
  rea_res = _jit(jax.vmap(rea_search))(keys)
  rnd_res = _jit(jax.vmap(rnd_search))(keys)
  assert (np.asarray(rea_res.num_evals) == max_evals).all()
  rea_found = int(np.sum(np.asarray(rea_res.best_reward) == 1.0))
  rnd_found = int(np.sum(np.asarray(rnd_res.best_reward) == 1.0))
  assert rea_found >= 9, rea_found
  # 200 uniform draws from 4096 codes hit the best with probability ~5%.
  assert rnd_found <= 3, rnd_found
  found = np.asarray(rea_res.best_reward) == 1.0
  np.testing.assert_array_equal(np.asarray(rea_res.best_arch)[found],
                                np.broadcast_to(BIG_BEST, (found.sum(), 6)))


# -- regularized evolution ----------------------------------------------------


def test_mutate_changes_exactly_one_mutable_decision():
  space = registry.get("enas_rnn")
  nc = space.num_choices
  fixed = np.flatnonzero(nc == 1)
  assert [space.decisions[t].name for t in fixed] == ["node1/prev"]
  mutable = np.flatnonzero(nc > 1)
  num_parents, num_keys = 4, 1000
  parents = jax.vmap(space.sample_uniform)(
      jax.random.split(jax.random.key(0), num_parents))
  keys = jax.random.split(jax.random.key(1), num_keys)
  mutate = _jit(jax.vmap(jax.vmap(
      lambda p, k: evolution.mutate(space, p, k), (None, 0)), (0, None)))
  children = np.asarray(mutate(parents, keys))        # [parents, keys, T]
  parents = np.asarray(parents)
  assert children.shape == (num_parents, num_keys, space.num_decisions)
  assert children.dtype == np.int32
  assert np.asarray(space.is_valid(children)).all()
  diff = children != parents[:, None, :]
  assert (diff.sum(-1) == 1).all()
  assert not diff[..., fixed].any()
  changed = diff.any(axis=(0, 1))
  np.testing.assert_array_equal(np.flatnonzero(changed), mutable)
  # A changed decision takes every other value of its range at some point.
  for p in range(num_parents):
    for t in (0, int(mutable[-1])):
      seen = set(children[p, diff[p, :, t], t].tolist())
      assert seen == set(range(nc[t])) - {int(parents[p, t])}


def test_mutate_is_identity_when_nothing_can_change():
  space = base.SearchSpace("fixed", [
      base.Decision(name="a", choices=("x",)),
      base.Decision(name="b", choices=("y",))])
  arch = jnp.zeros(2, jnp.int32)
  np.testing.assert_array_equal(
      evolution.mutate(space, arch, jax.random.key(0)), arch)


@pytest.mark.parametrize("population_size,batch_size", [(5, 1), (4, 2)])
def test_aging_keeps_exactly_the_last_children(population_size, batch_size):
  algo = algorithms.regularized_evolution(
      SPACE, population_size=population_size, sample_size=2,
      batch_size=batch_size)
  feedback = _jit(algo.feedback)
  state = algo.init(jax.random.key(0))
  assert int(state.size) == 0
  num_children = 2 * population_size + batch_size
  # Distinct codes, so membership identifies each child.
  codes = np.stack([SPACE.from_index(i) for i in range(num_children)])
  fitness = np.linspace(0.9, 0.1, num_children).astype(np.float32)
  for start in range(0, num_children, batch_size):
    sl = slice(start, start + batch_size)
    state = feedback(state, jnp.asarray(codes[sl]), jnp.asarray(fitness[sl]))
    fed = start + batch_size
    assert int(state.size) == min(fed, population_size)
    size = int(state.size)
    kept = {(tuple(c), float(f)) for c, f in zip(
        np.asarray(state.population)[:size], np.asarray(state.fitness)[:size])}
    first = max(0, fed - population_size)
    expect = {(tuple(codes[i]), float(fitness[i]))
              for i in range(first, fed)}
    assert kept == expect, (fed, kept, expect)
  # The fittest children came first, so aging removed them all.
  assert float(np.max(state.fitness)) == pytest.approx(
      fitness[num_children - population_size])


def _tournament_children(sample_size: int) -> np.ndarray:
  pop = np.array([[1, 1, 1], [0, 0, 0], [2, 2, 2], [3, 3, 3]], np.int32)
  fit = np.array([0.3, 0.9, 0.5, 0.1], np.float32)
  algo = algorithms.regularized_evolution(SPACE, population_size=4,
                                          sample_size=sample_size)
  state = evolution.EvolutionState(jnp.asarray(pop), jnp.asarray(fit),
                                   jnp.asarray(4, jnp.int32),
                                   jnp.asarray(0, jnp.int32))
  keys = jax.random.split(jax.random.key(3), 300)
  _, children = _jit(jax.vmap(algo.propose, (None, 0)))(state, keys)
  children = np.asarray(children)[:, 0]                # [keys, T]
  return (children[:, None, :] != pop[None]).sum(-1)  # distance to members


def test_tournament_over_whole_population_picks_the_fittest():
  dist = _tournament_children(sample_size=4)
  # Every child is one mutation away from the fittest member [0, 0, 0] (and
  # hence at least two away from every other member).
  assert (dist[:, 1] == 1).all()


def test_small_tournaments_pick_other_parents_too():
  dist = _tournament_children(sample_size=1)
  assert (dist.min(-1) == 1).all()
  # Each member is some child's parent.
  assert set(np.argmin(dist, -1).tolist()) == {0, 1, 2, 3}


# -- random search ------------------------------------------------------------


def test_random_search_proposals_and_feedback():
  space = registry.get("nasbench201")
  algo = algorithms.random_search(space, batch_size=5)
  state = algo.init(jax.random.key(0))
  propose = _jit(algo.propose)
  state1, archs = propose(state, jax.random.key(1))
  assert archs.shape == (5, space.num_decisions)
  assert archs.dtype == jnp.int32
  assert bool(space.is_valid(archs).all())
  assert int(state1.num_proposed) == 5
  rewards = jnp.arange(5, dtype=jnp.float32)
  state2 = _jit(algo.feedback)(state1, archs, rewards)
  assert _tree_equal(state2, state1)
  _, archs_again = propose(state1, jax.random.key(1))
  np.testing.assert_array_equal(archs_again, archs)
  _, archs_other = propose(state1, jax.random.key(2))
  assert not np.array_equal(archs_other, archs)


# -- REINFORCE and PPO updates against their formulas ---------------------------

M = 4
LR = 0.5
ARCHS1 = jnp.array([[0, 0, 0], [1, 2, 3], [3, 3, 1], [2, 1, 3]], jnp.int32)
REWARDS1 = jnp.array([0.2, 0.5, 0.1, 0.9], jnp.float32)
ARCHS2 = jnp.array([[0, 1, 2], [3, 2, 1], [1, 1, 1], [2, 0, 3]], jnp.int32)
REWARDS2 = jnp.array([0.3, 0.3, 0.8, 0.0], jnp.float32)

PARAMS0 = _jit(CTRL.init)(jax.random.key(11))
GRAD_LOG_PROB = _jit(jax.grad(CTRL.log_prob))
LOG_PROB = _jit(jax.vmap(CTRL.log_prob, (None, 0)))

RF_SGD = algorithms.reinforce(CTRL, batch_size=M, baseline_decay=0.9,
                              optimizer=optax.sgd(LR))
RF_SGD_FEEDBACK = _jit(RF_SGD.feedback)


def _sgd_reinforce_step(params, archs, rewards, baseline):
  """params - lr * grad(1/m sum_k -(R_k - b) log P(arch_k)), built from
  independent per-architecture gradients."""
  grad = jax.tree.map(jnp.zeros_like, params)
  for arch, r in zip(archs, rewards):
    g = GRAD_LOG_PROB(params, arch)
    grad = jax.tree.map(lambda acc, gi: acc - (r - baseline) * gi / len(archs),
                        grad, g)
  return jax.tree.map(lambda p, g: p - LR * g, params, grad)


def _rf_state(params):
  return rf_lib.ReinforceState(params, optax.sgd(LR).init(params),
                               jnp.zeros(()), jnp.zeros((), jnp.int32),
                               jnp.zeros(()), jnp.zeros(()))


def test_reinforce_update_matches_formula_and_baseline():
  state0 = _rf_state(PARAMS0)
  state1 = RF_SGD_FEEDBACK(state0, ARCHS1, REWARDS1)
  b1 = float(jnp.mean(REWARDS1))  # first update: the batch mean is b
  expect1 = _sgd_reinforce_step(PARAMS0, ARCHS1, REWARDS1, b1)
  assert _tree_max_abs_diff(state1.params, PARAMS0) > 1e-3
  assert _tree_allclose(state1.params, expect1, rtol=1e-4, atol=1e-6)
  assert float(state1.baseline) == pytest.approx(0.9 * b1 + 0.1 * b1)
  assert int(state1.num_updates) == 1
  # The update pushes up the log-probability of above-baseline archs.
  lp0, lp1 = LOG_PROB(PARAMS0, ARCHS1), LOG_PROB(state1.params, ARCHS1)
  assert float(lp1[3] - lp0[3]) > 0 and float(lp1[2] - lp0[2]) < 0

  # Second update: the stored baseline (not this batch's mean) is used.
  state2 = RF_SGD_FEEDBACK(state1, ARCHS2, REWARDS2)
  b2 = float(state1.baseline)
  assert b2 != pytest.approx(float(jnp.mean(REWARDS2)))
  expect2 = _sgd_reinforce_step(state1.params, ARCHS2, REWARDS2, b2)
  assert _tree_allclose(state2.params, expect2, rtol=1e-4, atol=1e-6)
  wrong = _sgd_reinforce_step(state1.params, ARCHS2, REWARDS2,
                              float(jnp.mean(REWARDS2)))
  assert not _tree_allclose(state2.params, wrong, rtol=1e-4, atol=1e-6)
  assert float(state2.baseline) == pytest.approx(
      0.9 * b2 + 0.1 * float(jnp.mean(REWARDS2)), rel=1e-6)
  assert int(state2.num_updates) == 2


def _ppo_state(params, key=jax.random.key(5)):
  return ppo_lib.PPOState(params, optax.sgd(LR).init(params), jnp.zeros(()),
                          key, jnp.zeros((), jnp.int32), jnp.zeros(()),
                          jnp.zeros(()))


PPO_ONE_EPOCH = algorithms.ppo(CTRL, batch_size=M, minibatch_size=M,
                               num_epochs=1, baseline_decay=0.9,
                               optimizer=optax.sgd(LR))
PPO_TINY_CLIP = algorithms.ppo(CTRL, batch_size=M, minibatch_size=M,
                               num_epochs=3, clip_epsilon=1e-6,
                               baseline_decay=0.9, optimizer=optax.sgd(LR))
PPO_ONE_EPOCH_FEEDBACK = _jit(PPO_ONE_EPOCH.feedback)


@pytest.fixture(scope="module")
def ppo_one_epoch_state():
  return PPO_ONE_EPOCH_FEEDBACK(_ppo_state(PARAMS0), ARCHS1, REWARDS1)


def test_ppo_first_step_is_the_reinforce_step(ppo_one_epoch_state):
  state1 = ppo_one_epoch_state
  b = float(jnp.mean(REWARDS1))
  expect = _sgd_reinforce_step(PARAMS0, ARCHS1, REWARDS1, b)
  assert _tree_max_abs_diff(state1.params, PARAMS0) > 1e-3
  assert _tree_allclose(state1.params, expect, rtol=1e-4, atol=1e-6)
  rf_state1 = RF_SGD_FEEDBACK(_rf_state(PARAMS0), ARCHS1, REWARDS1)
  assert _tree_allclose(state1.params, rf_state1.params, rtol=1e-4,
                        atol=1e-6)
  assert float(state1.baseline) == pytest.approx(b)
  assert int(state1.num_updates) == 1


def test_ppo_tiny_clip_stops_after_the_first_step(ppo_one_epoch_state):
  p1 = ppo_one_epoch_state.params
  # After the first step every ratio left the clip range on the side where
  # the clipped surrogate is flat: A > 0 and ratio > 1 + eps, or A < 0 and
  # ratio < 1 - eps. There the loss has zero gradient, so epochs 2 and 3
  # (plain SGD) leave the params where step 1 put them.
  adv = np.asarray(REWARDS1 - jnp.mean(REWARDS1))
  log_ratio = np.asarray(LOG_PROB(p1, ARCHS1) - LOG_PROB(PARAMS0, ARCHS1))
  assert (np.sign(adv) * log_ratio > 1e-3).all(), (adv, log_ratio)
  state3 = _jit(PPO_TINY_CLIP.feedback)(_ppo_state(PARAMS0), ARCHS1,
                                           REWARDS1)
  assert _tree_max_abs_diff(state3.params, PARAMS0) > 1e-3
  assert _tree_max_abs_diff(state3.params, p1) < 1e-5


# -- configuration errors -----------------------------------------------------


@pytest.mark.parametrize("factory,field", [
    (lambda: algorithms.reinforce(CTRL, batch_size=0), "batch_size"),
    (lambda: algorithms.ppo(CTRL, batch_size=0), "batch_size"),
    (lambda: algorithms.random_search(SPACE, batch_size=0), "batch_size"),
    (lambda: algorithms.regularized_evolution(SPACE, batch_size=0),
     "batch_size"),
    (lambda: algorithms.ppo(CTRL, batch_size=8, minibatch_size=3),
     "minibatch_size"),
    (lambda: algorithms.reinforce(CTRL, baseline_decay=1.0), "baseline_decay"),
    (lambda: algorithms.ppo(CTRL, baseline_decay=1.0), "baseline_decay"),
    (lambda: algorithms.reinforce(CTRL, baseline_decay=-0.1),
     "baseline_decay"),
    (lambda: algorithms.regularized_evolution(
        SPACE, population_size=10, sample_size=11), "sample_size"),
    (lambda: algorithms.regularized_evolution(SPACE, population_size=0),
     "population_size"),
    (lambda: algorithms.ppo(CTRL, num_epochs=0), "num_epochs"),
    (lambda: algorithms.ppo(CTRL, clip_epsilon=0.0), "clip_epsilon"),
    (lambda: algorithms.reinforce(CTRL, entropy_weight=-1e-4),
     "entropy_weight"),
    (lambda: algorithms.ppo(CTRL, entropy_weight=-1e-4), "entropy_weight"),
])
def test_bad_config_raises_value_error_naming_the_field(factory, field):
  with pytest.raises(ValueError, match=field):
    factory()


# -- determinism --------------------------------------------------------------


def test_same_key_same_proposals():
  algos = [
      algorithms.random_search(SPACE, batch_size=8),
      algorithms.regularized_evolution(SPACE, population_size=8,
                                       sample_size=2, batch_size=8),
      RF_SGD,
  ]
  for algo in algos:
    propose = _jit(algo.propose)
    state = (_rf_state(PARAMS0) if algo is RF_SGD
             else algo.init(jax.random.key(0)))
    _, a = propose(state, jax.random.key(9))
    _, b = propose(state, jax.random.key(9))
    _, c = propose(state, jax.random.key(10))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c), algo.name
    assert bool(SPACE.is_valid(a).all())


def test_same_key_same_updated_params(rf_trained, ppo_trained):
  # Whole training runs (propose + feedback, 200 updates) repeat bit for bit.
  for trained, train in ((rf_trained, RF_TRAIN), (ppo_trained, PPO_TRAIN)):
    again = train(TRAIN_KEYS)
    assert _tree_equal(again, trained)
    # Different seeds learn different params.
    params = trained[2]
    assert not np.array_equal(np.asarray(params["go"][0]),
                              np.asarray(params["go"][1]))
  # PPO's minibatch shuffling is driven by the state's key.
  fb = PPO_ONE_EPOCH_FEEDBACK
  s1 = fb(_ppo_state(PARAMS0), ARCHS1, REWARDS1)
  s2 = fb(_ppo_state(PARAMS0), ARCHS1, REWARDS1)
  assert _tree_equal(s1, s2)
