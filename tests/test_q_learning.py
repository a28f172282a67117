"""Tabular Q-learning (Block-QNN): the seed 000 update against hand-computed
values, the schedule, replay, masking, the jitted search over seeds, the
tabular run, and SIGKILL-resume."""

from __future__ import annotations

import importlib
import importlib.util
import json
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_jax.algorithms import presets
from nas_jax.data import nasbench201 as nb201_data
from nas_jax.spaces import Decision, SearchSpace, nasbench201
from nas_jax.train import search as search_lib
from nas_jax.train import tabular_run

import test_resume  # tests/test_resume.py: how the project kills runs

# The module (``nas_jax.algorithms.q_learning`` is the function, as for ppo).
q_learning = importlib.import_module("nas_jax.algorithms.q_learning")

needs_table = pytest.mark.skipif(
    not nb201_data.default_path().is_file(),
    reason=f"NAS-Bench-201 table not found at {nb201_data.default_path()}")


def _nb201_config(variant):
  path = (pathlib.Path(__file__).resolve().parents[1] / "experiments" /
          "configs" / "nasbench201.py")
  spec = importlib.util.spec_from_file_location("nb201_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)


def _toy_space(choices=(2, 2)):
  return SearchSpace("toy", [
      Decision(name=f"d{i}", choices=tuple(f"c{j}" for j in range(n)))
      for i, n in enumerate(choices)])


def _learn(algo, archs, rewards):
  state = algo.init(jax.random.key(0))
  return algo.feedback(state, jnp.asarray(archs, jnp.int32),
                       jnp.asarray(rewards, jnp.float32))


def test_update_golden_three_state_toy():
  # Two decisions of two choices: states s0 = (t=0, start), s1 = (t=1,
  # previous choice 1), and the terminal state (value 0). alpha = 0.5,
  # gamma = 1, Q starts at 0.5, r_t = r / T (T = 2), updated last step first.
  # Episode A = (1, 0), r = 0.8 (r_t = 0.4):
  #   Q(s1, 0) = 0.5 * 0.5 + 0.5 * (0.4 + 0)            = 0.45
  #   Q(s0, 1) = 0.5 * 0.5 + 0.5 * (0.4 + max(.45, .5)) = 0.7
  # Episode B = (1, 1), r = 0.2 (r_t = 0.1):
  #   Q(s1, 1) = 0.5 * 0.5 + 0.5 * (0.1 + 0)            = 0.3
  #   Q(s0, 1) = 0.5 * 0.7 + 0.5 * (0.1 + max(.45, .3)) = 0.625
  space = _toy_space()
  algo = q_learning.q_learning(space, batch_size=2, learning_rate=0.5,
                               replay_samples=0)
  q = np.asarray(_learn(algo, [[1, 0], [1, 1]], [0.8, 0.2]).q)
  expected = np.full((2, 3, 2), 0.5, np.float32)
  expected[0, 0] = [0.5, 0.625]   # s0 (start token 0)
  expected[1, 2] = [0.45, 0.3]    # s1 (previous choice 1 -> row 2)
  np.testing.assert_allclose(q, expected, rtol=1e-6)
  state = _learn(algo, [[1, 0], [1, 1]], [0.8, 0.2])
  np.testing.assert_array_equal(q_learning.greedy(space, state), [1, 0])


def test_update_golden_final_reward_and_discount():
  space = _toy_space()
  # All the reward at the last step: Q(s1, 0) = .25 + .5 * .8 = .65;
  # Q(s0, 1) = .25 + .5 * (0 + max(.65, .5)) = .575.
  algo = q_learning.q_learning(space, learning_rate=0.5, replay_samples=0,
                               reward_shaping="final")
  q = np.asarray(_learn(algo, [[1, 0]], [0.8]).q)
  np.testing.assert_allclose([q[1, 2, 0], q[0, 0, 1]], [0.65, 0.575],
                             rtol=1e-6)
  # gamma = 0.5, r_t = 0.4: Q(s1, 0) = .45; Q(s0, 1) = .25 + .5 * (.4 + .5 *
  # .5) = .575.
  algo = q_learning.q_learning(space, learning_rate=0.5, replay_samples=0,
                               discount=0.5)
  q = np.asarray(_learn(algo, [[1, 0]], [0.8]).q)
  np.testing.assert_allclose([q[1, 2, 0], q[0, 0, 1]], [0.45, 0.575],
                             rtol=1e-6)


def test_replay_golden_and_ring_buffer():
  # A buffer of one episode replayed once: episode A is learned twice.
  # Second pass: Q(s1, 0) = .5 * .45 + .5 * .4 = .425;
  # Q(s0, 1) = .5 * .7 + .5 * (.4 + max(.425, .5)) = .8.
  space = _toy_space()
  algo = q_learning.q_learning(space, learning_rate=0.5, replay_size=1,
                               replay_samples=1)
  state = _learn(algo, [[1, 0]], [0.8])
  np.testing.assert_allclose([state.q[1, 2, 0], state.q[0, 0, 1]],
                             [0.425, 0.8], rtol=1e-6)
  # The ring keeps the most recent R episodes.
  algo = q_learning.q_learning(space, batch_size=2, replay_size=3,
                               replay_samples=4)
  state = algo.init(jax.random.key(0))
  for archs, rewards in (([[0, 0], [0, 1]], [0.1, 0.2]),
                         ([[1, 0], [1, 1]], [0.3, 0.4])):
    state = algo.feedback(state, jnp.asarray(archs), jnp.asarray(rewards))
  assert int(state.replay_size) == 3 and int(state.replay_pos) == 1
  np.testing.assert_array_equal(state.replay_archs, [[1, 1], [0, 1], [1, 0]])
  np.testing.assert_allclose(state.replay_rewards, [0.4, 0.2, 0.3])


def test_masked_choices_are_never_picked_nor_valued():
  # Decision 1 has 2 choices, the table 3 columns: column 2 is invalid.
  space = _toy_space((3, 2))
  q = jnp.full((2, 4, 3), 0.5).at[1, :, 2].set(100.0)
  valid = jnp.asarray([[True, True, True], [True, True, False]])
  new = q_learning.update_trajectory(q, jnp.asarray([2, 0]), jnp.float32(0.8),
                                     valid=valid, learning_rate=0.5)
  # s0's target: max over the valid choices of s1 = (1, prev 2) is 0.5
  # (the invalid column's 100 is ignored).
  np.testing.assert_allclose(new[0, 0, 2], 0.25 + 0.5 * (0.4 + 0.5))
  for eps in (0.0, 1.0):
    algo = q_learning.q_learning(space, batch_size=64, epsilon_start=eps,
                                 epsilon_end=eps)
    state = algo.init(jax.random.key(0))
    state = state._replace(q=state.q.at[1, :, 2].set(100.0))
    _, archs = jax.jit(algo.propose)(state, jax.random.key(1))
    assert bool(jnp.all(jax.vmap(space.is_valid)(archs)))
    # Greedy ties (all 0.5 at step 0) are broken at random.
    assert len(set(np.asarray(archs)[:, 0].tolist())) == 3


def test_epsilon_schedule():
  sched = dict(epsilon_start=1.0, epsilon_end=0.1, explore_episodes=10,
               decay_episodes=20)
  eps = q_learning.epsilon_at(jnp.asarray([0, 10, 20, 30, 100]), **sched)
  np.testing.assert_allclose(eps, [1.0, 1.0, 0.55, 0.1, 0.1], rtol=1e-6)
  algo = q_learning.q_learning(nasbench201.space(), batch_size=4, **sched)
  state = algo.init(jax.random.key(0))
  propose = jax.jit(algo.propose)
  for _ in range(5):
    state, _ = propose(state, jax.random.key(1))
  assert int(state.num_episodes) == 20
  np.testing.assert_allclose(state.epsilon, 1.0 - 0.9 * 9 / 20, rtol=1e-6)


def test_jitted_search_over_seeds_learns_a_planted_optimum():
  space = nasbench201.space()
  target = jnp.asarray([3, 1, 2, 0, 4, 3])

  def evaluate(archs):  # [m, T] -> fraction of decisions equal to target
    return jnp.mean(archs == target, axis=1)

  algo = q_learning.q_learning(space, learning_rate=0.3, explore_episodes=40,
                               decay_episodes=60, replay_samples=20)
  search = jax.jit(jax.vmap(search_lib.make_search(algo, evaluate,
                                                   max_evals=200)))
  keys = jax.random.split(jax.random.key(0), 3)
  result = search(keys)
  again = search(keys)
  np.testing.assert_array_equal(result.archs, again.archs)  # deterministic
  assert not np.array_equal(result.archs[0], result.archs[1])
  greedy = jax.vmap(lambda s: q_learning.greedy(space, s))(result.state)
  np.testing.assert_array_equal(greedy, np.tile(target, (3, 1)))
  np.testing.assert_allclose(result.best_reward, 1.0)
  # Exploring (epsilon 1) scores ~1/5 per decision, as random; exploiting
  # late in the run (epsilon 0.1) nearly every decision is right.
  rewards = np.asarray(result.rewards)
  assert np.all(rewards[:, :40].mean(axis=1) < 0.3)
  assert np.all(rewards[:, -50:].mean(axis=1) > 0.85)


@pytest.mark.parametrize("kwargs, match", [
    (dict(batch_size=0), "q_learning.batch_size must be > 0"),
    (dict(learning_rate=1.5), r"q_learning.learning_rate must be in \(0, 1\]"),
    (dict(discount=-0.1), r"q_learning.discount must be in \[0, 1\]"),
    (dict(reward_shaping="sparse"), "q_learning.reward_shaping must be one"),
    (dict(epsilon_end=2.0), r"q_learning.epsilon_end must be in \[0, 1\]"),
    (dict(replay_samples=-1), "q_learning.replay_samples must be >= 0"),
    (dict(batch_size=8, replay_size=4),
     r"q_learning.replay_size must be >= q_learning.batch_size \(8\)"),
])
def test_bad_options_name_the_field(kwargs, match):
  with pytest.raises(ValueError, match=match):
    q_learning.q_learning(_toy_space(), **kwargs)


def test_preset_and_config_build_through_the_one_builder():
  config = _nb201_config("q_learning")
  assert config.algorithm == "q_learning"
  assert config.q_learning.to_dict() == presets.get(
      "nb201_q_learning").options
  algo = tabular_run.build_algorithm(config, nasbench201.space())
  assert algo.name == "q_learning" and algo.batch_size == 1


TABULAR_ARGS = [
    "--config=experiments/configs/nasbench201.py:q_learning",
    "--config.num_seeds=2", "--config.max_evals=120",
    "--config.time_budget=0", "--config.rounds_per_checkpoint=4",
    "--config.q_learning.explore_episodes=20",
    "--config.q_learning.decay_episodes=40",
    "--config.q_learning.replay_samples=10"]


@needs_table
def test_tabular_run_sigkill_resume_is_exact(tmp_path, monkeypatch):
  monkeypatch.setenv("PYTHONPATH", str(test_resume.ROOT))  # this checkout
  # The uninterrupted reference, in this process (same config as the flags).
  ref = tmp_path / "ref"
  config = _nb201_config("q_learning")
  config.update_from_flattened_dict({
      "num_seeds": 2, "max_evals": 120, "time_budget": 0.0,
      "rounds_per_checkpoint": 4, "q_learning.explore_episodes": 20,
      "q_learning.decay_episodes": 40, "q_learning.replay_samples": 10})
  tabular_run.run(config, str(ref))
  summary = json.loads((ref / "summary.json").read_text())
  assert summary["algorithm"] == "q_learning"
  assert summary["mean_num_evals"] == 120
  workdir = tmp_path / "run"
  assert test_resume._kill_and_resume(TABULAR_ARGS, workdir, tmp_path,
                                      kills=1, seed=3) >= 1
  keys = ("seed", "step", "arch", "reward", "cost")
  assert test_resume._history(workdir, keys) == test_resume._history(ref,
                                                                      keys)
  assert (json.loads((workdir / "best.json").read_text())
          == json.loads((ref / "best.json").read_text()))


@needs_table
def test_benchmark_script_quick_mode(tmp_path):
  # The PNAS row compiles an LSTM ensemble for ~30 s: benchmarked, not here.
  env = dict(test_resume._env(), PYTHONPATH=str(test_resume.ROOT))
  out_json = tmp_path / "more.json"
  proc = subprocess.run(
      [sys.executable, "benchmarks/nasbench201_more.py", "--quick",
       "--algorithms", "nb201_random,nb201_q_learning", "--out_json",
       str(out_json)], cwd=test_resume.ROOT, env=env, capture_output=True,
      text=True, timeout=600)
  assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
  assert "Q-learning (Block-QNN, tabular)" in proc.stdout
  rows = json.loads(out_json.read_text())["results"]
  assert [r["algorithm"] for r in rows] == ["nb201_random",
                                            "nb201_q_learning"]
  assert all(r["runs"] == 4 and 80 < r["mean_test_acc"] < 95 for r in rows)
