"""Train-step throughput of the seed-003 child networks (``ChildTrainer``).

Measures the jitted train step of
``nas_jax.evaluators.train_from_scratch.ChildTrainer`` (forward, backward,
SGD-Nesterov update with weight decay, BatchNorm statistics) for:

* a ``seed003_small`` child (two ops in a chain) on 28x28x1 inputs
  (MNIST-sized), and
* a ``seed003_large`` child (three-node branching cell) on 32x32x3 inputs
  (CIFAR-sized),

each at batch 64 and 256. Network settings are those of
``experiments/configs/seed003_digits.py``: ``num_cells=2``, ``channels=16``
(a 2x2 max pool between the two cells), 10 classes; child optimiser SGD lr
0.05, momentum 0.9, weight decay 1e-4. Inputs are synthetic random uint8
images (normalised once, outside the timing) with random labels: throughput
does not depend on the pixel values.

Reported per configuration: the first call of the jitted step (trace +
XLA compile + one step; the step is compiled once per space and input shape
and then serves every child of the space, since ops are picked with
``lax.switch``), and, after warm-up steps, the median over ``--steps`` timed
steps (each ended by ``jax.block_until_ready``) as ms/step and images/s.
Step time depends on the child (a 7x7 convolution costs more than a pool), so
the children timed are named and can be changed with ``--small_arch`` /
``--large_arch``. Nothing is asserted.

Each configuration is also timed with a *static reference* network
(:class:`StaticChild`, unless ``--no_static``): the same child, same ops,
weights, optimiser and step function, but with its ops fixed in Python instead
of chosen by ``lax.switch``. It is a diagnostic: on XLA:CPU the gradient
convolutions inside a ``lax.switch`` branch are not rewritten to the fast
convolution layout that the same convolutions get at top level, so the
switch-based step is many times slower there (see benchmarks/README.md).

Run from the repository root::

    PYTHONPATH=. python benchmarks/child_training.py            # full
    PYTHONPATH=. python benchmarks/child_training.py --quick    # smoke test
    PYTHONPATH=. python benchmarks/child_training.py --steps 50 \\
        --batch_sizes 64,256,1024 --out_json /tmp/child_training.json
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nas_jax.children import cell_net
from nas_jax.children import ops as ops_lib
from nas_jax.data import datasets
from nas_jax.evaluators import train_from_scratch
from nas_jax.spaces import seed003

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (benchmarks/common.py)

# experiments/configs/seed003_digits.py: network and child optimiser.
NUM_CELLS = 2
CHANNELS = 16
NUM_CLASSES = 10
LEARNING_RATE = 0.05
OPTIMIZER = "sgd"
WEIGHT_DECAY = 1e-4

# The children timed by default: a mix of a dense conv and the (two-fold)
# depthwise-separable conv in the small space; in the large space a cell with
# branching (n0 and x are each read by a later node) and three conv types.
SMALL_ARCH = "conv_3x3>sep_conv_3x3"
LARGE_ARCH = "x>conv_3x3;n0>sep_conv_3x3;x>conv_5x5"

CONFIGS = (  # (space name, input shape)
    ("seed003_small", (28, 28, 1)),
    ("seed003_large", (32, 32, 3)),
)
WARMUP_STEPS = 3


def synthetic_dataset(shape: tuple[int, int, int], n: int,
                      seed: int = 0) -> datasets.Dataset:
  """A ``Dataset`` of ``n`` random uint8 images (all three splits alike)."""
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
  labels = rng.integers(0, NUM_CLASSES, n).astype(np.int32)
  mean = (images.reshape(-1, shape[-1]) / 255.0).mean(0).astype(np.float32)
  std = (images.reshape(-1, shape[-1]) / 255.0).std(0).astype(np.float32)
  index = np.arange(n)
  return datasets.Dataset(
      name="synthetic", train_images=images, train_labels=labels,
      val_images=images, val_labels=labels, test_images=images,
      test_labels=labels, num_classes=NUM_CLASSES, mean=mean, std=std,
      train_index=index, val_index=index, test_index=index, pool_size=n)


class StaticChild(nn.Module):
  """Diagnostic reference: the same child with its ops fixed in Python (no
  ``lax.switch``): stem, cells (2x2 max pool between them), classifier, as
  ``cell_net``'s networks build them, but only the chosen ops exist.
  ``arch`` is a tuple of Python ints; the traced arch argument is ignored.
  """

  space_name: str
  arch: tuple[int, ...]

  @nn.compact
  def __call__(self, images, arch_unused, train: bool):
    del arch_unused
    x = ops_lib.Stem(CHANNELS)(images, train)
    for c in range(NUM_CELLS):
      if c > 0:
        x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
      if self.space_name == "seed003_small":
        for op in self.arch:
          x = ops_lib.make_op(seed003.OPS[op], CHANNELS)(x, train)
      else:
        states = [x]
        nodes = len(self.arch) // 2
        for i in range(nodes):
          src, op = self.arch[2 * i], self.arch[2 * i + 1]
          states.append(ops_lib.make_op(seed003.OPS[op], CHANNELS)(
              states[src], train))
        read = {self.arch[2 * j] for j in range(nodes)}
        ends = [states[i + 1] for i in range(nodes) if i + 1 not in read]
        x = sum(ends) / len(ends)
    return ops_lib.Classifier(NUM_CLASSES)(x)


def time_train_step(space_name: str, shape, arch_text: str, batch_size: int,
                    steps: int, warmup: int, static: bool = False) -> dict:
  """Times ChildTrainer's jitted train step; ``static`` swaps the network
  for :class:`StaticChild` (the diagnostic reference)."""
  space = (seed003.small_space() if space_name == "seed003_small"
           else seed003.large_space())
  arch = space.from_text(arch_text)
  ds = synthetic_dataset(shape, batch_size)
  if static:
    net = StaticChild(space_name, tuple(int(a) for a in arch))
  else:
    net = cell_net.make_network(space_name, num_classes=NUM_CLASSES,
                                num_cells=NUM_CELLS, channels=CHANNELS)
  trainer = train_from_scratch.ChildTrainer(
      space, net, ds, epochs=1, batch_size=batch_size,
      learning_rate=LEARNING_RATE, optimizer=OPTIMIZER,
      weight_decay=WEIGHT_DECAY, seed=0)
  arch_j = jnp.asarray(arch)
  key = jax.random.key(0)
  state = jax.block_until_ready(trainer._init(key, arch_j))
  images = jax.block_until_ready(jnp.asarray(ds.normalize(ds.train_images)))
  labels = jnp.asarray(ds.train_labels)

  t0 = time.perf_counter()
  state, loss = trainer._train_step(state, arch_j, images, labels, key)
  jax.block_until_ready((state, loss))
  first = time.perf_counter() - t0
  for _ in range(warmup):
    state, loss = trainer._train_step(state, arch_j, images, labels, key)
  jax.block_until_ready((state, loss))
  times, faults = [], []
  for i in range(steps):
    k = jax.random.fold_in(key, i)
    f0, t0 = common.minor_faults(), time.perf_counter()
    state, loss = trainer._train_step(state, arch_j, images, labels, k)
    jax.block_until_ready((state, loss))
    times.append(time.perf_counter() - t0)
    faults.append(common.minor_faults() - f0)
  med = statistics.median(times)
  return {
      "space": space_name, "input": "x".join(map(str, shape)),
      "arch": arch_text, "batch_size": batch_size,
      "network": "static reference" if static else "ChildTrainer (switch)",
      "first_call_s": first, "median_step_ms": 1e3 * med,
      "min_step_ms": 1e3 * min(times), "max_step_ms": 1e3 * max(times),
      "images_per_s": batch_size / med, "steps_timed": steps,
      "compilations": trainer.num_traces,
      "faults_per_step": statistics.median(faults),
      "final_loss": float(loss),
  }


def format_table(rows: list[dict]) -> str:
  head = ("space", "input", "child", "network", "batch", "1st call (s)",
          "ms/step", "images/s")
  lines = [(r["space"], r["input"], r["arch"], r["network"],
            str(r["batch_size"]),
            f"{r['first_call_s']:.1f}", f"{r['median_step_ms']:.1f}",
            f"{r['images_per_s']:,.0f}") for r in rows]
  return common.text_table(head, lines)


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(
      description=__doc__.split("\n\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--batch_sizes", default="64,256",
                 help="comma list (default 64,256)")
  p.add_argument("--steps", type=int, default=20,
                 help="timed steps per configuration after warm-up")
  p.add_argument("--small_arch", default=SMALL_ARCH,
                 help=f"seed003_small child to time (default {SMALL_ARCH})")
  p.add_argument("--large_arch", default=LARGE_ARCH,
                 help=f"seed003_large child to time (default {LARGE_ARCH})")
  p.add_argument("--spaces", default="seed003_small,seed003_large")
  p.add_argument("--no_static", action="store_true",
                 help="skip the static reference rows (the same child with "
                      "its ops fixed in Python, no lax.switch)")
  p.add_argument("--out_json", default=None)
  p.add_argument("--quick", action="store_true",
                 help="smoke test: small space, batch 16, 3 timed steps")
  args = p.parse_args(argv)
  args.batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b]
  args.spaces = [s.strip() for s in args.spaces.split(",") if s.strip()]
  args.warmup = WARMUP_STEPS
  if args.quick:
    args.batch_sizes, args.steps, args.warmup = [16], 3, 1
    args.spaces = ["seed003_small"]
  unknown = set(args.spaces) - {c[0] for c in CONFIGS}
  if unknown:
    p.error(f"unknown space(s) {sorted(unknown)}")
  if args.steps < 1 or not args.batch_sizes or min(args.batch_sizes) < 1:
    p.error("--steps and every batch size must be >= 1")
  return args


def main(argv=None) -> int:
  args = parse_args(argv)
  info = common.machine_info()
  common.print_header(info)
  print(f"network: num_cells={NUM_CELLS}, channels={CHANNELS}, "
        f"{NUM_CLASSES} classes (experiments/configs/seed003_digits.py); "
        f"child optimiser {OPTIMIZER} lr {LEARNING_RATE} wd {WEIGHT_DECAY}; "
        f"synthetic uint8 inputs; {args.warmup} warm-up + {args.steps} timed "
        "steps per row", flush=True)
  rows = []
  for space_name, shape in CONFIGS:
    if space_name not in args.spaces:
      continue
    arch = args.small_arch if space_name == "seed003_small" else args.large_arch
    for b, static in [(b, s) for s in (False, True) for b in args.batch_sizes
                      if not (s and args.no_static)]:
      row = time_train_step(space_name, shape, arch, b, args.steps,
                            args.warmup, static)
      rows.append(row)
      print(f"  {space_name} {row['input']} b={b} {row['network']}: first "
            f"call {row['first_call_s']:.1f}s, median "
            f"{row['median_step_ms']:.1f} "
            f"ms/step (min {row['min_step_ms']:.1f}, max "
            f"{row['max_step_ms']:.1f}), {row['images_per_s']:,.0f} images/s",
            flush=True)
  print()
  print(format_table(rows))
  print("\n1st call = trace + XLA compile + one step: for ChildTrainer once "
        "per space and input shape (it serves every child of the space), for "
        "the static reference once per child; ms/step = median of "
        f"{args.steps} steps after {args.warmup} warm-up steps.")
  if args.out_json:
    pathlib.Path(args.out_json).write_text(json.dumps(
        {"machine": info, "network": {"num_cells": NUM_CELLS,
                                      "channels": CHANNELS},
         "rows": rows}, indent=1))
    print(f"wrote {args.out_json}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
