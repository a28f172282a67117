"""The custom-table example config, measured: how many distinct children
each of its variants evaluates until it first proposes a best child.

Builds the evaluator and the algorithms exactly as the binary does from
``experiments/configs/custom_table.py`` (``tabular_run.build_evaluator`` /
``build_algorithm``: the settings a user who changes nothing gets) and counts,
over ``--runs`` seeded searches of ``--max_evals`` proposals per variant (one
``jit(vmap(search))`` call each), the distinct children up to the first best
one, with ``benchmarks/seed003_search.py``'s measure and its exact
random-search reference.

Run from the repository root::

    PYTHONPATH=. python benchmarks/custom_table_search.py       # 100 runs
    PYTHONPATH=. python benchmarks/custom_table_search.py --quick
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import sys

import jax
import numpy as np

from nas_jax.train import search as search_lib
from nas_jax.train import tabular_run

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import seed003_search  # noqa: E402

CONFIG = (pathlib.Path(__file__).resolve().parents[1] / "experiments"
          / "configs" / "custom_table.py")


def load_config_module():
  spec = importlib.util.spec_from_file_location("custom_table", CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def run_variant(module, variant: str, runs: int, max_evals: int,
                seed: int) -> dict:
  config = module.get_config(variant)
  evaluator = tabular_run.build_evaluator(config)
  space = evaluator.space
  algo = tabular_run.build_algorithm(config, space)
  search = search_lib.make_search(algo, evaluator,
                                 max_evals=max_evals)
  keys = jax.random.split(jax.random.key(seed), runs)
  result, first_s, _ = common.time_first_and_repeats(
      jax.jit(jax.vmap(search)), (keys,), 0)
  indices = np.asarray(jax.vmap(jax.vmap(space.index))(result.archs))
  distinct, found, proposals = seed003_search.distinct_until_best(
      indices, np.asarray(result.rewards), np.asarray(result.num_evals),
      evaluator.best_reward, space.num_architectures)
  return {"algorithm": variant, "runs": runs, "first_call_s": first_s,
          "best": seed003_search.summarize(distinct, found, proposals),
          "evaluator": evaluator}


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--runs", type=int, default=100)
  p.add_argument("--max_evals", type=int, default=200)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--quick", action="store_true")
  p.add_argument("--out_json", default="")
  args = p.parse_args()
  if args.quick:
    args.runs, args.max_evals = 4, 8
  common.print_header(common.machine_info(), [
      f"config:  {CONFIG.relative_to(CONFIG.parents[2])}, {args.runs} runs "
      f"x {args.max_evals} proposals, seed {args.seed}"])
  module = load_config_module()
  variants = ("reinforce", "random") if args.quick else module.VARIANTS
  rows = [run_variant(module, v, args.runs, args.max_evals, args.seed)
          for v in variants]
  ev = rows[0].pop("evaluator")
  for r in rows[1:]:
    r.pop("evaluator")
  k = int(np.sum(np.asarray(ev.reward) >= ev.best_reward))
  rnd = seed003_search.random_distinct_stats(ev.space.num_architectures, k)
  print(f"\ndistinct children until a best one ({k} of "
        f"{ev.space.num_architectures} share the best reward):")
  print(seed003_search.format_table(rows, "best", rnd))
  if args.out_json:
    pathlib.Path(args.out_json).write_text(json.dumps(
        {"rows": rows, "random_exact": rnd}, indent=2))


if __name__ == "__main__":
  main()
