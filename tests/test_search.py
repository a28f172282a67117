"""Tests of the jitted search loop (nas_jax/train/search.py), the NAS-Bench-201
table reader (nas_jax/data/nasbench201.py) and its evaluator.

Tests that read the real table skip, naming the path, when it is absent.
"""

from __future__ import annotations

import csv
import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_jax import algorithms
from nas_jax.controllers import make_controller
from nas_jax.data import nasbench201 as nb201_data
from nas_jax.data import paths
from nas_jax.evaluators import tabular
from nas_jax.spaces import base, nasbench201 as nb201_space
from nas_jax.train.search import make_search

# Compilation dominates these tiny searches on a CPU; see test_algorithms.py.
_jit = functools.partial(
    jax.jit, compiler_options={"xla_backend_optimization_level": 0})

# -- make_search on a toy table -----------------------------------------------

SPACE = base.SearchSpace("toy64", [
    base.Decision(name=f"op{t}", choices=("a", "b", "c", "d"))
    for t in range(3)])
T = SPACE.num_decisions
# Distinct rewards (a permutation of 64 levels), so the argmax is unique.
REWARD = (np.random.default_rng(0).permutation(64) / 64.0).astype(np.float32)
COST = 10.0
EVALUATOR = tabular.TabularEvaluator(SPACE, REWARD,
                                     cost=np.full(64, COST, np.float32))


def _run(algo, *, max_evals, time_budget=None, key=jax.random.key(0)):
  search = make_search(algo, EVALUATOR, T, max_evals=max_evals,
                       time_budget=time_budget)
  return jax.tree.map(np.asarray, _jit(search)(key)._replace(state=None))


def _check_history(res, max_evals: int):
  """Shapes, the counted prefix matching the table, and the unused tail."""
  n = int(res.num_evals)
  assert res.archs.shape == (max_evals, T) and res.archs.dtype == np.int32
  assert res.rewards.shape == res.costs.shape == (max_evals,)
  idx = np.asarray(SPACE.index(jnp.asarray(res.archs[:n])))
  np.testing.assert_array_equal(res.rewards[:n], REWARD[idx])
  np.testing.assert_array_equal(res.costs[:n], COST)
  assert np.isneginf(res.rewards[n:]).all()
  np.testing.assert_array_equal(res.costs[n:], 0.0)
  # The best is the argmax of the counted history.
  assert n > 0
  k = int(np.argmax(res.rewards[:n]))
  assert float(res.best_reward) == float(res.rewards[k]) == REWARD[idx].max()
  np.testing.assert_array_equal(res.best_arch, res.archs[k])
  assert float(res.time_used) == pytest.approx(COST * n)


@pytest.mark.parametrize("algo", [
    algorithms.random_search(SPACE),
    algorithms.regularized_evolution(SPACE, population_size=4, sample_size=2),
], ids=["random", "rea"])
def test_budget_counts_only_evaluations_that_fit(algo):
  res = _run(algo, max_evals=10, time_budget=35.0)
  assert int(res.num_evals) == 3
  assert float(res.time_used) == 30.0
  _check_history(res, 10)


def test_budget_cuts_a_round_in_the_middle():
  # Round 1: 2 evals (20 s). Round 2: the first fits (30 s), the second
  # would reach 40 s > 35 s, so it is not counted and the search ends.
  res = _run(algorithms.random_search(SPACE, batch_size=2), max_evals=10,
             time_budget=35.0)
  assert int(res.num_evals) == 3
  assert float(res.time_used) == 30.0
  _check_history(res, 10)


def test_budget_exactly_used_up_counts():
  res = _run(algorithms.random_search(SPACE, batch_size=2), max_evals=10,
             time_budget=40.0)
  assert int(res.num_evals) == 4
  assert float(res.time_used) == 40.0


@pytest.mark.parametrize("batch_size", [1, 2])
def test_max_evals_caps_the_count_without_budget(batch_size):
  # 7 is not a multiple of 2: the last round's second proposal is dropped.
  res = _run(algorithms.random_search(SPACE, batch_size=batch_size),
             max_evals=7)
  assert int(res.num_evals) == 7
  assert np.isfinite(res.rewards).all()
  _check_history(res, 7)


def test_max_evals_caps_before_a_generous_budget():
  res = _run(algorithms.random_search(SPACE), max_evals=5, time_budget=1e6)
  assert int(res.num_evals) == 5
  assert float(res.time_used) == 50.0


def test_make_search_rejects_bad_limits():
  algo = algorithms.random_search(SPACE)
  with pytest.raises(ValueError, match="max_evals"):
    make_search(algo, EVALUATOR, T, max_evals=0)
  with pytest.raises(ValueError, match="time_budget"):
    make_search(algo, EVALUATOR, T, max_evals=5, time_budget=-1.0)


@pytest.mark.parametrize("algo", [
    algorithms.random_search(SPACE, batch_size=2),
    algorithms.regularized_evolution(SPACE, population_size=4, sample_size=2),
    algorithms.reinforce(make_controller(SPACE, hidden_size=8), batch_size=2,
                         learning_rate=0.05),
], ids=["random", "rea", "reinforce"])
def test_vmapped_seeds_differ_and_reproduce(algo):
  max_evals = 12
  search = _jit(jax.vmap(make_search(algo, EVALUATOR, T,
                                     max_evals=max_evals)))
  keys = jax.random.split(jax.random.key(3), 4)
  res = search(keys)
  archs = np.asarray(res.archs)
  assert archs.shape == (4, max_evals, T)
  np.testing.assert_array_equal(res.num_evals, max_evals)
  for i in range(4):
    for j in range(i + 1, 4):
      assert not np.array_equal(archs[i], archs[j]), (i, j)
  again = search(keys)
  for x, y in zip(jax.tree.leaves(res._replace(state=None)),
                  jax.tree.leaves(again._replace(state=None))):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  # A seed run on its own (same key) matches its row of the vmapped run.
  single = search(jnp.stack([keys[2]] * 4))
  np.testing.assert_array_equal(np.asarray(single.archs[0]), archs[2])
  np.testing.assert_array_equal(np.asarray(single.rewards[0]),
                                np.asarray(res.rewards[2]))


# -- the NAS-Bench-201 table ----------------------------------------------------

KNOWN_ARCH = ("|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+"
              "|nor_conv_1x1~0|skip_connect~1|skip_connect~2|")
HEADER = ",".join(nb201_data.COLUMNS)


def _table_path() -> pathlib.Path:
  path = nb201_data.default_path()
  if not path.is_file():
    pytest.skip(f"NAS-Bench-201 table not found at {path} (set "
                f"${paths.ENV_VAR} to the folder holding "
                f"{nb201_data.FILENAME})")
  return path


@pytest.fixture(scope="module")
def table_path():
  return _table_path()


@pytest.fixture(scope="module")
def table(table_path):
  return nb201_data.load(table_path)


@pytest.fixture(scope="module")
def csv_rows(table_path):
  with open(table_path, newline="") as f:
    return list(csv.DictReader(f))


def _idx(arch_str: str) -> int:
  space = nb201_space.space()
  return int(space.index(jnp.asarray(space.from_text(arch_str))))


def test_table_shape_and_index(table):
  n = 15625
  for col in table:
    assert col.shape == (n,)
  np.testing.assert_array_equal(np.sort(table.benchmark_index), np.arange(n))
  for col in table[1:]:
    assert np.isfinite(col).all()
  assert 0 < table.valid_acc_12ep.min() and table.test_acc_200ep.max() < 100
  assert (table.train_seconds_per_epoch > 0).all()


def test_table_known_row(table):
  i = _idx(KNOWN_ARCH)
  assert table.benchmark_index[i] == 0
  assert table.valid_acc_12ep[i] == pytest.approx(63.364, abs=1e-4)
  assert table.test_acc_200ep[i] == pytest.approx(85.863333, abs=1e-4)
  assert table.train_seconds_per_epoch[i] == pytest.approx(7.2211, abs=1e-5)


def test_table_matches_csv_rows(table, csv_rows):
  assert len(csv_rows) == 15625
  for row in (csv_rows[k] for k in (1, 777, 8000, 15624)):
    i = _idx(row["arch_str"])
    assert table.benchmark_index[i] == int(row["index"])
    for col in nb201_data.COLUMNS[2:]:
      assert getattr(table, col)[i] == pytest.approx(float(row[col]),
                                                     rel=1e-6), col


def test_nasbench201_evaluator(table, csv_rows):
  ev = tabular.nasbench201(table)
  space = ev.space
  rows = [csv_rows[k] for k in (0, 42, 9999, 15000)]
  archs = jnp.stack([jnp.asarray(space.from_text(r["arch_str"]))
                     for r in rows])
  out = ev(archs)
  for k, r in enumerate(rows):
    assert float(out.reward[k]) == pytest.approx(
        float(r["valid_acc_12ep"]) / 100, rel=1e-6)
    assert float(out.cost[k]) == pytest.approx(
        12 * float(r["train_seconds_per_epoch"]), rel=1e-6)
    assert float(ev.lookup("test_acc_200ep", archs[k])) == pytest.approx(
        float(r["test_acc_200ep"]), rel=1e-6)
  # Jitted lookups agree with eager ones.
  jitted = jax.jit(ev)(archs)
  np.testing.assert_array_equal(jitted.reward, out.reward)
  assert ev.best_reward == pytest.approx(
      max(float(r["valid_acc_12ep"]) for r in csv_rows) / 100, rel=1e-6)


def test_load_missing_file_names_path_and_env_var(tmp_path, monkeypatch):
  missing = tmp_path / "nope" / "nb201_cifar10.csv"
  with pytest.raises(FileNotFoundError) as err:
    nb201_data.load(missing)
  assert str(missing) in str(err.value)
  assert paths.ENV_VAR in str(err.value)
  # The default path follows $NAS_JAX_DATA_DIR.
  monkeypatch.setenv(paths.ENV_VAR, str(tmp_path))
  assert nb201_data.default_path() == tmp_path / nb201_data.FILENAME
  with pytest.raises(FileNotFoundError, match=str(tmp_path)):
    nb201_data.load()


def test_load_truncated_copy_is_incomplete(table_path, tmp_path):
  with open(table_path) as f:
    head = [next(f) for _ in range(100)]
  short = tmp_path / "short.csv"
  short.write_text("".join(head))
  with pytest.raises(ValueError, match="incomplete") as err:
    nb201_data.load(short)
  assert "99 of the 15625" in str(err.value)


def _row(arch: str = KNOWN_ARCH, acc: str = "63.364") -> str:
  return f"0,{arch},{acc},81.98,85.86,7.22\n"


@pytest.mark.parametrize("bad_row", [
    _row(arch=KNOWN_ARCH.replace("avg_pool_3x3", "max_pool_3x3")),
    _row(acc="n/a"),
    _row(arch="|avg_pool_3x3~0|+|nor_conv_1x1~0|"),
], ids=["bad_op", "non_numeric", "short_arch"])
def test_load_corrupt_row_names_the_line(tmp_path, bad_row):
  good = "1,|none~0|+|none~0|none~1|+|none~0|none~1|none~2|,10,10,10,1\n"
  path = tmp_path / "corrupt.csv"
  path.write_text(HEADER + "\n" + good + good + bad_row + good)
  with pytest.raises(ValueError, match="line 4") as err:
    nb201_data.load(path)
  assert str(path) in str(err.value)


def test_load_wrong_columns_lists_expected(tmp_path):
  path = tmp_path / "wrong.csv"
  path.write_text("index,arch,acc\n0,x,1.0\n")
  with pytest.raises(ValueError) as err:
    nb201_data.load(path)
  msg = str(err.value)
  assert "missing columns" in msg
  for col in nb201_data.COLUMNS:
    assert col in msg
