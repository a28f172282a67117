r"""NAS-Bench-201 rows for Q-learning (Block-QNN) and PNAS, on the protocol of
``benchmarks/nasbench201.py`` (its functions, run here for more presets).

  python benchmarks/nasbench201_more.py --runs 100 \
      --out_json benchmarks/results/nasbench201_more_100.json

Same protocol as the main benchmark: reward ``valid_acc_12ep``, 12 epochs
charged per evaluation against a 12,000 s simulated budget, the returned cell
reported by ``test_acc_200ep``; all runs of a row in one
``jit(vmap(search))`` call. Random search runs beside them as the same-run
reference. NAS-Bench-201's paper has no Q-learning or PNAS row: the
published figures printed are its random / REA / REINFORCE rows.
"""

from __future__ import annotations

import argparse
import json
import logging
import pathlib
import sys

import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # noqa: E402
import nasbench201 as nb  # noqa: E402  (the protocol and its helpers)

from nas_jax import costs  # noqa: E402
from nas_jax.data import nasbench201 as nb201_data  # noqa: E402
from nas_jax.evaluators import tabular  # noqa: E402

ROWS = ("nb201_random", "nb201_q_learning", "nb201_pnas")
DISPLAY_NAMES = {"nb201_q_learning": "Q-learning (Block-QNN, tabular)",
                 "nb201_pnas": "PNAS (LSTM ensemble, K=20)"}


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--table_path", default=None,
                 help=f"the CSV (default {nb201_data.default_path()})")
  p.add_argument("--runs", type=int, default=100,
                 help="independent searches per row (default 100)")
  p.add_argument("--seed", type=int, default=0,
                 help="PRNG seed of the runs (the presets were chosen on "
                      "seed 1; default 0)")
  p.add_argument("--algorithms", default=",".join(ROWS),
                 help="comma list from " + ", ".join(ROWS)
                 + " (or a row of nasbench201.py)")
  p.add_argument("--repeats", type=int, default=1,
                 help="timed calls after the first, for the steady state")
  p.add_argument("--cost_target_m", type=float, default=None,
                 help="also run nb201_reinforce with TuNAS's reward "
                      "acc + beta |params / target - 1| (target in millions "
                      "of parameters, beta --cost_beta)")
  p.add_argument("--cost_beta", type=float, default=-0.07)
  p.add_argument("--out_json", default=None)
  p.add_argument("--quick", action="store_true",
                 help="smoke test: 4 runs, no repeat")
  args = p.parse_args(argv)
  if args.quick:
    args.runs, args.repeats = 4, 0
  args.algorithms = [n.strip() for n in args.algorithms.split(",")
                     if n.strip()]
  bad = [n for n in args.algorithms if n not in ROWS + nb.ROWS]
  if bad or not args.algorithms:
    p.error(f"unknown or no rows {bad}; choose from {', '.join(ROWS)}")
  if args.runs < 1 or args.repeats < 0:
    p.error("--runs must be >= 1 and --repeats >= 0")
  return args


def main(argv=None) -> int:
  logging.basicConfig(level=logging.INFO, format="%(message)s")
  logging.getLogger("jax").setLevel(logging.WARNING)
  args = parse_args(argv)
  path = pathlib.Path(args.table_path or nb201_data.default_path())
  try:
    table = nb201_data.load(path)
  except (FileNotFoundError, ValueError, OSError) as e:
    print(f"error: cannot read the NAS-Bench-201 table: {e}", file=sys.stderr)
    return 2
  evaluator = tabular.nasbench201(table, reward_column=nb.REWARD_COLUMN,
                                  epochs_charged=nb.EPOCHS_CHARGED)
  best_in_table = float(np.max(getattr(table, nb.REPORT_COLUMN)))
  info = common.machine_info()
  common.print_header(info, [common.WALL_CLOCK_NOTE])
  print(f"protocol: as benchmarks/nasbench201.py ({nb.REWARD_COLUMN}, "
        f"{nb.TIME_BUDGET_S:,.0f} s budget, report {nb.REPORT_COLUMN}); "
        f"{args.runs} runs per row, seed {args.seed}")
  hp = nb.hyperparameters(args.algorithms)
  for k, v in hp.items():
    print(f"{k}: {v['algorithm']}, {v['options']}")
  print()
  nb.DISPLAY_NAMES.update(DISPLAY_NAMES)
  keys = jax.random.split(jax.random.key(args.seed), args.runs)
  rows = []
  for name in args.algorithms:
    logging.info("running %s: %d runs in one jit(vmap(search)) call ...",
                 name, args.runs)
    rows.append(nb.run_algorithm(name, evaluator, table, keys, args.repeats))
  if args.cost_target_m is not None:
    cost_ev = costs.nasbench201_cost_aware(
        evaluator, target_params=args.cost_target_m * 1e6,
        beta=args.cost_beta)
    logging.info("running nb201_reinforce with the TuNAS reward (target "
                 "%.3f M params, beta %g) ...", args.cost_target_m,
                 args.cost_beta)
    row = nb.run_algorithm("nb201_reinforce", cost_ev, table, keys,
                           args.repeats)
    row["algorithm"] = "nb201_reinforce+tunas"
    nb.DISPLAY_NAMES[row["algorithm"]] = (
        f"REINFORCE (LSTM, tuned), TuNAS reward, target "
        f"{args.cost_target_m:g} M params, beta {args.cost_beta:g}")
    rows.append(row)
  space = evaluator.space
  for r in rows:  # the returned cells' size (benchmark network, 10 classes)
    archs = np.stack([space.from_text(t) for t in r["best_arch"]])
    r["mean_params_m"] = float(np.mean(costs.nasbench201_params(archs))) / 1e6
    r["mean_flops_m"] = float(np.mean(costs.nasbench201_flops(archs))) / 1e6
  print(nb.format_table(rows, best_in_table))
  print("\nreturned cells' cost (mean):")
  for r in rows:
    print(f"  {r['algorithm']}: {r['mean_params_m']:.3f} M params, "
          f"{r['mean_flops_m']:.1f} M FLOPs")
  print(f"\nstd over runs (ddof=0); 1st call = wall time of the whole batch "
        f"of {args.runs} runs, compile included; steady = median of "
        f"{args.repeats} further calls. Published rows: NAS-Bench-201 "
        f"Table 5 (no Q-learning or PNAS row there).")
  for name, pub in nb.PUBLISHED.items():
    print(f"published {nb.DISPLAY_NAMES[name]}: {pub[0]:.2f} ± {pub[1]:.2f}")
  if args.out_json:
    out = {"machine": info, "runs": args.runs, "seed": args.seed,
           "table_path": str(path), "hyperparameters": hp,
           "published": nb.PUBLISHED, "best_in_table": best_in_table,
           "results": rows}
    pathlib.Path(args.out_json).write_text(json.dumps(out, indent=1))
    logging.info("wrote %s", args.out_json)
  return 0


if __name__ == "__main__":
  sys.exit(main())
