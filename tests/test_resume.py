"""Runs survive: SIGKILL at random points and resume to the same history as
an uninterrupted run; SIGTERM checkpoints and exits cleanly; a corrupt latest
checkpoint falls back to the previous one."""

import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_jax import algorithms
from nas_jax import metrics
from nas_jax.checkpoint import CheckpointError, Checkpointer
from nas_jax.controllers import make_controller
from nas_jax.data import nasbench201 as nb201_data
from nas_jax.spaces import registry

ROOT = pathlib.Path(__file__).resolve().parents[1]

CHILD_ROUNDS = 40  # long enough after compilation for kills to land mid-run
CHILD_ARGS = [
    "--config=experiments/configs/seed003_digits.py:ppo",
    f"--config.num_rounds={CHILD_ROUNDS}", "--config.ppo.batch_size=2",
    "--config.ppo.minibatch_size=1", "--config.child.epochs=1",
    "--config.network.channels=4", "--config.network.num_cells=1",
    "--config.data.max_train=96", "--config.data.num_val=64"]
TABULAR_ARGS = [
    "--config=experiments/configs/nasbench201.py:reinforce",
    "--config.num_seeds=2", "--config.max_evals=160",
    "--config.time_budget=0", "--config.rounds_per_checkpoint=2"]


def _env():
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                      " --xla_backend_optimization_level=0").strip()
  return env


def _start(args, workdir, log):
  return subprocess.Popen(
      [sys.executable, "experiments/main.py", f"--workdir={workdir}", *args],
      cwd=ROOT, env=_env(), stdout=log, stderr=subprocess.STDOUT)


def _run(args, workdir):
  proc = subprocess.run(
      [sys.executable, "experiments/main.py", f"--workdir={workdir}", *args],
      cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  return proc


def _checkpoints(workdir):
  d = pathlib.Path(workdir) / "checkpoints"
  if not d.is_dir():
    return []
  return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit())


def _wait_for_checkpoint(proc, workdir, after: int, timeout=600):
  """Waits until a checkpoint newer than ``after`` exists (or the run ends)."""
  t0 = time.time()
  while time.time() - t0 < timeout:
    steps = _checkpoints(workdir)
    if steps and steps[-1] > after:
      return steps[-1]
    if proc.poll() is not None:
      return None
    time.sleep(0.05)
  raise TimeoutError("no new checkpoint")


def _history(workdir, keys):
  lines = (pathlib.Path(workdir) / "history.jsonl").read_text().splitlines()
  return [tuple(json.loads(l)[k] for k in keys) for l in lines]


def _kill_and_resume(args, workdir, tmp_path, kills=3, seed=0):
  """SIGKILLs the run ``kills`` times at random points after random
  checkpoints, then lets it finish. Returns how many kills hit a run that
  had not finished yet."""
  rng = random.Random(seed)
  last = -1
  effective = 0
  for i in range(kills):
    with open(tmp_path / f"log{i}.txt", "w") as log:
      proc = _start(args, workdir, log)
      step = _wait_for_checkpoint(proc, workdir, last)
      if step is None:  # finished before we could kill it
        break
      time.sleep(rng.uniform(0.0, 0.5))  # mid-round, mid-save or later
      proc.send_signal(signal.SIGKILL)
      proc.wait()
      effective += not (pathlib.Path(workdir) / "summary.json").exists()
      last = _checkpoints(workdir)[-1]
  _run(args, workdir)
  return effective


@pytest.fixture(scope="module")
def child_reference(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("child_ref")
  _run(CHILD_ARGS, workdir)
  return _history(workdir, ("step", "arch", "reward"))


def test_sigkill_resume_child_search_is_exact(child_reference, tmp_path):
  workdir = tmp_path / "run"
  assert _kill_and_resume(CHILD_ARGS, workdir, tmp_path, kills=3,
                          seed=1) >= 2
  assert _history(workdir, ("step", "arch", "reward")) == child_reference
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["status"] == "done"
  assert (workdir / "best_arch.png").is_file()
  # Metrics: one point per round, none duplicated by the restarts, in the
  # JSONL and in the TensorBoard event files alike.
  rounds = list(range(CHILD_ROUNDS))
  assert [m["step"] for m in metrics.read_jsonl(workdir / "metrics.jsonl")
          ] == rounds
  events = metrics.read_events(workdir / "tensorboard")
  assert [s for s, _ in events["reward/mean"]] == rounds
  best = [v for _, v in events["reward/best_so_far"]]
  assert best == sorted(best)  # monotone across restarts
  np.testing.assert_allclose(best[-1], max(r for _, _, r in child_reference),
                             rtol=1e-6)


def test_sigterm_checkpoints_exits_cleanly_and_resumes(child_reference,
                                                       tmp_path):
  workdir = tmp_path / "run"
  with open(tmp_path / "log.txt", "w") as log:
    proc = _start(CHILD_ARGS, workdir, log)
    step = _wait_for_checkpoint(proc, workdir, -1)
    assert step is not None, "run ended before its first checkpoint"
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=300)
  out = (tmp_path / "log.txt").read_text()
  assert rc == 0, out[-3000:]
  assert "SIGTERM received" in out
  assert "run the same command to resume" in out
  assert not (workdir / "summary.json").exists()
  resumed = _run(CHILD_ARGS, workdir)
  assert "resumed after round" in resumed.stderr
  assert _history(workdir, ("step", "arch", "reward")) == child_reference


@pytest.mark.skipif(not nb201_data.default_path().is_file(),
                    reason=f"NAS-Bench-201 table not found at "
                    f"{nb201_data.default_path()}")
def test_sigkill_resume_tabular_search_is_exact(tmp_path):
  ref = tmp_path / "ref"
  _run(TABULAR_ARGS, ref)
  workdir = tmp_path / "run"
  assert _kill_and_resume(TABULAR_ARGS, workdir, tmp_path, kills=3,
                          seed=2) >= 2
  keys = ("seed", "step", "arch", "reward", "cost")
  assert _history(workdir, keys) == _history(ref, keys)
  assert (json.loads((workdir / "best.json").read_text())
          == json.loads((ref / "best.json").read_text()))


def test_second_process_on_same_workdir_is_refused(tmp_path):
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / ".lock").write_text(str(os.getpid()))  # a live owner: us
  proc = subprocess.run(
      [sys.executable, "experiments/main.py", f"--workdir={workdir}",
       *CHILD_ARGS], cwd=ROOT, env=_env(), capture_output=True, text=True,
      timeout=300)
  assert proc.returncode == 2
  assert "in use by process" in proc.stderr
  (workdir / ".lock").write_text("999999999")  # a dead owner: taken over
  assert not (workdir / "history.jsonl").exists()


# -- Checkpointer unit tests -------------------------------------------------

def _state():
  space = registry.get("enas_rnn", num_nodes=3)
  algo = algorithms.ppo(make_controller(space, hidden_size=8), batch_size=2)
  return algo.init(jax.random.key(0)), algo


def _equal(a, b):
  def eq(x, y):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      x, y = jax.random.key_data(x), jax.random.key_data(y)
    return bool(jnp.array_equal(x, y)) and x.dtype == y.dtype
  return all(jax.tree.leaves(jax.tree.map(eq, a, b)))


def test_checkpointer_roundtrip_keeps_keys_and_dtypes(tmp_path):
  state, algo = _state()
  ck = Checkpointer(tmp_path, max_to_keep=2)
  ck.save(0, state, {"round": 0, "records": [[0, 0, [1, 2], 0.5, 1.0]]})
  state2, _ = algo.feedback(state, jnp.zeros((2, 5), jnp.int32),
                            jnp.array([0.2, 0.4])), None
  ck.save(1, state2, {"round": 1})
  ck.save(2, state2, {"round": 2})
  assert ck.steps() == [1, 2]  # max_to_keep
  step, restored, meta = ck.restore(algo.init(jax.random.key(9)))
  assert step == 2 and meta == {"round": 2}
  assert _equal(restored, state2)
  assert not _equal(restored, state)


def test_corrupt_latest_checkpoint_falls_back_to_previous(tmp_path):
  state, algo = _state()
  ck = Checkpointer(tmp_path, max_to_keep=3)
  ck.save(0, state, {"round": 0})
  ck.save(1, state, {"round": 1})
  latest = tmp_path / "checkpoints" / "1" / "state"
  for f in latest.rglob("*"):
    if f.is_file() and f.stat().st_size > 0:
      f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])  # truncate
  step, restored, meta = ck.restore(state)
  assert step == 0 and meta == {"round": 0}
  assert _equal(restored, state)
  # Not deleted: moved aside, so the redone round can save step 1 again.
  aside = list((tmp_path / "checkpoints_unreadable").iterdir())
  assert [p.name.split(".")[0] for p in aside] == ["1"]
  assert ck.steps() == [0]


def test_all_checkpoints_corrupt_is_a_clear_error(tmp_path):
  state, _ = _state()
  ck = Checkpointer(tmp_path)
  ck.save(0, state, {"round": 0})
  for f in (tmp_path / "checkpoints" / "0").rglob("*"):
    if f.is_file():
      f.write_bytes(b"garbage")
  with pytest.raises(CheckpointError, match="could be read"):
    ck.restore(state)


def test_checkpointer_needs_a_fallback():
  with pytest.raises(ValueError, match="max_to_keep"):
    Checkpointer("/tmp/unused", max_to_keep=1)
