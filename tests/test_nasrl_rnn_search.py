"""The NAS-RL tree-cell search on Penn Treebank (or the synthetic stream
where PTB is absent): a tiny run end to end through host_search."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from nas_jax import metrics
from nas_jax.data import ptb
from nas_jax.spaces import registry
from nas_jax.train import nasrl_ptb_run
import ptb_configs  # tests/ptb_configs.py (pytest puts tests/ on the path)

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = "ptb" if ptb.available() else "synthetic"


def _config(variant="tiny", **overrides):
  return ptb_configs.load("nasrl_ptb", variant, **overrides)


def test_tiny_tree_cell_search_end_to_end_with_ppo(tmp_path):
  c = _config(algorithm="ppo", **{"data.name": DATA})
  summary = nasrl_ptb_run.run(c, str(tmp_path))
  assert summary["status"] == "done" and summary["dataset"] == DATA
  assert summary["children_evaluated"] == 3 * 4
  assert summary["compilations_of_train_step"] == 1  # one program, base 2
  space = registry.get("nasrl_rnn", base=2)
  lines = [json.loads(l) for l in
           (tmp_path / "history.jsonl").read_text().splitlines()]
  assert len(lines) == 12
  for l in lines:
    space.from_text(l["arch"])
    assert l["params"] > 0  # the child's own weights (its cost)
    if l["reward"] > 0:  # reward = 80 / ppl^2
      np.testing.assert_allclose(l["reward"] * l["valid_perplexity"] ** 2,
                                 80.0, rtol=1e-4)
  best = json.loads((tmp_path / "best.json").read_text())
  assert best["reward"] == max(l["reward"] for l in lines)
  assert best["formulas"] == space.formulas(space.from_text(best["text"]))
  assert [m["step"] for m in metrics.read_jsonl(tmp_path / "metrics.jsonl")
          ] == [0, 1, 2]
  for f in ("best_arch.png", "search_curve.png", "data.json", "config.json"):
    assert (tmp_path / f).is_file(), f
  assert list((tmp_path / "checkpoints").iterdir())


def test_resume_on_other_data_is_refused(tmp_path):
  (tmp_path / "data.json").write_text(json.dumps(
      {"name": "ptb", "vocab_size": 10000, "fingerprint": "feedfacefeedface"}))
  with pytest.raises(ValueError, match="vocabulary of 10000 words"):
    nasrl_ptb_run.run(_config(**{"data.name": "synthetic"}), str(tmp_path))
  assert not (tmp_path / "config.json").exists()


@pytest.mark.parametrize("field, value, match", [
    ("space_kwargs", {"base": 3}, "space_kwargs: base must be one of"),
    ("child.steps", 0, "child.steps must be an integer in 1..1000000000, got 0"),
    ("child.reward_power", 0.0, "child.reward_power must be a finite number > 0, got 0.0"),
    ("algorithm", "dqn", "algorithm must be one of"),
    ("model.hidden_keep", 0.0, "model.hidden_keep must be a finite number > 0 and <= 1, got 0.0"),
])
def test_config_errors_name_the_field(field, value, match):
  with pytest.raises(ValueError, match=match):
    nasrl_ptb_run.check_config(_config(**{field: value}))


@pytest.mark.parametrize("variant", ["paper", "cpu", "tiny"])
def test_every_variant_passes_its_checks(variant):
  nasrl_ptb_run.check_config(_config(variant))
