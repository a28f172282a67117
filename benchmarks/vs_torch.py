"""nas_jax against plain PyTorch on the same CPU, A/B interleaved (issue 14).

For each workload, ``--rounds`` rounds each start one nas_jax process and one
PyTorch process (``benchmarks/torch_reference.py``), in alternating order
(round 0 nas_jax first, round 1 PyTorch first, ...), so both see the same
machine load. Each process times ``--steps`` steps after warm-up and reports
their median; per side the median over rounds is reported, and the ratio
``PyTorch seconds / nas_jax seconds`` (> 1: nas_jax is faster), with the
1-minute load average before each process.

Workloads (the issue's table):

* ``small64`` / ``small256``: the ``ChildTrainer`` train step of the
  ``seed003_small`` child ``conv_3x3>sep_conv_3x3`` on 28x28x1, batch 64 /
  256 (``benchmarks/child_training.py``'s, which serves every child of the
  space from one compiled program);
* ``large64`` / ``large256``: the ``seed003_large`` child
  ``x>conv_3x3;n0>sep_conv_3x3;x>conv_5x5`` on 32x32x3;
* ``update1024``: ``jit(reinforce(...).feedback)`` on 1024 architectures of
  the ENAS RNN space (``benchmarks/controller.py``'s update);
* ``sample1`` / ``sample1024``: ``jit(vmap(controller.sample))`` at batch 1 /
  1024 (``benchmarks/controller.py``'s sampling; not part of the default
  list: ``--workloads sample1,sample1024``).

PyTorch is optional and never a dependency: the PyTorch side runs with
``--torch_python`` (default ``$NAS_JAX_TORCH_PYTHON``, else this Python) if
``torch`` imports there, and is skipped with a message otherwise (nas_jax's
figures are still printed). ``XLA_FLAGS`` set in the environment reach the
nas_jax processes unchanged. ``--one_core N`` pins both sides to CPU ``N``
(``taskset``) with one thread each (``torch.set_num_threads(1)``; XLA without
its multi-threaded Eigen and one intra-op thread): on a machine shared with
other jobs this keeps PyTorch's OpenMP threads from spinning against them,
which otherwise slows it far more than XLA (measured 3-10x under load 5-10).

    PYTHONPATH=. python benchmarks/vs_torch.py
    NAS_JAX_TORCH_PYTHON=/path/to/venv/bin/python PYTHONPATH=. \\
        python benchmarks/vs_torch.py --workloads small64,large64 --rounds 3
    PYTHONPATH=. python benchmarks/vs_torch.py --quick   # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import common  # noqa: E402  (benchmarks/common.py)

# name -> (kind, child or None, batch)
WORKLOADS = {
    "small64": ("child", "small", 64),
    "small256": ("child", "small", 256),
    "large64": ("child", "large", 64),
    "large256": ("child", "large", 256),
    "update1024": ("update", None, 1024),
    "sample1": ("sample", None, 1),
    "sample1024": ("sample", None, 1024),
}
_SPACES = {"small": ("seed003_small", (28, 28, 1)),
           "large": ("seed003_large", (32, 32, 3))}


def jax_worker(kind: str, child: str | None, batch: int, steps: int,
               warmup: int) -> dict:
  """Times one nas_jax workload in this process; the median seconds."""
  if kind == "child":
    import child_training  # noqa: PLC0415  (benchmarks/child_training.py)
    space, shape = _SPACES[child]
    arch = (child_training.SMALL_ARCH if child == "small"
            else child_training.LARGE_ARCH)
    row = child_training.time_train_step(space, shape, arch, batch, steps,
                                         warmup)
    return {"median_s": row["median_step_ms"] / 1e3,
            "compilations": row["compilations"],
            "faults_per_call": row["faults_per_step"]}
  import controller  # noqa: PLC0415  (benchmarks/controller.py)
  ctrl = controller.make_controller(controller.enas_rnn_space())
  if kind == "sample":
    import jax  # noqa: PLC0415
    params = ctrl.init(jax.random.key(0))
    row = controller.time_sampling(ctrl, params, batch, steps)
  else:
    row = controller.time_update(ctrl, batch, steps)
  return {"median_s": row["median_s"],
          "faults_per_call": row["faults_per_call"]}


def torch_python(explicit: str | None) -> tuple[str | None, str]:
  """The Python that runs the PyTorch side and its torch version, or
  ``(None, reason)``."""
  exe = explicit or os.environ.get("NAS_JAX_TORCH_PYTHON") or sys.executable
  try:
    proc = subprocess.run(
        [exe, "-c", "import torch; print(torch.__version__)"],
        capture_output=True, text=True, timeout=120)
  except (OSError, subprocess.TimeoutExpired) as e:
    return None, f"cannot run {exe}: {e}"
  if proc.returncode:
    return None, (f"torch does not import in {exe} (PyTorch is optional; "
                  "set --torch_python or NAS_JAX_TORCH_PYTHON to a Python "
                  "with torch to get the ratios)")
  return exe, proc.stdout.strip().splitlines()[-1]


ONE_THREAD_XLA_FLAGS = ("--xla_cpu_multi_thread_eigen=false "
                        "intra_op_parallelism_threads=1")


def run_worker(cmd: list[str], xla_flags: str | None = None,
               extra_env: dict | None = None) -> dict:
  """Runs one worker process from the repository root; its JSON line."""
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [str(HERE.parent), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
  env.update(extra_env or {})
  if xla_flags:
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {xla_flags}".strip()
  proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                        cwd=HERE.parent, timeout=900)
  if proc.returncode:
    raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def worker_steps(name: str, steps: int) -> int:
  # Sampling calls take milliseconds: 10x the steps for a stable median.
  return steps * (10 if WORKLOADS[name][0] == "sample" else 1)


def _pinned(cmd: list[str], one_core: int | None) -> list[str]:
  return cmd if one_core is None else ["taskset", "-c", str(one_core)] + cmd


def jax_command(name: str, steps: int, warmup: int, one_core: int | None
                ) -> tuple[list[str], str | None]:
  """The nas_jax worker's command for a workload and its extra XLA flags
  (one thread when pinned)."""
  cmd = [sys.executable, str(HERE / "vs_torch.py"), "--worker", name,
         "--steps", str(worker_steps(name, steps)), "--warmup", str(warmup)]
  return (_pinned(cmd, one_core),
          None if one_core is None else ONE_THREAD_XLA_FLAGS)


def parse_workloads(parser: argparse.ArgumentParser, args) -> list[str]:
  """``--workloads`` as names (``parser.error`` on unknown ones or bad
  counts); ``--quick`` turns the run into a small64 smoke test."""
  names = [n.strip() for n in args.workloads.split(",") if n.strip()]
  unknown = sorted(set(names) - set(WORKLOADS))
  if unknown:
    parser.error(f"unknown workload(s) {unknown}; choose from "
                 f"{', '.join(WORKLOADS)}")
  if args.rounds < 1 or args.steps < 1 or args.warmup < 0:
    parser.error("--rounds and --steps must be >= 1, --warmup >= 0")
  if args.quick:
    names, args.rounds, args.steps, args.warmup = ["small64"], 1, 2, 1
  return names


def measure(name: str, args, torch_exe: str | None) -> dict:
  kind, child, batch = WORKLOADS[name]
  jax_cmd, xla_flags = jax_command(name, args.steps, args.warmup,
                                   args.one_core)
  torch_cmd = [torch_exe or "", str(HERE / "torch_reference.py"), kind,
               "--batch", str(batch), "--steps",
               str(worker_steps(name, args.steps)),
               "--warmup", str(args.warmup)]
  if child:
    torch_cmd += ["--child", child]
  if args.one_core is not None:
    torch_cmd = _pinned(torch_cmd, args.one_core) + ["--threads", "1"]
  sides = {"nas_jax": [], "torch": []}
  loads = []
  for r in range(args.rounds):
    order = ["nas_jax", "torch"] if r % 2 == 0 else ["torch", "nas_jax"]
    for side in order:
      if side == "torch" and torch_exe is None:
        continue
      loads.append(common.load_average())
      out = (run_worker(jax_cmd, xla_flags) if side == "nas_jax"
             else run_worker(torch_cmd))
      sides[side].append(out["median_s"])
      print(f"  {name} round {r} {side}: {_ms(out['median_s'])} "
            f"(load {loads[-1]})", flush=True)
  jax_s = statistics.median(sides["nas_jax"])
  torch_s = statistics.median(sides["torch"]) if sides["torch"] else None
  per_round = ([t / j for j, t in zip(sides["nas_jax"], sides["torch"])]
               if sides["torch"] else [])
  return {"workload": name, "batch": batch, "nas_jax_s": jax_s,
          "torch_s": torch_s, "ratio": torch_s / jax_s if torch_s else None,
          "round_ratios": per_round, "nas_jax_runs": sides["nas_jax"],
          "torch_runs": sides["torch"], "loads": loads}


def _ms(seconds: float) -> str:
  ms = seconds * 1e3
  return f"{ms:.2f} ms" if ms < 10 else f"{ms:.1f} ms"


def _per_s(name: str, seconds: float) -> str:
  kind, _, batch = WORKLOADS[name]
  unit = "images/s" if kind == "child" else "arch/s"
  return f"{batch / seconds:,.0f} {unit}"


def main(argv=None) -> int:
  p = argparse.ArgumentParser(
      description=__doc__.split("\n\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workloads", default="small64,small256,large64,large256,"
                 "update1024",
                 help=f"comma list of {', '.join(WORKLOADS)}")
  p.add_argument("--rounds", type=int, default=3,
                 help="A/B rounds per workload (one process per side each)")
  p.add_argument("--steps", type=int, default=10,
                 help="timed steps per process")
  p.add_argument("--warmup", type=int, default=3)
  p.add_argument("--torch_python", default=None,
                 help="Python with torch (default $NAS_JAX_TORCH_PYTHON, "
                      "else this one)")
  p.add_argument("--one_core", type=int, default=None, metavar="CPU",
                 help="pin both sides to this CPU, one thread each")
  p.add_argument("--out_json", default=None)
  p.add_argument("--quick", action="store_true",
                 help="smoke test: small64, 1 round, 2 steps")
  p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.worker:  # one side of one round, in its own process
    kind, child, batch = WORKLOADS[args.worker]
    print(json.dumps(jax_worker(kind, child, batch, args.steps,
                                args.warmup)))
    return 0
  names = parse_workloads(p, args)

  info = common.machine_info()
  torch_exe, torch_note = torch_python(args.torch_python)
  common.print_header(info, [
      common.WALL_CLOCK_NOTE,
      f"XLA_FLAGS: {os.environ.get('XLA_FLAGS', '(none)')}",
      ("threads: both sides pinned to CPU "
       f"{args.one_core}, one thread each (nas_jax XLA_FLAGS += "
       f"{ONE_THREAD_XLA_FLAGS})" if args.one_core is not None else
       "threads: each side's default (2 CPUs)"),
      f"torch:   {torch_note}" if torch_exe else
      f"torch:   SKIPPED: {torch_note}"])
  rows = [measure(n, args, torch_exe) for n in names]
  head = ("workload", "nas_jax", "plain PyTorch", "PyTorch s / nas_jax s",
          "per-round ratios", "load range")
  lines = []
  for r in rows:
    loads = [x for x in r["loads"] if x is not None]
    lines.append((
        r["workload"],
        f"{_ms(r['nas_jax_s'])} ({_per_s(r['workload'], r['nas_jax_s'])})",
        (f"{_ms(r['torch_s'])} ({_per_s(r['workload'], r['torch_s'])})"
         if r["torch_s"] else "skipped"),
        f"{r['ratio']:.2f}x" if r["ratio"] else "-",
        ", ".join(f"{x:.2f}" for x in r["round_ratios"]) or "-",
        f"{min(loads):.1f}-{max(loads):.1f}" if loads else "n/a"))
  print()
  print(common.text_table(head, lines))
  print(f"\nmedian over {args.rounds} rounds of each process's median of "
        f"{args.steps} steps after {args.warmup} warm-up; ratio > 1: nas_jax "
        "is faster. 1-min load average now "
        f"{common.load_average()}.")
  if args.out_json:
    pathlib.Path(args.out_json).write_text(json.dumps(
        {"machine": info, "torch": torch_note if torch_exe else None,
         "xla_flags": os.environ.get("XLA_FLAGS"),
         "one_core": args.one_core, "rows": rows}, indent=1))
    print(f"wrote {args.out_json}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
