"""The ENAS recurrent-cell search on the shared loop: a tiny run end to end
(search, derive, retrain) that survives SIGKILL bit-exactly, on PTB when
``../shared/data/ptb`` exists and on the synthetic stream otherwise; config
and data errors."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import ml_collections
import numpy as np
import pytest

from nas_jax import metrics
from nas_jax.children import enas_rnn
from nas_jax.data import ptb
from nas_jax.spaces import enas
from nas_jax.train import enas_ptb_run
import ptb_configs  # tests/ptb_configs.py (pytest puts tests/ on the path)

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = ROOT / "experiments" / "configs" / "enas_ptb.py"
DATA = "ptb" if ptb.available() else "synthetic"
EPOCHS = 6
ARGS = [f"--config={CONFIG}:tiny", f"--config.data.name={DATA}",
        f"--config.num_epochs={EPOCHS}"] + (
            # PTB's whole valid and test splits in few eval windows.
            ["--config.retrain.eval_batch_size=64",
             "--config.retrain.eval_bptt=64"] if DATA == "ptb" else [])


def _config(**overrides) -> ml_collections.ConfigDict:
  return ptb_configs.load("enas_ptb", **overrides)


def env(cache_dir) -> dict:
  """Subprocess environment: this checkout's code, the test suite's fast
  compile, and a persistent compilation cache shared by the runs of one
  test (so only the first process compiles)."""
  e = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT),
           JAX_COMPILATION_CACHE_DIR=str(cache_dir),
           JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
           JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")
  e["XLA_FLAGS"] = (e.get("XLA_FLAGS", "") +
                    " --xla_backend_optimization_level=0").strip()
  return e


def _main(args, workdir, cache, **kw):
  return subprocess.Popen(
      [sys.executable, "experiments/main.py", f"--workdir={workdir}", *args],
      cwd=ROOT, env=env(cache), stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True, **kw)


def _finish(proc):
  out, _ = proc.communicate(timeout=600)
  assert proc.returncode == 0, out[-4000:]
  return out


def _history(workdir):
  return (pathlib.Path(workdir) / "history.jsonl").read_text().splitlines()


def _steps(workdir):
  d = pathlib.Path(workdir) / "checkpoints"
  return sorted(int(p.name) for p in d.iterdir()
                if p.name.isdigit()) if d.is_dir() else []


def test_tiny_search_runs_end_to_end_and_resumes_bit_exactly(tmp_path):
  cache = tmp_path / "jax_cache"
  ref = tmp_path / "ref"
  _finish(_main(ARGS, ref, cache))
  summary = json.loads((ref / "summary.json").read_text())
  assert summary["status"] == "done" and summary["dataset"] == DATA
  best = json.loads((ref / "best.json").read_text())
  space = enas.rnn_space(4)
  arch = space.from_text(best["text"])
  # The retrained cell has its own weights only: node 0's pair, 3 pairs,
  # and the tied embedding.
  vocab = 10_000 if DATA == "ptb" else 32
  h = 16
  assert best["retrain"]["num_params"] == (
      enas_rnn.child_param_count(4, h) + vocab * h)
  assert 1 < best["retrain"]["valid_perplexity"] < 2 * vocab
  assert np.isfinite(best["retrain"]["test_perplexity"])
  lines = [json.loads(l) for l in _history(ref)]
  assert len(lines) == EPOCHS * 2 * 2  # epochs x controller steps x batch
  for l in lines:
    np.testing.assert_array_equal(space.from_text(l["arch"]),
                                  space.from_text(l["arch"]))
    np.testing.assert_allclose(l["reward"] * l["valid_perplexity"], 80.0,
                               rtol=1e-5)
  assert [m["step"] for m in metrics.read_jsonl(ref / "metrics.jsonl")
          ] == list(range(EPOCHS))
  for f in ("best_arch.png", "search_curve.png", "config.json", "data.json"):
    assert (ref / f).is_file(), f

  # SIGKILL after the first checkpoint, then resume: same bits.
  run = tmp_path / "run"
  proc = _main(ARGS, run, cache)
  t0 = time.time()
  while not _steps(run) and proc.poll() is None and time.time() - t0 < 300:
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  killed_mid_run = not (run / "summary.json").exists()
  assert _steps(run), "no checkpoint before the kill"
  out = _finish(_main(ARGS, run, cache))
  assert killed_mid_run, "the run finished before it could be killed"
  assert "resumed after epoch" in out
  assert _history(run) == _history(ref)
  got = json.loads((run / "best.json").read_text())
  del got["retrain"]["seconds"], best["retrain"]["seconds"]
  assert got == best
  assert [m["step"] for m in metrics.read_jsonl(run / "metrics.jsonl")
          ] == list(range(EPOCHS))


def test_vocabulary_mismatch_between_checkpoint_and_data_is_refused(tmp_path):
  enas_ptb_run.run  # noqa: B018 (the run kind exists)
  workdir = tmp_path / "w"
  workdir.mkdir()
  (workdir / "data.json").write_text(json.dumps(
      {"name": "ptb", "vocab_size": 10000, "fingerprint": "0123456789abcdef"}))
  (workdir / "history.jsonl").write_text("keep me\n")
  with pytest.raises(ValueError, match=r"vocabulary of 10000 words.*now is "
                     r"'synthetic' with 32 words.*same data.*new --workdir"):
    enas_ptb_run.run(_config(), str(workdir))
  assert (workdir / "history.jsonl").read_text() == "keep me\n"
  assert not (workdir / "config.json").exists()


@pytest.mark.parametrize("field, value, match", [
    ("num_epochs", 0, "num_epochs must be an integer in 1..1000000, got 0"),
    ("shared.bptt", -1, "shared.bptt must be an integer in 1..1000000, got -1"),
    ("shared.learning_rate", -1.0, "shared.learning_rate must be a finite number > 0, got -1.0"),
    ("model.input_keep", 1.5, r"model.input_keep must be a finite number > 0 and <= 1, got 1.5"),
    ("data.name", "wiki", "data.name must be one of 'ptb', 'synthetic', got 'wiki'"),
    ("fixed_arch", "tanh;0:relu", "fixed_arch: .*expected 4"),
    ("space_kwargs", {"num_nodes": 0}, "space_kwargs: num_nodes must be"),
    ("model.max_hidden_norm", -1.0, "model.max_hidden_norm must be a finite number >= 0, got -1.0"),
    ("retrain.grad_clip", -0.1, "retrain.grad_clip must be a finite number >= 0, got -0.1"),
    ("algorithm", "ppo", "algorithm must be one of 'reinforce', 'random', got 'ppo'"),
])
def test_config_errors_name_the_field(field, value, match):
  with pytest.raises(ValueError, match=match):
    enas_ptb_run.check_config(_config(**{field: value}))


def test_bptt_longer_than_the_data_is_a_clear_error(tmp_path):
  c = _config(**{"shared.bptt": 2000})
  with pytest.raises(ValueError, match="BPTT length 2000 is longer than the "
                     "training split"):
    enas_ptb_run.run(c, str(tmp_path / "w"))


def test_paper_cell_trains_from_scratch_by_name(tmp_path):
  c = _config(fixed_arch="enas_rnn_paper", **{
      "space_kwargs": {"num_nodes": 12}, "model.hidden_size": 8,
      "retrain.steps": 3})
  summary = enas_ptb_run.run(c, str(tmp_path))
  assert summary["fixed_arch"] == enas.PTB_CELL
  assert summary["retrain_params"] == (enas_rnn.child_param_count(12, 8)
                                       + 32 * 8)
  assert np.isfinite(summary["retrain_test_perplexity"])
  best = json.loads((tmp_path / "best.json").read_text())
  assert best["text"] == enas.PTB_CELL


@pytest.mark.parametrize("variant", ["paper", "cpu", "tiny"])
def test_every_variant_passes_its_checks(variant):
  enas_ptb_run.check_config(ptb_configs.load("enas_ptb", variant))



@pytest.mark.parametrize("variable", [False, True])
def test_task_batches_are_pure_functions_of_epoch_and_step(variable):
  c = _config(**{"shared.variable_bptt": variable, "shared.steps_per_epoch": 0})
  _, corpus, _, task, _ = enas_ptb_run.build(c)
  pad = 8 + 20 if variable else 8
  b = task.train_batch(0, 0)
  assert b.inputs.shape == (4, pad) and float(b.reset) == 1.0
  lengths = []
  for i in range(task.steps_per_epoch):
    b = task.train_batch(0, i)
    m = b.mask[0]
    n = int(m.sum())
    assert np.all(m[:n] == 1) and np.all(m[n:] == 0)
    np.testing.assert_array_equal(b.targets[:, :n - 1], b.inputs[:, 1:n])
    lengths.append(n)
  assert float(task.train_batch(1, 0).reset) == 1.0  # a new pass
  assert (len(set(lengths)) > 1) == variable
  # Every training target of the pass, once (fixed: all but the tail).
  stream = ptb.batchify(corpus.train, 4)
  assert sum(lengths) <= stream.shape[1] - 1
  v1, v2 = task.val_batch(3), task.val_batch(3)
  np.testing.assert_array_equal(v1[0], v2[0])
  assert not np.array_equal(task.val_batch(4)[0], v1[0])
