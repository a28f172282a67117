"""PNAS and its surrogate: one predictor training step against hand-computed
values, the folds, the progressive rounds, the jitted search over seeds,
config errors, and the tabular run with SIGKILL-resume."""

from __future__ import annotations

import importlib
import importlib.util
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_jax.algorithms import presets
from nas_jax.controllers import surrogate as surrogate_lib
from nas_jax.data import nasbench201 as nb201_data
from nas_jax.spaces import Decision, SearchSpace, nasbench201
from nas_jax.train import search as search_lib
from nas_jax.train import tabular_run

import test_q_learning  # the config loader
import test_resume  # tests/test_resume.py: how the project kills runs

pnas_lib = importlib.import_module("nas_jax.algorithms.pnas")


def _toy_space():
  return SearchSpace("toy", [Decision(name=f"d{i}", choices=("a", "b"))
                             for i in range(2)])


def test_surrogate_one_training_step_golden():
  # A logistic regression (no hidden layer) over one-hot tokens, all
  # parameters 0, so every prediction is sigmoid(0) = 0.5. Two members,
  # member k leaves out fold k (index % 2). Example 0: tokens A = (1, 1),
  # target 0.9; example 1: tokens B = (2, 2), target 0.1; example 2 is
  # masked out (it shares a token with each and would change member 0).
  # L1 loss: dL/dz = sign(0.5 - y) * sigmoid'(0) = -/+ 0.25 on the active
  # one-hot entries and the bias, so Adam's first step moves each of them
  # by lr * (-sign(g)) (m / sqrt(v) = g / |g|); the others stay 0.
  #   member 0 (sees example 1): w[B] = b = -0.1
  #   member 1 (sees example 0): w[A] = b = +0.1
  sur = surrogate_lib.make_surrogate(_toy_space(), kind="mlp",
                                     hidden_sizes=(), ensemble_size=2,
                                     learning_rate=0.1)
  params, opt_state = sur.init(jax.random.key(0))
  params = jax.tree.map(jnp.zeros_like, params)
  step, member_predictions = jax.jit(sur.train_step), jax.jit(
      sur.member_predictions)
  tokens = jnp.asarray([[1, 1], [2, 2], [1, 2]])
  targets = jnp.asarray([0.9, 0.1, 0.0])
  valid = jnp.asarray([True, True, False])
  params, _, loss = step(params, opt_state, tokens, targets, valid)
  np.testing.assert_allclose(loss, [0.4, 0.4], rtol=1e-6)
  s = jax.nn.sigmoid
  preds = np.asarray(member_predictions(params, tokens[:2]))
  np.testing.assert_allclose(preds, [[s(-0.1), s(-0.3)], [s(0.3), s(0.1)]],
                             rtol=1e-5)
  np.testing.assert_allclose(sur.predict(params, tokens[:2]),
                             preds.mean(axis=0), rtol=1e-6)  # the mean
  # A lone member trains on every valid example: both move the bias, the
  # gradients cancel there (-0.25 + 0.25) / 2 = 0, and each token by lr.
  sur1 = surrogate_lib.make_surrogate(_toy_space(), kind="mlp",
                                      hidden_sizes=(), ensemble_size=1,
                                      learning_rate=0.1)
  p1, o1 = sur1.init(jax.random.key(0))
  p1 = jax.tree.map(jnp.zeros_like, p1)
  p1, _, _ = jax.jit(sur1.train_step)(p1, o1, tokens, targets, valid)
  np.testing.assert_allclose(sur1.predict(p1, tokens[:2]), [s(0.2), s(-0.2)],
                             rtol=1e-5)


def test_lstm_surrogate_fits_and_ranks():
  space = nasbench201.space()
  sur = surrogate_lib.make_surrogate(space, kind="lstm", hidden_size=16,
                                     ensemble_size=2, learning_rate=0.02)
  params, opt_state = sur.init(jax.random.key(0))
  archs = jax.vmap(space.sample_uniform)(jax.random.split(jax.random.key(1),
                                                          64))
  targets = 0.2 + 0.6 * jnp.mean(archs == 3, axis=1)  # conv3x3 count
  tokens = surrogate_lib.tokens_of(archs)
  valid = jnp.ones((64,), bool)
  err0 = jnp.mean(jnp.abs(sur.predict(params, tokens) - targets))
  fit = jax.jit(sur.fit, static_argnums=5)
  params, _, loss = fit(params, opt_state, tokens, targets, valid, 100)
  preds = jax.jit(sur.member_predictions)(params, tokens)
  assert preds.shape == (2, 64) and bool(jnp.all((preds > 0) & (preds < 1)))
  err = jnp.mean(jnp.abs(preds.mean(axis=0) - targets))
  assert err < 0.3 * err0 and loss.shape == (2,)
  assert np.corrcoef(preds.mean(axis=0), targets)[0, 1] > 0.9


def test_tokens_mark_blocks_not_chosen_yet():
  archs = jnp.asarray([[4, 0, 2, 1]])
  order = jnp.asarray([2, 0, 3, 1])
  np.testing.assert_array_equal(
      surrogate_lib.tokens_of(archs, 2, order), [[5, 0, 3, 0]])
  np.testing.assert_array_equal(surrogate_lib.tokens_of(archs), [[5, 1, 3,
                                                                  2]])


TARGET = jnp.asarray([3, 1, 2, 0, 4, 3])


def _planted(archs):  # fraction of decisions equal to TARGET
  return jnp.mean(archs == TARGET, axis=1)


def test_rounds_grow_one_block_and_keep_the_beam():
  space = nasbench201.space()
  order = (3, 0, 4, 1, 2, 5)
  algo = pnas_lib.pnas(space, beam_size=10, block_order=order, fill=1,
                       fit_steps=20, surrogate=dict(kind="mlp"))
  state = algo.init(jax.random.key(0))
  propose, feedback = jax.jit(algo.propose), jax.jit(algo.feedback)
  # First round: 5 * 5 = 25 >= K two-block cells, K distinct of them.
  assert int(state.num_blocks) == 2
  for rnd in range(6):
    state, archs = propose(state, jax.random.key(rnd))
    a = np.asarray(archs)
    b = min(2 + rnd, 6)
    unset = list(order[b:])
    assert a.shape == (10, 6) and np.all(a[:, unset] == 1)
    assert len({tuple(r) for r in a}) == 10  # a beam of distinct cells
    state = feedback(state, archs, _planted(archs))
  assert int(state.num_blocks) == 6 and int(state.data_count) == 50
  # After the last block: the final beam again, best first.
  _, again = propose(state, jax.random.key(9))
  r = np.asarray(_planted(again))
  assert np.all(np.diff(r) <= 0)


def test_jitted_search_over_seeds_finds_a_planted_optimum():
  space = nasbench201.space()
  # K = 25: the first round holds all 25 two-edge cells, the target's
  # prefix among them; the predictor must then pick its expansions.
  algo = pnas_lib.pnas(space, beam_size=25, fit_steps=50,
                       surrogate=dict(kind="mlp", ensemble_size=5))
  search = jax.jit(jax.vmap(search_lib.make_search(algo, _planted,
                                                   max_evals=125)))
  keys = jax.random.split(jax.random.key(0), 3)
  result = search(keys)
  np.testing.assert_array_equal(result.archs, search(keys).archs)
  assert not np.array_equal(result.archs[0], result.archs[1])
  np.testing.assert_array_equal(result.best_arch, np.tile(TARGET, (3, 1)))
  # Random search over 125 of the 15,625 cells finds it with p ~ 0.008.


@pytest.mark.parametrize("kwargs, match", [
    (dict(surrogate=dict(ensemble_size=0)),
     r"pnas.surrogate.ensemble_size must be an integer >= 1 \(PNAS uses 5\)"),
    (dict(beam_size=0), r"pnas.beam_size \(K\) must be an integer >= 1"),
    (dict(beam_size=20000), "pnas.beam_size=20000 exceeds the 15625 cells"),
    (dict(block_order=(0, 1, 2)), "pnas.block_order must be a permutation"),
    (dict(fill=5), "pnas.fill=5 is not a choice"),
    (dict(fit_steps=0), "pnas.fit_steps must be an integer >= 1"),
    (dict(surrogate=dict(kind="gru")), "pnas.surrogate.kind must be one of"),
])
def test_bad_options_name_the_field(kwargs, match):
  with pytest.raises(ValueError, match=match):
    pnas_lib.pnas(nasbench201.space(), **kwargs)


def test_preset_and_config_build_through_the_one_builder():
  config = test_q_learning._nb201_config("pnas")
  assert config.algorithm == "pnas"
  assert config.pnas.to_dict() == presets.get("nb201_pnas").options
  algo = tabular_run.build_algorithm(config, nasbench201.space())
  assert algo.name == "pnas" and algo.batch_size == 20


TABULAR_ARGS = [
    "--config=experiments/configs/nasbench201.py:pnas",
    "--config.num_seeds=2", "--config.max_evals=60",
    "--config.time_budget=0", "--config.rounds_per_checkpoint=1",
    "--config.pnas.beam_size=10", "--config.pnas.fit_steps=10",
    "--config.pnas.surrogate.kind=mlp"]  # the LSTM's compile: in other tests


@pytest.mark.skipif(not nb201_data.default_path().is_file(),
                    reason=f"NAS-Bench-201 table not found at "
                    f"{nb201_data.default_path()}")
def test_tabular_run_sigkill_resume_is_exact(tmp_path, monkeypatch):
  monkeypatch.setenv("PYTHONPATH", str(test_resume.ROOT))  # this checkout
  ref = tmp_path / "ref"
  config = test_q_learning._nb201_config("pnas")
  config.update_from_flattened_dict({
      "num_seeds": 2, "max_evals": 60, "time_budget": 0.0,
      "rounds_per_checkpoint": 1, "pnas.beam_size": 10, "pnas.fit_steps": 10,
      "pnas.surrogate.kind": "mlp"})
  summary = tabular_run.run(config, str(ref))
  assert summary["algorithm"] == "pnas" and summary["mean_num_evals"] == 60
  workdir = tmp_path / "run"
  assert test_resume._kill_and_resume(TABULAR_ARGS, workdir, tmp_path,
                                      kills=1, seed=4) >= 1
  keys = ("seed", "step", "arch", "reward", "cost")
  assert test_resume._history(workdir, keys) == test_resume._history(ref,
                                                                      keys)
  assert (json.loads((workdir / "best.json").read_text())
          == json.loads((ref / "best.json").read_text()))


def test_pnas_with_child_training_on_the_seed003_space(tmp_path):
  # Children trained from scratch (ChildTrainer) on the embedded digits: the
  # first round is the 8 one-op cells (second op "identity"), the second the
  # 8 two-op cells the predictor ranks highest.
  spec = importlib.util.spec_from_file_location(
      "seed003_config",
      test_resume.ROOT / "experiments" / "configs" / "seed003_digits.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("pnas")
  config.update_from_flattened_dict({
      "num_rounds": 2, "child.epochs": 1, "network.channels": 4,
      "network.num_cells": 1, "data.max_train": 96, "data.num_val": 64})
  from nas_jax.train import child_search_run  # noqa: PLC0415
  summary = child_search_run.run(config, str(tmp_path))
  assert summary["algorithm"] == "pnas"
  assert summary["children_evaluated"] == 16
  history = [json.loads(l) for l in
             (tmp_path / "history.jsonl").read_text().splitlines()]
  first = sorted(h["arch"] for h in history[:8])
  assert all(a.endswith(">identity") for a in first) and len(set(first)) == 8
