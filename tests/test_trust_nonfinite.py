"""Non-finite rewards (issue 7, item 7) into every algorithm, the host loop
and the jitted loop; and the host loop's progress lines (item 3)."""

import logging
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_jax import algorithms
from nas_jax.controllers import make_controller
from nas_jax.evaluators.tabular import Evaluation, TabularEvaluator
from nas_jax.spaces import registry
from nas_jax.train import host_search
from nas_jax.train.search import make_search

SPACE = registry.get("seed003_small")
CTRL = make_controller(SPACE, hidden_size=8)
ALGOS = {
    "reinforce": algorithms.reinforce(CTRL, batch_size=4, learning_rate=0.1),
    "ppo": algorithms.ppo(CTRL, batch_size=4, minibatch_size=2,
                          num_epochs=2, learning_rate=0.1),
    "evolution": algorithms.regularized_evolution(
        SPACE, population_size=4, sample_size=2, batch_size=4),
    "random": algorithms.random_search(SPACE, batch_size=4),
}
BAD = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf, "3e38": 3e38}


def _equal(a, b):
  return all(bool(jnp.array_equal(x, y, equal_nan=True)) for x, y in
             zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _finite(tree):
  return all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(tree)
             if jnp.issubdtype(x.dtype, jnp.floating))


@pytest.mark.parametrize("name", sorted(ALGOS))
def test_a_non_finite_reward_never_updates_an_algorithm(name):
  algo = ALGOS[name]
  feedback = jax.jit(algo.feedback)
  state = algo.init(jax.random.key(0))
  state, archs = jax.jit(algo.propose)(state, jax.random.key(1))
  good = jnp.array([0.5, 0.7, 0.6, 0.9])
  after_good = feedback(state, archs, good)
  for label, value in BAD.items():
    rewards = good.at[2].set(value)
    skipped = feedback(state, archs, rewards)
    assert _equal(skipped, state), label  # not one number changed
    # The search goes on: a later finite batch updates as it would have.
    assert _equal(feedback(skipped, archs, good), after_good), label
  assert _finite(after_good)
  if name in ("reinforce", "ppo"):
    assert not _equal(after_good.params, state.params)


def test_non_finite_reward_under_vmap_skips_only_that_seed():
  algo = ALGOS["evolution"]
  state = algo.init(jax.random.key(0))
  state, archs = algo.propose(state, jax.random.key(1))
  rewards = jnp.array([[0.5, 0.7, 0.6, 0.9], [0.5, jnp.nan, 0.6, 0.9]])
  out = jax.jit(jax.vmap(algo.feedback, (None, None, 0)))(state, archs,
                                                          rewards)
  assert out.size.tolist() == [4, 0]  # the NaN seed stored nothing
  assert np.isfinite(np.asarray(out.fitness[0])).all()


class _Poisoned:
  """A table evaluator whose given architectures score NaN."""

  def __init__(self, poisoned_index: int, value=np.nan):
    table = np.linspace(0.1, 0.9, SPACE.num_architectures)
    self.inner = TabularEvaluator(SPACE, table)
    self.space = SPACE
    self.poisoned = poisoned_index
    self.value = value

  def __call__(self, archs):
    ev = self.inner(archs)
    idx = np.asarray(SPACE.index(archs))
    reward = np.where(idx == self.poisoned, self.value, np.asarray(ev.reward))
    return Evaluation(reward, np.asarray(ev.cost))


def test_host_loop_skips_with_a_warning_naming_the_architecture(caplog):
  evaluate = _Poisoned(poisoned_index=-1)
  first = host_search.run(ALGOS["ppo"], evaluate, jax.random.key(0),
                          num_rounds=1, heartbeat_seconds=0)
  victim = first.records[0].arch
  evaluate.poisoned = int(SPACE.index(victim))
  with caplog.at_level(logging.WARNING):
    result = host_search.run(ALGOS["ppo"], evaluate, jax.random.key(0),
                             num_rounds=3, heartbeat_seconds=0)
  assert SPACE.to_text(victim) in caplog.text
  assert "skipping this round's update" in caplog.text
  assert np.isfinite(result.best.reward)  # best ignores NaN
  assert result.best.reward == max(r.reward for r in result.records
                                   if np.isfinite(r.reward))
  assert _finite(result.state.params)
  with pytest.raises(host_search.NonFiniteRewardError,
                     match=re.escape(SPACE.to_text(victim))):
    host_search.run(ALGOS["ppo"], evaluate, jax.random.key(0), num_rounds=3,
                    nonfinite="error", heartbeat_seconds=0)


def test_best_so_far_ignores_a_nan_seen_first():
  evaluate = _Poisoned(poisoned_index=-1)
  first = host_search.run(ALGOS["random"], evaluate, jax.random.key(3),
                          num_rounds=1, heartbeat_seconds=0)
  evaluate.poisoned = int(SPACE.index(first.records[0].arch))
  result = host_search.run(ALGOS["random"], evaluate, jax.random.key(3),
                           num_rounds=2, heartbeat_seconds=0)
  assert np.isnan(result.records[0].reward)
  assert np.isfinite(result.best.reward)


def test_jitted_search_best_ignores_nan():
  table = np.linspace(0.1, 0.9, SPACE.num_architectures)

  def evaluate(archs):
    idx = SPACE.index(archs)
    reward = jnp.asarray(table, jnp.float32)[idx]
    # The best architecture of the table reads NaN: never the best.
    reward = jnp.where(idx == SPACE.num_architectures - 1, jnp.nan, reward)
    return Evaluation(reward, jnp.zeros_like(reward))

  algo = algorithms.random_search(SPACE, batch_size=4)
  search = make_search(algo, evaluate, SPACE.num_decisions, max_evals=200)
  result = jax.jit(search)(jax.random.key(0))
  seen = np.asarray(result.rewards)[: int(result.num_evals)]
  assert np.isnan(seen).any()  # the NaN was seen ...
  assert float(result.best_reward) == np.nanmax(seen)  # ... and ignored


class _Clock:
  """A fake clock the evaluator advances: round 1 costs 100 s (as if it
  compiled), every later round 10 s."""

  def __init__(self):
    self.t = 0.0
    self.calls = 0

  def __call__(self):
    return self.t


def test_eta_uses_steady_rounds_only(caplog):
  clock = _Clock()
  table = TabularEvaluator(SPACE, np.linspace(0.1, 0.9,
                                              SPACE.num_architectures))

  def evaluate(archs):
    clock.t += 100.0 if clock.calls == 0 else 10.0
    clock.calls += 1
    return table(archs)

  rounds = 6
  with caplog.at_level(logging.INFO):
    host_search.run(ALGOS["random"], evaluate, jax.random.key(0),
                    num_rounds=rounds, clock=clock, heartbeat_seconds=0)
  lines = [r.getMessage() for r in caplog.records
           if r.getMessage().startswith("round ") and "|" in r.getMessage()]
  assert "compiling" in caplog.text  # said before the first round
  assert "ETA after the next round" in lines[0]
  # After round 2 the true remaining time is 4 rounds x 10 s = 40 s; an ETA
  # from the mean including round 1 would say 4 x 55 s = 3m40s.
  assert lines[1].endswith("10.0s/round | ETA 0m40s"), lines[1]
  assert lines[2].endswith("ETA 0m30s"), lines[2]


class _CachingEvaluator:
  """Trains (on a fake clock) only children it has not seen: 10 s each."""

  def __init__(self, clock, reward):
    self.clock, self.reward, self.cache = clock, reward, {}
    self.trained = []  # new children per call

  def __call__(self, archs):
    new = {a.tobytes() for a in archs} - self.cache.keys()
    self.cache.update(dict.fromkeys(new, self.reward))
    self.clock.t += 10.0 * len(new) + (100.0 if not self.trained else 0.0)
    self.trained.append(len(new))
    n = len(archs)
    return Evaluation(jnp.full((n,), self.reward, jnp.float32),
                      jnp.zeros((n,), jnp.float32))


@pytest.mark.parametrize("name", ["reinforce", "evolution"])
def test_eta_counts_the_children_still_to_train(caplog, name):
  """With a reward cache, later rounds re-propose trained children and cost
  less. The ETA replays the search ahead with the rewards known so far; with
  a constant reward that replay is exact, so after round 2 the ETA is the
  true remaining time: 10 s per child still to train plus 1 s per round."""
  clock = _Clock()
  evaluate = _CachingEvaluator(clock, 0.5)

  def on_round(r, state, ev):
    clock.t += 1.0  # the controller update, history, checkpoint

  rounds = 12
  with caplog.at_level(logging.INFO):
    host_search.run(ALGOS[name], evaluate, jax.random.key(3),
                    num_rounds=rounds, clock=clock, heartbeat_seconds=0,
                    on_round=on_round)
  lines = [r.getMessage() for r in caplog.records
           if r.getMessage().startswith("round ") and "|" in r.getMessage()]
  later = evaluate.trained[2:]
  assert sum(later) < 4 * (rounds - 2)  # some children were re-proposed
  true_left = 10.0 * sum(later) + 1.0 * (rounds - 2)
  eta = re.search(r"ETA (\d+)m(\d+)s$", lines[1])
  assert eta, lines[1]
  assert int(eta[1]) * 60 + int(eta[2]) == true_left, (lines[1], later)
  # The mean round so far times the rounds left is another figure.
  per = float(re.search(r"([\d.]+)s/round", lines[1])[1])
  assert abs(per * (rounds - 2) - true_left) >= 10.0, (per, true_left)


def test_table_with_impossible_values_is_refused_on_load(tmp_path):
  # One load (parsing 15,625 rows is the cost); the first bad column in
  # file order is named: NaN test accuracy, a negative cost and an accuracy
  # of 1e6 are all refused by the same check.
  import csv
  from nas_jax.data import nasbench201 as nb201_data
  src = nb201_data.default_path()
  if not src.is_file():
    pytest.skip(f"NAS-Bench-201 table not found at {src}")
  with open(src, newline="") as f:
    rows = list(csv.DictReader(f))
  rows[123]["test_acc_200ep"] = "nan"
  rows[456]["train_seconds_per_epoch"] = "-3"
  rows[789]["valid_acc_12ep"] = "1e6"
  path = tmp_path / "nb201.csv"
  with open(path, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
  with pytest.raises(ValueError, match="column valid_acc_12ep holds 1 value.*"
                     "1000000.0.*corrupt"):
    nb201_data.load(path)


def test_a_long_round_is_not_silent(caplog):
  """While a round runs (compiling, training), a line every few seconds."""
  import time as time_lib
  table = TabularEvaluator(SPACE, np.linspace(0.1, 0.9,
                                              SPACE.num_architectures))

  def slow(archs):
    time_lib.sleep(0.6)
    return table(archs)

  with caplog.at_level(logging.INFO):
    host_search.run(ALGOS["random"], slow, jax.random.key(0), num_rounds=1,
                    heartbeat_seconds=0.1)
  beats = [r.getMessage() for r in caplog.records
           if "so far)" in r.getMessage()]
  assert len(beats) >= 2, caplog.text
  assert beats[0].startswith("round 1/1: compiling")
