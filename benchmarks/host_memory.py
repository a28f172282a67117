"""What keeping freed host memory mapped buys (``nas_jax.host_memory``).

For each workload of ``vs_torch.py`` (the seed-003 child train steps, the
REINFORCE update, sampling), ``--rounds`` rounds each start one process with
``NAS_JAX_KEEP_HOST_MEMORY=1`` (the default) and one with ``=0`` (glibc's
own malloc settings), in alternating order. Each process reports the median
seconds per call after warm-up and the minor page faults per timed call;
printed: both, and the speed-up ``off seconds / on seconds``.

    PYTHONPATH=. python benchmarks/host_memory.py
    PYTHONPATH=. python benchmarks/host_memory.py --one_core 1 --rounds 3
    PYTHONPATH=. python benchmarks/host_memory.py --quick   # smoke test
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import common  # noqa: E402  (benchmarks/common.py)
import vs_torch  # noqa: E402  (the workloads and their worker)

from nas_jax import host_memory  # noqa: E402


def _run(name: str, keep: bool, args) -> dict:
  cmd, xla_flags = vs_torch.jax_command(name, args.steps, args.warmup,
                                        args.one_core)
  return vs_torch.run_worker(cmd, xla_flags,
                             {host_memory.ENV: "1" if keep else "0"})


def measure(name: str, args) -> dict:
  runs = {True: [], False: []}
  loads = []
  for r in range(args.rounds):
    for keep in ((True, False) if r % 2 == 0 else (False, True)):
      loads.append(common.load_average())
      out = _run(name, keep, args)
      runs[keep].append(out)
      print(f"  {name} round {r} kept={keep}: {1e3 * out['median_s']:.1f} "
            f"ms, {out['faults_per_call']:,.0f} faults/call "
            f"(load {loads[-1]})", flush=True)
  med = lambda xs, k: statistics.median(x[k] for x in xs)
  on_s, off_s = med(runs[True], "median_s"), med(runs[False], "median_s")
  return {"workload": name, "kept_s": on_s, "default_s": off_s,
          "kept_faults": med(runs[True], "faults_per_call"),
          "default_faults": med(runs[False], "faults_per_call"),
          "speedup": off_s / on_s, "loads": loads}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(
      description=__doc__.split("\n\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workloads", default="small64,large64,small256,"
                 "update1024,sample1024",
                 help=f"comma list of {', '.join(vs_torch.WORKLOADS)}")
  p.add_argument("--rounds", type=int, default=2)
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--one_core", type=int, default=None, metavar="CPU",
                 help="pin to this CPU with one XLA thread")
  p.add_argument("--out_json", default=None)
  p.add_argument("--quick", action="store_true",
                 help="smoke test: small64, 1 round, 2 steps")
  args = p.parse_args(argv)
  names = vs_torch.parse_workloads(p, args)
  info = common.machine_info()
  common.print_header(info, [
      common.WALL_CLOCK_NOTE,
      (f"threads: pinned to CPU {args.one_core}, one XLA thread"
       if args.one_core is not None else "threads: XLA's default")])
  rows = [measure(n, args) for n in names]
  head = ("workload", "kept (default)", "faults/call", "glibc default",
          "faults/call", "speed-up", "load range")
  lines = []
  for r in rows:
    loads = [x for x in r["loads"] if x is not None]
    lines.append((
        r["workload"], f"{1e3 * r['kept_s']:.1f} ms",
        f"{r['kept_faults']:,.0f}", f"{1e3 * r['default_s']:.1f} ms",
        f"{r['default_faults']:,.0f}", f"{r['speedup']:.2f}x",
        f"{min(loads):.1f}-{max(loads):.1f}" if loads else "n/a"))
  print()
  print(common.text_table(head, lines))
  print(f"\nmedian over {args.rounds} rounds of each process's median of "
        f"{args.steps} calls after {args.warmup} warm-up; speed-up = "
        "glibc-default seconds / kept seconds.")
  if args.out_json:
    pathlib.Path(args.out_json).write_text(json.dumps(
        {"machine": info, "one_core": args.one_core, "rows": rows}, indent=1))
    print(f"wrote {args.out_json}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
