"""Reader for the NAS-Bench-201 CIFAR-10 table (Dong & Yang, ICLR 2020).

The CSV has one row per cell in benchmark-index order with columns ``index,
arch_str, valid_acc_12ep, valid_acc_200ep, test_acc_200ep,
train_seconds_per_epoch`` (accuracies in percent).
"""

from __future__ import annotations

import csv
import os
import pathlib
from typing import NamedTuple

import numpy as np

from nas_jax.data import paths
from nas_jax.spaces import base, nasbench201

FILENAME = "nasbench201/nb201_cifar10.csv"
COLUMNS = ("index", "arch_str", "valid_acc_12ep", "valid_acc_200ep",
           "test_acc_200ep", "train_seconds_per_epoch")
_FLOAT_COLUMNS = COLUMNS[2:]


class NasBench201Table(NamedTuple):
  """Columns as arrays ordered by the space's mixed-radix index
  (``space.index(arch)``), so a lookup is one gather."""

  benchmark_index: np.ndarray          # int32[15625]
  valid_acc_12ep: np.ndarray           # f32[15625], percent
  valid_acc_200ep: np.ndarray
  test_acc_200ep: np.ndarray
  train_seconds_per_epoch: np.ndarray


def default_path() -> pathlib.Path:
  return paths.data_dir() / FILENAME


def load(path: str | os.PathLike | None = None) -> NasBench201Table:
  """Reads and checks the table; errors say what is wrong and how to fix it."""
  path = pathlib.Path(path) if path else default_path()
  if not path.is_file():
    raise FileNotFoundError(
        f"NAS-Bench-201 table not found at {path}. Put nb201_cifar10.csv "
        f"there, pass its path (experiments/main.py: --config.table_path=...; "
        f"benchmarks/nasbench201.py: --table_path=...), or set "
        f"${paths.ENV_VAR} to "
        "the folder that holds nasbench201/nb201_cifar10.csv (columns: "
        + ", ".join(COLUMNS) + ").")
  space = nasbench201.space()
  n = space.num_architectures
  cols = {c: np.full(n, np.nan, np.float32) for c in _FLOAT_COLUMNS}
  bench_index = np.full(n, -1, np.int32)
  with open(path, newline="") as f:
    reader = csv.DictReader(f)
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
      raise ValueError(f"{path} is not a NAS-Bench-201 table: missing columns "
                       f"{missing}; expected {', '.join(COLUMNS)}")
    for line, row in enumerate(reader, start=2):
      try:
        code = int(space.index(space.from_text(row["arch_str"])))
        bench_index[code] = int(row["index"])
        for c in _FLOAT_COLUMNS:
          cols[c][code] = float(row[c])
      except (ValueError, TypeError) as e:
        raise ValueError(f"{path}, line {line}: malformed row ({e}); the file "
                         "may be truncated or corrupt") from None
  if (bench_index < 0).any():
    raise ValueError(f"{path} holds {int((bench_index >= 0).sum())} of the "
                     f"{n} cells; the file is incomplete or corrupt")
  # Non-finite or impossible values would silently become rewards or costs.
  for c in _FLOAT_COLUMNS:
    v = cols[c]
    hi = np.inf if c == "train_seconds_per_epoch" else 100.0
    bad = np.flatnonzero(~np.isfinite(v) | (v < 0) | (v > hi))
    if bad.size:
      raise ValueError(
          f"{path}: column {c} holds {bad.size} value(s) that are not finite "
          f"numbers in 0..{hi:g} (e.g. {float(v[bad[0]])!r} for "
          f"{space.to_text(space.from_index(int(bad[0])))}); the file is "
          "corrupt: restore it from the original table")
  return NasBench201Table(bench_index, **cols)
