r"""Cost-aware search on NAS-Bench-201: test accuracy against parameter count
of the returned cells, REINFORCE with and without TuNAS's cost term (issue
11, "Measure"; Bender et al., CVPR 2020, Sec. 3.3).

The protocol of ``benchmarks/nasbench201.py`` (reward ``valid_acc_12ep``,
12,000 s simulated budget, the returned cell reported by ``test_acc_200ep``)
and its tuned LSTM REINFORCE (``nb201_reinforce``), run once on the plain
reward and once per ``--targets_m`` on ``acc + beta |params / target - 1|``
(``nas_jax.costs.nasbench201_cost_aware``; params of the benchmark's
network, 10 classes). Each row is ``--runs`` searches in one
``jit(vmap(search))`` call. Prints, per row, the returned cells' mean
parameters, mean test accuracy and how many land within 25% of the target,
and draws every returned cell as a point (``--plot``).

Run from the repository root (about 2-3 minutes on 2 cores)::

    PYTHONPATH=. python benchmarks/cost_aware.py --runs 100 \
        --plot benchmarks/results/cost_aware_nb201.png \
        --out_json benchmarks/results/cost_aware_nb201.json
    PYTHONPATH=. python benchmarks/cost_aware.py --quick   # smoke test
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

ROW = "nb201_reinforce"


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--table_path", default=None)
  p.add_argument("--runs", type=int, default=100)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--targets_m", default="0.3,0.6,1.0",
                 help="comma list of parameter targets, in millions")
  p.add_argument("--beta", type=float, default=-0.1,
                 help="TuNAS's beta (<= 0)")
  p.add_argument("--plot", default=None, help="PNG of accuracy vs params")
  p.add_argument("--out_json", default=None)
  p.add_argument("--quick", action="store_true", help="smoke test: 4 runs")
  args = p.parse_args(argv)
  if args.quick:
    args.runs = 4
  try:
    args.targets_m = [float(t) for t in args.targets_m.split(",")]
  except ValueError:
    p.error(f"--targets_m must be a comma list of numbers, got "
            f"{args.targets_m!r}")
  if args.runs < 1 or any(not t > 0 for t in args.targets_m):
    p.error("--runs must be >= 1 and every --targets_m > 0 (a parameter "
            "count in millions)")
  if args.beta > 0:
    p.error(f"--beta must be <= 0 (a penalty), got {args.beta}")
  return args


def _row(name, evaluator, table, keys, space) -> dict:
  r = nb.run_algorithm(ROW, evaluator, table, keys, repeats=0)
  archs = np.stack([space.from_text(t) for t in r["best_arch"]])
  return {"row": name, "test_acc": r["test_acc"],
          "params_m": (np.asarray(costs.nasbench201_params(archs)) / 1e6
                       ).tolist(), "first_call_s": r["first_call_s"]}


def plot(rows, path) -> None:
  import matplotlib  # noqa: PLC0415
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415
  fig, ax = plt.subplots(figsize=(6.4, 4.4))
  for i, r in enumerate(rows):
    color = f"C{i}"
    ax.scatter(r["params_m"], r["test_acc"], s=14, alpha=0.5, color=color,
               label=r["row"])
    if r.get("target_m"):
      ax.axvline(r["target_m"], color=color, ls=":", lw=1)
  ax.set_xlabel("parameters of the returned cell's network (M)")
  ax.set_ylabel("CIFAR-10 test accuracy, 200 epochs (%)")
  ax.set_title("NAS-Bench-201, REINFORCE: with and without the TuNAS cost "
               "term", fontsize=9)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


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
  space = evaluator.space
  info = common.machine_info()
  common.print_header(info, [
      f"protocol: as benchmarks/nasbench201.py; {ROW}, {args.runs} runs per "
      f"row, seed {args.seed}; TuNAS beta {args.beta}", common.WALL_CLOCK_NOTE])
  keys = jax.random.split(jax.random.key(args.seed), args.runs)
  rows = [_row("no cost term", evaluator, table, keys, space)]
  for t in args.targets_m:
    logging.info("TuNAS reward, target %.2f M params ...", t)
    cost_ev = costs.nasbench201_cost_aware(evaluator, target_params=t * 1e6,
                                           beta=args.beta)
    row = _row(f"target {t:g} M", cost_ev, table, keys, space)
    row["target_m"] = t
    rows.append(row)
  out = []
  for r in rows:
    p, a = np.asarray(r["params_m"]), np.asarray(r["test_acc"])
    t = r.get("target_m")
    near = f"{np.mean(np.abs(p / t - 1) <= 0.25):.0%}" if t else ""
    out.append([r["row"], f"{p.mean():.3f} ± {p.std():.3f}",
                f"{a.mean():.2f} ± {a.std():.2f}", near,
                f"{r['first_call_s']:.1f}"])
  print(common.text_table(["row", "params (M)", "test acc (%)",
                           "within 25% of target", "wall s (1st call)"],
                          out))
  if args.plot:
    plot(rows, args.plot)
    print(f"wrote {args.plot}")
  if args.out_json:
    pathlib.Path(args.out_json).write_text(json.dumps(
        {"machine": info, "args": vars(args), "rows": rows}, indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
