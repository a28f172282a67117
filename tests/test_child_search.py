"""End-to-end: the main job (children trained from scratch on the embedded
digits) runs with no ../shared data and leaves its files in the workdir."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from nas_jax import viz
from nas_jax.children import cell_net
from nas_jax.data import datasets
from nas_jax.evaluators import train_from_scratch
from nas_jax.spaces import registry

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_digits():
  return datasets.load("digits", num_val=100, max_train=256, seed=0)


def _trainer(space_name, ds, **kw):
  space = registry.get(space_name)
  net = cell_net.make_network(space_name, num_classes=10, num_cells=1,
                              channels=4)
  return train_from_scratch.ChildTrainer(space, net, ds, epochs=1,
                                         batch_size=64, **kw)


def test_trainer_rewards_are_deterministic_and_cached(tiny_digits):
  trainer = _trainer("seed003_small", tiny_digits)
  ev = train_from_scratch.TrainFromScratchEvaluator(trainer)
  archs = np.array([[1, 0], [7, 7], [1, 0]], np.int32)
  out = ev(archs)
  assert out.reward.shape == (3,) and out.reward.dtype == np.float32
  assert 0.0 <= out.reward.min() and out.reward.max() <= 1.0
  assert out.reward[0] == out.reward[2]       # same child, cached
  assert out.cost[2] == 0.0 and out.cost[0] > 0.0
  assert len(ev.cache) == 2
  # Training the same child again gives the same reward (seeded per child).
  assert trainer.train_and_evaluate(archs[0]).val_accuracy == out.reward[0]
  assert trainer.num_traces == 1  # one compiled train step for both children


def test_trainer_learns_on_digits(tiny_digits):
  """A conv child beats chance (10%) clearly after 8 epochs on 256 images."""
  space = registry.get("seed003_small")
  net = cell_net.make_network("seed003_small", num_classes=10, num_cells=1,
                              channels=16)
  trainer = train_from_scratch.ChildTrainer(space, net, tiny_digits,
                                            epochs=8, batch_size=32,
                                            learning_rate=0.1)
  res = trainer.train_and_evaluate(space.from_text("conv_3x3>conv_3x3"))
  assert res.val_accuracy > 0.5, res
  assert res.num_params > 0


def test_trainer_rejects_bad_config_and_arch(tiny_digits):
  with pytest.raises(ValueError, match="epochs"):
    _trainer("seed003_small", tiny_digits, learning_rate=0.1).__class__(
        registry.get("seed003_small"), None, tiny_digits, epochs=0)
  with pytest.raises(ValueError, match="batch_size"):
    train_from_scratch.ChildTrainer(registry.get("seed003_small"), None,
                                    tiny_digits, batch_size=10**6)
  with pytest.raises(ValueError, match="optimizer"):
    train_from_scratch.make_optimizer("rmsprop", 0.1, 10)
  trainer = _trainer("seed003_small", tiny_digits)
  with pytest.raises(ValueError, match="op2"):
    trainer.train_and_evaluate(np.array([0, 8]))


def test_main_job_runs_offline_and_writes_its_files(tmp_path):
  env = dict(os.environ, NAS_JAX_DATA_DIR=str(tmp_path / "no_data_here"),
             JAX_PLATFORMS="cpu")
  workdir = tmp_path / "run"
  cmd = [sys.executable, "experiments/main.py",
         "--config=experiments/configs/seed003_digits.py:ppo",
         f"--workdir={workdir}", "--config.num_rounds=1",
         "--config.ppo.batch_size=2", "--config.ppo.minibatch_size=1",
         "--config.child.epochs=1", "--config.network.channels=4",
         "--config.network.num_cells=1", "--config.data.max_train=200"]
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  for name in ("config.json", "history.jsonl", "best.json", "summary.json",
               "best_arch.png", "best_arch.dot", "search_curve.png"):
    assert (workdir / name).is_file(), name
  lines = [json.loads(l) for l in
           (workdir / "history.jsonl").read_text().splitlines()]
  assert len(lines) == 2
  best = json.loads((workdir / "best.json").read_text())
  assert best["reward"] == max(l["reward"] for l in lines)
  space = registry.get("seed003_small")
  assert space.to_text(space.from_text(best["text"])) == best["text"]
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["compilations_of_train_step"] == 1
  assert (workdir / "best_arch.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("name", registry.names())
def test_every_family_draws(name, tmp_path):
  space = registry.get(name)
  arch = np.asarray(space.sample_uniform(jax.random.key(0)))
  files = viz.draw(space, arch, tmp_path / f"{name}.png")
  assert files[0].read_bytes()[:4] == b"\x89PNG"
  dot = files[1].read_text()
  assert dot.startswith("digraph") and "->" in dot
