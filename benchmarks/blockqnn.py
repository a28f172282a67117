r"""Block-QNN's Q-learning with child training against random search at the
same number of children (issue 11, "Measure"), on the embedded digits.

Each run is the child-search binary's (``nas_jax.train.child_search_run``)
on ``experiments/configs/blockqnn_digits.py:cpu``: blocks of up to 4 layers
(Table 1's code space), stacked in 3 stages (block, pool, block, pool,
block), every child trained from scratch with early stop and scored on 300
held-out validation images. Per seed, Q-learning and random search propose
``--rounds x 4`` children each; the table reports, over the seeds, the best
validation accuracy found, the mean accuracy of the last ``--last`` rounds
(what the agent proposes once it exploits) and the distinct children
trained (Q-learning re-proposes blocks; a re-proposal is free).

The reward is the validation accuracy by default (``--reward accuracy``);
``--reward blockqnn`` uses the paper's shaped ``accuracy - log(MFLOPs)/2 -
log(density)/2``, under which both searches return the cheapest blocks.

Run from the repository root (each invocation a few minutes on 2 cores)::

    PYTHONPATH=. python benchmarks/blockqnn.py --seeds 0,1,2 \
        --out_json benchmarks/results/blockqnn_digits.json
    PYTHONPATH=. python benchmarks/blockqnn.py --quick    # smoke test
"""

from __future__ import annotations

import argparse
import json
import pathlib
import runpy
import sys
import tempfile
import time

import numpy as np
from absl import logging

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # noqa: E402

from nas_jax.train import child_search_run  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
ALGORITHMS = ("q_learning", "random")


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--seeds", default="0,1,2", help="comma list of seeds")
  p.add_argument("--rounds", type=int, default=12,
                 help="rounds of 4 children per search (default 12)")
  p.add_argument("--last", type=int, default=3,
                 help="rounds at the end averaged for 'late mean'")
  p.add_argument("--reward", default="accuracy",
                 choices=("accuracy", "blockqnn"))
  p.add_argument("--out_json", default=None)
  p.add_argument("--merge", default=None,
                 help="comma list of --out_json files: print their runs' "
                      "table together (seeds split over invocations)")
  p.add_argument("--quick", action="store_true",
                 help="smoke test: the tiny config, one seed, 2 rounds")
  args = p.parse_args(argv)
  if args.rounds < 1 or args.last < 1:
    p.error("--rounds and --last must be >= 1")
  return args


def _config(args, algorithm: str, seed: int):
  variant = "tiny" if args.quick else "cpu"
  config = runpy.run_path(str(ROOT / "experiments" / "configs" /
                              "blockqnn_digits.py"))["get_config"](variant)
  config.update_from_flattened_dict({
      "seed": seed, "algorithm": algorithm, "reward.kind": args.reward,
      "num_rounds": 2 if args.quick else args.rounds})
  # The same children per round for both searches.
  config.random.batch_size = config.q_learning.batch_size
  return config


def run_one(args, algorithm: str, seed: int) -> dict:
  config = _config(args, algorithm, seed)
  with tempfile.TemporaryDirectory() as workdir:
    t0 = time.perf_counter()
    summary = child_search_run.run(config, workdir)
    seconds = time.perf_counter() - t0
    history = [json.loads(l) for l in
               (pathlib.Path(workdir) / "history.jsonl").read_text()
               .splitlines()]
  acc = np.asarray([h["accuracy"] for h in history], np.float64)
  rounds = np.asarray([h["round"] for h in history])
  late = acc[rounds >= rounds.max() + 1 - args.last]
  best = max(history, key=lambda h: h["reward"])
  return {"algorithm": algorithm, "seed": seed, "children": len(history),
          "distinct_trained": summary["distinct_children_trained"],
          "best_accuracy": float(acc.max()),
          "returned_accuracy": best["accuracy"], "returned": best["arch"],
          "returned_params": best.get("params"),
          "late_mean_accuracy": float(late.mean()), "seconds": seconds}


def main(argv=None) -> None:
  args = parse_args(argv)
  logging.set_verbosity(logging.WARNING)
  if args.merge:
    runs = [r for f in args.merge.split(",")
            for r in json.loads(pathlib.Path(f).read_text())["runs"]]
    print(_table(runs))
    return
  seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
  info = common.machine_info()
  common.print_header(info, [
      f"setup:   blockqnn_digits.py:{'tiny' if args.quick else 'cpu'}, "
      f"reward {args.reward}, seeds {seeds}, "
      f"{2 if args.quick else args.rounds} rounds x 4 children",
      common.WALL_CLOCK_NOTE])
  runs = []
  for seed in seeds:
    for algorithm in ALGORITHMS:
      r = run_one(args, algorithm, seed)
      runs.append(r)
      print(f"seed {seed} {algorithm:<10}: best {r['best_accuracy']:.4f}, "
            f"returned {r['returned']} ({r['returned_accuracy']:.4f}), "
            f"late mean {r['late_mean_accuracy']:.4f}, "
            f"{r['distinct_trained']} trained, {r['seconds']:.0f}s",
            flush=True)
  print()
  print(_table(runs))
  if args.out_json:
    pathlib.Path(args.out_json).write_text(json.dumps(
        {"machine": info, "args": vars(args), "runs": runs}, indent=2))


def _table(runs) -> str:
  rows = []
  for algorithm in ALGORITHMS:
    rs = [r for r in runs if r["algorithm"] == algorithm]
    if not rs:
      continue
    col = lambda k: np.asarray([r[k] for r in rs], np.float64)
    ms = lambda k: f"{col(k).mean():.4f} ± {col(k).std():.4f}"
    rows.append([algorithm, len(rs), rs[0]["children"], ms("best_accuracy"),
                 ms("late_mean_accuracy"),
                 f"{col('distinct_trained').mean():.1f}",
                 f"{col('seconds').mean():.0f}"])
  return common.text_table(
      ["algorithm", "seeds", "children", "best val acc", "late mean val acc",
       "distinct trained", "s / search"], rows)


if __name__ == "__main__":
  main()
