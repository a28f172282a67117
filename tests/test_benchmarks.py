"""Every benchmark script runs end to end in its ``--quick`` mode and prints
its table (the figures themselves are measured, never asserted)."""

import os
import pathlib
import subprocess
import sys

import pytest

from nas_jax.data import nasbench201 as nb201_data

ROOT = pathlib.Path(__file__).resolve().parents[1]
NEEDS_TABLE = pytest.mark.skipif(
    not nb201_data.default_path().is_file(),
    reason=f"NAS-Bench-201 table not found at {nb201_data.default_path()}")

CASES = [
    ("controller.py", [], "REINFORCE update"),
    ("checkpoint.py", [], "ENAS-sized"),
    ("child_training.py", [], "seed003_small"),
    # nas_jax's side only where torch is absent (CI): the table still prints.
    ("vs_torch.py", [], "small64"),
    ("host_memory.py", [], "small64"),
    ("cpu_kernels.py", [], "depthwise_grad"),
    ("seed003_table.py", [], "children"),
    ("seed003_search.py", [], "random"),
    ("enas_cnn.py", [], "supernet/static"),
    ("rnn.py", [], "shared/static"),
    pytest.param("nasbench201.py", ["--algorithms", "random,rea"],
                 "random search", marks=NEEDS_TABLE),
    pytest.param("tune_nasbench201.py", ["--out_dir", "{tmp}"], "selection",
                 marks=NEEDS_TABLE),
    ("small_budget.py", [], "random search"),
    ("blockqnn.py", [], "q_learning"),
    pytest.param("cost_aware.py", ["--targets_m", "0.5"], "target 0.5 M",
                 marks=NEEDS_TABLE),
    ("custom_table_search.py", [], "random, exact"),
    # The cache part spawns processes (slow); the binary's resume test
    # covers the cache.
    ("compile_time.py", ["--part", "unroll"], "sample unrolled"),
    pytest.param("darts.py", [], "order 2: test acc", marks=NEEDS_TABLE),
]


@pytest.mark.parametrize("script,args,expect", CASES)
def test_benchmark_quick_mode_runs(script, args, expect, tmp_path):
  args = [a.replace("{tmp}", str(tmp_path)) for a in args]
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                      " --xla_backend_optimization_level=0").strip()
  proc = subprocess.run(
      [sys.executable, f"benchmarks/{script}", "--quick", *args], cwd=ROOT,
      env=env, capture_output=True, text=True, timeout=600)
  out = proc.stdout + proc.stderr
  assert proc.returncode == 0, out[-3000:]
  assert expect in out, out[-3000:]
