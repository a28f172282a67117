"""Bring your own space and table (issue 12): the registry, table building
and its errors, plain-array rewards in make_search, the binary's "table"
evaluator (with SIGKILL and resume) and the compilation cache settings."""

from __future__ import annotations

import csv
import itertools
import json
import logging
import os
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from nas_jax import algorithms, compile_cache
from nas_jax.evaluators import table
from nas_jax.evaluators.tabular import Evaluation, TabularEvaluator
from nas_jax.spaces import (Decision, InvalidArchitectureError, SearchSpace,
                            registry)
from nas_jax.train import search as search_lib
from nas_jax.train import tabular_run

import test_resume  # tests/test_resume.py: how the project kills runs

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _space(num_layers=2, choices=("a", "b", "c"), name="toy"):
  return SearchSpace(name, [Decision(f"layer{i}", choices=choices)
                            for i in range(num_layers)])


@pytest.fixture
def clean_registry():
  before = dict(registry._FACTORIES)
  yield
  registry._FACTORIES.clear()
  registry._FACTORIES.update(before)


# -- the acceptance test: space + table in a config, the binary, SIGKILL ------

CONFIG = """
import sys
sys.path.insert(0, {configs!r})
import custom_table
from nas_jax.spaces import Decision, SearchSpace, registry
registry.register("five_layers", SearchSpace("five_layers", [
    Decision(f"layer{{i}}", choices=("conv", "pool", "skip"))
    for i in range(5)]))

def get_config():
  c = custom_table.get_config("reinforce")
  c.space = "five_layers"
  c.table.update(path={path!r}, records="", key="arch", key_format="digits",
                 reward="acc", report=("test",))
  c.max_evals, c.rounds_per_checkpoint = 120, 5
  return c
"""


def test_own_space_and_table_run_resume_and_find_the_best(tmp_path,
                                                          monkeypatch):
  rng = np.random.default_rng(0)  # "skip" layers help; "22222" is the best
  rows = {a: {"acc": 0.5 + 0.08 * a.count("2") - 0.02 * u, "test": 0.7 - u}
          for a, u in zip(map("".join, itertools.product("012", repeat=5)),
                          rng.uniform(size=3**5))}
  (tmp_path / "table.json").write_text(json.dumps(rows))
  (tmp_path / "config.py").write_text(CONFIG.format(
      configs=str(ROOT / "experiments" / "configs"),
      path=str(tmp_path / "table.json")))

  cache = tmp_path / "cache"  # the flag wins over $NAS_JAX_COMPILE_CACHE
  monkeypatch.setenv("NAS_JAX_COMPILE_CACHE", "off")
  monkeypatch.setenv("PYTHONPATH", str(ROOT))  # this checkout's nas_jax
  args = [f"--config={tmp_path / 'config.py'}", f"--compile_cache={cache}"]
  workdir = tmp_path / "run"
  assert test_resume._kill_and_resume(args, workdir, tmp_path, kills=2,
                                      seed=3) >= 1

  best = json.loads((workdir / "best.json").read_text())
  history = [json.loads(l) for l in
             (workdir / "history.jsonl").read_text().splitlines()]
  assert [h["step"] for h in history] == list(range(120))
  best_key = max(rows, key=lambda a: rows[a]["acc"])
  assert best["text"] == ",".join(best_key)  # the table's best entry
  np.testing.assert_allclose(best["reward"], rows[best_key]["acc"], rtol=1e-6)
  np.testing.assert_allclose(best["test"], rows[best_key]["test"], rtol=1e-6)
  assert best["reward"] == max(h["reward"] for h in history)
  assert json.loads((workdir / "summary.json").read_text())["status"] == "done"
  assert any(cache.iterdir())  # the compilation cache was used


def test_example_config_runs_on_the_projects_table(tmp_path):
  config = _load_example_config("random")
  config.max_evals = 8
  summary = tabular_run.run(config, str(tmp_path))
  assert summary["status"] == "done"
  best = json.loads((tmp_path / "best.json").read_text())
  digits = json.loads((ROOT / "benchmarks/results/seed003_small_digits.json"
                       ).read_text())["children"]
  row = next(c for c in digits if c["text"] == best["text"])
  np.testing.assert_allclose(best["reward"], row["val_acc"], rtol=1e-6)
  np.testing.assert_allclose(best["test_acc"], row["test_acc"], rtol=1e-6)


def _load_example_config(variant="ppo"):
  import importlib.util  # noqa: PLC0415
  spec = importlib.util.spec_from_file_location(
      "custom_table", ROOT / "experiments/configs/custom_table.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)


# -- registry -----------------------------------------------------------------


def test_register_decorator_and_fixed_space(clean_registry):
  @registry.register("my_layers")
  def my_layers(num_layers=2):
    return _space(num_layers, name="my_layers")

  assert registry.get("my_layers", num_layers=3).num_decisions == 3
  registry.register("my_fixed", _space(name="my_fixed"))
  assert registry.get("my_fixed").num_architectures == 9
  assert "my_layers" in registry.names() and "my_fixed" in registry.names()
  # The same registration again (a config file executed twice) is fine.
  registry.register("my_fixed", _space(name="my_fixed"))
  with pytest.raises(ValueError, match="takes no arguments"):
    registry.get("my_fixed", num_layers=3)


def test_register_errors_name_the_fix(clean_registry):
  with pytest.raises(ValueError, match="unknown search space 'nope'.*"
                     r"registry.register\(name, space_or_factory\)"):
    registry.get("nope")
  registry.register("mine", _space(name="mine"))
  with pytest.raises(ValueError, match="'mine' is already registered; choose "
                     "another name or pass overwrite=True"):
    registry.register("mine", _space(3, name="mine"))
  registry.register("mine", _space(3, name="mine"), overwrite=True)
  assert registry.get("mine").num_decisions == 3
  with pytest.raises(ValueError, match=r"already registered \(built in\)"):
    registry.register("nasbench201", _space())
  with pytest.raises(ValueError, match="takes a SearchSpace or a function"):
    registry.register("bad", 42)
  registry.register("not_a_space", lambda: 3)
  with pytest.raises(ValueError, match="returned int, not a"):
    registry.get("not_a_space")


# -- index order, text form -------------------------------------------------


def test_index_order_first_decision_most_significant():
  space = SearchSpace("mixed", [Decision("a", choices=("x", "y", "z")),
                                Decision("b", choices=("u", "v"))])
  # Hand-computed: index = 2 * a + b.
  assert [int(space.index(jnp.array(a))) for a in
          ([0, 0], [0, 1], [1, 0], [2, 1])] == [0, 1, 2, 5]
  cols = table.columns(space, {"2,1": 5.0, "0,0": 0.0, "1,0": 2.0,
                               "0,1": 1.0, "1,1": 3.0, "2,0": 4.0})
  np.testing.assert_array_equal(cols["reward"], [0, 1, 2, 3, 4, 5])


def test_from_text_names_the_comma_separated_form():
  space = _space(8)
  with pytest.raises(InvalidArchitectureError,
                     match=r"'22212220' has 1 comma-separated values; expected "
                     r"8 comma-separated integers, e.g. '0,0,0,0,0,0,0,0' "
                     r"\(to read '22212220' as one digit per decision, use "
                     r"'2,2,2,1,2,2,2,0'\)"):
    space.from_text("22212220")
  np.testing.assert_array_equal(space.from_text("2,2,2,1,2,2,2,0"),
                                [2, 2, 2, 1, 2, 2, 2, 0])


# -- the table helper ---------------------------------------------------------


def _full(space, value=lambda a: 0.5):
  return {",".join(map(str, a)): value(a) for a in itertools.product(
      *(range(int(c)) for c in space.num_choices))}


@pytest.mark.parametrize("key_format,key", [
    ("auto", "1,2"), ("text", "1,2"), ("indices", "1,2"), ("digits", "12"),
    ("auto", "12"), ("auto", (1, 2)), ("indices", [1, 2]), ("index", 5),
    ("index", "5")])
def test_parse_key_formats(key_format, key):
  np.testing.assert_array_equal(table.parse_key(_space(), key, key_format),
                                [1, 2])


def test_table_errors_name_the_first_offending_entry():
  space = _space()
  full = _full(space)
  missing = dict(full)
  del missing["1,2"], missing["2,0"]
  with pytest.raises(table.TableError, match="2 of the 9 architectures of "
                     "space 'toy' are missing, the first is '1,2' "
                     r"\(index 5\)"):
    table.columns(space, missing)
  with pytest.raises(table.TableError, match="architecture '1,2' is present "
                     "twice \\(keys '1,2' and '12'\\)"):
    table.columns(space, {**full, "12": 0.1})
  with pytest.raises(table.TableError, match="entry '0,1', column 'reward' is "
                     "nan; every value must be finite"):
    table.columns(space, {**full, "0,1": float("nan")})
  with pytest.raises(table.TableError, match="key '0,3' names no architecture"
                     ".*decision 1 'layer1'.*out of range"):
    table.columns(space, {**full, "0,3": 0.1})
  with pytest.raises(InvalidArchitectureError, match="key_format='index'"):
    table.parse_key(space, 5)
  rows = {k: {"acc": 0.5} for k in full}
  rows["2,2"] = {"accuracy": 0.5}
  with pytest.raises(table.TableError, match="entry '2,2' has no column "
                     "'acc'; it has \\['accuracy'\\]"):
    table.columns(space, rows, ["acc"])
  with pytest.raises(table.TableError, match="'x' is not a number"):
    table.columns(space, {**full, "0,0": "x"})
  with pytest.raises(ValueError, match="key_format must be one of"):
    table.parse_key(space, "0,0", "bits")


def test_tabular_evaluator_names_non_finite_entries():
  space = _space()
  reward = np.full(9, 0.5)
  reward[[4, 7]] = [np.nan, np.inf]
  with pytest.raises(ValueError, match=r"2 non-finite entries, e.g. index 4 "
                     r"\(1,1: nan\), index 7 \(2,1: inf\)"):
    TabularEvaluator(space, reward)


def test_table_files_csv_and_json(tmp_path):
  space = _space()
  full = _full(space, lambda a: 10.0 * a[0] + a[1])
  with open(tmp_path / "t.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["arch", "valid", "test"])
    for k, v in full.items():
      w.writerow([k.replace(",", ""), v, v + 1])
  ev = table.evaluator(space, tmp_path / "t.csv", key_format="digits",
                       reward="valid", report=("test",), reward_scale=0.01)
  idx = space.index(jnp.array([2, 1]))
  np.testing.assert_allclose(ev.reward[idx], 0.21, rtol=1e-6)
  np.testing.assert_allclose(ev.lookup("test", jnp.array([2, 1])), 22.0)
  (tmp_path / "t.json").write_text(json.dumps(
      {"meta": {"rows": [{"id": k, "v": v} for k, v in full.items()]}}))
  ev = table.evaluator(space, tmp_path / "t.json", records="meta.rows",
                       key="id", reward="v", reward_scale=0.01)
  np.testing.assert_allclose(ev.best_reward, 0.22, rtol=1e-6)
  with pytest.raises(table.TableError, match="no field 'rows' on the way"):
    table.read(tmp_path / "t.json", records="rows")
  with pytest.raises(table.TableError, match="record 0 has no key field "
                     "'arch' \\(set table.key"):
    table.read(tmp_path / "t.json", records="meta.rows")
  with pytest.raises(table.TableError, match="no key column 'id'"):
    table.read(tmp_path / "t.csv", key="id")
  with pytest.raises(FileNotFoundError, match="table.path"):
    table.read(tmp_path / "nope.csv")


def test_percentage_rewards_warn(caplog):
  space = _space()
  with caplog.at_level(logging.WARNING):
    table.evaluator(space, _full(space, lambda a: 90.0 + a[0]))
  assert "reward_scale=0.01 for percentages" in caplog.text
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    table.evaluator(space, _full(space, lambda a: 0.9), reward_scale=1.0)
  assert "reward_scale" not in caplog.text


# -- make_search: plain rewards, space from the algorithm, warnings ----------


def test_make_search_takes_plain_rewards_and_reads_the_length():
  space = _space(3)
  reward = jax.random.uniform(jax.random.key(0), (27,))
  algo = algorithms.random_search(space, batch_size=3)
  evaluated = search_lib.make_search(
      algo, lambda a: reward[space.index(a)], max_evals=12)(jax.random.key(1))
  with_cost = search_lib.make_search(
      algo, lambda a: Evaluation(reward[space.index(a)], jnp.zeros(3)),
      space.num_decisions, max_evals=12)(jax.random.key(1))
  np.testing.assert_array_equal(evaluated.archs, with_cost.archs)
  np.testing.assert_array_equal(evaluated.rewards, with_cost.rewards)
  assert float(evaluated.best_reward) == float(jnp.max(with_cost.rewards))


def test_make_search_errors_say_what_to_return():
  space = _space(3)
  algo = algorithms.random_search(space, batch_size=3)
  for bad, what in [(lambda a: (jnp.zeros(3), jnp.zeros(3)), "tuple of 2"),
                    (lambda a: jnp.zeros((3, 1)), r"shape \(3, 1\)"),
                    (lambda a: "x", "evaluate returned str")]:
    with pytest.raises(TypeError, match=what + ".*return the rewards as an "
                       r"f32\[m\] array.*Evaluation\(reward=f32\[m\]"):
      search_lib.make_search(algo, bad, max_evals=6)(jax.random.key(0))
  with pytest.raises(ValueError, match="num_decisions=4 but algorithm "
                     "'random' proposes architectures of 3 decisions; omit "
                     "num_decisions"):
    search_lib.make_search(algo, lambda a: jnp.zeros(3), 4,
                           max_evals=6)(jax.random.key(0))


def test_make_search_warns_about_rounds_it_cannot_learn_from(caplog):
  space = _space(3)
  from nas_jax.controllers import make_controller  # noqa: PLC0415
  algo = algorithms.ppo(make_controller(space, hidden_size=8), batch_size=4)
  with caplog.at_level(logging.WARNING):
    search_lib.make_search(algo, lambda a: jnp.zeros(4), max_evals=3)
  assert "max_evals=3 is smaller than one round of ppo (batch_size=4)" in (
      caplog.text)
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    search_lib.make_search(algo, lambda a: jnp.zeros(4), max_evals=10)
  assert ("the last 2 evaluations are recorded but not learned from; use "
          "max_evals=12") in caplog.text
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    search_lib.make_search(algo, lambda a: jnp.zeros(4), max_evals=12)
  assert "max_evals" not in caplog.text


# -- the binary's "table" evaluator: config errors ----------------------------


@pytest.mark.parametrize("change,message", [
    (dict(space="nope"), "config.space must name a registered search space, "
     "got 'nope'.*registry.register"),
    (dict(path="/nonexistent/t.json"), "config.table.path: /nonexistent/"
     "t.json does not exist"),
    (dict(path="t.txt"), "config.table.path must end in .csv or .json"),
    (dict(path="gs://b/t.json"), "config.table.path must be a local file"),
    (dict(key_format="bits"), "config.table.key_format must be one of auto"),
    (dict(reward=""), "config.table.reward must be a column name"),
    (dict(report="test_acc"), "config.table.report must be a tuple"),
    (dict(reward_scale=0.0), "config.table.reward_scale must be a finite "
     "number > 0"),
    (dict(reward_scale=float("nan")), "config.table.reward_scale"),
])
def test_table_config_errors_name_the_field(change, message):
  c = _load_example_config()
  if "space" in change:
    c.space = change["space"]
  else:
    c.table = {**c.table.to_dict(), **change}
  with pytest.raises(ValueError, match=message):
    table.check_config(c)


def test_table_config_unknown_field_and_evaluator():
  c = _load_example_config()
  c.table = {**c.table.to_dict(), "colums": "x"}
  with pytest.raises(ValueError, match=r"config.table has unknown fields "
                     r"\['colums'\]"):
    table.check_config(c)
  c = ml_collections.ConfigDict({"evaluator": "tables"})
  with pytest.raises(ValueError, match="config.evaluator: unknown evaluator "
                     "'tables'; known: 'nasbench201', 'table'"):
    tabular_run.build_evaluator(c)


# -- the compilation cache's settings -----------------------------------------


def test_compile_cache_directory_resolution(monkeypatch, tmp_path):
  monkeypatch.delenv(compile_cache.ENV, raising=False)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  assert compile_cache.resolve() == tmp_path / "xdg/nas_jax/jax_compile"
  monkeypatch.setenv(compile_cache.ENV, str(tmp_path / "env"))
  assert compile_cache.resolve() == tmp_path / "env"
  assert compile_cache.resolve(tmp_path / "flag") == tmp_path / "flag"
  assert compile_cache.resolve("off") is None
  monkeypatch.setenv(compile_cache.ENV, "OFF")
  assert compile_cache.resolve() is None
  assert compile_cache.resolve(str(tmp_path)) == tmp_path  # the flag wins
