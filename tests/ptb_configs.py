"""Loading the PTB run configs with overrides, for the PTB tests."""

from __future__ import annotations

import pathlib
import runpy

import ml_collections

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "configs"


def load(name: str, variant: str = "tiny",
         **overrides) -> ml_collections.ConfigDict:
  """``experiments/configs/<name>.py:<variant>`` with dotted overrides."""
  c = runpy.run_path(str(CONFIGS / f"{name}.py"))["get_config"](variant)
  for dotted, value in overrides.items():
    node = c
    *path, last = dotted.split(".")
    for p in path:
      node = node[p]
    node[last] = value
  return c
