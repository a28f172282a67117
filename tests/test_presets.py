"""Presets: one source of truth read by the benchmark and the configs; the
paper variants carry the authors' settings; validation time is charged when
a table has it."""

import importlib
import importlib.util
import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_jax.algorithms import presets
from nas_jax.data import nasbench201 as nb201_data
from nas_jax.evaluators import tabular
from nas_jax.spaces import registry

ROOT = pathlib.Path(__file__).resolve().parents[1]
NEEDS_TABLE = pytest.mark.skipif(
    not nb201_data.default_path().is_file(),
    reason=f"NAS-Bench-201 table not found at {nb201_data.default_path()}")


def _import(folder, name):
  """Loads ``ROOT/folder/name.py`` under a unique module name (the benchmark
  and the config are both ``nasbench201.py``)."""
  if str(ROOT / "benchmarks") not in sys.path:
    sys.path.insert(0, str(ROOT / "benchmarks"))  # the benchmark's imports
  spec = importlib.util.spec_from_file_location(
      f"_{folder.replace('/', '_')}_{name}", ROOT / folder / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_paper_presets_carry_the_authors_settings():
  rf = presets.get("nb201_reinforce_paper")
  assert rf.kind == "paper" and rf.algorithm == "reinforce"
  assert rf.controller == {"policy": "factorized", "init_scale": 1e-3}
  assert rf.options == dict(batch_size=1, learning_rate=1e-3,
                            baseline_decay=0.9, baseline_update="before",
                            debias_baseline=True, entropy_weight=0.0)
  rea = presets.get("nb201_rea_paper")
  assert rea.options == dict(population_size=10, sample_size=3,
                             with_replacement=True)
  assert presets.get("nb201_rea").options["with_replacement"] is False
  assert {presets.get(n).kind for n in presets.names()} == {"paper", "ours"}


def test_benchmark_and_configs_read_the_presets():
  bench = _import("benchmarks", "nasbench201")
  cfg = _import("experiments/configs", "nasbench201")
  hp = bench.hyperparameters()
  assert set(bench.ROWS) <= set(presets.names())
  for variant, name in cfg.VARIANTS.items():
    p = presets.get(name)
    c = cfg.get_config(variant)
    assert c.algorithm == p.algorithm
    assert c[presets.options_field(name)].to_dict() == p.options
    if p.controller:
      assert c.controller.to_dict() == p.controller
    if name in hp:
      assert hp[name]["options"] == p.options
      assert hp[name]["kind"] == p.kind


def test_every_preset_builds_and_the_cheap_ones_propose():
  space = registry.get("nasbench201")
  for name in presets.names():
    algo = presets.build(name, space)
    assert algo.batch_size == presets.get(name).options["batch_size"] if (
        "batch_size" in presets.get(name).options) else True
    if presets.get(name).controller.get("policy") == "lstm":
      continue  # compiles in seconds; run by the benchmark and tuning tests
    _, archs = jax.jit(algo.propose)(algo.init(jax.random.key(0)),
                                     jax.random.key(1))
    assert archs.shape == (algo.batch_size, space.num_decisions)
    assert bool(jnp.all(space.is_valid(archs)))


def test_unknown_preset_lists_the_known_ones():
  with pytest.raises(ValueError, match="nb201_reinforce_paper"):
    presets.get("nb201_dqn")


def test_validation_time_is_charged_when_the_table_has_it():
  n = registry.get("nasbench201").num_architectures
  rng = np.random.default_rng(0)
  cols = dict(benchmark_index=np.arange(n), valid_acc_12ep=rng.uniform(
      50, 90, n), valid_acc_200ep=rng.uniform(50, 90, n),
              test_acc_200ep=rng.uniform(50, 90, n),
              train_seconds_per_epoch=rng.uniform(5, 15, n))
  plain = nb201_data.NasBench201Table(**cols)

  class WithValid(dict):
    __getattr__ = dict.__getitem__

  valid_s = rng.uniform(1, 2, n)
  timed = WithValid(cols, valid_seconds=valid_s)
  arch = jnp.asarray([[0, 1, 2, 3, 4, 0]])
  i = int(registry.get("nasbench201").index(arch[0]))
  c_plain = float(tabular.nasbench201(plain)(arch).cost[0])
  c_timed = float(tabular.nasbench201(timed)(arch).cost[0])
  np.testing.assert_allclose(c_plain, 12 * cols["train_seconds_per_epoch"][i],
                             rtol=1e-6)
  np.testing.assert_allclose(c_timed, c_plain + valid_s[i], rtol=1e-6)


@NEEDS_TABLE
def test_paper_reinforce_variant_runs_from_its_config(tmp_path):
  from nas_jax.train import tabular_run
  cfg = _import("experiments/configs", "nasbench201")
  c = cfg.get_config("reinforce_paper")
  c.max_evals = 12
  c.num_seeds = 2
  summary = tabular_run.run(c, str(tmp_path))
  assert summary["status"] == "done"
  best = json.loads((tmp_path / "best.json").read_text())
  assert len(best) == 2 and all(b["num_evals"] == 12 for b in best)
  assert all(b["text"].startswith("|") for b in best)


@NEEDS_TABLE
def test_benchmark_rows_hold_the_returned_architectures():
  bench = _import("benchmarks", "nasbench201")
  table = nb201_data.load()
  evaluator = tabular.nasbench201(table)
  keys = jax.random.split(jax.random.key(0), 3)
  row = bench.run_algorithm("nb201_rea_paper", evaluator, table, keys, 0)
  assert row["kind"] == "paper" and row["runs"] == 3
  space = registry.get("nasbench201")
  for text, acc in zip(row["best_arch"], row["test_acc"]):
    i = int(space.index(jnp.asarray(space.from_text(text))))
    np.testing.assert_allclose(acc, table.test_acc_200ep[i], rtol=1e-6)
  np.testing.assert_allclose(row["mean_test_acc"], np.mean(row["test_acc"]))
  assert row["returned"] == "best_seen"
  # The paper's REINFORCE row returns the final policy's argmax cell.
  row = bench.run_algorithm("nb201_reinforce_paper", evaluator, table, keys,
                            0)
  assert row["returned"] == "policy_mode" and row["kind"] == "paper"
  for text in row["best_arch"]:  # raises on an invalid cell
    space.validate(space.from_text(text))
