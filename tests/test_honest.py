"""Honest comparisons: the tuning script selects without any test column, the
new algorithm options match hand-computed values, and the LSTM policy's
sampled log-probability is bit-identical to its re-scoring on the largest
landed spaces."""

import importlib
import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nas_jax import algorithms
from nas_jax.algorithms import losses
from nas_jax.controllers import make_controller
from nas_jax.data import nasbench201 as nb201_data
from nas_jax.spaces import registry

ROOT = pathlib.Path(__file__).resolve().parents[1]


# -- the EMA baseline options ------------------------------------------------


def _nb201_ema(rewards, momentum):
  """NAS-Bench-201's ExponentialMovingAverage (exps/algos/reinforce.py),
  restated: numerator / denominator, updated with the reward first."""
  num = den = 0.0
  advantages = []
  for r in rewards:
    num = momentum * num + (1 - momentum) * r
    den = momentum * den + (1 - momentum)
    advantages.append(r - num / den)
  return advantages


REWARDS = [0.8, 0.6, 0.9, 0.7, 0.75]


def _run_baseline(decay, update, debias):
  fn = losses.make_baseline(decay, update, debias)
  b, out = jnp.zeros(()), []
  for n, r in enumerate(REWARDS):
    adv, b = fn(b, jnp.asarray(n, jnp.int32), jnp.asarray([r]))
    out.append(float(adv[0]))
  return out


def test_debiased_before_update_baseline_is_nb201s_ema():
  np.testing.assert_allclose(_run_baseline(0.9, "before", True),
                             _nb201_ema(REWARDS, 0.9), rtol=1e-5, atol=1e-6)
  # Golden: second step 0.6 - (0.09 * 0.8 + 0.1 * 0.6) / 0.19.
  np.testing.assert_allclose(_run_baseline(0.9, "before", True)[1],
                             0.6 - (0.072 + 0.06) / 0.19, rtol=1e-5)


def test_after_and_before_updates_hand_values():
  # "after" (default; NAS-RL): b starts at the first reward, the advantage
  # uses the baseline of earlier rewards.
  b1 = 0.8
  b2 = 0.9 * b1 + 0.1 * 0.6
  np.testing.assert_allclose(_run_baseline(0.9, "after", False)[:3],
                             [0.0, 0.6 - b1, 0.9 - b2], rtol=1e-5, atol=1e-7)
  # "before" (ENAS code): the baseline takes the reward first.
  np.testing.assert_allclose(_run_baseline(0.9, "before", False)[:3],
                             [0.0, 0.6 - b2, 0.9 - (0.9 * b2 + 0.1 * 0.9)],
                             rtol=1e-5, atol=1e-7)
  # "after" debiased: first batch its own mean, then b_n / (1 - 0.9^n).
  np.testing.assert_allclose(_run_baseline(0.9, "after", True)[:3],
                             [0.0, 0.6 - 0.8,
                              0.9 - (0.072 + 0.06) / 0.19],
                             rtol=1e-5, atol=1e-7)


def test_reinforce_paper_variant_update_is_nb201s():
  # Two steps of NB201's REINFORCE with SGD on the factorised policy: the
  # advantage is reward - bias-corrected EMA including that reward.
  space = registry.get("nasbench201")
  ctrl = make_controller(space, policy="factorized")
  lr = 0.3
  algo = algorithms.reinforce(ctrl, batch_size=1, baseline_decay=0.9,
                              baseline_update="before", debias_baseline=True,
                              optimizer=optax.sgd(lr))
  state = algo.init(jax.random.key(0))
  logits = np.asarray(state.params["logits"], np.float64)
  archs = [np.array([0, 1, 2, 3, 4, 0]), np.array([0, 0, 0, 0, 0, 0])]
  feedback = jax.jit(algo.feedback)
  for arch, adv, r in zip(archs, _nb201_ema([0.8, 0.6], 0.9), [0.8, 0.6]):
    state = feedback(state, jnp.asarray(arch[None]), jnp.asarray([r]))
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    logits = logits + lr * adv * (np.eye(5)[arch] - p)
  np.testing.assert_allclose(np.asarray(state.params["logits"]), logits,
                             rtol=1e-5, atol=1e-7)


def test_bad_option_values_name_the_field():
  ctrl = make_controller(registry.get("nasbench201"), policy="factorized")
  with pytest.raises(ValueError, match="baseline_update"):
    algorithms.reinforce(ctrl, baseline_update="during")
  with pytest.raises(ValueError, match="ratio"):
    algorithms.ppo(ctrl, ratio="token")


# -- PPO options ---------------------------------------------------------------


def test_per_decision_clip_loss_golden():
  lp = jnp.asarray([-1.0, -2.0])
  old = jnp.asarray([-1.5, -1.9])
  # ratios e^0.5 = 1.6487 (clipped to 1.2) and e^-0.1 = 0.9048 (kept).
  want = -(1.2 * 2.0 + np.exp(-0.1) * 2.0)
  got = losses.ppo_clip_loss_per_decision(lp, old, jnp.asarray(2.0), 0.2)
  np.testing.assert_allclose(float(got), want, rtol=1e-6)
  # The per-architecture ratio e^0.4 = 1.49 clips the whole: -1.2 * 2.
  whole = losses.ppo_clip_loss(jnp.sum(lp), jnp.sum(old), jnp.asarray(2.0),
                               0.2)
  np.testing.assert_allclose(float(whole), -2.4, rtol=1e-6)


def test_normalized_advantages_first_step_golden():
  # One full-batch SGD step at ratio 1 is REINFORCE with advantages
  # (A - mean) / std: hand gradient on the factorised policy.
  space = registry.get("nasbench201")
  ctrl = make_controller(space, policy="factorized")
  lr = 0.5
  algo = algorithms.ppo(ctrl, batch_size=3, num_epochs=1,
                        normalize_advantages=True, optimizer=optax.sgd(lr))
  state = algo.init(jax.random.key(1))
  logits = np.asarray(state.params["logits"], np.float64)
  archs = np.array([[0, 1, 2, 3, 4, 0], [1, 1, 1, 1, 1, 1],
                    [4, 3, 2, 1, 0, 0]])
  rewards = np.array([0.9, 0.5, 0.6])
  new = jax.jit(algo.feedback)(state, jnp.asarray(archs),
                               jnp.asarray(rewards))
  adv = rewards - rewards.mean()  # first round: baseline = its mean
  adv = (adv - adv.mean()) / (adv.std() + 1e-8)
  p = np.exp(logits - logits.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  step = sum(a * (np.eye(5)[x] - p) for a, x in zip(adv, archs)) / 3
  np.testing.assert_allclose(np.asarray(new.params["logits"]),
                             logits + lr * step, rtol=1e-5, atol=1e-6)


# -- REA tournament ------------------------------------------------------------


def _parents(with_replacement, n=4000):
  # P = S = 2, population full: fitness 1 for member 0 and 0 for member 1.
  # Each member differs from the other everywhere, so the child shows its
  # parent (mutation changes one of 6 decisions).
  space = registry.get("nasbench201")
  algo = algorithms.regularized_evolution(
      space, population_size=2, sample_size=2,
      with_replacement=with_replacement)
  state = algo.init(jax.random.key(0))
  state = state._replace(
      population=jnp.asarray([[0] * 6, [1] * 6], jnp.int32),
      fitness=jnp.asarray([1.0, 0.0]), size=jnp.asarray(2, jnp.int32))
  keys = jax.random.split(jax.random.key(5), n)
  children = jax.jit(jax.vmap(lambda k: algo.propose(state, k)[1][0]))(keys)
  return np.asarray(np.sum(np.asarray(children) == 0, axis=1) >= 5)


def test_tournament_with_replacement_draws_the_weaker_twice_a_quarter():
  from_best = _parents(True)
  # The weaker member wins only when drawn twice: probability 1/4.
  np.testing.assert_allclose(1 - from_best.mean(), 0.25,
                             atol=5 * np.sqrt(0.25 * 0.75 / len(from_best)))
  assert _parents(False).all()  # distinct contestants: always the fittest


# -- exactness of the LSTM policy's log-probabilities --------------------------


@pytest.mark.parametrize("name", ["nasbench201", "enas_micro", "nasnet",
                                  "nasrl"])
def test_lstm_sample_log_prob_is_bit_identical_to_rescore(name):
  # Default sizes: 6 decisions (unrolled rollout); 40, 50 and 39 decisions
  # (scanned): sampling and re-scoring take the same path at every size.
  space = registry.get(name)
  ctrl = make_controller(space, hidden_size=8)
  params = ctrl.init(jax.random.key(0))
  r = jax.jit(jax.vmap(ctrl.sample, (None, 0)))(
      params, jax.random.split(jax.random.key(1), 16))
  rs = jax.jit(jax.vmap(ctrl.rescore, (None, 0)))(params, r.arch)
  np.testing.assert_array_equal(np.asarray(r.log_prob), np.asarray(rs.log_prob))
  np.testing.assert_array_equal(np.asarray(r.log_probs),
                                np.asarray(rs.log_probs))
  # The per-decision terms (PPO's per-decision ratio) sum to the total.
  np.testing.assert_allclose(np.sum(np.asarray(r.log_probs), -1),
                             np.asarray(r.log_prob), rtol=1e-6)


# -- the tuning script never reads a test column -------------------------------


def _synthetic_table(seed):
  rng = np.random.default_rng(seed)
  n = registry.get("nasbench201").num_architectures
  valid12 = rng.uniform(60, 90, n).astype(np.float32)
  return nb201_data.NasBench201Table(
      benchmark_index=np.arange(n, dtype=np.int32),
      valid_acc_12ep=valid12,
      valid_acc_200ep=(valid12 + rng.normal(5, 1, n)).astype(np.float32),
      test_acc_200ep=(valid12 + rng.normal(6, 1, n)).astype(np.float32),
      train_seconds_per_epoch=rng.uniform(5, 15, n).astype(np.float32))


def _tune_module():
  sys.path.insert(0, str(ROOT / "benchmarks"))
  return importlib.import_module("tune_nasbench201")


def _rows(out_dir):
  """The rows without their wall times (which differ between calls)."""
  rows = [json.loads(l) for l in (out_dir / "tune_rows.jsonl").open()]
  for r in rows:
    del r["group_wall_s"]
  return rows


def test_tuning_selection_unchanged_when_test_column_is_noise(tmp_path):
  tune = _tune_module()
  grid = tune._grid("reinforce", [dict(policy="factorized")],
                    [dict(batch_size=1)],
                    learning_rate=(0.003, 0.1, 0.3), entropy_weight=(0.0,),
                    baseline_decay=(0.9,))
  table = _synthetic_table(0)
  noisy = table._replace(test_acc_200ep=np.random.default_rng(9).uniform(
      0, 100, table.test_acc_200ep.shape).astype(np.float32))
  kw = dict(grid=grid, stage1_runs=4, stage2_runs=4, top_k=2,
            time_budget=3000.0)
  a = tune.tune(table, tmp_path / "a", **kw)
  b = tune.tune(noisy, tmp_path / "b", **kw)
  assert a["selected"] == b["selected"]
  rows_a = (tmp_path / "a" / "tune_rows.jsonl").read_text()
  assert _rows(tmp_path / "a") == _rows(tmp_path / "b")
  # The report-only column did change, so a leak would have shown.
  assert ((tmp_path / "a" / "tune_table.md").read_text()
          != (tmp_path / "b" / "tune_table.md").read_text())
  # Resuming re-runs nothing and selects the same.
  c = tune.tune(table, tmp_path / "a", **kw)
  assert c["selected"] == a["selected"]
  assert (tmp_path / "a" / "tune_rows.jsonl").read_text() == rows_a
