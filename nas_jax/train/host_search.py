"""The ask/evaluate/tell loop for evaluators that run on the host (children
trained from scratch): ``propose`` and ``feedback`` stay jitted, evaluation is
a Python call, and every evaluated child is reported as it finishes.

Same key discipline as the jitted loop (``fold_in(key, round)``), so a host
search and a jitted search over the same table propose the same children.
"""

from __future__ import annotations

import time
from typing import Any, Callable, NamedTuple

import jax
import numpy as np
from absl import logging

from nas_jax.algorithms import base as algo_base
from nas_jax.evaluators.tabular import Evaluation


class Record(NamedTuple):
  step: int          # index of the evaluation in the search
  round: int
  arch: np.ndarray   # int32[T]
  reward: float
  cost: float


class HostSearchResult(NamedTuple):
  records: list[Record]
  best: Record
  state: Any


def _fmt_seconds(s: float) -> str:
  s = int(round(s))
  return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else (
      f"{s // 60}m{s % 60:02d}s")


def run(algorithm: algo_base.Algorithm,
        evaluate: Callable[[np.ndarray], Evaluation], key: jax.Array, *,
        num_rounds: int, on_record: Callable[[Record], None] | None = None,
        log_every: int = 1) -> HostSearchResult:
  """Runs ``num_rounds`` rounds of ``algorithm.batch_size`` children each."""
  algo_base.check_positive("num_rounds", num_rounds)
  k_init, k_loop = jax.random.split(key)
  propose = jax.jit(algorithm.propose)
  feedback = jax.jit(algorithm.feedback)
  state = jax.jit(algorithm.init)(k_init)
  records: list[Record] = []
  best: Record | None = None
  t0 = time.perf_counter()
  for r in range(num_rounds):
    state, archs = propose(state, jax.random.fold_in(k_loop, r))
    archs_np = np.asarray(archs)
    ev = evaluate(archs_np)
    state = feedback(state, archs, jax.numpy.asarray(ev.reward))
    for arch, reward, cost in zip(archs_np, np.asarray(ev.reward),
                                  np.asarray(ev.cost)):
      rec = Record(len(records), r, arch, float(reward), float(cost))
      records.append(rec)
      if best is None or rec.reward > best.reward:
        best = rec
      if on_record is not None:
        on_record(rec)
    if (r + 1) % log_every == 0 or r + 1 == num_rounds:
      elapsed = time.perf_counter() - t0
      eta = elapsed / (r + 1) * (num_rounds - r - 1)
      logging.info("round %d/%d | %d children | last mean reward %.4f | "
                   "best %.4f | %.1fs/round | ETA %s", r + 1, num_rounds,
                   len(records), float(np.mean(ev.reward)), best.reward,
                   elapsed / (r + 1), _fmt_seconds(eta))
  return HostSearchResult(records, best, state)
