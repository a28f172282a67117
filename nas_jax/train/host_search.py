"""The ask/evaluate/tell loop for evaluators that run on the host (children
trained from scratch): ``propose`` and ``feedback`` stay jitted, evaluation is
a Python call, and every evaluated child is reported as it finishes.

Same key discipline as the jitted loop (``fold_in(key, round)``), so a host
search and a jitted search over the same table propose the same children.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
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


class NonFiniteRewardError(ValueError):
  """An evaluation returned NaN or inf and the config says ``error``."""


def _arch_text(evaluate, arch) -> str:
  space = getattr(evaluate, "space", None)
  try:
    return space.to_text(arch) if space is not None else str(list(arch))
  except Exception:  # a broken arch must not hide the reward problem
    return str(np.asarray(arch).tolist())


def is_better(reward: float, best: Record | None) -> bool:
  """Best-so-far update that ignores NaN / inf rewards."""
  if not algo_base.usable_rewards(np.float64(reward)):
    return False
  return best is None or not np.isfinite(best.reward) or reward > best.reward


def _timings_path():
  root = os.environ.get("XDG_CACHE_HOME") or os.path.join(
      os.path.expanduser("~"), ".cache")
  return os.path.join(root, "nas_jax", "first_round_seconds.json")


def _timing_key(algorithm, evaluate) -> str:
  space = getattr(evaluate, "space", None)
  return (f"{algorithm.name}/{getattr(space, 'name', '?')}/"
          f"{type(evaluate).__name__}/batch{algorithm.batch_size}")


def _remembered_first_round(key: str) -> float | None:
  """How long a first round (with compilation) took on this machine, for
  the same algorithm, space and evaluator (best effort)."""
  try:
    with open(_timings_path()) as f:
      value = json.load(f).get(key)
    return float(value) if value else None
  except (OSError, ValueError, AttributeError, TypeError):
    return None


def _remember_first_round(key: str, seconds: float) -> None:
  path = _timings_path()
  try:
    try:
      with open(path) as f:
        data = json.load(f)
      data = data if isinstance(data, dict) else {}
    except (OSError, ValueError):
      data = {}
    data[key] = round(seconds, 1)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
      json.dump(data, f)
    os.replace(tmp, path)
  except OSError:
    pass  # a hint only


class _Heartbeat:
  """Logs a line every ``every`` seconds while a round runs, so the first
  minutes of a run (compilation) are not silent."""

  def __init__(self, every: float):
    self.every = every
    self.what = ""
    self._t0 = time.perf_counter()
    self._stop = threading.Event()
    self._thread = None
    if every > 0:
      self._thread = threading.Thread(target=self._loop, daemon=True,
                                      name="progress-heartbeat")
      self._thread.start()

  def set(self, what: str) -> None:
    self.what, self._t0 = what, time.perf_counter()

  def _loop(self):
    tick = min(self.every, 1.0)
    last = time.perf_counter()
    while not self._stop.wait(tick):
      now = time.perf_counter()
      # Only a round that has run for `every` seconds, at most every
      # `every` seconds: short rounds stay quiet.
      if (self.what and now - self._t0 >= self.every and
          now - last >= self.every):
        last = now
        logging.info("%s (%s so far)", self.what,
                     _fmt_seconds(now - self._t0))

  def close(self):
    self._stop.set()


def run(algorithm: algo_base.Algorithm,
        evaluate: Callable[[np.ndarray], Evaluation], key: jax.Array, *,
        num_rounds: int, on_record: Callable[[Record], None] | None = None,
        on_resume: Callable[[list[Record]], None] | None = None,
        on_round: Callable[[int, Any, Evaluation], None] | None = None,
        checkpointer=None, checkpoint_every: int = 1, guard=None,
        log_every: int = 1, nonfinite: str = "skip",
        on_restore: Callable[[dict], None] | None = None,
        extra_meta: Callable[[], dict] | None = None,
        heartbeat_seconds: float = 20.0,
        clock: Callable[[], float] = time.perf_counter,
        jit: bool = True) -> HostSearchResult:
  """Runs ``num_rounds`` rounds of ``algorithm.batch_size`` children each.

  With a ``checkpointer`` (``nas_jax.checkpoint.Checkpointer``) the
  algorithm state, the records and the evaluator's state (its reward cache,
  if it has ``state_dict`` / ``load_state_dict``) are saved every
  ``checkpoint_every`` rounds, and a run that finds a checkpoint resumes
  after its round: round ``r`` always uses ``fold_in(key, r)``, so the
  resumed run proposes the same children as an uninterrupted one.
  ``on_resume(records)`` lets the caller rewrite its history files;
  ``on_restore(meta)`` sees the restored meta data and ``extra_meta()``
  adds the caller's counters to each checkpoint. With a ``guard``
  (``PreemptionGuard``), a requested stop checkpoints and returns with
  status ``"preempted"``.

  A NaN or infinite reward never reaches ``algorithm.feedback``: with
  ``nonfinite="skip"`` that round's update is skipped with a warning naming
  the architecture, with ``"error"`` the run stops with
  ``NonFiniteRewardError``; the best so far ignores such rewards.

  Progress: a line when a round starts compiling or training and every
  ``heartbeat_seconds`` while it runs; the ETA uses the rounds after the
  first of this session (which includes compilation) only.

  ``jit=False`` calls ``algorithm``'s functions as they are, for host
  functions that place and compile their own work
  (``nas_jax.parallel.replicas``, on a mesh that may span processes).
  """
  algo_base.check_positive("num_rounds", num_rounds)
  algo_base.check_positive("checkpoint_every", checkpoint_every)
  if nonfinite not in ("skip", "error"):
    raise ValueError(f"nonfinite must be 'skip' or 'error', got {nonfinite!r}")
  k_init, k_loop = jax.random.split(key)
  # jit=False: the functions place and compile their own work (e.g. on a
  # mesh spanning processes, nas_jax.parallel.replicas).
  wrap = jax.jit if jit else (lambda f: f)
  propose = wrap(algorithm.propose)
  feedback = wrap(algorithm.feedback)
  state = wrap(algorithm.init)(k_init)
  records: list[Record] = []
  start = 0
  meta: dict = {}
  if checkpointer is not None:
    if hasattr(checkpointer, "required_meta"):
      # A checkpoint whose meta lacks these is damaged: fall back past it.
      checkpointer.required_meta = tuple(dict.fromkeys(
          (*checkpointer.required_meta, "round", "records")))
    restored = checkpointer.restore(state)
    if restored is not None:
      _, state, meta = restored
      records = [_record_from_json(x) for x in meta["records"]]
      start = int(meta["round"]) + 1
      if "evaluator" in meta and hasattr(evaluate, "load_state_dict"):
        evaluate.load_state_dict(meta["evaluator"])
      logging.info("resumed after round %d/%d with %d children", start,
                   num_rounds, len(records))
  if on_restore is not None:
    on_restore(meta)
  if on_resume is not None:
    on_resume(records)
  best = None
  for rec in records:
    if is_better(rec.reward, best):
      best = rec

  def save(r):
    meta = {"round": r, "records": [_record_to_json(x) for x in records]}
    if hasattr(evaluate, "state_dict"):
      meta["evaluator"] = evaluate.state_dict()
    if first_hint:
      meta["first_round_seconds"] = first_hint
    if extra_meta is not None:
      meta.update(extra_meta())
    ctx = guard.critical() if guard is not None and hasattr(
        guard, "critical") else contextlib.nullcontext()
    with ctx:
      checkpointer.save(r, state, meta)

  if guard is not None:
    guard.nothing_to_save = True  # the restored (or fresh) state
  status = "done"
  steady: list[float] = []  # durations of this session's rounds after its 1st
  heartbeat = _Heartbeat(heartbeat_seconds)
  timing_key = _timing_key(algorithm, evaluate)
  first_hint = (meta.get("first_round_seconds") or
                _remembered_first_round(timing_key))
  try:
    for r in range(start, num_rounds):
      t_round = clock()
      if r == start:
        what = (f"round {r + 1}/{num_rounds}: compiling the controller and "
                "the evaluator's step, then evaluating")
        hint = (f"; about {_fmt_seconds(first_hint)} on this machine last "
                "time" if first_hint else "; the first call compiles, which "
                "can take minutes on a CPU")
        logging.info("%s%s", what, hint)
      else:
        what = f"round {r + 1}/{num_rounds}: evaluating"
      heartbeat.set(what)
      state, archs = propose(state, jax.random.fold_in(k_loop, r))
      archs_np = np.asarray(archs)
      ev = evaluate(archs_np)
      rewards = np.asarray(ev.reward, np.float64)
      bad = np.flatnonzero(~algo_base.usable_rewards(rewards))
      if bad.size:
        names = ", ".join(f"{_arch_text(evaluate, archs_np[i])} -> "
                          f"{rewards[i]!r}" for i in bad[:4])
        if nonfinite == "error":
          raise NonFiniteRewardError(
              f"round {r}: non-finite or overflowing reward(s) {names}; the "
              "evaluator failed on these architectures. Fix the evaluation, "
              "or set "
              "--config.nonfinite_reward=skip to skip such updates")
        logging.warning("round %d: non-finite reward(s) %s; skipping this "
                        "round's update (nonfinite_reward=skip)", r, names)
      else:
        state = feedback(state, archs, jax.numpy.asarray(ev.reward))
      for arch, reward, cost in zip(archs_np, rewards, np.asarray(ev.cost)):
        rec = Record(len(records), r, arch, float(reward), float(cost))
        records.append(rec)
        if is_better(rec.reward, best):
          best = rec
        if on_record is not None:
          on_record(rec)
      if on_round is not None:
        on_round(r, state, ev)
      took = clock() - t_round
      if r == start:
        first_hint = took
        _remember_first_round(timing_key, took)
      else:
        steady.append(took)
      stop = guard is not None and guard.requested and r + 1 < num_rounds
      if checkpointer is not None and (
          (r + 1) % checkpoint_every == 0 or r + 1 == num_rounds or stop):
        save(r)
        saved = True
      else:
        saved = False
      if guard is not None:
        guard.nothing_to_save = saved
      done = r + 1 - start
      if done % log_every == 0 or r + 1 == num_rounds:
        remaining = num_rounds - r - 1
        if steady:
          per = float(np.mean(steady))
          eta = f"{per:.1f}s/round | ETA {_fmt_seconds(per * remaining)}"
        elif remaining:
          eta = (f"{took:.1f}s incl. compiling | ETA after the next round")
        else:
          eta = f"{took:.1f}s"
        best_txt = f"{best.reward:.4f}" if best is not None else "none"
        logging.info("round %d/%d | %d children | last mean reward %.4f | "
                     "best %s | %s", r + 1, num_rounds, len(records),
                     float(np.mean(rewards)), best_txt, eta)
      if stop:
        status = "preempted"
        logging.warning("stopped after round %d (%s); checkpoint saved, run "
                        "the same command to resume", r + 1, guard.signal_name)
        break
  finally:
    heartbeat.close()
  return HostSearchResult(records, best, state, status)
