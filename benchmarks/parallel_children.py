"""Many children at once: children per second with one child per device, on
1 to 8 fake CPU devices and on 2 processes of 4 (nas_jax.parallel.
many_children), against the same children trained one by one
(``ChildTrainer``) in the same run.

  PYTHONPATH=. python benchmarks/parallel_children.py [--quick]

On this 2-core CPU no speed-up is expected (8 fake devices share 2 cores);
the figures show the overhead of the per-device program and of the
cross-process (gloo) run. Each device count runs in a fresh Python (XLA
fixes the device count at start-up); each measures a warm-up group (compile
included), then the median of ``--repeats`` groups of K new children.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import socket
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

ROOT = pathlib.Path(__file__).resolve().parents[1]
_MARK = "RESULT_JSON "

_WORKER = """
import json, statistics, sys, time
import jax, numpy as np
from nas_jax.children import cell_net
from nas_jax.data import datasets
from nas_jax.evaluators import train_from_scratch
from nas_jax.parallel import many_children, mesh as mesh_lib
from nas_jax.spaces import registry

repeats, max_train, one_by_one = int(sys.argv[1]), int(sys.argv[2]), \\
    sys.argv[3] == "1"
mesh_lib.initialize_distributed()
space = registry.get("seed003_small")
ds = datasets.load("digits", num_val=200, max_train=max_train)
net = cell_net.make_network("seed003_small", num_classes=10, num_cells=2,
                            channels=8)
tr = train_from_scratch.ChildTrainer(space, net, ds, epochs=1, batch_size=32,
                                     seed=0, eval_batch_size=100)
k = jax.device_count()
pd = many_children.PerDeviceChildTrainer(tr, mesh_lib.make_mesh())
archs = [np.asarray([i % 8, i // 8 % 8], np.int32) for i in range(64)]
t0 = time.perf_counter()
pd.train_and_evaluate(archs[:k])
first = time.perf_counter() - t0
times = []
for r in range(repeats):
  group = [archs[(k * (r + 1) + j) % 64] for j in range(k)]
  t0 = time.perf_counter()
  pd.train_and_evaluate(group)
  times.append(time.perf_counter() - t0)
out = {"devices": k, "processes": jax.process_count(), "first_s": first,
       "group_s": statistics.median(times)}
if one_by_one:
  tr.train_and_evaluate(archs[0])
  solo = []
  for r in range(repeats):
    t0 = time.perf_counter()
    tr.train_and_evaluate(archs[r + 1])
    solo.append(time.perf_counter() - t0)
  out["solo_s"] = statistics.median(solo)
if jax.process_index() == 0:
  print("RESULT_JSON " + json.dumps(out), flush=True)
"""


def _env(devices: int, **extra) -> dict:
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  for var in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES",
              "JAX_PROCESS_ID"):
    env.pop(var, None)
  env.update(extra)
  return env


def _result(procs) -> dict:
  out = None
  for p in procs:
    stdout, stderr = p.communicate(timeout=900)
    if p.returncode:
      raise RuntimeError(stderr[-3000:])
    lines = [l for l in stdout.splitlines() if l.startswith(_MARK)]
    if lines:
      out = json.loads(lines[-1][len(_MARK):])
  return out


def _start(devices, args, **env):
  return subprocess.Popen([sys.executable, "-c", _WORKER, *map(str, args)],
                          cwd=ROOT, env=_env(devices, **env), text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true",
                      help="1 and 2 devices, 1 repeat (smoke test)")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--max_train", type=int, default=512)
  parser.add_argument("--counts", default="1,2,4,8",
                      help="device counts of the 1-process rows (the first "
                      "also times ChildTrainer one by one)")
  parser.add_argument("--no_two_processes", action="store_true",
                      help="skip the 2 x 4 row")
  args = parser.parse_args()
  import common  # pylint: disable=g-import-not-at-top
  counts = (1, 2) if args.quick else tuple(
      int(c) for c in args.counts.split(","))
  repeats = 1 if args.quick else args.repeats
  max_train = 64 if args.quick else args.max_train
  common.print_header(common.machine_info(), [
      common.WALL_CLOCK_NOTE,
      f"setup:   seed003_small children (2 cells of 8 channels), digits, "
      f"{max_train} train / 200 val images, 1 epoch; median of {repeats} "
      f"groups of K new children after a warm-up group"])
  head = ("processes x devices", "first group s (compile)", "group s",
          "children/s", "vs one by one")
  print(" | ".join(head), flush=True)
  ref = None
  runs = [(f"1 x {k}", lambda k=k, i=i: [_start(k, (repeats, max_train,
                                                   int(i == 0)))])
          for i, k in enumerate(counts)]
  if not (args.quick or args.no_two_processes):
    port = _free_port()
    runs.append(("2 x 4", lambda: [
        _start(4, (repeats, max_train, 0),
               JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
               JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i))
        for i in range(2)]))
  for name, start in runs:  # a row as soon as it is measured
    r = _result(start())
    if ref is None:  # the first row also timed the children one by one
      ref = 1.0 / r["solo_s"]
      print(f"one by one (ChildTrainer) | - | {r['solo_s']:.3f} | "
            f"{ref:.2f} | 1.00", flush=True)
    rate = r["devices"] / r["group_s"]
    print(f"per device, {name} | {r['first_s']:.1f} | {r['group_s']:.3f} | "
          f"{rate:.2f} | {rate / ref:.2f}", flush=True)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


if __name__ == "__main__":
  main()
