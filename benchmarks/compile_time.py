"""Compile time: the persistent compilation cache, and the controller's
unrolled against its scanned rollout.

Two parts (``--part``):

* ``cache``: the first call (trace + compile + run) of 100 NAS-Bench-201
  searches in one ``jit(vmap(search))`` call, per algorithm, each in a fresh
  process: *cold* with an empty cache directory, *warm* with the directory
  the cold process filled, and *off* with no persistent cache. Median over
  ``--repeats`` fresh processes of each.
* ``unroll``: per space size ``T``, the compile and run time of the
  controller's batched sampling and of the re-scoring gradient (what an
  update differentiates), with ``unroll=True`` and ``unroll=False``.
  Compile times are single measurements (each compilation is new); run times
  are the median of ``--repeats`` calls after the first.

Run from the repository root::

    PYTHONPATH=. python benchmarks/compile_time.py --part cache
    PYTHONPATH=. python benchmarks/compile_time.py --part unroll
    PYTHONPATH=. python benchmarks/compile_time.py --quick   # smoke test
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (benchmarks/common.py; turns the cache on)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from nas_jax.controllers import make_controller  # noqa: E402
from nas_jax.spaces import registry  # noqa: E402

# (name, kwargs): spaces of increasing length T.
SPACES = (("nasbench201", {}), ("enas_rnn", {"num_nodes": 4}),
          ("enas_rnn", {"num_nodes": 6}), ("enas_rnn", {"num_nodes": 8}),
          ("enas_rnn", {}), ("enas_micro", {}), ("nasnet", {}),
          ("enas_macro", {}))
QUICK_SPACES = (("seed003_small", {}),)
BATCH = 16


def _first_call_child(algorithm: str, runs: int) -> dict:
  """Runs in a child process: the first call of ``runs`` searches."""
  import nasbench201 as nb  # noqa: PLC0415  (benchmarks/nasbench201.py)
  from nas_jax.data import nasbench201 as nb201_data  # noqa: PLC0415
  from nas_jax.evaluators import tabular  # noqa: PLC0415
  table = nb201_data.load(None)
  evaluator = tabular.nasbench201(table)
  keys = jax.random.split(jax.random.key(0), runs)
  t0 = time.perf_counter()
  algo = nb.make_algorithm(algorithm, evaluator.space)
  fn = nb.make_batched_search(algo, evaluator, table)
  result = jax.block_until_ready(fn(keys))
  first = time.perf_counter() - t0
  t0 = time.perf_counter()
  jax.block_until_ready(fn(keys))
  return {"first_call_s": first, "second_call_s": time.perf_counter() - t0,
          "mean_evals": float(jnp.mean(result.num_evals))}


def _spawn(algorithm: str, runs: int, cache: str) -> dict:
  env = dict(os.environ, NAS_JAX_COMPILE_CACHE=cache)
  env["PYTHONPATH"] = os.pathsep.join(
      [os.getcwd(), env.get("PYTHONPATH", "")]).strip(os.pathsep)
  out = subprocess.run(
      [sys.executable, os.path.abspath(__file__), "--child", algorithm,
       "--runs", str(runs)], env=env, capture_output=True, text=True,
      check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


def part_cache(algorithms, runs: int, repeats: int,
               with_off: bool = True) -> list[dict]:
  rows = []
  for name in algorithms:
    times = {"off": [], "cold": [], "warm": []}
    for _ in range(repeats):
      if with_off:
        times["off"].append(_spawn(name, runs, "off")["first_call_s"])
      with tempfile.TemporaryDirectory() as d:
        times["cold"].append(_spawn(name, runs, d)["first_call_s"])
        times["warm"].append(_spawn(name, runs, d)["first_call_s"])
    rows.append({"algorithm": name, "runs": runs,
                 **{k: statistics.median(v) if v else math.nan
                    for k, v in times.items()},
                 "all": times})
  return rows


def _time_compile_and_run(fn, args, repeats: int) -> tuple[float, float]:
  t0 = time.perf_counter()
  compiled = fn.lower(*args).compile()
  compile_s = time.perf_counter() - t0
  jax.block_until_ready(compiled(*args))
  runs = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    runs.append(time.perf_counter() - t0)
  return compile_s, statistics.median(runs)


def part_unroll(spaces, repeats: int) -> list[dict]:
  rows = []
  for name, kwargs in spaces:
    space = registry.get(name, **kwargs)
    row = {"space": name + (f"({kwargs})" if kwargs else ""),
           "T": space.num_decisions}
    for unroll in (True, False):
      ctrl = make_controller(space, hidden_size=32, unroll=unroll)
      params = ctrl.init(jax.random.key(0))
      keys = jax.random.split(jax.random.key(1), BATCH)
      archs = jax.vmap(lambda k: space.sample_uniform(k))(keys)

      def sample(p, k):
        return jax.vmap(ctrl.sample, (None, 0))(p, k).arch

      def grad(p, a):
        return jax.grad(lambda q: jnp.sum(jax.vmap(
            ctrl.log_prob, (None, 0))(q, a)))(p)

      tag = "unrolled" if unroll else "scanned"
      row[f"sample_compile_{tag}"], row[f"sample_run_{tag}"] = (
          _time_compile_and_run(jax.jit(sample), (params, keys), repeats))
      row[f"grad_compile_{tag}"], row[f"grad_run_{tag}"] = (
          _time_compile_and_run(jax.jit(grad), (params, archs), repeats))
    rows.append(row)
    print(json.dumps(row), file=sys.stderr, flush=True)
  return rows


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--part", choices=("cache", "unroll", "all"), default="all")
  p.add_argument("--algorithms", default="nb201_reinforce,nb201_ppo",
                 help="presets (nas_jax.algorithms.presets) to time")
  p.add_argument("--runs", type=int, default=100)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--spaces", default="",
                 help="comma list of NAME or NAME:key=int, e.g. "
                 "enas_rnn:num_nodes=6 (default: the list in SPACES)")
  p.add_argument("--quick", action="store_true")
  p.add_argument("--out_json", default="")
  p.add_argument("--child", default="", help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.child:
    print(json.dumps(_first_call_child(args.child, args.runs)))
    return
  if args.quick:
    args.runs, args.repeats = 4, 1
  if args.part == "unroll":
    # Every compilation must be a real one here: no persistent cache.
    common.COMPILE_CACHE = common.compile_cache.enable("off")
  info = common.machine_info()
  common.print_header(info, [common.WALL_CLOCK_NOTE])
  out = {"machine": info}
  if args.part in ("cache", "all"):
    names = [n.strip() for n in args.algorithms.split(",") if n.strip()]
    if args.quick:  # random search, cold and warm only: a smoke test
      names = ["nb201_random"]
    rows = part_cache(names, args.runs, args.repeats, with_off=not args.quick)
    out["cache"] = rows
    print(f"\nfirst call of {args.runs} NAS-Bench-201 searches in one "
          f"jit(vmap) call, median of {args.repeats} fresh processes:")
    print(common.text_table(
        ["algorithm", "cache off", "cold cache", "warm cache"],
        [[r["algorithm"], f"{r['off']:.2f} s", f"{r['cold']:.2f} s",
          f"{r['warm']:.2f} s"] for r in rows]))
  if args.part in ("unroll", "all"):
    # Every compilation must be a real one here: no persistent cache.
    common.compile_cache.enable("off")
    spaces = QUICK_SPACES if args.quick else SPACES
    if args.spaces:
      spaces = [(n.split(":")[0], dict(
          (kv.split("=")[0], int(kv.split("=")[1]))
          for kv in n.split(":")[1:])) for n in args.spaces.split(",")]
    rows = part_unroll(spaces, args.repeats)
    out["unroll"] = rows
    print(f"\ncontroller rollout, batch {BATCH}, hidden 32: compile / run "
          "seconds, unrolled vs scanned")
    print(common.text_table(
        ["space", "T", "sample unrolled", "sample scanned",
         "grad unrolled", "grad scanned"],
        [[r["space"], r["T"],
          *(f"{r[f'{k}_compile_{t}']:.2f} / {1e3 * r[f'{k}_run_{t}']:.2f}ms"
            for k in ("sample", "grad") for t in ("unrolled", "scanned"))]
         for r in rows]))
  if args.out_json:
    with open(args.out_json, "w") as f:
      json.dump(out, f, indent=2)


if __name__ == "__main__":
  main()
