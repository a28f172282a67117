r"""DARTS on the NAS-Bench-201 cell, CPU-sized: the derived cell's CIFAR-10
table accuracy for first- and second-order DARTS over several seeds, the
wall time, and the alpha trajectories.

  python benchmarks/darts.py --orders 1 --seeds 0,1,2 \
      --out_json benchmarks/results/darts_nb201_order1.json \
      --plot benchmarks/results/darts_nb201.png

Each run is the binary's run kind (``nas_jax.train.darts_run.run``) on
``experiments/configs/darts.py:<variant>`` (default ``nb201_digits``: the
supernet trained on the embedded digits, alpha on a 500-image validation
split), into a temporary workdir; the derived cell (argmax op per edge,
``none`` excluded) is looked up in the CIFAR-10 table
(``test_acc_200ep``). Printed beside it, from the same table: the mean
test accuracy of a uniformly random cell and the best cell, and the number
of parameter-free edges (skip / avg pool) of each derived cell: DARTS is
known to collapse towards them on NAS-Bench-201 (Dong & Yang, ICLR 2020,
Table 5: DARTS-V1 and V2 both return the all-skip cell, 54.30 test).
``--plot`` draws, per run, the derived cell's table accuracy and its
number of parameter-free edges against the epoch, and the first seed's
alpha trajectories per order (``<plot>_alpha_order<k>_seed<s>.png``).
"""

from __future__ import annotations

import argparse
import json
import logging
import pathlib
import runpy
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # noqa: E402

from nas_jax.data import nasbench201 as nb201_data  # noqa: E402
from nas_jax.spaces import nasbench201  # noqa: E402
from nas_jax.train import darts_run  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
PARAMETER_FREE = ("skip_connect", "avg_pool_3x3")
PUBLISHED = ("published (NB201 Table 5, searched on CIFAR-10): DARTS-V1 "
             "(first order) 54.30 ± 0.00, DARTS-V2 (second order) 54.30 ± "
             "0.00: the all-skip cell")


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--variant", default="nb201_digits",
                 help="variant of experiments/configs/darts.py")
  p.add_argument("--orders", default="1,2", help="comma list from 1, 2")
  p.add_argument("--seeds", default="0,1,2", help="comma list of seeds")
  p.add_argument("--epochs", type=int, default=None,
                 help="override the variant's num_epochs")
  p.add_argument("--out_json", default=None)
  p.add_argument("--plot", default=None,
                 help="PNG: accuracy / parameter-free edges per epoch")
  p.add_argument("--quick", action="store_true",
                 help="smoke test: the tiny variant, second order, 1 seed, "
                      "2 epochs, a 2-channel one-stage supernet")
  args = p.parse_args(argv)
  args.overrides = {}
  if args.quick:
    args.variant, args.orders, args.seeds, args.epochs = "tiny", "2", "0", 2
    args.overrides = {"network.channels": 2, "network.num_reductions": 0,
                      "data.max_train": 32, "table_path": ""}
  return args


def _free_edges(text: str) -> int:
  arch = nasbench201.space().from_text(text)
  return int(sum(nasbench201.OPS[a] in PARAMETER_FREE for a in arch))


def run_one(variant: str, order: int, seed: int, epochs: int | None,
            keep_alpha: pathlib.Path | None, overrides=None) -> dict:
  config = runpy.run_path(str(ROOT / "experiments" / "configs" /
                              "darts.py"))["get_config"](variant)
  config.update_from_flattened_dict({"order": order, "seed": seed,
                                     **(overrides or {})})
  if epochs is not None:
    config.num_epochs = epochs
  workdir = pathlib.Path(tempfile.mkdtemp(prefix="darts_bench_"))
  try:
    t0 = time.perf_counter()
    summary = darts_run.run(config, str(workdir))
    wall = time.perf_counter() - t0
    if summary["status"] != "done":
      raise SystemExit(f"order {order}, seed {seed}: the run stopped "
                       f"({summary['status']}) before it finished")
    history = [json.loads(l) for l in
               (workdir / "history.jsonl").read_text().splitlines()]
    if keep_alpha is not None:
      shutil.copy(workdir / "alpha_trajectory.png", keep_alpha)
  finally:
    shutil.rmtree(workdir, ignore_errors=True)
  return {"order": order, "seed": seed, "wall_seconds": wall,
          "epochs": config.num_epochs, "cell": summary["best_text"],
          "supernet_val_acc": summary["best_reward"],
          "test_acc_200ep": summary.get("test_acc_200ep"),
          "parameter_free_edges": summary["parameter_free_edges"],
          "per_epoch": [{"epoch": h["epoch"], "cell": h["arch"],
                         "test_acc_200ep": h.get("test_acc_200ep"),
                         "parameter_free_edges": _free_edges(h["arch"]),
                         "val_acc": h["reward"]} for h in history],
          "final_weights": history[-1]["weights"]}


def plot(runs: list[dict], path: pathlib.Path) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
  for r in runs:
    e = [p["epoch"] + 1 for p in r["per_epoch"]]
    style = dict(color=f"C{r['order'] - 1}", alpha=0.8,
                 label=f"order {r['order']}" if r is next(
                     q for q in runs if q["order"] == r["order"]) else None)
    a1.plot(e, [p["test_acc_200ep"] for p in r["per_epoch"]], **style)
    a2.plot(e, [p["parameter_free_edges"] for p in r["per_epoch"]], **style)
  a1.set_xlabel("epoch")
  a1.set_ylabel("derived cell: CIFAR-10 test acc (NB201)")
  a2.set_xlabel("epoch")
  a2.set_ylabel("parameter-free edges (skip, pool) of 6")
  a2.set_ylim(-0.2, 6.2)
  for a in (a1, a2):
    a.grid(alpha=0.3)
    a.legend()
  fig.suptitle("DARTS on the NAS-Bench-201 cell, supernet trained on digits")
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)


def main(argv=None) -> None:
  args = parse_args(argv)
  logging.getLogger("absl").setLevel(logging.WARNING)
  orders = [int(o) for o in args.orders.split(",")]
  seeds = [int(s) for s in args.seeds.split(",")]
  info = common.machine_info()
  common.print_header(info, [common.WALL_CLOCK_NOTE])
  table = nb201_data.load()
  acc = table.test_acc_200ep
  print(f"table:   random cell {np.mean(acc):.2f} ± {np.std(acc):.2f}, best "
        f"{np.max(acc):.2f}, all-skip "
        f"{acc[nasbench201.space().index([1] * 6)]:.2f}")
  print(PUBLISHED)
  print(f"\n{'order':>5} {'seed':>4} {'test acc':>8} {'free':>4} "
        f"{'val acc':>7} {'wall s':>6}  derived cell")
  runs = []
  for order in orders:
    for i, seed in enumerate(seeds):
      keep = None
      if args.plot and i == 0:
        keep = pathlib.Path(args.plot).with_name(
            f"{pathlib.Path(args.plot).stem}_alpha_order{order}_seed{seed}"
            ".png")
      r = run_one(args.variant, order, seed, args.epochs, keep,
                  args.overrides)
      runs.append(r)
      print(f"{order:>5} {seed:>4} {r['test_acc_200ep']:>8.2f} "
            f"{r['parameter_free_edges']:>4} {r['supernet_val_acc']:>7.4f} "
            f"{r['wall_seconds']:>6.1f}  {r['cell']}", flush=True)
  print()
  for order in orders:
    rs = [r for r in runs if r["order"] == order]
    a = np.array([r["test_acc_200ep"] for r in rs])
    w = np.array([r["wall_seconds"] for r in rs])
    f = np.array([r["parameter_free_edges"] for r in rs])
    print(f"order {order}: test acc {a.mean():.2f} ± {a.std():.2f} over "
          f"{len(rs)} seeds; parameter-free edges {f.mean():.1f} of 6; wall "
          f"{np.median(w):.1f} s median per run ({w.min():.1f}-{w.max():.1f},"
          f" the first includes compilation)")
  if args.plot:
    plot(runs, pathlib.Path(args.plot))
  if args.out_json:
    pathlib.Path(args.out_json).write_text(json.dumps(
        {"machine": info, "variant": args.variant, "runs": runs}, indent=1))


if __name__ == "__main__":
  main()
