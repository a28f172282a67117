r"""Cost of the non-finite reward guard (``algorithms.base.guard_nonfinite``)
in a whole jitted, vmapped NAS-Bench-201-sized search.

  python benchmarks/nonfinite_guard.py            # about a minute
  python benchmarks/nonfinite_guard.py --quick    # seconds, smoke test

Every algorithm wraps its ``feedback`` so a batch with a NaN / inf reward
leaves the state unchanged: one ``jnp.where`` over the state per update, no
host callback. This compares 100 seeded searches of 150 evaluations on a
random reward table over the NAS-Bench-201 space with the guard and without
(the unwrapped ``feedback``), in the same process. Median of repeats after a
warm-up (the warm-up call compiles).
"""

import argparse
import os
import statistics
import sys
import time

import jax
import numpy as np

from nas_jax import algorithms
from nas_jax.controllers import make_controller
from nas_jax.evaluators.tabular import TabularEvaluator
from nas_jax.spaces import registry
from nas_jax.train.search import make_search

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (benchmarks/common.py)


def _unguarded(algo):
  """The algorithm with its feedback as written, before the guard."""
  inner = algo.feedback.__closure__
  for cell in inner or ():
    f = cell.cell_contents
    if callable(f) and not getattr(f, "_skips_nonfinite", False) and (
        getattr(f, "__name__", "") == "feedback"):
      return algo._replace(feedback=f)
  raise RuntimeError("could not find the unguarded feedback")


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--quick", action="store_true")
  args = parser.parse_args()
  seeds, evals, repeats = (8, 20, 2) if args.quick else (100, 150, 5)
  info = common.machine_info()
  common.print_header(info, [common.WALL_CLOCK_NOTE])
  space = registry.get("nasbench201")
  table = np.random.default_rng(0).uniform(size=space.num_architectures)
  evaluate = TabularEvaluator(space, table)
  keys = jax.random.split(jax.random.key(1), seeds)
  builders = {
      "random": lambda: algorithms.random_search(space),
      "evolution": lambda: algorithms.regularized_evolution(space),
      "reinforce": lambda: algorithms.reinforce(
          make_controller(space, hidden_size=32), batch_size=1,
          learning_rate=0.01),
      "ppo": lambda: algorithms.ppo(make_controller(space, hidden_size=32),
                                    batch_size=4, minibatch_size=2,
                                    learning_rate=0.01),
  }
  print(f"{seeds} seeds x {evals} evaluations, median of {repeats}")
  print("| algorithm | unguarded | guarded | ratio |")
  print("|---|---|---|---|")
  for name, build in builders.items():
    times = {}
    for label in ("unguarded", "guarded"):
      algo = build()
      if label == "unguarded":
        algo = _unguarded(algo)
      fn = jax.jit(jax.vmap(make_search(algo, evaluate, space.num_decisions,
                                        max_evals=evals)))
      jax.block_until_ready(fn(keys))
      ts = []
      for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(keys))
        ts.append(time.perf_counter() - t)
      times[label] = statistics.median(ts)
    print(f"| {name} | {times['unguarded'] * 1e3:.1f} ms | "
          f"{times['guarded'] * 1e3:.1f} ms | "
          f"{times['guarded'] / times['unguarded']:.2f} |")


if __name__ == "__main__":
  main()
