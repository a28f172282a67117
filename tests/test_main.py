"""End-to-end runs of the binary ``experiments/main.py`` (subprocesses).

All runs start together in one module fixture and are awaited once, so their
start-up and compilation overlap. They run with XLA's backend optimisation
level 0 (``XLA_FLAGS``), which changes compile time only. Runs that need the
NAS-Bench-201 table skip, naming its path, when it is absent.
"""

from __future__ import annotations

import csv
import json
import os
import pathlib
import subprocess
import sys

import pytest

from nas_jax.data import nasbench201 as nb201_data
from nas_jax.data import paths
from nas_jax.spaces import nasbench201 as nb201_space

REPO = pathlib.Path(__file__).resolve().parents[1]
MAIN = REPO / "experiments" / "main.py"
CONFIG = REPO / "experiments" / "configs" / "nasbench201.py"
VARIANTS = ("random", "rea", "reinforce", "ppo")
NUM_SEEDS = 2
MAX_EVALS = 5
# The random run is budget-limited: 12 epochs of any cell cost well over
# 60 s, so at most 400 s allows fewer than 7 of its 40 evaluations.
BUDGETED = {"random": (40, 400.0)}


def _args(variant: str, workdir: pathlib.Path, *extra: str) -> list[str]:
  return [sys.executable, str(MAIN), f"--config={CONFIG}:{variant}",
          f"--workdir={workdir}", *extra]


def _run_args(variant: str, workdir: pathlib.Path) -> list[str]:
  max_evals, budget = BUDGETED.get(variant, (MAX_EVALS, None))
  extra = [f"--config.max_evals={max_evals}", f"--config.num_seeds={NUM_SEEDS}",
           "--config.seed=3"]
  if budget is not None:
    extra.append(f"--config.time_budget={budget}")
  if variant == "rea":  # a small population, so mutation happens within 5
    extra += ["--config.evolution.population_size=3",
              "--config.evolution.sample_size=2"]
  return _args(variant, workdir, *extra)


def _env(**overrides: str) -> dict[str, str]:
  env = dict(os.environ)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                      " --xla_backend_optimization_level=0").strip()
  env["JAX_PLATFORMS"] = "cpu"
  env.update(overrides)
  return env


class Finished:

  def __init__(self, args, proc, workdir):
    self.args, self.workdir = args, workdir
    self.stdout, self.stderr = proc.communicate(timeout=300)
    self.returncode = proc.returncode

  def __repr__(self):
    return (f"{' '.join(map(str, self.args))} -> {self.returncode}\n"
            f"stderr:\n{self.stderr[-3000:]}")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """Starts every run of this module at once; returns {name: Finished}."""
  root = tmp_path_factory.mktemp("main")
  empty = root / "empty_data"
  empty.mkdir()
  jobs = {}
  if nb201_data.default_path().is_file():
    for v in VARIANTS:
      jobs[v] = (_run_args(v, root / v), {}, root / v)
    jobs["rea_again"] = (_run_args("rea", root / "rea_again"), {},
                         root / "rea_again")
  jobs["missing_table"] = (_args("random", root / "missing"),
                           {paths.ENV_VAR: str(empty)}, root / "missing")
  jobs["unknown_variant"] = (_args("bogus", root / "bogus"), {},
                             root / "bogus")
  procs = {}
  try:
    for name, (args, env, workdir) in jobs.items():
      procs[name] = (args, subprocess.Popen(
          args, cwd=REPO, env=_env(**env), text=True,
          stdout=subprocess.PIPE, stderr=subprocess.PIPE), workdir)
    return {name: Finished(args, proc, workdir)
            for name, (args, proc, workdir) in procs.items()}
  finally:  # on a timeout or error, end the runs this fixture started
    for _, proc, _ in procs.values():
      if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def csv_by_arch():
  path = nb201_data.default_path()
  if not path.is_file():
    pytest.skip(f"NAS-Bench-201 table not found at {path} (set "
                f"${paths.ENV_VAR})")
  with open(path, newline="") as f:
    return {row["arch_str"]: row for row in csv.DictReader(f)}


def _read_history(workdir: pathlib.Path) -> list[dict]:
  lines = (workdir / "history.jsonl").read_text().splitlines()
  return [json.loads(line) for line in lines]


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_runs_end_to_end(variant, runs, csv_by_arch):
  run = runs[variant]
  assert run.returncode == 0, run
  wd = run.workdir
  for name in ("config.json", "history.jsonl", "best.json", "summary.json"):
    assert (wd / name).is_file(), name
  max_evals, budget = BUDGETED.get(variant, (MAX_EVALS, None))
  config = json.loads((wd / "config.json").read_text())
  assert config["algorithm"] == variant
  assert config["max_evals"] == max_evals
  assert config["num_seeds"] == NUM_SEEDS
  if budget is None:
    budget = config["time_budget"]
  assert config["time_budget"] == budget

  space = nb201_space.space()
  history = _read_history(wd)
  best = json.loads((wd / "best.json").read_text())
  summary = json.loads((wd / "summary.json").read_text())
  assert isinstance(best, list) and len(best) == NUM_SEEDS
  assert summary["algorithm"] == {"rea": "evolution"}.get(variant, variant)
  assert summary["space"] == "nasbench201"
  assert summary["num_seeds"] == NUM_SEEDS

  counts = []
  for seed, entry in enumerate(best):
    rows = [h for h in history if h["seed"] == seed]
    counts.append(len(rows))
    assert 1 <= len(rows) <= max_evals
    assert [h["step"] for h in rows] == list(range(len(rows)))
    for h in rows:  # every line is the table's row for its cell
      ref = csv_by_arch[space.to_text(space.from_text(h["arch"]))]
      assert h["reward"] == pytest.approx(
          float(ref["valid_acc_12ep"]) / 100, rel=1e-6)
      assert h["cost"] == pytest.approx(
          12 * float(ref["train_seconds_per_epoch"]), rel=1e-5)
    spent = sum(h["cost"] for h in rows)
    assert entry["seed"] == seed
    assert entry["num_evals"] == len(rows)
    assert entry["time_used"] == pytest.approx(spent, rel=1e-5)
    assert spent <= budget
    if len(rows) < max_evals:
      # Only the budget ends a search early: the next cell would not fit.
      assert variant in BUDGETED
    # best.json's text parses back and is the best counted cell.
    arch = space.from_text(entry["text"])
    assert space.to_text(arch) == entry["text"]
    assert (space.from_spec(entry["spec"]) == arch).all()
    assert entry["reward"] == pytest.approx(max(h["reward"] for h in rows),
                                            rel=1e-6)
    assert entry["text"] in {h["arch"] for h in rows}
    assert entry["test_acc_200ep"] == pytest.approx(
        float(csv_by_arch[entry["text"]]["test_acc_200ep"]), rel=1e-6)
  assert len(history) == sum(counts)
  assert summary["mean_num_evals"] == pytest.approx(sum(counts) / NUM_SEEDS)
  assert summary["mean_best_reward"] == pytest.approx(
      sum(b["reward"] for b in best) / NUM_SEEDS, rel=1e-6)
  if variant in BUDGETED:
    assert max(counts) < max_evals  # the budget, not max_evals, ended it
  else:
    assert counts == [max_evals] * NUM_SEEDS
  # The two seeds searched differently.
  archs = [[h["arch"] for h in history if h["seed"] == s]
           for s in range(NUM_SEEDS)]
  assert archs[0] != archs[1]


def test_same_seed_gives_identical_history(runs, csv_by_arch):
  del csv_by_arch  # only for the skip
  a, b = runs["rea"], runs["rea_again"]
  assert a.returncode == 0, a
  assert b.returncode == 0, b
  text = (a.workdir / "history.jsonl").read_text()
  assert text and text == (b.workdir / "history.jsonl").read_text()
  assert ((a.workdir / "best.json").read_text() ==
          (b.workdir / "best.json").read_text())


def test_missing_table_exits_2_naming_the_file(runs):
  run = runs["missing_table"]
  assert run.returncode == 2, run
  empty = run.workdir.parent / "empty_data"  # what $NAS_JAX_DATA_DIR held
  assert str(empty / nb201_data.FILENAME) in run.stderr
  assert paths.ENV_VAR in run.stderr
  assert "Traceback" not in run.stderr
  assert not (run.workdir / "history.jsonl").exists()


def test_unknown_variant_lists_the_variants(runs):
  run = runs["unknown_variant"]
  assert run.returncode != 0, run
  assert "bogus" in run.stderr
  for v in VARIANTS:
    assert f"'{v}'" in run.stderr, v
  assert not run.workdir.exists()
