"""The native XLA:CPU convolution kernels against XLA's own, one op at a time.

For the convolutions of the seed-003 children (and a few wider ones), times
in one process, after warm-up, the native kernel of
``nas_jax.children.cpu_kernels`` and the ``jax.numpy`` / XLA form it
replaces (the one used without a C++ compiler, on GPU/TPU, or with
``NAS_JAX_CPU_KERNELS=0``), and prints both and the speed-up. Ops: the
convolution (forward and input gradient), the dense kernel gradient, the
depthwise kernel gradient.

    PYTHONPATH=. python benchmarks/cpu_kernels.py
    taskset -c 1 env XLA_FLAGS="--xla_cpu_multi_thread_eigen=false \\
        intra_op_parallelism_threads=1" PYTHONPATH=. \\
        python benchmarks/cpu_kernels.py          # one core
    PYTHONPATH=. python benchmarks/cpu_kernels.py --quick   # smoke test
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pathlib
import statistics
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import common  # noqa: E402  (benchmarks/common.py)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from nas_jax.children import conv  # noqa: E402
from nas_jax.children import cpu_kernels  # noqa: E402

# (op, batch, image side, kernel side, C_in, C_out, what it is)
CASES = [
    ("conv", 64, 28, 3, 16, 16, "small child conv_3x3, 28x28"),
    ("conv", 64, 14, 3, 16, 16, "small child conv_3x3, 14x14"),
    ("conv", 64, 32, 5, 16, 16, "large child conv_5x5, 32x32"),
    ("conv", 64, 32, 3, 3, 16, "large child stem, 32x32x3"),
    ("conv", 64, 30, 3, 20, 20, "20 channels (XLA kept: > 16 out)"),
    ("dense_grad", 64, 28, 3, 16, 16, "small child conv_3x3, 28x28"),
    ("dense_grad", 64, 32, 5, 16, 16, "large child conv_5x5, 32x32"),
    ("dense_grad", 64, 32, 3, 3, 16, "large child stem, 32x32x3"),
    ("dense_grad", 8, 16, 3, 64, 64, "64 channels, 16x16"),
    ("depthwise_grad", 64, 28, 3, 16, 16, "small child sep_conv_3x3, 28x28"),
    ("depthwise_grad", 64, 30, 3, 20, 20, "20 channels, 30x30"),
    ("depthwise_grad", 16, 16, 5, 36, 36, "36 channels, 5x5, 16x16"),
]


def _timed(fn, args, repeats: int) -> float:
  fn = jax.jit(fn)
  for _ in range(3):
    jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def measure(case, repeats: int) -> dict:
  op, b, side, k, cin, cout, what = case
  kx, kg = jax.random.split(jax.random.key(0))
  x = jax.random.normal(kx, (b, side, side, cin))
  pads = conv._same_padding((k, k), (1, 1))  # pylint: disable=protected-access
  if op == "conv":
    other = jax.random.normal(kg, (k, k, cin, cout))
    portable = functools.partial(conv._xla_conv, dilation=(1, 1), pads=pads)  # pylint: disable=protected-access
    native = lambda x, w: cpu_kernels.conv(x, w, (1, 1), pads, portable)
  elif op == "dense_grad":
    other = jax.random.normal(kg, (b, side, side, cout))
    portable = functools.partial(conv._dense_kernel_grad, dilation=(1, 1),  # pylint: disable=protected-access
                                 pads=pads)
    native = lambda x, g: cpu_kernels.dense_kernel_grad(
        x, g, (k, k), (1, 1), pads, portable)
  else:
    other = jax.random.normal(kg, (b, side, side, cout))
    portable = functools.partial(conv._depthwise_kernel_grad,  # pylint: disable=protected-access
                                 kernel_hw=(k, k), dilation=(1, 1), pads=pads)
    native = lambda x, g: cpu_kernels.depthwise_kernel_grad(
        x, g, (k, k), (1, 1), pads, portable)
  used = "nas_jax_" in jax.jit(native).lower(x, other).as_text()
  t_xla = _timed(portable, (x, other), repeats)
  t_native = _timed(native, (x, other), repeats)
  err = float(jnp.max(jnp.abs(jax.jit(native)(x, other)
                              - jax.jit(portable)(x, other))))
  return {"op": op, "shape": f"{b}x{side}x{side}, {k}x{k}, {cin}->{cout}",
          "what": what, "xla_ms": 1e3 * t_xla, "native_ms": 1e3 * t_native,
          "native_used": used, "speedup": t_xla / t_native, "max_abs_diff": err}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(
      description=__doc__.split("\n\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--repeats", type=int, default=15)
  p.add_argument("--out_json", default=None)
  p.add_argument("--quick", action="store_true",
                 help="smoke test: two small cases, 2 repeats")
  args = p.parse_args(argv)
  if args.repeats < 1:
    p.error("--repeats must be >= 1")
  cases = CASES
  if args.quick:
    cases = [("conv", 2, 8, 3, 16, 16, "smoke"),
             ("depthwise_grad", 2, 8, 3, 16, 16, "smoke")]
    args.repeats = 2
  cpu_kernels.available()  # builds the library now, not inside a timing
  info = common.machine_info()
  common.print_header(info, [
      common.WALL_CLOCK_NOTE,
      f"XLA_FLAGS: {os.environ.get('XLA_FLAGS', '(none)')}",
      f"native kernels: {cpu_kernels.status()}"])
  rows = [measure(c, args.repeats) for c in cases]
  head = ("op", "shape (B x H x W, kernel, channels)", "what", "XLA",
          "native", "speed-up")
  lines = [(r["op"], r["shape"], r["what"], f"{r['xla_ms']:.2f} ms",
            f"{r['native_ms']:.2f} ms" if r["native_used"] else "(XLA)",
            f"{r['speedup']:.2f}x" if r["native_used"] else "-")
           for r in rows]
  print()
  print(common.text_table(head, lines))
  print(f"\nmedian of {args.repeats} calls after 3 warm-up, one process; "
        "speed-up = XLA seconds / native seconds.")
  if args.out_json:
    pathlib.Path(args.out_json).write_text(json.dumps(
        {"machine": info, "rows": rows}, indent=1))
    print(f"wrote {args.out_json}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
