"""Faults a workdir survives (issue 7, item 6), replayed in process on a
cheap table evaluator: every damaged checkpoint falls back and the run
completes with the uninterrupted run's records; damaged metrics are
recovered or named; damaged meta data is skipped."""

import json
import pathlib
import shutil

import jax
import numpy as np
import pytest

from nas_jax import algorithms
from nas_jax import metrics
from nas_jax.checkpoint import Checkpointer
from nas_jax.evaluators.tabular import TabularEvaluator
from nas_jax.spaces import registry
from nas_jax.train import host_search

SPACE = registry.get("seed003_small")
TABLE = np.random.default_rng(0).uniform(0.5, 1.0, SPACE.num_architectures)
ROUNDS = 4


# One algorithm object for every run, so its jitted functions compile once.
ALGO = algorithms.regularized_evolution(SPACE, population_size=4,
                                        sample_size=2, batch_size=2)
EVALUATE = TabularEvaluator(SPACE, TABLE)


def _run(workdir, num_rounds, algo=None):
  ckpt = Checkpointer(workdir, max_to_keep=3)
  writer = metrics.MetricWriter(workdir)

  def on_resume(records):
    last = records[-1].round if records else -1
    writer.truncate_after(last, expected_steps=range(last + 1))

  def on_round(r, state, ev):
    writer.write_scalars(r, {"reward/mean": float(np.mean(ev.reward))})
    writer.flush()

  try:
    result = host_search.run(
        algo or ALGO, EVALUATE, jax.random.key(0),
        num_rounds=num_rounds, checkpointer=ckpt, on_resume=on_resume,
        on_round=on_round, heartbeat_seconds=0)
  finally:
    writer.close()
    ckpt.close()
  return result


def _key(result):
  return [(r.step, r.round, r.arch.tolist(), r.reward) for r in result.records]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  return _key(_run(tmp_path_factory.mktemp("ref"), ROUNDS))


def _files(step_dir: pathlib.Path, pattern: str):
  return [f for f in step_dir.rglob(pattern) if f.is_file()]


def _truncate(files):
  for f in files:
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _zero(files):
  for f in files:
    f.write_bytes(b"\0" * f.stat().st_size)


# Each case damages the newest checkpoint (step 2 of rounds 0..2) of a run
# stopped after 3 rounds.
FAULTS = {
    "truncated data": lambda d: _truncate(_files(d / "state", "d/*")),
    "zeroed data": lambda d: _zero(_files(d / "state", "d/*")),
    "_METADATA damaged": lambda d: (d / "state" / "_METADATA").write_text(
        "{not json"),
    "manifest damaged": lambda d: _zero(_files(d / "state",
                                               "manifest.ocdbt")),
    "state/ gone": lambda d: shutil.rmtree(d / "state"),
    "meta JSON damaged": lambda d: (d / "meta" / "metadata").write_text(
        '{"round": 2, "rec'),
    "meta JSON is {}": lambda d: (d / "meta" / "metadata").write_text("{}"),
    "meta JSON is a list": lambda d: (d / "meta" / "metadata").write_text(
        "[1, 2]"),
    "meta gone": lambda d: shutil.rmtree(d / "meta"),
    "data files deleted": lambda d: [f.unlink()
                                     for f in _files(d / "state", "d/*")],
    "everything zeroed": lambda d: _zero(_files(d, "*")),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_damaged_checkpoint_falls_back_and_the_run_completes(
    fault, reference, tmp_path):
  _run(tmp_path, 3)
  latest = tmp_path / "checkpoints" / "2"
  assert latest.is_dir()
  FAULTS[fault](latest)
  result = _run(tmp_path, ROUNDS)  # before the fix: "step 2 already exists"
  assert result.status == "done"
  assert _key(result) == reference
  # The bad step was set aside, not deleted, and saving it again worked.
  aside = list((tmp_path / "checkpoints_unreadable").iterdir())
  assert [p.name.split(".")[0] for p in aside] == ["2"]
  assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()
                if p.name.isdigit())[-1] == ROUNDS - 1
  # A second re-run finds a clean workdir and changes nothing.
  assert _key(_run(tmp_path, ROUNDS)) == reference
  steps = [m["step"] for m in metrics.read_jsonl(tmp_path / "metrics.jsonl")]
  assert steps == list(range(ROUNDS))


def test_an_empty_newer_step_folder_is_set_aside(reference, tmp_path):
  _run(tmp_path, 3)
  (tmp_path / "checkpoints" / "3").mkdir()  # a save cut before it wrote
  assert _key(_run(tmp_path, ROUNDS)) == reference
  assert [p.name.split(".")[0] for p in
          (tmp_path / "checkpoints_unreadable").iterdir()] == ["3"]


def test_half_written_line_in_the_middle_of_metrics(reference, tmp_path):
  _run(tmp_path, 3)
  path = tmp_path / "metrics.jsonl"
  lines = path.read_text().splitlines(keepends=True)
  lines[1] = lines[1][: len(lines[1]) // 2] + "\n"
  path.write_text("".join(lines))
  # Before: "I/O operation on closed file" hiding the real error.
  assert _key(_run(tmp_path, ROUNDS)) == reference
  rows = metrics.read_jsonl(path)
  # The damaged line is dropped and rebuilt from the TensorBoard files.
  assert [m["step"] for m in rows] == list(range(ROUNDS))
  events = dict(metrics.read_events(tmp_path / "tensorboard")["reward/mean"])
  assert rows[1]["reward/mean"] == pytest.approx(events[1], rel=1e-6)


@pytest.mark.parametrize("damage", ["deleted", "truncated"])
def test_lost_metrics_lines_are_rebuilt_or_named(damage, reference, tmp_path,
                                                 caplog):
  _run(tmp_path, 3)
  path = tmp_path / "metrics.jsonl"
  if damage == "deleted":
    path.unlink()
  else:
    path.write_text(path.read_text().splitlines(keepends=True)[0])
  assert _key(_run(tmp_path, ROUNDS)) == reference
  assert [m["step"] for m in metrics.read_jsonl(path)] == list(range(ROUNDS))
  assert "rebuilt them from the TensorBoard event files" in caplog.text
  # Without event files the lost steps are named in a warning.
  caplog.clear()
  shutil.rmtree(tmp_path / "tensorboard")
  path.write_text(path.read_text().splitlines(keepends=True)[0])
  w = metrics.MetricWriter(tmp_path)
  w.truncate_after(3, expected_steps=range(4))
  w.close()
  assert "lacks step(s) 1-3" in caplog.text


def test_metric_writer_close_does_not_hide_the_error(tmp_path, monkeypatch):
  w = metrics.MetricWriter(tmp_path)
  w.write_scalars(0, {"a": 1.0})

  def boom(path, step):
    raise OSError("disk full")

  monkeypatch.setattr(metrics, "truncate_jsonl", boom)
  with pytest.raises(OSError, match="disk full"):
    w.truncate_after(0)
  w.close()  # no "I/O operation on closed file"


def test_reinforce_checkpoint_restored_as_ppo_state_is_a_clear_error(
    tmp_path):
  """A state of another algorithm is unreadable for this one; the library
  says so in one error instead of "truth value ... ambiguous"."""
  from nas_jax.checkpoint import CheckpointError
  from nas_jax.controllers import make_controller
  ctrl = make_controller(SPACE, hidden_size=8)
  a = algorithms.reinforce(ctrl, batch_size=2)
  b = algorithms.ppo(ctrl, batch_size=2)
  ck = Checkpointer(tmp_path)
  ck.save(0, a.init(jax.random.key(0)), {"round": 0})
  with pytest.raises(CheckpointError, match="another config"):
    ck.restore(b.init(jax.random.key(0)))


def test_tabular_loop_falls_back_and_completes(tmp_path, monkeypatch):
  """The jitted loop of tabular runs survives a damaged newest checkpoint
  too (before: "Checkpoint for step N already exists" on every re-run); it
  writes every file of a run; its workdir refuses another algorithm."""
  from nas_jax.data import nasbench201 as nb201_data
  if not nb201_data.default_path().is_file():
    pytest.skip(f"NAS-Bench-201 table not found at "
                f"{nb201_data.default_path()}")
  import runpy
  from nas_jax.train import tabular_run
  config = runpy.run_path(str(pathlib.Path(__file__).parents[1] /
                              "experiments" / "configs" / "nasbench201.py")
                          )["get_config"]("random")
  config.max_evals = 6
  config.rounds_per_checkpoint = 2
  config.time_budget = 0.0
  evaluator = tabular_run.build_evaluator(config)  # the table, read once
  monkeypatch.setattr(tabular_run, "build_evaluator", lambda c: evaluator)
  ref, wd = tmp_path / "ref", tmp_path / "run"
  tabular_run.run(config, str(ref))
  tabular_run.run(config, str(wd))
  latest = max(int(p.name) for p in (wd / "checkpoints").iterdir()
               if p.name.isdigit())
  _truncate(_files(wd / "checkpoints" / str(latest) / "state", "d/*"))
  (wd / "summary.json").unlink()
  summary = tabular_run.run(config, str(wd))
  assert summary["status"] == "done"
  assert (wd / "history.jsonl").read_text() == \
      (ref / "history.jsonl").read_text()
  assert [p.name.split(".")[0] for p in
          (wd / "checkpoints_unreadable").iterdir()] == [str(latest)]
  for name in ("config.json", "identity.json", "history.jsonl",
               "metrics.jsonl", "best.json", "best_arch.png",
               "search_curve.png", "summary.json"):
    assert (wd / name).is_file(), name
  assert (wd / "best_arch.png").read_bytes()[:4] == b"\x89PNG"
  assert json.loads((wd / "summary.json").read_text())["sessions"] == 2
  # Item 1: `:reinforce` then `:ppo` on one workdir is refused, naming the
  # field, and the workdir's files stay as they were.
  from nas_jax.train import workdir as workdir_lib
  before = (wd / "summary.json").read_bytes()
  config.algorithm = "ppo"
  with pytest.raises(workdir_lib.IdentityError,
                     match="algorithm: 'random' -> 'ppo'"):
    tabular_run.run(config, str(wd))
  assert json.loads((wd / "config.json").read_text())["algorithm"] == "random"
  assert (wd / "summary.json").read_bytes() == before
