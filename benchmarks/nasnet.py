"""NASNet and NAS-RL children (issue 10): NASNet-A's train step at the
paper's size, and what one program for every child costs against the same
child built statically.

Three measurements, each the median of ``--repeats`` jitted train steps
after ``--warmup`` (SGD with momentum, cross-entropy, BN statistics; no
drop path or auxiliary head, so both sides do the same work; synthetic
images and labels):

* ``nasnet_a``: NASNet-A 6 @ 768 (CIFAR-10 stack, 3.3M parameters) on
  32x32x3 images at ``--batch`` (32: the released recipe's batch), fixed
  network (``NASNet(fixed_arch=...)``): images/s.
* ``nasnet switch/static``: the NASNet supernet (every op a 13-way
  ``SwitchOp``, the arch an input) running NASNet-A's code against the fixed
  NASNet-A network, at a CPU size (``--switch_cells`` cells per stage,
  ``--switch_filters`` first-stage filters per block,
  ``--switch_reductions`` reductions, ``--switch_hw`` pixels): the
  supernet's compile time on this CPU (minutes for three cells) rules out
  the paper's size.
* ``nasrl padded/static``: the NAS-RL CNN with the arch as input (7x7
  kernels, 64 channels, masks) against the same child built statically
  (``NasrlCNN(fixed_arch=...)``), ``--nasrl_layers`` layers with skip
  connections on 28x28x1 images, a few random children.

Run from the repository root::

    PYTHONPATH=. python benchmarks/nasnet.py            # the figures
    PYTHONPATH=. python benchmarks/nasnet.py --quick    # smoke test
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

from nas_jax.children import enas_cnn  # pylint: disable=wrong-import-position
from nas_jax.children import nasnet  # pylint: disable=wrong-import-position
from nas_jax.children import nasrl_cnn  # pylint: disable=wrong-import-position
from nas_jax.spaces import nasnet as nasnet_space  # pylint: disable=wrong-import-position
from nas_jax.spaces import nasrl  # pylint: disable=wrong-import-position

TX = optax.sgd(0.01, momentum=0.9)


def make_step(net):
  """A jitted ``(params, stats, opt, arch, images, labels) -> ...`` step."""

  def step(params, stats, opt, arch, images, labels):
    def loss_fn(p):
      logits, upd = net.apply({"params": p, "batch_stats": stats}, images,
                              arch, True, mutable=["batch_stats"])
      return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
          logits, labels)), upd["batch_stats"]

    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt = TX.update(grads, opt, params)
    return optax.apply_updates(params, updates), stats, opt, loss

  return jax.jit(step)


def time_net(net, variables, archs, images, labels, warmup, repeats):
  """(first call incl. compile s, median step s) cycling through ``archs``."""
  step = make_step(net)
  params, stats = variables["params"], variables.get("batch_stats", {})
  opt = TX.init(params)
  t0 = time.perf_counter()
  out = jax.block_until_ready(step(params, stats, opt, archs[0], images,
                                   labels))
  first = time.perf_counter() - t0
  params, stats, opt, _ = out
  for i in range(warmup):
    params, stats, opt, _ = step(params, stats, opt, archs[i % len(archs)],
                                 images, labels)
  jax.block_until_ready(params)
  times = []
  for i in range(repeats):
    t0 = time.perf_counter()
    params, stats, opt, loss = step(params, stats, opt,
                                    archs[i % len(archs)], images, labels)
    jax.block_until_ready(loss)
    times.append(time.perf_counter() - t0)
  return first, statistics.median(times)


def _data(batch, hw, c, seed=0):
  k1, k2 = jax.random.split(jax.random.key(seed))
  return (jax.random.normal(k1, (batch, hw, hw, c)),
          jax.random.randint(k2, (batch,), 0, 10))


def bench_nasnet_a(args):
  _, arch, concat = nasnet_space.named("nasnet_a")
  fixed = tuple(int(v) for v in arch)
  n, f, hw = ((1, 24, 8) if args.quick else (6, 768, 32))
  net = nasnet.NASNet(num_cells=n, penultimate_filters=f, fixed_arch=fixed,
                      fixed_concat=concat)
  images, labels = _data(args.batch, hw, 3)
  v = jax.jit(lambda k: net.init(k, images[:1], None, False))(
      jax.random.key(0))
  count = enas_cnn.param_count(v["params"])
  first, med = time_net(net, v, [None], images, labels, args.warmup,
                        args.repeats)
  return [f"NASNet-A {n} @ {f}", f"{hw}x{hw}x3", args.batch, f"{count:,}",
          f"{first:.1f}", f"{1e3 * med:.0f}", f"{args.batch / med:.1f}", ""]


def bench_nasnet_switch(args):
  _, arch, concat = nasnet_space.named("nasnet_a")
  del concat  # the supernet concatenates the unread blocks (paper's rule)
  fixed = tuple(int(v) for v in arch)
  kw = dict(num_cells=args.switch_cells, channels=args.switch_filters,
            num_reductions=args.switch_reductions)
  hw = 8 if args.quick else args.switch_hw
  images, labels = _data(args.batch, hw, 3, seed=1)
  sup = nasnet.NASNet(**kw)
  a = jnp.asarray(arch)
  v = sup.init(jax.random.key(0), images[:1], a, False)
  s_first, s_med = time_net(sup, v, [a], images, labels, args.warmup,
                            args.repeats)
  stat = nasnet.NASNet(**kw, fixed_arch=fixed)
  cut = nasnet.child_variables(v, arch)
  f_first, f_med = time_net(stat, cut, [None], images, labels, args.warmup,
                            args.repeats)
  size = f"{kw['num_cells']} cell(s)/stage, F={kw['channels']}"
  rows = [
      [f"NASNet-A, fixed ({size})", f"{hw}x{hw}x3", args.batch,
       f"{enas_cnn.param_count(cut['params']):,}", f"{f_first:.1f}",
       f"{1e3 * f_med:.0f}", f"{args.batch / f_med:.1f}", ""],
      [f"NASNet supernet, arch = NASNet-A ({size})", f"{hw}x{hw}x3",
       args.batch, f"{enas_cnn.param_count(v['params']):,}",
       f"{s_first:.1f}", f"{1e3 * s_med:.0f}", f"{args.batch / s_med:.1f}",
       f"switch/static {s_med / f_med:.2f}"],
  ]
  return rows


def bench_nasrl(args):
  L = 2 if args.quick else args.nasrl_layers
  hw = 8 if args.quick else 28
  space = nasrl.space(L, search_strides=False)
  rng = np.random.default_rng(0)
  archs = [space.validate([rng.integers(d.num_choices)
                           for d in space.decisions]) for _ in range(3)]
  images, labels = _data(args.batch, hw, 1, seed=2)
  padded = nasrl_cnn.NasrlCNN(num_layers=L, search_strides=False)
  rows, ratios = [], []
  init = jax.jit(lambda k, a: padded.init(k, images[:1], a, False))
  for arch in archs:
    a = jnp.asarray(arch)
    v = init(jax.random.key(0), a)
    p_first, p_med = time_net(padded, v, [a], images, labels, args.warmup,
                              args.repeats)
    static = nasrl_cnn.NasrlCNN(num_layers=L, search_strides=False,
                                fixed_arch=tuple(int(x) for x in arch))
    sv = nasrl_cnn.static_variables(padded, v, arch, (hw, hw), 1)
    s_first, s_med = time_net(static, sv, [None], images, labels,
                              args.warmup, args.repeats)
    ratios.append(p_med / s_med)
    child = nasrl_cnn.decode(arch, L, False, True)
    desc = " ".join(f"{h}x{w}/{f}" for h, w, f in zip(
        child.height, child.width, child.filters))
    rows.append([f"NAS-RL {L} layers [{desc}]: static", f"{hw}x{hw}x1",
                 args.batch, "", f"{s_first:.1f}", f"{1e3 * s_med:.1f}",
                 f"{args.batch / s_med:.0f}", ""])
    rows.append([f"  same child, padded (arch input)", f"{hw}x{hw}x1",
                 args.batch, "", f"{p_first:.1f}", f"{1e3 * p_med:.1f}",
                 f"{args.batch / p_med:.0f}",
                 f"padded/static {p_med / s_med:.2f}"])
  return rows, statistics.median(ratios)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true",
                      help="tiny sizes, 1 repeat (a smoke test)")
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--warmup", type=int, default=1)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--switch_cells", type=int, default=1)
  parser.add_argument("--switch_filters", type=int, default=8)
  parser.add_argument("--switch_reductions", type=int, default=1)
  parser.add_argument("--switch_hw", type=int, default=16)
  parser.add_argument("--nasrl_layers", type=int, default=4)
  parser.add_argument("--parts", default="nasnet_a,switch,nasrl",
                      help="comma list of nasnet_a, switch, nasrl")
  args = parser.parse_args()
  if args.quick:
    args.batch, args.warmup, args.repeats = 4, 0, 1
    args.switch_filters = 2
  parts = set(args.parts.split(","))
  info = common.machine_info()
  common.print_header(info, [common.WALL_CLOCK_NOTE])
  rows = []
  if "nasnet_a" in parts:
    rows.append(bench_nasnet_a(args))
  if "switch" in parts:
    rows += bench_nasnet_switch(args)
  ratio = None
  if "nasrl" in parts:
    r, ratio = bench_nasrl(args)
    rows += r
  print(common.text_table(
      ["network", "images", "batch", "params", "1st call s", "ms/step",
       "images/s", "ratio"], rows))
  if ratio is not None:
    print(f"NAS-RL padded/static, median over children: {ratio:.2f}")
  print(f"1-min load at end: {common.load_average()}")


if __name__ == "__main__":
  main()
