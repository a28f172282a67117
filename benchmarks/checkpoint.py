r"""Checkpoint cost: save / restore time and size of an ENAS-sized search
state, and the overhead of checkpointing every N rounds of a real search.

  python benchmarks/checkpoint.py            # full (about a minute)
  python benchmarks/checkpoint.py --quick    # seconds, for smoke tests

The state is what an ENAS search holds (Pham et al. 2018): the controller
(1-layer LSTM of 100 units for the RNN-cell space) with its Adam state, the
REINFORCE baseline and keys, plus shared weights of ``--shared_params``
parameters (ENAS's micro CIFAR-10 child has 4.6M; the shared supernet about
as many again) with SGD momentum. Medians over repeats after one warm-up.
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from nas_jax import algorithms
from nas_jax.checkpoint import Checkpointer
from nas_jax.controllers import make_controller
from nas_jax.spaces import registry

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (benchmarks/common.py)


def _dir_bytes(path):
  return sum(os.path.getsize(os.path.join(d, f))
             for d, _, files in os.walk(path) for f in files)


def enas_sized_state(shared_params: int, key):
  space = registry.get("enas_rnn", num_nodes=12)
  ctrl = make_controller(space, hidden_size=100, tanh_constant=2.5)
  algo = algorithms.reinforce(ctrl, batch_size=1, learning_rate=3.5e-4)
  controller_state = jax.jit(algo.init)(key)
  w = jax.random.normal(key, (shared_params,), jnp.float32) * 0.01
  return {"controller": controller_state,
          "shared": {"params": w, "momentum": jnp.zeros_like(w)},
          "data_position": jnp.array(12345, jnp.int32)}


def bench_save_restore(state, repeats):
  root = tempfile.mkdtemp(prefix="nas_jax_ckpt_bench_")
  try:
    ck = Checkpointer(root, max_to_keep=2)
    ck.save(0, state, {"round": 0})  # warm-up
    ck.restore(state)
    saves, restores = [], []
    for i in range(1, repeats + 1):
      t = time.perf_counter()
      ck.save(i, state, {"round": i})
      saves.append(time.perf_counter() - t)
      t = time.perf_counter()
      jax.block_until_ready(ck.restore(state)[1])
      restores.append(time.perf_counter() - t)
    size = _dir_bytes(os.path.join(root, "checkpoints", str(repeats)))
    ck.close()
    return statistics.median(saves), statistics.median(restores), size
  finally:
    shutil.rmtree(root, ignore_errors=True)


def bench_overhead(rounds, every_values):
  """A REINFORCE search on the NAS-Bench-201-shaped space with a synthetic
  reward (no data needed): time per round with checkpoints every N rounds."""
  space = registry.get("nasbench201")
  ctrl = make_controller(space, hidden_size=32)
  algo = algorithms.reinforce(ctrl, batch_size=8, learning_rate=0.01)
  propose, feedback = jax.jit(algo.propose), jax.jit(algo.feedback)
  weights = jnp.linspace(0.0, 1.0, space.num_decisions)
  reward = jax.jit(lambda a: jnp.mean(a * weights, axis=-1))
  out = {}
  for every in every_values:
    root = tempfile.mkdtemp(prefix="nas_jax_ckpt_overhead_")
    ck = Checkpointer(root) if every else None
    state = jax.jit(algo.init)(jax.random.key(0))
    state, archs = propose(state, jax.random.key(1))  # compile
    state = jax.block_until_ready(feedback(state, archs, reward(archs)))
    t = time.perf_counter()
    for r in range(rounds):
      state, archs = propose(state, jax.random.fold_in(jax.random.key(2), r))
      state = feedback(state, archs, reward(archs))
      if ck is not None and (r + 1) % every == 0:
        ck.save(r, state, {"round": r})
    jax.block_until_ready(state)
    out[every] = (time.perf_counter() - t) / rounds
    if ck is not None:
      ck.close()
    shutil.rmtree(root, ignore_errors=True)
  return out


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--shared_params", type=int, default=4_600_000)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--rounds", type=int, default=200)
  p.add_argument("--quick", action="store_true")
  a = p.parse_args()
  if a.quick:
    a.shared_params, a.repeats, a.rounds = 10_000, 2, 20
  print("# checkpoint benchmark")
  common.print_header(common.machine_info())
  state = enas_sized_state(a.shared_params, jax.random.key(0))
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(
      jax.tree.map(lambda x: jax.random.key_data(x) if jax.dtypes.issubdtype(
          x.dtype, jax.dtypes.prng_key) else x, state)))
  save, restore, size = bench_save_restore(state, a.repeats)
  print(f"| state | numbers | size on disk | save (median) | restore (median) |")
  print(f"|---|---|---|---|---|")
  print(f"| ENAS-sized ({a.shared_params:,} shared params + momentum, "
        f"controller + Adam) | {n_params:,} | {size / 2**20:.1f} MiB | "
        f"{save * 1e3:.0f} ms | {restore * 1e3:.0f} ms |")
  per_round = bench_overhead(a.rounds, (0, 1, 10, 100))
  base = per_round[0]
  print()
  print("| checkpoint every | time per round (mean over "
        f"{a.rounds} rounds) | overhead vs none |")
  print("|---|---|---|")
  for every, t in per_round.items():
    label = "never" if every == 0 else f"{every} round(s)"
    print(f"| {label} | {t * 1e3:.2f} ms | "
          f"{(t / base - 1) * 100:+.0f}% |")
  print("\nThe overhead fraction in a real search is save time / round time: "
        "with children trained from scratch (seconds to hours per round) a "
        "save per round costs well under 1%.")


if __name__ == "__main__":
  main()
