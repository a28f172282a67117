"""Controller speed on the ENAS recurrent-cell space (Pham et al., ICML 2018).

Measures, for the LSTM controller of ENAS's Penn Treebank search (12-node
cell, 4 activations, one 100-unit LSTM layer, logits ``2.5 * tanh(logits)``,
temperature 1):

* architectures sampled per second at batch 1, 64 and 1024, with
  ``jax.jit(jax.vmap(controller.sample, (None, 0)))``, median over repeated
  calls after a warm-up call;
* the time of one jitted REINFORCE update (``algo.feedback``) on 1024
  architectures, median after warm-up.

Timings use ``time.perf_counter`` around calls ended by
``jax.block_until_ready``; inputs are built before timing. The goals are
printed beside the figures; nothing is asserted.

Run from the repository root::

    PYTHONPATH=. python benchmarks/controller.py            # full
    PYTHONPATH=. python benchmarks/controller.py --quick    # smoke test (a
                                                            # 3-node cell)
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import time

import jax
import jax.numpy as jnp

from nas_jax import algorithms
from nas_jax.controllers import lstm_policy
from nas_jax.spaces import base

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (benchmarks/common.py)

# ENAS RNN controller settings (Pham et al. 2018, Sec. 3.1 / the released code).
NUM_NODES = 12
HIDDEN_SIZE = 100
NUM_LAYERS = 1
TEMPERATURE = 1.0
TANH_CONSTANT = 2.5
# REINFORCE update settings; they do not change the update's cost much
# (a non-zero entropy weight adds the entropy's gradient, as ENAS does).
LEARNING_RATE = 3.5e-4
ENTROPY_WEIGHT = 1e-4
BASELINE_DECAY = 0.99

SAMPLE_BATCHES = (1, 64, 1024)
UPDATE_BATCH = 1024

# Goals (arch/s for sampling; ms for the update).
SAMPLE_GOALS = {1: 3_600.0, 1024: 28_000.0}
UPDATE_GOAL_MS = 50.0


def enas_rnn_space(num_nodes: int = NUM_NODES) -> base.SearchSpace:
  """The registry's ``enas_rnn`` space."""
  from nas_jax.spaces import registry
  return registry.get("enas_rnn", num_nodes=num_nodes)


def make_controller(space) -> lstm_policy.Controller:
  # unroll=True: the throughput figures are for the unrolled rollout, the
  # faster one to run; by default spaces beyond lstm_policy.UNROLL_MAX
  # decisions scan, which compiles much faster (benchmarks/compile_time.py).
  return lstm_policy.make_controller(
      space, hidden_size=HIDDEN_SIZE, num_layers=NUM_LAYERS,
      temperature=TEMPERATURE, tanh_constant=TANH_CONSTANT, unroll=True)


def _median_time(fn, args, repeats: int, faults: dict | None = None
                 ) -> tuple[float, list[float]]:
  """Median seconds of ``repeats`` calls after one warm-up call; with
  ``faults``, sets ``faults["per_call"]`` to the timed calls' median minor
  page faults."""
  jax.block_until_ready(fn(*args))  # warm-up: compile and first run
  times, counts = [], []
  for _ in range(repeats):
    f0, t0 = common.minor_faults(), time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
    counts.append(common.minor_faults() - f0)
  if faults is not None:
    faults["per_call"] = statistics.median(counts)
  return statistics.median(times), times


def time_sampling(controller, params, batch: int, repeats: int) -> dict:
  fn = jax.jit(jax.vmap(controller.sample, (None, 0)))
  keys = jax.random.split(jax.random.key(1), batch)
  t0 = time.perf_counter()
  jax.block_until_ready(fn(params, keys))
  first = time.perf_counter() - t0
  faults = {}
  med, times = _median_time(fn, (params, keys), repeats, faults)
  return {"batch": batch, "first_call_s": first, "median_s": med,
          "arch_per_s": batch / med, "repeats": len(times),
          "faults_per_call": faults["per_call"]}


def time_update(controller, batch: int, repeats: int) -> dict:
  algo = algorithms.reinforce(
      controller, batch_size=batch, learning_rate=LEARNING_RATE,
      entropy_weight=ENTROPY_WEIGHT, baseline_decay=BASELINE_DECAY)
  state = algo.init(jax.random.key(0))
  state, archs = jax.jit(algo.propose)(state, jax.random.key(2))
  rewards = jax.random.uniform(jax.random.key(3), (batch,))
  # One update first (it compiles, and sets the baseline), so the timed ones
  # are steady-state updates.
  feedback = jax.jit(algo.feedback)
  t0 = time.perf_counter()
  state = jax.block_until_ready(feedback(state, archs, rewards))
  first = time.perf_counter() - t0
  faults = {}
  med, times = _median_time(feedback, (state, archs, rewards), repeats,
                            faults)
  return {"batch": batch, "first_call_s": first, "median_s": med,
          "median_ms": med * 1e3, "repeats": len(times),
          "faults_per_call": faults["per_call"]}


def time_lstm_floor(batch: int, steps: int, hidden: int, repeats: int
                    ) -> dict:
  """A bare LSTM layer over ``steps`` steps, forward and forward+backward:
  what the controller update cannot beat on this machine. (Here XLA's CPU
  backward costs about 5x its forward.)"""
  w = jax.random.normal(jax.random.key(0), (2 * hidden, 4 * hidden)) * 0.1
  xs = jax.random.normal(jax.random.key(1), (steps, batch, hidden))

  def total(w):
    def step(carry, x):
      c, h = carry
      i, f, g, o = jnp.split(jnp.concatenate([x, h], -1) @ w, 4, -1)
      c = jax.nn.sigmoid(f + 1) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
      h = jax.nn.sigmoid(o) * jnp.tanh(c)
      return (c, h), h
    zeros = jnp.zeros((batch, hidden))
    return jnp.sum(jax.lax.scan(step, (zeros, zeros), xs)[1])

  out = {}
  for name, fn in (("forward", jax.jit(total)),
                   ("forward+backward", jax.jit(jax.grad(total)))):
    jax.block_until_ready(fn(w))
    out[name] = _median_time(fn, (w,), repeats)[0]
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(
      description=__doc__.split("\n\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--num_nodes", type=int, default=NUM_NODES,
                 help=f"nodes of the RNN cell (default {NUM_NODES}, as ENAS)")
  p.add_argument("--repeats", type=int, default=None,
                 help="timed calls per measurement (default: 200 at batch 1, "
                      "50 at 64, 20 at 1024 and for the update)")
  p.add_argument("--out_json", default=None, help="write the results here")
  p.add_argument("--quick", action="store_true",
                 help="smoke test: a 3-node cell, batches 1 and 8, an update "
                      "on 8 architectures, 3 timed calls each (figures are "
                      "not comparable with the goals)")
  args = p.parse_args(argv)
  if args.repeats is not None and args.repeats < 1:
    p.error("--repeats must be >= 1")
  if args.num_nodes < 1:
    p.error("--num_nodes must be >= 1")
  if args.quick:
    # Compile time of the (unrolled) rollout grows with the decisions, so a
    # smoke test shrinks the cell rather than only the repeats.
    num_nodes, sample_batches, update_batch = 3, (1, 8), 8
  else:
    num_nodes, sample_batches, update_batch = (
        args.num_nodes, SAMPLE_BATCHES, UPDATE_BATCH)

  def repeats_for(batch):
    if args.quick:
      return 3
    if args.repeats is not None:
      return args.repeats
    return 200 if batch == 1 else 50 if batch <= 64 else 20

  info = common.machine_info()
  common.print_header(info, [common.WALL_CLOCK_NOTE])
  space = enas_rnn_space(num_nodes)
  controller = make_controller(space)
  params = controller.init(jax.random.key(0))
  n_params = sum(x.size for x in jax.tree_util.tree_leaves(params))
  print(f"space:   {space.name}, {num_nodes} nodes, {space.num_decisions} "
        f"decisions, {space.num_architectures:.3g} architectures"
        + ("  [--quick: not the benchmark's cell]" if args.quick else ""))
  print(f"policy:  LSTM {NUM_LAYERS} x {HIDDEN_SIZE}, temperature "
        f"{TEMPERATURE}, tanh_constant {TANH_CONSTANT}, {n_params:,} params")
  print()

  samples = [time_sampling(controller, params, b, repeats_for(b))
             for b in sample_batches]
  update = time_update(controller, update_batch, repeats_for(update_batch))

  head = ("measurement", "median", "throughput", "goal", "meets goal",
          "compile+1st call")
  rows = []
  for s in samples:
    goal = None if args.quick else SAMPLE_GOALS.get(s["batch"])
    rows.append((f"sample, batch {s['batch']}",
                 f"{s['median_s'] * 1e3:.3f} ms",
                 f"{s['arch_per_s']:,.0f} arch/s",
                 f">= {goal:,.0f} arch/s" if goal else "-",
                 ("yes" if s["arch_per_s"] >= goal else "no") if goal else "-",
                 f"{s['first_call_s']:.2f} s"))
  update_goal = None if args.quick else UPDATE_GOAL_MS
  rows.append((f"REINFORCE update, {update_batch} archs",
               f"{update['median_ms']:.2f} ms",
               f"{update_batch / update['median_s']:,.0f} arch/s",
               f"<= {update_goal:g} ms" if update_goal else "-",
               ("yes" if update["median_ms"] <= update_goal else "no")
               if update_goal else "-",
               f"{update['first_call_s']:.2f} s"))
  floor = time_lstm_floor(update_batch, space.num_decisions, HIDDEN_SIZE,
                          repeats_for(update_batch))
  for name, t in floor.items():
    rows.append((f"floor: bare LSTM {name}, {update_batch} x "
                 f"{space.num_decisions} steps", f"{t * 1e3:.2f} ms", "-", "-",
                 "-", "-"))
  print(common.text_table(head, rows))
  print(f"\nmedian of {', '.join(str(repeats_for(b)) for b in sample_batches)}"
        f" calls (sampling) and {repeats_for(update_batch)} calls (update) "
        "after one warm-up call.")

  if args.out_json:
    out = {"machine": info, "space": space.name, "num_nodes": num_nodes,
           "quick": args.quick, "hidden_size": HIDDEN_SIZE,
           "temperature": TEMPERATURE, "tanh_constant": TANH_CONSTANT,
           "sampling": samples, "update": update,
           "goals": {"sample_arch_per_s": SAMPLE_GOALS,
                     "update_ms": UPDATE_GOAL_MS}}
    pathlib.Path(args.out_json).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out_json}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
