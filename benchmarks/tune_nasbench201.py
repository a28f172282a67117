"""Hyperparameter search for REINFORCE and PPO on the NAS-Bench-201 protocol,
selected on a validation signal only.

Each configuration runs the benchmark's protocol (``benchmarks/nasbench201.py``:
reward ``valid_acc_12ep``, 12,000 simulated seconds) and is scored by the
mean ``valid_acc_200ep`` of the cells its runs return: the 200-epoch accuracy
on the cifar10-valid split, a column the search never sees and that is not
the test set. The search's evaluator holds no test column; the table's
``test_acc_200ep`` is looked up only after all selection is done, for the
written table (``report only``), so replacing it by noise leaves the
selection unchanged (``tests/test_honest.py``).

Stages:

1. every configuration of :data:`GRID` on ``--stage1_runs`` runs (seed
   ``--stage1_seed``). Configurations differing only in the learning rate,
   entropy weight and baseline decay are one *group*: one
   ``jit(vmap(vmap(search)))`` call over (configuration, run).
2. the ``--top_k`` best of each algorithm by stage 1 re-run on
   ``--stage2_runs`` fresh runs (seed ``--stage2_seed``); the best by stage 2
   is selected. The benchmark's reported runs use seed 0, seen by neither.

Resumable: each finished group is one line of ``<out_dir>/tune_rows.jsonl``;
a re-run skips groups already there. The full table is written to
``<out_dir>/tune_table.md`` and the selection to ``<out_dir>/tune.json``.

Run from the repository root (the grid in the docstring of :data:`GRID`)::

    PYTHONPATH=. nice -n 10 python benchmarks/tune_nasbench201.py \\
        --out_dir benchmarks/results/tune_nasbench201
    PYTHONPATH=. python benchmarks/tune_nasbench201.py --quick --out_dir /tmp/t
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import logging
import os
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from nas_jax import algorithms
from nas_jax.controllers import make_controller
from nas_jax.data import nasbench201 as nb201_data
from nas_jax.evaluators import tabular
from nas_jax.spaces import nasbench201 as nb201_space
from nas_jax.train import search as search_lib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (benchmarks/common.py)
import nasbench201 as protocol  # noqa: E402  (benchmarks/nasbench201.py)

SELECTION_COLUMN = "valid_acc_200ep"   # what configurations are ranked by
REPORT_ONLY_COLUMN = "test_acc_200ep"  # looked up after selection, shown only
VMAPPED = ("learning_rate", "entropy_weight", "baseline_decay")


@dataclasses.dataclass(frozen=True)
class Group:
  """Configurations sharing everything but the vmapped hyperparameters."""

  algorithm: str                 # "reinforce" or "ppo"
  controller: tuple              # sorted (key, value) pairs: make_controller
  options: tuple                 # sorted (key, value) pairs: static options
  values: tuple                  # of dicts over VMAPPED

  @property
  def id(self) -> str:
    parts = [self.algorithm] + [f"{k}={v}" for k, v in self.controller] + [
        f"{k}={v}" for k, v in self.options]
    return "/".join(parts)


def _grid(algorithm, controllers, options, **vmapped) -> list[Group]:
  values = tuple(dict(zip(VMAPPED, v)) for v in itertools.product(
      *(vmapped[k] for k in VMAPPED)))
  return [Group(algorithm, tuple(sorted(c.items())), tuple(sorted(o.items())),
                values)
          for c, o in itertools.product(controllers, options)]


LSTM32 = dict(policy="lstm", hidden_size=32)
LSTM64 = dict(policy="lstm", hidden_size=64)
FACTORIZED = dict(policy="factorized")


def default_grid() -> list[Group]:
  """REINFORCE: {LSTM h32, LSTM h64, factorised} with the baseline updated
  after the advantage, {LSTM h32, factorised} with it updated before (5
  groups) x lr {0.001, 0.003, 0.01, 0.03, 0.1} x entropy {0, 1e-3} x decay
  {0.9, 0.95} (20 each): 100 configurations, batch 1.
  PPO, (batch, minibatch, epochs) = (4, 4, 2): {LSTM h32, factorised} x
  {per-architecture ratio, per-decision ratio, per-architecture ratio with
  normalised advantages} (6 groups) x lr {0.003, 0.01, 0.03, 0.1} x entropy
  {0, 1e-3} x decay {0.9, 0.95} (16 each): 96 configurations. The earlier
  scratch grid found (4, 2, 4) and (8, 4, 4) no better than (4, 4, 2).
  """
  rf_vm = dict(learning_rate=(0.001, 0.003, 0.01, 0.03, 0.1),
               entropy_weight=(0.0, 1e-3), baseline_decay=(0.9, 0.95))
  rf = _grid("reinforce", [LSTM32, LSTM64, FACTORIZED],
             [dict(batch_size=1, baseline_update="after")], **rf_vm)
  # With m = 1, "before" is "after" with the advantage scaled by the decay,
  # which Adam's normalisation cancels (only the entropy term's relative
  # weight changes): measured on LSTM h32 (identical rows without entropy),
  # so the larger LSTM is not run twice.
  rf += _grid("reinforce", [LSTM32, FACTORIZED],
              [dict(batch_size=1, baseline_update="before")], **rf_vm)
  shape = dict(batch_size=4, minibatch_size=4, num_epochs=2)
  ppo = _grid("ppo", [LSTM32, FACTORIZED],
              [dict(shape, ratio=r, normalize_advantages=n)
               for r, n in (("architecture", False), ("decision", False),
                            ("architecture", True))],
              learning_rate=(0.003, 0.01, 0.03, 0.1),
              entropy_weight=(0.0, 1e-3), baseline_decay=(0.9, 0.95))
  return rf + ppo


def quick_grid() -> list[Group]:
  """Two tiny groups (factorised policy: compiles in seconds)."""
  return (_grid("reinforce", [FACTORIZED], [dict(batch_size=1)],
                learning_rate=(0.01, 0.1), entropy_weight=(0.0,),
                baseline_decay=(0.9,))
          + _grid("ppo", [FACTORIZED],
                  [dict(batch_size=2, minibatch_size=2, num_epochs=1)],
                  learning_rate=(0.03,), entropy_weight=(0.0,),
                  baseline_decay=(0.9,)))


def selection_evaluator(table, epochs_charged: float = protocol.EPOCHS_CHARGED):
  """The search's evaluator: reward and cost as the protocol, and the
  selection column as its only extra. No test column is reachable from it."""
  return tabular.TabularEvaluator(
      nb201_space.space(),
      reward=getattr(table, protocol.REWARD_COLUMN) / 100.0,
      cost=epochs_charged * table.train_seconds_per_epoch,
      extra={SELECTION_COLUMN: getattr(table, SELECTION_COLUMN)})


def build(group: Group, space, hp: dict) -> algorithms.Algorithm:
  """``hp`` values may be traced (vmapped over configurations)."""
  ctrl = make_controller(space, **dict(group.controller))
  factory = algorithms.reinforce if group.algorithm == "reinforce" else (
      algorithms.ppo)
  return factory(ctrl, **dict(group.options), **hp)


def run_group(group: Group, evaluator, table, keys, values=None,
              time_budget: float = protocol.TIME_BUDGET_S):
  """Best architectures ``int32[G, R, T]`` of every configuration x run."""
  values = group.values if values is None else values
  hp = {k: jnp.asarray([v[k] for v in values], jnp.float32) for k in VMAPPED}
  batch = dict(group.options).get("batch_size", 1)
  min_cost = float(np.min(protocol.EPOCHS_CHARGED
                          * table.train_seconds_per_epoch))
  max_evals = int(time_budget // min_cost) + batch + 1

  def one(h, key):
    algo = build(group, evaluator.space, h)
    return search_lib.make_search(
        algo, evaluator, evaluator.space.num_decisions, max_evals=max_evals,
        time_budget=time_budget)(key).best_arch

  fn = jax.jit(jax.vmap(jax.vmap(one, (None, 0)), (0, None)))
  return np.asarray(fn(hp, keys))


def _row_key(stage, group, hp, runs, seed):
  return json.dumps([stage, group.id, hp, runs, seed], sort_keys=True)


def _score_rows(stage, group, values, archs, evaluator, runs, seed,
                wall_s) -> list[dict]:
  rows = []
  space = nb201_space.space()
  for hp, a in zip(values, archs):
    sel = np.asarray(evaluator.lookup(SELECTION_COLUMN, jnp.asarray(a)),
                     np.float64)
    rows.append({"key": _row_key(stage, group, hp, runs, seed),
                 "stage": stage, "group": group.id,
                 "algorithm": group.algorithm,
                 "controller": dict(group.controller),
                 "options": dict(group.options), "hp": hp, "runs": runs,
                 "seed": seed, "selection_mean": float(sel.mean()),
                 "selection_std": float(sel.std()),
                 "group_wall_s": wall_s,
                 "archs": np.asarray(space.index(jnp.asarray(a))).tolist()})
  return rows


def _load_rows(path: pathlib.Path) -> dict[str, dict]:
  rows = {}
  if path.is_file():
    for line in path.read_text().splitlines():
      if line.strip():
        r = json.loads(line)
        rows[r["key"]] = r
  return rows


def _run_stage(stage, plan, evaluator, table, runs, seed, rows, rows_path,
               time_budget):
  """``plan``: [(group, values)]; runs what ``rows`` lacks, appends rows."""
  keys = jax.random.split(jax.random.key(seed), runs)
  for group, values in plan:
    todo = [v for v in values
            if _row_key(stage, group, v, runs, seed) not in rows]
    if not todo:
      continue
    logging.info("stage %d: %s, %d configurations x %d runs in one call",
                 stage, group.id, len(todo), runs)
    t0 = time.perf_counter()
    archs = run_group(group, evaluator, table, keys, todo, time_budget)
    wall = time.perf_counter() - t0
    new = _score_rows(stage, group, todo, archs, evaluator, runs, seed, wall)
    with open(rows_path, "a") as f:
      for r in new:
        f.write(json.dumps(r) + "\n")
        rows[r["key"]] = r
    logging.info("  %.1f s; best %s %.3f", wall, SELECTION_COLUMN,
                 max(r["selection_mean"] for r in new))


def tune(table, out_dir, *, grid=None, stage1_runs=100, stage1_seed=1,
         stage2_runs=500, stage2_seed=2, top_k=4,
         time_budget: float = protocol.TIME_BUDGET_S) -> dict:
  """Runs (or resumes) both stages; returns and writes the selection.

  Selection reads only ``SELECTION_COLUMN``; ``REPORT_ONLY_COLUMN`` is
  looked up at the end, when every choice is made, for the written table.
  """
  grid = default_grid() if grid is None else grid
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  rows_path = out_dir / "tune_rows.jsonl"
  rows = _load_rows(rows_path)
  evaluator = selection_evaluator(table)
  t0 = time.perf_counter()
  _run_stage(1, [(g, g.values) for g in grid], evaluator, table, stage1_runs,
             stage1_seed, rows, rows_path, time_budget)
  by_id = {g.id: g for g in grid}
  stage1 = [rows[_row_key(1, g, v, stage1_runs, stage1_seed)]
            for g in grid for v in g.values]
  selected = {}
  for algo in sorted({g.algorithm for g in grid}):
    ranked = sorted((r for r in stage1 if r["algorithm"] == algo),
                    key=lambda r: -r["selection_mean"])[:top_k]
    plan: dict[str, list] = {}
    for r in ranked:
      plan.setdefault(r["group"], []).append(r["hp"])
    _run_stage(2, [(by_id[g], v) for g, v in plan.items()], evaluator, table,
               stage2_runs, stage2_seed, rows, rows_path, time_budget)
    finalists = [rows[_row_key(2, by_id[r["group"]], r["hp"], stage2_runs,
                               stage2_seed)] for r in ranked]
    best = max(finalists, key=lambda r: r["selection_mean"])
    selected[algo] = {"controller": best["controller"],
                      "options": {**best["options"], **best["hp"]},
                      "stage1_selection_mean": next(
                          r["selection_mean"] for r in ranked
                          if r["group"] == best["group"]
                          and r["hp"] == best["hp"]),
                      "stage2_selection_mean": best["selection_mean"]}
  wall = time.perf_counter() - t0
  # Selection is final: only now is the report-only column read.
  report = np.asarray(getattr(table, REPORT_ONLY_COLUMN), np.float64)
  table_rows = [r for r in rows.values()
                if r["group"] in by_id
                and r["runs"] == (stage1_runs if r["stage"] == 1
                                  else stage2_runs)]
  for r in table_rows:
    r["report_only_test_mean"] = float(report[np.asarray(r["archs"])].mean())
  out = {"selection_column": SELECTION_COLUMN,
         "report_only_column": REPORT_ONLY_COLUMN,
         "grid_groups": len(grid),
         "grid_configurations": sum(len(g.values) for g in grid),
         "stage1": {"runs": stage1_runs, "seed": stage1_seed},
         "stage2": {"runs": stage2_runs, "seed": stage2_seed, "top_k": top_k},
         "wall_s_this_call": wall,
         # Rows of one group share its call's wall time: count it once.
         "wall_s_groups": sum({(r["stage"], r["group"]): r["group_wall_s"]
                               for r in table_rows}.values()),
         "selected": selected}
  (out_dir / "tune.json").write_text(json.dumps(out, indent=1))
  (out_dir / "tune_table.md").write_text(format_table(table_rows))
  return out


def format_table(rows: list[dict]) -> str:
  head = ("stage", "algorithm", "group", "lr", "entropy", "decay", "runs",
          f"{SELECTION_COLUMN} (selection)", "test (report only)")
  lines = []
  for r in sorted(rows, key=lambda r: (r["stage"], r["algorithm"],
                                       -r["selection_mean"])):
    lines.append((str(r["stage"]), r["algorithm"],
                  r["group"].split("/", 1)[1], f"{r['hp']['learning_rate']:g}",
                  f"{r['hp']['entropy_weight']:g}",
                  f"{r['hp']['baseline_decay']:g}", str(r["runs"]),
                  f"{r['selection_mean']:.3f} ± {r['selection_std']:.3f}",
                  f"{r.get('report_only_test_mean', float('nan')):.3f}"))
  return common.text_table(head, lines) + "\n"


def parse_args(argv=None):
  p = argparse.ArgumentParser(
      description=__doc__.split("\n\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--table_path", default=None,
                 help=f"default {nb201_data.default_path()}")
  p.add_argument("--out_dir", required=True,
                 help="rows (resumable), table and selection are written here")
  p.add_argument("--stage1_runs", type=int, default=100)
  p.add_argument("--stage1_seed", type=int, default=1)
  p.add_argument("--stage2_runs", type=int, default=500)
  p.add_argument("--stage2_seed", type=int, default=2)
  p.add_argument("--top_k", type=int, default=4)
  p.add_argument("--quick", action="store_true",
                 help="a 3-configuration grid on 4 + 8 runs (smoke test)")
  args = p.parse_args(argv)
  if min(args.stage1_runs, args.stage2_runs, args.top_k) < 1:
    p.error("--stage1_runs, --stage2_runs and --top_k must be >= 1")
  if args.stage1_seed in (0,) or args.stage2_seed in (0,):
    p.error("seed 0 is the benchmark's held-out seed; tune on other seeds")
  return args


def main(argv=None) -> int:
  logging.basicConfig(level=logging.INFO, format="%(message)s")
  logging.getLogger("jax").setLevel(logging.WARNING)
  args = parse_args(argv)
  try:
    table = nb201_data.load(args.table_path)
  except (FileNotFoundError, ValueError, OSError) as e:
    print(f"error: cannot read the NAS-Bench-201 table: {e}", file=sys.stderr)
    return 2
  info = common.machine_info()
  common.print_header(info, [common.WALL_CLOCK_NOTE])
  kw = dict(stage1_runs=args.stage1_runs, stage1_seed=args.stage1_seed,
            stage2_runs=args.stage2_runs, stage2_seed=args.stage2_seed,
            top_k=args.top_k)
  if args.quick:
    kw.update(stage1_runs=4, stage2_runs=8, top_k=1)
  out = tune(table, args.out_dir,
             grid=quick_grid() if args.quick else None, **kw)
  print((pathlib.Path(args.out_dir) / "tune_table.md").read_text())
  print(json.dumps(out["selected"], indent=1))
  print(f"grid: {out['grid_configurations']} configurations in "
        f"{out['grid_groups']} groups; this call {out['wall_s_this_call']:.0f}"
        f" s, all groups {out['wall_s_groups']:.0f} s")
  return 0


if __name__ == "__main__":
  sys.exit(main())
