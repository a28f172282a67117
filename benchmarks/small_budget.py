"""Do the library's defaults beat random search at 100 evaluations?

A user who writes ``algorithms.reinforce(make_controller(space))`` or
``algorithms.ppo(make_controller(space))`` and changes nothing should not do
worse than random search on a small budget. Measured on the two tables the
project ships or builds: NAS-Bench-201 CIFAR-10 (reward ``valid_acc_12ep``,
no time budget) and the seed-003 64-child digits table
(``benchmarks/results/seed003_small_digits.json``, reward ``val_acc``).
Each run proposes 100 architectures; reported per algorithm over ``--runs``
runs: the mean validation reward of the returned architecture (the highest
seen; on NB201 also its ``valid_acc_200ep``), its test accuracy (read only
after the search has returned), and on the digits table the fraction of runs
that found a best child. Rows: random search, REINFORCE and PPO at the
library defaults, and the NB201 presets (``nas_jax.algorithms.presets``).

Run from the repository root::

    PYTHONPATH=. nice -n 10 python benchmarks/small_budget.py
    PYTHONPATH=. python benchmarks/small_budget.py --quick
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

import jax
import numpy as np

from nas_jax import algorithms
from nas_jax.algorithms import presets
from nas_jax.controllers import make_controller
from nas_jax.data import nasbench201 as nb201_data
from nas_jax.evaluators import tabular
from nas_jax.train import search as search_lib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import seed003_search  # noqa: E402

BUDGET = 100  # evaluations per run

ROWS = {
    "random search": lambda space: algorithms.random_search(space),
    "REINFORCE, library defaults": lambda space: algorithms.reinforce(
        make_controller(space)),
    "PPO, library defaults": lambda space: algorithms.ppo(
        make_controller(space)),
    # Candidate defaults: the library defaults plus an entropy bonus.
    "REINFORCE, defaults + entropy 1e-3": lambda space: algorithms.reinforce(
        make_controller(space), entropy_weight=1e-3),
    "PPO, defaults + entropy 1e-3": lambda space: algorithms.ppo(
        make_controller(space), entropy_weight=1e-3),
    # The defaults before the tuning (ENAS's learning rate), for comparison.
    "REINFORCE, old defaults (lr 3.5e-4, decay 0.95)": (
        lambda space: algorithms.reinforce(make_controller(space),
                                           learning_rate=3.5e-4,
                                           baseline_decay=0.95)),
    "PPO, old defaults (batch 8, 4 epochs, lr 3.5e-4, decay 0.95)": (
        lambda space: algorithms.ppo(make_controller(space), batch_size=8,
                                     num_epochs=4, learning_rate=3.5e-4,
                                     baseline_decay=0.95)),
    "REINFORCE, preset nb201_reinforce": lambda space: presets.build(
        "nb201_reinforce", space),
    "PPO, preset nb201_ppo": lambda space: presets.build("nb201_ppo", space),
}


def run_row(make, evaluator, keys, valid_column, test_column):
  algo = make(evaluator.space)
  fn = jax.jit(jax.vmap(search_lib.make_search(
      algo, evaluator, evaluator.space.num_decisions, max_evals=BUDGET)))
  t0 = time.perf_counter()
  result = jax.block_until_ready(fn(keys))
  wall = time.perf_counter() - t0
  out = {"reward": float(np.mean(result.best_reward)), "wall_s": wall,
         "best_reward": np.asarray(result.best_reward)}
  if valid_column:
    out["valid"] = float(np.mean(evaluator.lookup(valid_column,
                                                  result.best_arch)))
  out["test"] = float(np.mean(evaluator.lookup(test_column,
                                               result.best_arch)))
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--runs", type=int, default=100)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--only", default="",
                 help="comma list: run only the rows whose name contains "
                      "one of these texts")
  p.add_argument("--quick", action="store_true",
                 help="smoke test: 4 runs, random search only")
  args = p.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(message)s")
  logging.getLogger("jax").setLevel(logging.WARNING)
  rows = dict(list(ROWS.items())[:1]) if args.quick else ROWS
  rows = {k: v for k, v in rows.items()
          if any(t in k for t in args.only.split(","))}
  runs = 4 if args.quick else args.runs
  keys = jax.random.split(jax.random.key(args.seed), runs)
  common.print_header(common.machine_info(), [common.WALL_CLOCK_NOTE])
  tables = []
  if nb201_data.default_path().is_file():
    tables.append(("NAS-Bench-201", tabular.nasbench201(nb201_data.load()),
                   "valid_acc_200ep", "test_acc_200ep"))
  else:
    logging.warning("NAS-Bench-201 table absent (%s): skipped",
                    nb201_data.default_path())
  digits = seed003_search.load_table(seed003_search.DEFAULT_TABLE)
  tables.append(("seed-003 digits (64 children)",
                 seed003_search.make_evaluator(digits), None, "test_acc"))
  for title, evaluator, valid_col, test_col in tables:
    best = evaluator.best_reward
    lines = []
    for name, make in rows.items():
      logging.info("%s: %s, %d runs of %d evaluations", title, name, runs,
                   BUDGET)
      r = run_row(make, evaluator, keys, valid_col, test_col)
      found = float(np.mean(r["best_reward"] >= best - 1e-7))
      lines.append((name, f"{r['reward']:.4f}",
                    f"{r['valid']:.2f}" if valid_col else "-",
                    f"{r['test']:.4g}", f"{found:.2f}", f"{r['wall_s']:.1f}"))
    print(f"\n{title}: {runs} runs x {BUDGET} evaluations, seed "
          f"{args.seed}")
    print(common.text_table(
        ("algorithm", "returned reward", "valid 200ep", "test (report)",
         "found best", "1st call (s)"), lines))
  return 0


if __name__ == "__main__":
  sys.exit(main())
