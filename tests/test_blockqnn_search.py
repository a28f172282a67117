"""Block-QNN with child training: early stopping in ChildTrainer, the
shaped reward and the costs in the history of the child-search binary, its
tiny end-to-end run, SIGKILL-resume, and bad input."""

from __future__ import annotations

import importlib.util
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_jax import costs
from nas_jax.children import cell_net
from nas_jax.data import datasets, pipeline
from nas_jax.evaluators import train_from_scratch
from nas_jax.spaces import registry
from nas_jax.train import child_search_run

import test_resume  # tests/test_resume.py: how the project kills runs

CONFIG = test_resume.ROOT / "experiments" / "configs" / "blockqnn_digits.py"


def _config(variant="tiny", **overrides):
  spec = importlib.util.spec_from_file_location("blockqnn_digits", CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(variant)
  config.update_from_flattened_dict(overrides)
  return config


def test_early_stop_is_the_full_schedule_cut_short():
  ds = datasets.load("digits", num_val=64, max_train=96, seed=0)
  space = registry.get("seed003_small")
  net = cell_net.make_network("seed003_small", num_classes=10, num_cells=1,
                              channels=4)
  trainer = train_from_scratch.ChildTrainer(
      space, net, ds, epochs=2, batch_size=32, learning_rate=0.1,
      early_stop_steps=4)
  # 3 steps per epoch: 4 of the 6-step schedule.
  assert (trainer.steps_per_epoch, trainer.num_steps) == (3, 4)
  arch = np.array([1, 2], np.int32)
  state, _ = trainer.train(arch)
  assert int(state.step) == 4
  # The first 4 steps of the full run (3 of epoch 0, 1 of epoch 1), by hand,
  # with the same compiled step (so the same 6-step cosine schedule).
  k_init, k_aug = jax.random.split(trainer.child_key(arch))
  ref = trainer._init(k_init, jnp.asarray(arch))
  for epoch, n in ((0, 3), (1, 1)):
    batches = pipeline.batches(ds.train_images, ds.train_labels, 32, seed=0,
                               epoch=epoch)
    for i, (x, y) in zip(range(n), batches):
      ref, _ = trainer._train_step(ref, jnp.asarray(arch), ds.normalize(x),
                                   jnp.asarray(y, jnp.int32),
                                   jax.random.fold_in(k_aug, epoch * 3 + i))
  jax.tree.map(np.testing.assert_allclose, state.params, ref.params)
  assert trainer.num_traces == 1
  with pytest.raises(ValueError, match="early_stop_steps must be >= 0"):
    train_from_scratch.ChildTrainer(space, net, ds, early_stop_steps=-1)


SIGKILL_ARGS = [f"--config={CONFIG}:tiny", "--config.num_rounds=25",
                "--config.network.num_cells=1"]


def test_tiny_run_costs_shaped_reward_and_sigkill_resume(tmp_path,
                                                         monkeypatch):
  # The uninterrupted reference, in this process: the tiny config, longer.
  ref = tmp_path / "ref"
  config = _config(num_rounds=25, **{"network.num_cells": 1})
  summary = child_search_run.run(config, str(ref))
  assert summary["algorithm"] == "q_learning"
  assert summary["compilations_of_train_step"] == 1
  assert summary["children_evaluated"] == 50
  for name in ("best.json", "best_arch.png", "search_curve.png",
               "metrics.jsonl", "config.json"):
    assert (ref / name).is_file(), name
  space = registry.get("blockqnn", max_layers=2)
  net = cell_net.make_network("blockqnn", num_classes=10, **config.network)
  for line in (ref / "history.jsonl").read_text().splitlines():
    h = json.loads(line)
    arch = space.from_text(h["arch"])
    assert (h["params"], h["flops"]) == costs.child_costs(net, space, arch,
                                                          (8, 8, 1))
    want = (h["accuracy"] - 0.5 * math.log(h["flops"] / 1e6)
            - 0.5 * math.log(costs.blockqnn_density(space, arch)))
    np.testing.assert_allclose(h["reward"], want, rtol=1e-5)
  best = json.loads((ref / "best.json").read_text())
  assert (best["params"], best["flops"]) == costs.child_costs(
      net, space, space.from_text(best["text"]), (8, 8, 1))
  # Killed once mid-run and resumed: the same history and best block.
  monkeypatch.setenv("PYTHONPATH", str(test_resume.ROOT))  # this checkout
  workdir = tmp_path / "run"
  assert test_resume._kill_and_resume(SIGKILL_ARGS, workdir, tmp_path,
                                      kills=1, seed=2) >= 1
  keys = ("step", "arch", "reward", "accuracy", "params", "flops")
  assert test_resume._history(workdir, keys) == test_resume._history(ref,
                                                                      keys)
  assert (json.loads((workdir / "best.json").read_text())
          == json.loads((ref / "best.json").read_text()))


@pytest.mark.parametrize("overrides, match", [
    ({"reward.mu": -1.0}, r"reward.mu must be a finite number >= 0"),
    ({"reward.kind": "flops"}, r"reward.kind must be one of"),
    ({"child.early_stop_steps": -2},
     r"child.early_stop_steps must be an integer in 0\.\."),
    ({"space_kwargs": {"max_layers": 0}},
     r"blockqnn max_layers must be a positive int"),
])
def test_bad_config_names_the_field(overrides, match, tmp_path):
  config = _config()
  config.update_from_flattened_dict(overrides)
  with pytest.raises(ValueError, match=match):
    child_search_run.check_config(config)


def test_invalid_block_code_is_a_clear_error():
  # Layer 2's first input may point at the block input or layer 1 only.
  space = registry.get("blockqnn", max_layers=2)
  net = cell_net.make_network("blockqnn", num_classes=10, channels=4)
  with pytest.raises(ValueError, match=r"layer2/input1.*allowed 0\.\.1"):
    costs.child_costs(net, space, [0, 0, 0, 1, 2, 0], (8, 8, 1))
  with pytest.raises(ValueError, match=r"mu must be >= 0"):
    costs.blockqnn_shaping(net, space, (8, 8, 1), mu=-0.5)
