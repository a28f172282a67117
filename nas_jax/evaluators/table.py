"""Reward tables from your own data: ``{architecture: value}`` mappings or
CSV / JSON files, checked against a space and put in its index order.

A :class:`~nas_jax.evaluators.tabular.TabularEvaluator` gathers rewards by
``space.index`` (first decision = most significant digit). Building that
vector by hand invites a silently wrong order; :func:`columns` builds it from
keys that name architectures, and refuses a table in which some architecture
of the space is missing, present twice, or has a non-finite value, naming the
first offending one::

    space = SearchSpace("two_bits", [Decision("a", choices=("x", "y")),
                                     Decision("b", choices=("x", "y"))])
    cols = table.columns(space, {"0,0": 0.5, "0,1": 0.75, "1,0": 0.25,
                                 "1,1": 1.0})
    evaluate = TabularEvaluator(space, cols["reward"])

Keys (``key_format``):

* ``"text"``: the space's text form (``space.from_text``; comma-separated
  choice indices unless the space defines its own notation, e.g.
  ``"conv_3x3>identity"`` for ``seed003_small``);
* ``"indices"``: comma-separated indices, or a tuple / list of ints;
* ``"digits"``: one digit per decision, e.g. ``"22212220"`` (every decision
  has at most 10 choices);
* ``"index"``: the mixed-radix index itself (an int or a decimal string);
* ``"auto"`` (default): a tuple / list is indices; a string is the text form,
  or digits when it is exactly one digit per decision.

Rewards are what the algorithms maximise, best as fractions in [0, 1]
(accuracies as 0.94, not 94): the default learning rates and baselines of
REINFORCE and PPO assume that scale. :func:`evaluator` rescales with
``reward_scale`` and warns when the rewards look like percentages.
"""

from __future__ import annotations

import csv
import json
import math
import pathlib
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from absl import logging

from nas_jax.evaluators import tabular
from nas_jax.spaces import base
from nas_jax.spaces import registry

KEY_FORMATS = ("auto", "text", "indices", "digits", "index")
REWARD = "reward"  # the column name of a mapping {arch: number}


class TableError(ValueError):
  """A table does not fit its space (missing, duplicate, unreadable keys,
  missing columns or non-finite values)."""


def parse_key(space: base.SearchSpace, key: Any,
              key_format: str = "auto") -> np.ndarray:
  """The architecture ``int32[T]`` a table key names (see module doc)."""
  if key_format not in KEY_FORMATS:
    raise ValueError(f"key_format must be one of {', '.join(KEY_FORMATS)}, "
                     f"got {key_format!r}")
  T = space.num_decisions
  if isinstance(key, np.ndarray):
    key = key.tolist()
  if key_format == "index" or (key_format == "auto"
                               and isinstance(key, (int, np.integer))
                               and not isinstance(key, bool)):
    if key_format == "auto":
      raise base.InvalidArchitectureError(
          f"table key {key!r} is an int: an architecture index or a "
          "one-decision code? Set key_format='index' to read ints as "
          "indices (space.index order)")
    try:
      index = int(str(key).strip())
    except ValueError:
      raise base.InvalidArchitectureError(
          f"table key {key!r} is not an integer index") from None
    return space.from_index(index)
  if isinstance(key, (tuple, list)):
    if key_format not in ("auto", "indices"):
      raise base.InvalidArchitectureError(
          f"table key {key!r} is a sequence; key_format={key_format!r} "
          "expects a str (use key_format='indices')")
    return space.validate(list(key))
  if not isinstance(key, str):
    raise base.InvalidArchitectureError(
        f"table key {key!r} ({type(key).__name__}) names no architecture; "
        "keys are str, int (key_format='index') or tuples of ints")
  stripped = key.strip()
  is_digits = len(stripped) == T and stripped.isdigit()
  if key_format == "digits" or (key_format == "auto" and is_digits
                                and "," not in stripped and T > 1):
    if not is_digits:
      raise base.InvalidArchitectureError(
          f"table key {key!r}: key_format='digits' expects {T} digits, one "
          "per decision")
    return space.validate([int(ch) for ch in stripped])
  if key_format == "indices":
    return base.SearchSpace.from_text(space, stripped)
  return space.from_text(stripped)


def columns(space: base.SearchSpace,
            entries: Mapping[Any, Any] | Iterable[tuple[Any, Any]],
            names: Sequence[str] | None = None, *,
            key_format: str = "auto", source: str = "table"
            ) -> dict[str, np.ndarray]:
  """Columns ``{name: float32[num_architectures]}`` in ``space.index`` order.

  Args:
    space: the space the keys name architectures of.
    entries: ``{key: number}`` (one column, named ``"reward"``) or
      ``{key: {column: number}}``, or ``(key, value)`` pairs of either kind.
    names: the columns to build; default: ``["reward"]`` for numbers, else
      every column of the first entry.
    key_format: how keys name architectures (module doc).
    source: what to call the table in errors (e.g. its file name).

  Raises:
    TableError: a key that names no architecture of the space, an
      architecture present twice or missing (the first one is named, with the
      count), a missing column, or non-finite values (the first few named).
  """
  items = list(entries.items() if isinstance(entries, Mapping) else entries)
  n = space.num_architectures
  if n >= 2**31:
    raise TableError(f"space {space.name!r} has {n:.3g} architectures: too "
                     "many for a table")
  if not items:
    raise TableError(f"{source} is empty; space {space.name!r} has {n} "
                     "architectures")
  scalar = not isinstance(items[0][1], Mapping)
  if names is None:
    names = [REWARD] if scalar else list(items[0][1])
  names = list(names)
  out = {c: np.full((n,), np.nan, np.float64) for c in names}
  seen: dict[int, Any] = {}
  for key, value in items:
    try:
      arch = parse_key(space, key, key_format)
    except base.InvalidArchitectureError as e:
      raise TableError(f"{source}: key {repr(key)} names no "
                       f"architecture of space {space.name!r}: {e}") from None
    idx = int(np.ravel_multi_index(tuple(int(a) for a in arch),
                                   tuple(int(c) for c in space.num_choices)))
    if idx in seen:
      raise TableError(
          f"{source}: architecture {space.to_text(arch)!r} is present twice "
          f"(keys {repr(seen[idx])} and {repr(key)}); every "
          "architecture must appear exactly once")
    seen[idx] = key
    for c in names:
      if scalar:
        if names != [REWARD]:
          raise TableError(f"{source}: entries are plain numbers, so the only "
                           f"column is {REWARD!r}, not {names}")
        v = value
      elif c not in value:
        raise TableError(f"{source}: entry {repr(key)} has no column "
                         f"{c!r}; it has {sorted(value)}")
      else:
        v = value[c]
      try:
        out[c][idx] = float(v)
      except (TypeError, ValueError):
        raise TableError(f"{source}: entry {repr(key)}, column {c!r}: "
                         f"{v!r} is not a number") from None
      if not math.isfinite(out[c][idx]):
        raise TableError(f"{source}: entry {repr(key)}, column {c!r} is "
                         f"{v!r}; every value must be finite (drop or fix "
                         "the entry)")
  if len(seen) < n:
    first = next(i for i in range(n) if i not in seen)
    raise TableError(
        f"{source}: {n - len(seen)} of the {n} architectures of space "
        f"{space.name!r} are missing, the first is "
        f"{space.to_text(space.from_index(first))!r} (index {first}); every "
        "architecture must appear exactly once")
  return {c: v.astype(np.float32) for c, v in out.items()}


def _records_at(data, path: str, source: str):
  for part in [p for p in path.split(".") if p]:
    if not isinstance(data, Mapping) or part not in data:
      have = sorted(data) if isinstance(data, Mapping) else type(data).__name__
      raise TableError(f"{source}: no field {part!r} on the way to records "
                       f"{path!r}; found {have}")
    data = data[part]
  return data


def read(path: str | pathlib.Path, *, key: str = "arch",
         records: str = "") -> list[tuple[Any, Any]]:
  """``(key, {column: value})`` pairs from a CSV or JSON file.

  * CSV: a header row; ``key`` names the column holding the architecture.
  * JSON: ``{arch: number}``, ``{arch: {column: number}}``, or a list of
    records (objects) whose field ``key`` holds the architecture;
    ``records`` is a dotted path to that mapping or list inside the file
    (e.g. ``"children"``).
  """
  path = pathlib.Path(path)
  source = str(path)
  if not path.is_file():
    raise FileNotFoundError(f"table file {source} does not exist; set the "
                            "table path (config: table.path) to a CSV or "
                            "JSON file")
  if path.suffix.lower() == ".csv":
    with open(path, newline="") as f:
      rows = list(csv.DictReader(f))
    if rows and key not in rows[0]:
      raise TableError(f"{source}: no key column {key!r}; columns: "
                       f"{list(rows[0])} (set table.key)")
    return [(r[key], {c: v for c, v in r.items() if c != key}) for r in rows]
  if path.suffix.lower() != ".json":
    raise TableError(f"{source}: a table is a .csv or .json file")
  try:
    data = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise TableError(f"{source} is not valid JSON: {e}") from None
  data = _records_at(data, records, source)
  if isinstance(data, Mapping):
    return list(data.items())
  if isinstance(data, list):
    out = []
    for i, r in enumerate(data):
      if not isinstance(r, Mapping) or key not in r:
        raise TableError(f"{source}: record {i} has no key field {key!r} "
                         "(set table.key to the field naming the "
                         "architecture)")
      out.append((r[key], r))
    return out
  raise TableError(f"{source}: expected a mapping or a list of records at "
                   f"{records or 'the top level'!r}, found "
                   f"{type(data).__name__} (set table.records)")


def check_reward_scale(reward: np.ndarray, where: str) -> None:
  """Warns when rewards are far from [0, 1], the scale the algorithms'
  default learning rates and baselines assume."""
  lo, hi = float(np.min(reward)), float(np.max(reward))
  if hi > 1.5 or lo < -1.5:
    logging.warning(
        "%s: rewards range over [%.4g, %.4g]; REINFORCE / PPO settings assume "
        "rewards in [0, 1] (accuracy 0.94, not 94). Rescale them (table."
        "reward_scale=0.01 for percentages) or retune the learning rate.",
        where, lo, hi)


def evaluator(space: base.SearchSpace, table, *, reward: str = REWARD,
              report: Sequence[str] = (), cost: str | None = None,
              reward_scale: float = 1.0, key_format: str = "auto",
              key: str = "arch", records: str = "",
              source: str | None = None) -> tabular.TabularEvaluator:
  """A :class:`TabularEvaluator` from a mapping or a CSV / JSON file.

  Args:
    space: the space the table covers, every architecture exactly once.
    table: a mapping (see :func:`columns`) or a file path (see :func:`read`).
    reward: the column the search maximises (times ``reward_scale``).
    report: columns written to ``best.json`` but never shown to the search
      (e.g. a test accuracy).
    cost: optional column of simulated seconds per evaluation (for a
      ``time_budget``).
    reward_scale: multiplies the reward column (0.01 for percentages).
    key_format, key, records: how keys name architectures and where they
      are in a file (module doc, :func:`read`).
    source: the table's name in errors (default: the file name).
  """
  if not (isinstance(reward_scale, (int, float)) and math.isfinite(
      reward_scale) and reward_scale > 0):
    raise ValueError(f"reward_scale must be a finite number > 0, got "
                     f"{reward_scale!r}")
  if isinstance(table, (str, pathlib.Path)):
    source = source or str(table)
    table = read(table, key=key, records=records)
  names = [reward, *report] + ([cost] if cost else [])
  dup = sorted({c for c in names if names.count(c) > 1})
  if dup:
    raise ValueError(f"table columns {dup} are used twice (reward, report "
                     "and cost must differ)")
  items = list(table.items() if isinstance(table, Mapping) else table)
  if items and not isinstance(items[0][1], Mapping):
    if report or cost or reward != REWARD:
      wanted = [c for c in names if c != REWARD]
      raise TableError(f"{source or 'table'}: entries are plain numbers, so "
                       f"there are no columns {wanted}; give "
                       "{arch: {column: value}} to report columns")
    names = [REWARD]
  cols = columns(space, items, names, key_format=key_format,
                 source=source or "table")
  rewards = cols[reward] * np.float32(reward_scale)
  check_reward_scale(rewards, source or "table")
  return tabular.TabularEvaluator(
      space, rewards, cost=cols[cost] if cost else None,
      extra={c: cols[c] for c in report})


def check_config(config) -> None:
  """Checks ``config.space`` and ``config.table`` of a run with
  ``evaluator="table"`` without reading the table; raises ValueError naming
  the dotted field and the fix."""
  space = config.get("space", None)
  if not isinstance(space, str) or space not in registry.names():
    raise ValueError(
        f"config.space must name a registered search space, got {space!r}; "
        f"known: {', '.join(registry.names())}. Register yours with "
        "nas_jax.spaces.registry.register in your config file (or a module it "
        "imports)")
  t = config.get("table", None)
  if t is None or not hasattr(t, "get"):
    raise ValueError("config.table must be a dict with path, key, "
                     "key_format, records, reward, report, cost, reward_scale "
                     "(see experiments/configs/custom_table.py)")
  known = {"path", "key", "key_format", "records", "reward", "report", "cost",
           "reward_scale"}
  unknown = sorted(set(t.keys()) - known)
  if unknown:
    raise ValueError(f"config.table has unknown fields {unknown}; known: "
                     f"{', '.join(sorted(known))}")
  path = t.get("path", "")
  if not isinstance(path, str) or not path:
    raise ValueError("config.table.path must be the path of a CSV or JSON "
                     f"table, got {path!r}")
  if "://" in path:
    raise ValueError(f"config.table.path must be a local file, got {path!r}")
  if pathlib.Path(path).suffix.lower() not in (".csv", ".json"):
    raise ValueError(f"config.table.path must end in .csv or .json, got "
                     f"{path!r}")
  if not pathlib.Path(path).is_file():
    raise ValueError(f"config.table.path: {path} does not exist (relative "
                     f"paths start at {pathlib.Path.cwd()})")
  if t.get("key_format", "auto") not in KEY_FORMATS:
    raise ValueError(f"config.table.key_format must be one of "
                     f"{', '.join(KEY_FORMATS)}, got {t.get('key_format')!r}")
  for field in ("key", "reward"):
    if not isinstance(t.get(field, "x"), str) or not t.get(field, "x"):
      raise ValueError(f"config.table.{field} must be a column name, got "
                       f"{t.get(field)!r}")
  if not isinstance(t.get("records", ""), str):
    raise ValueError(f"config.table.records must be a dotted path (str), got "
                     f"{t.get('records')!r}")
  report = t.get("report", ())
  if isinstance(report, str) or not all(
      isinstance(c, str) and c for c in report):
    raise ValueError(f"config.table.report must be a tuple of column names, "
                     f"got {report!r}")
  if not isinstance(t.get("cost", "") or "", str):
    raise ValueError(f"config.table.cost must be a column name or '', got "
                     f"{t.get('cost')!r}")
  scale = t.get("reward_scale", 1.0)
  if (isinstance(scale, bool) or not isinstance(scale, (int, float))
      or not math.isfinite(scale) or scale <= 0):
    raise ValueError(f"config.table.reward_scale must be a finite number "
                     f"> 0, got {scale!r}")


def evaluator_from_config(config) -> tabular.TabularEvaluator:
  """The evaluator of a run config with ``evaluator="table"``: the space
  ``config.space`` (``config.space_kwargs``) and the table ``config.table``
  (fields as :func:`evaluator`'s arguments; checked by :func:`check_config`)."""
  check_config(config)
  t = config.table
  space = registry.get(config.space, **dict(config.get("space_kwargs", {})))
  return evaluator(
      space, t.path, reward=t.get("reward", REWARD),
      report=tuple(t.get("report", ())), cost=t.get("cost") or None,
      reward_scale=t.get("reward_scale", 1.0),
      key_format=t.get("key_format", "auto"), key=t.get("key", "arch"),
      records=t.get("records", ""))
