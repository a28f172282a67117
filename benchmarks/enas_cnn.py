"""ENAS image search: shared-weight step throughput, its cost against the same
child built statically, controller step time, and a short search-quality run.

Throughput (default): the micro supernet's jitted shared-weight train step
(forward, backward, clipped Nesterov SGD with weight decay, BN statistics;
``nas_jax.train.enas_run.make_image_task``) at

* the paper-like size: 32x32x3 images, batch 64, 2 normal cells per stage,
  2 reductions, 20 channels, B = 5 (the authors' search network), and
* a CPU size: 28x28x1 images (Fashion-MNIST), batch 64, 1 cell per stage,
  12 channels (``enas_micro.py:fashion_mnist``).

Each step trains a different child (10 children sampled uniformly, cycled);
the median over ``--steps`` timed steps after warm-up gives ms/step and
images/s. The static reference is one child built with fixed ops
(``MicroNet(fixed_arch=...)``: no switch) with the same weights, timed with
the same step function; the supernet is timed on that same child too, so the
ratio is the cost of sharing. Also: the ENAS controller's step (propose 10
children + REINFORCE update with the authors' options), and the process's
peak resident memory. Synthetic uint8 images and labels.

Quality (``--quality``): the micro search on Fashion-MNIST
(``enas_micro.py:fashion_mnist``), derive, then retrain the derived cell and
``--random_cells`` cells drawn uniformly from the space with the same short
recipe (``enas_retrain.py:fashion_mnist``); prints every test accuracy and
the search's wall time. Nothing is asserted.

Run from the repository root::

    PYTHONPATH=. python benchmarks/enas_cnn.py              # throughput
    PYTHONPATH=. python benchmarks/enas_cnn.py --quick      # smoke test
    PYTHONPATH=. python benchmarks/enas_cnn.py --quality --workdir /tmp/eq
"""

from __future__ import annotations

import argparse
import json
import pathlib
import resource
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

from nas_jax import algorithms  # pylint: disable=wrong-import-position
from nas_jax.children import enas_cnn  # pylint: disable=wrong-import-position
from nas_jax.controllers import make_controller  # pylint: disable=wrong-import-position
from nas_jax.data import datasets  # pylint: disable=wrong-import-position
from nas_jax.spaces import enas as enas_space  # pylint: disable=wrong-import-position
from nas_jax.train import enas_run  # pylint: disable=wrong-import-position

SIZES = {
    "paper-like": dict(hw=32, c=3, batch=64, num_cells=2, channels=20),
    "cpu": dict(hw=28, c=1, batch=64, num_cells=1, channels=12),
    "quick": dict(hw=8, c=1, batch=16, num_cells=1, channels=4),
}


def _fake_dataset(hw, c, n):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (n, hw, hw, c), dtype=np.uint8)
  labels = rng.integers(0, 10, (n,)).astype(np.int32)
  mean = np.full((c,), 0.5, np.float32)
  std = np.full((c,), 0.25, np.float32)
  idx = np.arange(n)
  return datasets.Dataset("synthetic", images, labels, images, labels, images,
                          labels, 10, mean, std, idx, idx, idx, n)


def _time(fn, state, batches, steps, warmup):
  for i in range(warmup):
    state, _ = fn(state, *batches[i % len(batches)])
  jax.block_until_ready(state)
  times = []
  for i in range(steps):
    t0 = time.perf_counter()
    state, m = fn(state, *batches[i % len(batches)])
    jax.block_until_ready((state, m))
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def throughput(name, size, steps, warmup, num_nodes=5):
  space = enas_space.micro_space(num_nodes)
  ds = _fake_dataset(size["hw"], size["c"], size["batch"])
  kw = dict(num_classes=10, num_nodes=num_nodes, num_cells=size["num_cells"],
            channels=size["channels"], num_reductions=2 if size["hw"] > 8
            else 1)
  net = enas_cnn.MicroNet(**kw)
  tx = enas_run.make_shared_optimizer(lr_max=0.05, lr_min=0.0005, lr_t0=10,
                                      lr_t_mul=2, steps_per_epoch=100)
  task = enas_run.make_image_task(space, net, ds, batch_size=size["batch"],
                                  val_batch_size=size["batch"], tx=tx)
  archs = np.asarray(jax.vmap(space.sample_uniform)(
      jax.random.split(jax.random.key(0), 10)))
  batch = task.train_batch(0, 0)
  key = jax.random.key(1)
  step = jax.jit(task.train_step, donate_argnums=0)
  state = jax.jit(task.init)(jax.random.key(2))
  t0 = time.perf_counter()
  state, _ = jax.block_until_ready(step(state, jnp.asarray(archs[0]), batch,
                                        key))
  compile_s = time.perf_counter() - t0
  many = _time(lambda s, a: step(s, a, batch, key), state,
               [(jnp.asarray(a),) for a in archs], steps, warmup)
  state = jax.jit(task.init)(jax.random.key(2))
  one = _time(lambda s, a: step(s, a, batch, key), state,
              [(jnp.asarray(archs[0]),)], steps, warmup)
  # The same child, built statically, from the supernet's weights.
  fixed = enas_cnn.MicroNet(**kw, fixed_arch=tuple(int(v) for v in archs[0]))
  ftask = enas_run.make_image_task(space, fixed, ds, batch_size=size["batch"],
                                   val_batch_size=size["batch"], tx=tx)
  sup = jax.jit(task.init)(jax.random.key(2))
  fv = enas_cnn.fixed_variables(fixed, {"params": sup.params,
                                        "batch_stats": sup.batch_stats},
                                archs[0])
  fstate = sup._replace(params=fv["params"], batch_stats=fv["batch_stats"],
                        opt_state=tx.init(fv["params"]))
  fstep = jax.jit(ftask.train_step, donate_argnums=0)
  static = _time(lambda s: fstep(s, None, batch, key), fstate, [()], steps,
                 warmup)
  b = size["batch"]
  return [name, f"{size['hw']}x{size['hw']}x{size['c']}", b,
          f"{compile_s:.1f}", f"{many * 1e3:.1f}", f"{b / many:.0f}",
          f"{one * 1e3:.1f}", f"{static * 1e3:.1f}", f"{one / static:.2f}"]


def controller_time(steps, warmup, num_nodes=5):
  space = enas_space.micro_space(num_nodes)
  ctrl = make_controller(
      space, hidden_size=64, tanh_constant=1.1, op_tanh_reduce=2.5,
      op_bias_init=(0.0, 10.0, 10.0, 0.0, 0.0),
      op_bias_fixed=(-0.25, 0.25, 0.25, -0.25, -0.25),
      op_bias_fixed_prefix="normal/", enas_anchors=True,
      node_anchor_step=True)
  algo = algorithms.reinforce(ctrl, batch_size=10, learning_rate=0.0035,
                              baseline_decay=0.99, entropy_weight=1e-4,
                              entropy_in_reward=True)
  propose, feedback = jax.jit(algo.propose), jax.jit(algo.feedback)
  state = jax.jit(algo.init)(jax.random.key(0))
  rewards = jnp.linspace(0.1, 0.9, 10)

  def one(state, i):
    state, archs = propose(state, jax.random.key(i))
    return feedback(state, archs, rewards), None

  return _time(lambda s, i: one(s, i), state, [(i,) for i in range(8)],
               steps, warmup)


def quality(workdir: pathlib.Path, random_cells: int, quick: bool,
            budget: dict):
  from experiments.configs import enas_micro, enas_retrain  # pylint: disable=g-import-not-at-top
  from nas_jax.train import retrain  # pylint: disable=g-import-not-at-top
  c = enas_micro.get_config("tiny" if quick else "fashion_mnist")
  r0 = enas_retrain.get_config("tiny_micro" if quick else "fashion_mnist")
  if not quick:  # sized to a few minutes of a 2-core CPU
    c.num_epochs = budget["epochs"]
    c.data.max_train = budget["max_train"]
    c.data.num_val = 1000
    c.controller_steps = budget["controller_steps"]
    c.derive_samples = 50
    r0.data.max_train = budget["max_train"]
    r0.data.num_val = 1000
    r0.train.epochs = budget["retrain_epochs"]
    r0.train.lr_t0 = float(budget["retrain_epochs"])
  t0 = time.perf_counter()
  summary = enas_run.run(c, str(workdir / "search"))
  search_s = time.perf_counter() - t0
  space = enas_space.micro_space(c.space_kwargs["num_nodes"])
  cells = [("derived", summary["best_text"])]
  keys = jax.random.split(jax.random.key(123), random_cells)
  cells += [(f"random {i}", space.to_text(space.sample_uniform(k)))
            for i, k in enumerate(keys)]
  rows = []
  for name, text in cells:
    r = ml_collections.ConfigDict(r0.to_dict())
    r.arch = text
    r.space_kwargs = dict(c.space_kwargs)
    t0 = time.perf_counter()
    out = retrain.run(r, str(workdir / name.replace(" ", "_")))
    rows.append([name, text, f"{out['test_accuracy']:.4f}",
                 out["num_params"], f"{time.perf_counter() - t0:.0f}"])
  print(f"search: {c.num_epochs} epochs on {c.data.name} "
        f"({c.data.max_train or 'all'} train images), "
        f"{search_s:.0f} s wall (derived reward {summary['best_reward']:.3f} "
        "on the derive minibatch)")
  print(common.text_table(["cell", "arch", "test acc", "params", "retrain s"],
                          rows))
  accs = [float(r[2]) for r in rows]
  print(f"derived {accs[0]:.4f} vs median random {np.median(accs[1:]):.4f}")
  return rows


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--quick", action="store_true")
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--sizes", default="paper-like,cpu")
  p.add_argument("--quality", action="store_true")
  p.add_argument("--random_cells", type=int, default=4)
  p.add_argument("--workdir", default="/tmp/enas_cnn_quality")
  p.add_argument("--epochs", type=int, default=3,
                 help="--quality: search epochs")
  p.add_argument("--max_train", type=int, default=2000,
                 help="--quality: training images (search and retrain)")
  p.add_argument("--controller_steps", type=int, default=10)
  p.add_argument("--retrain_epochs", type=int, default=2)
  p.add_argument("--out_json", default="")
  a = p.parse_args()
  info = common.machine_info()
  common.print_header(info, [common.WALL_CLOCK_NOTE])
  if a.quality:
    quality(pathlib.Path(a.workdir), 1 if a.quick else a.random_cells,
            a.quick, dict(epochs=a.epochs, max_train=a.max_train,
                          controller_steps=a.controller_steps,
                          retrain_epochs=a.retrain_epochs))
    return
  sizes = ["quick"] if a.quick else a.sizes.split(",")
  steps, warmup = (2, 1) if a.quick else (a.steps, a.warmup)
  nodes = 2 if a.quick else 5
  rows = [throughput(s, SIZES[s], steps, warmup, nodes) for s in sizes]
  print(common.text_table(
      ["size", "images", "batch", "first call s", "ms/step (10 children)",
       "images/s", "ms/step (child 0)", "static ms/step", "supernet/static"],
      rows))
  ctrl_ms = controller_time(steps, warmup, nodes) * 1e3
  print(f"controller step (propose 10 children + REINFORCE update, ENAS "
        f"options): {ctrl_ms:.1f} ms")
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  print(f"peak resident memory of this process: {peak:.0f} MiB")
  if a.out_json:
    pathlib.Path(a.out_json).write_text(json.dumps(
        {"machine": info, "rows": rows, "controller_ms": ctrl_ms,
         "peak_rss_mib": peak}, indent=2))


if __name__ == "__main__":
  main()
