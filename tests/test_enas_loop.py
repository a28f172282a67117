"""The ENAS alternating loop and its binaries: the generic loop on a toy task
(records, derive, in-process resume), the SGDR schedule, tiny micro / macro
searches and retrains end to end (subprocesses, started together so their
compilation overlaps), SIGKILL-and-resume bit for bit, and clear errors."""

from __future__ import annotations

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
import ml_collections
import numpy as np
import pytest

from nas_jax import algorithms, metrics
from nas_jax.checkpoint import Checkpointer
from nas_jax.controllers import make_controller
from nas_jax.spaces import base as spaces_base
from nas_jax.spaces import registry
from nas_jax.train import enas, enas_run, retrain

ROOT = pathlib.Path(__file__).resolve().parents[1]
MICRO = ["--config=experiments/configs/enas_micro.py:tiny",
         "--config.num_epochs=5"]
MACRO = ["--config=experiments/configs/enas_macro.py:tiny"]
RETRAIN_MACRO = ["--config=experiments/configs/enas_retrain.py:tiny_macro"]


# -- the generic loop on a toy task -------------------------------------------


def _toy_task(space):
  """Shared state: one weight per (decision, choice); training a child adds
  to its weights; the reward is the mean weight of the child's choices plus
  a fixed preference for choice 1 (so REINFORCE has something to learn)."""
  T, C = space.num_decisions, int(space.num_choices.max())

  def init(key):
    return {"w": jax.random.normal(key, (T, C)) * 0.01,
            "n": jnp.zeros((), jnp.int32)}

  def train_step(state, arch, batch, key):
    noise = jax.random.normal(key, ()) * 1e-3
    w = state["w"].at[jnp.arange(T), arch].add(0.1 * batch + noise)
    return {"w": w, "n": state["n"] + 1}, {"loss": jnp.sum(w)}

  def reward(state, arch, batch):
    picked = state["w"][jnp.arange(T), arch]
    return jnp.mean(picked) + jnp.mean(arch == 1) + 0.0 * batch

  return enas.SharedTask(space, init, train_step, reward,
                         train_batch=lambda e, i: np.float32(1 + e + i),
                         steps_per_epoch=3,
                         val_batch=lambda s: np.float32(s % 2), name="toy")


def _toy_algo(space):
  ctrl = make_controller(space, hidden_size=8)
  return algorithms.reinforce(ctrl, batch_size=2, learning_rate=0.05)


def test_loop_records_and_derive():
  space = registry.get("seed003_small")
  task, algo = _toy_task(space), _toy_algo(space)
  seen = []
  result = enas.run_enas(task, algo, jax.random.key(0), num_epochs=2,
                         controller_steps=3, on_record=seen.append)
  assert result.status == "done"
  # 2 epochs x 3 controller steps x 2 children, numbered in order.
  assert [r.step for r in result.records] == list(range(12))
  assert [r.epoch for r in result.records] == [0] * 6 + [1] * 6
  assert seen == result.records
  assert int(result.state.shared["n"]) == 6  # 2 epochs x 3 shared steps
  assert int(result.state.controller.num_updates) == 6
  assert result.epochs[1]["shared/loss"] > result.epochs[0]["shared/loss"]
  d = enas.derive(task, algo, result.state, jax.random.key(5),
                  num_samples=7, steps=result.steps)
  assert d.archs.shape == (7, space.num_decisions)
  assert d.reward == float(np.max(d.rewards))
  np.testing.assert_array_equal(d.arch, d.archs[int(np.argmax(d.rewards))])
  # The reward really is task.reward on the one derive batch.
  want = task.reward(result.state.shared, jnp.asarray(d.arch),
                     task.val_batch(-1))
  np.testing.assert_allclose(d.reward, float(want), rtol=1e-6)


def test_loop_resume_in_process_is_exact(tmp_path):
  space = registry.get("seed003_small")
  task, algo = _toy_task(space), _toy_algo(space)
  full = enas.run_enas(task, algo, jax.random.key(1), num_epochs=4,
                       controller_steps=2)
  ckpt = Checkpointer(tmp_path)
  part = enas.run_enas(task, algo, jax.random.key(1), num_epochs=2,
                       controller_steps=2, checkpointer=ckpt)
  assert len(part.records) == 8
  resumed_from = []
  rest = enas.run_enas(task, algo, jax.random.key(1), num_epochs=4,
                       controller_steps=2, checkpointer=ckpt,
                       on_resume=lambda recs, e: resumed_from.append(e))
  ckpt.close()
  assert resumed_from == [2]
  assert [(r.step, r.arch.tolist(), r.reward) for r in rest.records] == [
      (r.step, r.arch.tolist(), r.reward) for r in full.records]
  for a, b in zip(jax.tree.leaves(rest.state), jax.tree.leaves(full.state)):
    if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
      a, b = jax.random.key_data(a), jax.random.key_data(b)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_sgdr_schedule_hand_computed():
  lr = enas_run.sgdr_schedule(1.0, 0.0, t0=1.0, t_mul=2.0, steps_per_epoch=4)
  # Cycle 0: epochs [0, 1); cycle 1: [1, 3); cycle 2: [3, 7).
  for step, want in [(0, 1.0), (2, 0.5), (4, 1.0), (8, 0.5), (12, 1.0),
                     (20, 0.5)]:
    np.testing.assert_allclose(float(lr(step)), want, atol=1e-6)
  lr = enas_run.sgdr_schedule(0.05, 0.0005, t0=2.0, t_mul=1.0,
                              steps_per_epoch=10)
  np.testing.assert_allclose(float(lr(10)), 0.0005 + 0.5 * 0.0495, rtol=1e-6)
  np.testing.assert_allclose(float(lr(20)), 0.05, rtol=1e-6)


# -- binaries -----------------------------------------------------------------


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  e = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
  e["XLA_FLAGS"] = (e.get("XLA_FLAGS", "") +
                    " --xla_backend_optimization_level=0").strip()
  # Restarts of a killed run reuse the first run's compilations.
  e["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path_factory.mktemp("jax_cache"))
  return e


def _cmd(args, workdir):
  return [sys.executable, "experiments/main.py", f"--workdir={workdir}",
          *args]


def _start(args, workdir, env, log=subprocess.PIPE):
  return subprocess.Popen(_cmd(args, workdir), cwd=ROOT, env=env, stdout=log,
                          stderr=subprocess.STDOUT, text=True)


def _wait(proc):
  out, _ = proc.communicate(timeout=900)
  assert proc.returncode == 0, out[-4000:]
  return out


@pytest.fixture(scope="module")
def started(tmp_path_factory, env):
  """The reference micro search, the macro search and the macro retrain,
  started together (awaited by the fixtures below)."""
  base = tmp_path_factory.mktemp("enas_runs")
  args = {"micro": MICRO, "macro": MACRO, "retrain_macro": RETRAIN_MACRO}
  procs = {k: (_start(a, base / k, env), base / k) for k, a in args.items()}
  yield procs
  for proc, _ in procs.values():  # runs no selected test waited for
    if proc.poll() is None:
      proc.kill()
      proc.communicate()


def _finished(started, name):
  proc, workdir = started[name]
  if proc.returncode is None:
    _wait(proc)
  assert proc.returncode == 0
  return workdir


@pytest.fixture(scope="module")
def runs(started):
  return {k: _finished(started, k) for k in started}


@pytest.fixture(scope="module")
def micro_run(started):
  return _finished(started, "micro")


def _search_files_ok(workdir, space_name, num_lines):
  best = json.loads((workdir / "best.json").read_text())
  space = registry.get(space_name, **(
      {"num_nodes": 1} if space_name == "enas_micro" else {"num_layers": 3}))
  arch = space.from_text(best["text"])
  assert space.from_spec(best["spec"]).tolist() == arch.tolist()
  assert 0.0 <= best["reward"] <= 1.0
  assert best["reward"] >= best["derive_reward_median"]
  for f in ("best_arch.png", "best_arch.dot", "search_curve.png",
            "config.json", "summary.json"):
    assert (workdir / f).stat().st_size > 0, f
  history = [json.loads(l) for l in
             (workdir / "history.jsonl").read_text().splitlines()]
  assert len(history) == num_lines
  assert [h["step"] for h in history] == list(range(num_lines))
  for h in history:
    space.from_text(h["arch"])
  rows = metrics.read_jsonl(workdir / "metrics.jsonl")
  assert [r["step"] for r in rows] == list(range(len(rows)))
  assert all(np.isfinite(r["shared/loss"]) for r in rows)
  assert metrics.event_files(workdir / "tensorboard")
  return best


def test_tiny_micro_search_end_to_end(micro_run):
  # 5 epochs x 2 controller steps x 2 children.
  best = _search_files_ok(micro_run, "enas_micro", 20)
  assert len(best["spec"]["choices"]) == 8


def test_tiny_macro_search_end_to_end(runs):
  _search_files_ok(runs["macro"], "enas_macro", 8)


def test_retrain_the_derived_cell_end_to_end(runs, env, tmp_path):
  """The derived cell's text line goes straight into the retrain binary."""
  text = json.loads((runs["micro"] / "best.json").read_text())["text"]
  out = tmp_path / "retrain"
  _wait(_start(["--config=experiments/configs/enas_retrain.py:tiny_micro",
                f"--config.arch={text}"], out, env))
  best = json.loads((out / "best.json").read_text())
  assert best["text"] == text
  assert 0.0 <= best["test_accuracy"] <= 1.0 and best["num_params"] > 0
  assert len((out / "history.jsonl").read_text().splitlines()) == 1
  for d in (out, runs["retrain_macro"]):
    assert (d / "best_arch.png").stat().st_size > 0
    assert json.loads((d / "summary.json").read_text())["status"] == "done"


def _checkpoints(workdir):
  d = pathlib.Path(workdir) / "checkpoints"
  return (sorted(int(p.name) for p in d.iterdir() if p.name.isdigit())
          if d.is_dir() else [])


def _comparable(workdir):
  """Everything a run decides, without wall-clock fields."""
  history = (workdir / "history.jsonl").read_text()
  rows = [{k: v for k, v in r.items()
           if k != "wall_time" and "second" not in k}
          for r in metrics.read_jsonl(workdir / "metrics.jsonl")]
  best = json.loads((workdir / "best.json").read_text())
  return history, rows, best


def test_sigkill_and_resume_is_bit_exact(micro_run, env, tmp_path):
  """SIGKILL after random checkpoints (mid-epoch, mid-save or later), then
  resume: history (every reward = the shared weights' and the controller's
  state), per-epoch metrics and the derived child equal the uninterrupted
  run's exactly."""
  workdir = tmp_path / "killed"
  rng = random.Random(0)
  last, kills = -1, 0
  for i in range(3):
    with open(tmp_path / f"log{i}.txt", "w") as log:
      proc = _start(MICRO, workdir, env, log)
      t0 = time.time()
      while time.time() - t0 < 600:
        steps = _checkpoints(workdir)
        if (steps and steps[-1] > last) or proc.poll() is not None:
          break
        time.sleep(0.05)
      if proc.poll() is not None:
        break
      time.sleep(rng.uniform(0.0, 0.4))
      proc.send_signal(signal.SIGKILL)
      proc.wait()
      kills += not (workdir / "summary.json").exists()
      last = _checkpoints(workdir)[-1]
  assert kills >= 2
  _wait(_start(MICRO, workdir, env))
  assert _comparable(workdir) == _comparable(micro_run)


# -- clear errors ---------------------------------------------------------------


def _micro_config(**overrides):
  from experiments.configs import enas_micro  # pylint: disable=g-import-not-at-top
  c = enas_micro.get_config("tiny")
  c.update_from_flattened_dict(overrides)
  return c


def test_impossible_size_names_the_field_and_fix():
  with pytest.raises(ValueError, match=r"network.num_reductions.*4 stride-2 "
                     r"reductions need images of at least 16 pixels.*use at "
                     r"most 3 reductions"):
    enas_run.check_config(_micro_config(**{"network.num_reductions": 4}))
  from experiments.configs import enas_macro  # pylint: disable=g-import-not-at-top
  c = enas_macro.get_config("tiny")
  c.data.name = "digits"
  c.space_kwargs = {"num_layers": 3}
  enas_run.check_config(c)  # 3 layers: one pool on 8x8 images is fine
  c.data.name = "cifar10"
  c.space_kwargs = {"num_layers": 0}
  with pytest.raises(ValueError, match="num_layers"):
    enas_run.check_config(c)


def test_bad_config_values_name_the_dotted_field():
  with pytest.raises(ValueError, match=r"^shared.lr_max must be a finite "
                     r"number > 0, got -1"):
    enas_run.check_config(_micro_config(**{"shared.lr_max": -1.0}))
  with pytest.raises(ValueError, match=r"^controller_steps must be an integer "
                     r"in 0\.\.1000000, got -2"):
    enas_run.check_config(_micro_config(controller_steps=-2))
  with pytest.raises(ValueError, match=r"^parallel must be one of"):
    enas_run.check_config(_micro_config(parallel="model"))
  with pytest.raises(ValueError, match=r"^reinforce.learning_rate must be a "
                     r"finite number > 0, got -1"):
    enas_run.check_config(_micro_config(**{"reinforce.learning_rate": -1.0}))
  with pytest.raises(ValueError, match=r"^reinforce.baseline_decay must be "
                     r"a finite number >= 0 and < 1, got 1.0"):
    enas_run.check_config(_micro_config(**{"reinforce.baseline_decay": 1.0}))
  with pytest.raises(ValueError, match=r"^controller.op_tanh_reduce must be a "
                     r"finite number > 0, got 0.0"):
    enas_run.check_config(_micro_config(**{"controller.op_tanh_reduce": 0.0}))


def test_missing_data_set_is_a_clear_error_and_writes_nothing(tmp_path):
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "notes.txt").write_text("keep me")
  c = _micro_config(**{"data.name": "fashion_mnist",
                       "data.data_dir": str(tmp_path / "empty")})
  with pytest.raises(FileNotFoundError, match="fashion_mnist"):
    enas_run.run(c, str(workdir))
  assert sorted(p.name for p in workdir.iterdir()) == ["notes.txt"]
  assert (workdir / "notes.txt").read_text() == "keep me"


def _retrain_config(arch, variant="tiny_micro"):
  from experiments.configs import enas_retrain  # pylint: disable=g-import-not-at-top
  c = enas_retrain.get_config(variant)
  c.arch = arch
  return c


def test_bad_architecture_strings_name_the_decision_and_fix():
  with pytest.raises(spaces_base.InvalidArchitectureError,
                     match=r"decision 2 'normal/node0/op_a'.*value 7 is out "
                     r"of range.*Pass the 'text' line of a best.json"):
    retrain.check_config(_retrain_config("0,1,7,2,1,0,4,0"))
  with pytest.raises(spaces_base.InvalidArchitectureError,
                     match=r"has 3 comma-separated values; expected 8"):
    retrain.check_config(_retrain_config("0,1,2"))
  with pytest.raises(spaces_base.InvalidArchitectureError,
                     match=r"cannot parse"):
    retrain.check_config(_retrain_config("sep_conv,identity"))
  with pytest.raises(spaces_base.InvalidArchitectureError,
                     match=r"belongs to space 'enas_macro'.*--config.space"):
    retrain.check_config(_retrain_config("enas_macro_paper"))
  retrain.check_config(_retrain_config("enas_macro_paper", "macro"))


def test_bad_arch_through_the_binary_exits_2_and_keeps_files(env, tmp_path):
  workdir = tmp_path / "w"
  workdir.mkdir()
  (workdir / "notes.txt").write_text("keep me")
  proc = subprocess.run(
      _cmd(["--config=experiments/configs/enas_retrain.py:tiny_micro",
            "--config.arch=1,2,3"], workdir), cwd=ROOT, env=env,
      capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2
  assert "expected 8 comma-separated integers" in proc.stderr
  assert sorted(p.name for p in workdir.iterdir()) == ["notes.txt"]
