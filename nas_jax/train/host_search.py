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
  best: Record | None
  state: Any
  status: str            # "done" or "preempted"


def _record_to_json(r: Record) -> list:
  return [r.step, r.round, [int(v) for v in r.arch], r.reward, r.cost]


def _record_from_json(x) -> Record:
  return Record(int(x[0]), int(x[1]), np.asarray(x[2], np.int32),
                float(x[3]), float(x[4]))


def _fmt_seconds(s: float) -> str:
  s = int(round(s))
  return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else (
      f"{s // 60}m{s % 60:02d}s")


def run(algorithm: algo_base.Algorithm,
        evaluate: Callable[[np.ndarray], Evaluation], key: jax.Array, *,
        num_rounds: int, on_record: Callable[[Record], None] | None = None,
        on_resume: Callable[[list[Record]], None] | None = None,
        on_round: Callable[[int, Any, Evaluation], None] | None = None,
        checkpointer=None, checkpoint_every: int = 1, guard=None,
        log_every: int = 1) -> HostSearchResult:
  """Runs ``num_rounds`` rounds of ``algorithm.batch_size`` children each.

  With a ``checkpointer`` (``nas_jax.checkpoint.Checkpointer``) the
  algorithm state, the records and the evaluator's state (its reward cache,
  if it has ``state_dict`` / ``load_state_dict``) are saved every
  ``checkpoint_every`` rounds, and a run that finds a checkpoint resumes
  after its round: round ``r`` always uses ``fold_in(key, r)``, so the
  resumed run proposes the same children as an uninterrupted one.
  ``on_resume(records)`` lets the caller rewrite its history files. With a
  ``guard`` (``PreemptionGuard``), a requested stop checkpoints and returns
  with status ``"preempted"``.
  """
  algo_base.check_positive("num_rounds", num_rounds)
  algo_base.check_positive("checkpoint_every", checkpoint_every)
  k_init, k_loop = jax.random.split(key)
  propose = jax.jit(algorithm.propose)
  feedback = jax.jit(algorithm.feedback)
  state = jax.jit(algorithm.init)(k_init)
  records: list[Record] = []
  start = 0
  if checkpointer is not None:
    restored = checkpointer.restore(state)
    if restored is not None:
      _, state, meta = restored
      records = [_record_from_json(x) for x in meta["records"]]
      start = int(meta["round"]) + 1
      if "evaluator" in meta and hasattr(evaluate, "load_state_dict"):
        evaluate.load_state_dict(meta["evaluator"])
      logging.info("resumed after round %d/%d with %d children", start,
                   num_rounds, len(records))
  if on_resume is not None:
    on_resume(records)
  best = max(records, key=lambda r: r.reward, default=None)

  def save(r):
    meta = {"round": r, "records": [_record_to_json(x) for x in records]}
    if hasattr(evaluate, "state_dict"):
      meta["evaluator"] = evaluate.state_dict()
    checkpointer.save(r, state, meta)

  t0 = time.perf_counter()
  status = "done"
  for r in range(start, num_rounds):
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
    if on_round is not None:
      on_round(r, state, ev)
    stop = guard is not None and guard.requested and r + 1 < num_rounds
    if checkpointer is not None and (
        (r + 1) % checkpoint_every == 0 or r + 1 == num_rounds or stop):
      save(r)
    done = r + 1 - start
    if done % log_every == 0 or r + 1 == num_rounds:
      elapsed = time.perf_counter() - t0
      eta = elapsed / done * (num_rounds - r - 1)
      logging.info("round %d/%d | %d children | last mean reward %.4f | "
                   "best %.4f | %.1fs/round | ETA %s", r + 1, num_rounds,
                   len(records), float(np.mean(ev.reward)), best.reward,
                   elapsed / done, _fmt_seconds(eta))
    if stop:
      status = "preempted"
      logging.warning("stopped after round %d (%s); checkpoint saved, run "
                      "the same command to resume", r + 1, guard.signal_name)
      break
  return HostSearchResult(records, best, state, status)
