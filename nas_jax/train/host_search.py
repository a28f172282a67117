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


class _Forecast:
  """Predicts the rest of a run's wall time (the ETA) from its steady rounds.

  With an evaluator that caches rewards (children trained from scratch), a
  round costs about ``overhead + new * per_child``, where ``new`` counts the
  children not evaluated before: a search that concentrates re-proposes
  cached children, and an ETA from the mean round time overestimates it
  several times (the README main job: 28 s predicted, 9 s taken). The number
  of new children in the rounds to come is predicted by replaying the search
  ahead: ``propose`` and ``feedback`` run on a copy of the state with the
  same round keys as the real run, seen children get their known reward and
  unseen ones the mean reward so far. If the unseen rewards were exact, the
  replay would propose exactly the children of the real run; the only error
  is in what the search would learn from children it has not trained yet.
  The replay reaches at most ``horizon`` rounds ahead (later rounds repeat
  the novelty of its last rounds) and is redone only while it costs under
  ``budget`` of the run's time, so the ETA does not slow the search.

  Without a reward cache (or where the replay cannot run: functions that
  place their own work on a multi-process mesh) the ETA is the mean steady
  round time times the rounds left.
  """

  def __init__(self, propose, feedback, k_loop, num_rounds: int,
               caching: bool, *, horizon: int = 32, budget: float = 0.03):
    self.propose, self.feedback = propose, feedback
    self.k_loop, self.num_rounds = k_loop, num_rounds
    self.caching, self.horizon, self.budget = caching, horizon, budget
    # (round seconds, of which evaluating, new children) of steady rounds
    self.steady: list[tuple[float, float, int]] = []
    self.novelty: list[float] = []  # predicted new children, next rounds
    self.spent = 0.0    # seconds spent replaying
    self.elapsed = 0.0  # seconds of steady rounds

  def add_round(self, seconds: float, eval_seconds: float, new: int) -> None:
    self.steady.append((seconds, eval_seconds, new))
    self.elapsed += seconds
    if self.novelty:
      self.novelty.pop(0)

  def _cost_model(self) -> tuple[float, float]:
    """(seconds per round besides evaluation, seconds per new child)."""
    took = np.array([t for t, _, _ in self.steady])
    evals = np.array([e for _, e, _ in self.steady])
    new = sum(n for _, _, n in self.steady)
    overhead = float(np.mean(took - evals))
    return overhead, float(evals.sum()) / new if new else 0.0

  def _replay(self, state, first_round: int, seen: dict, reward_dtype):
    known = [v for v in seen.values() if np.isfinite(v)]
    fill = float(np.mean(known)) if known else 0.0
    seen = dict(seen)
    novelty = []
    end = min(self.num_rounds, first_round + self.horizon)
    for r in range(first_round, end):
      state, archs = self.propose(state, jax.random.fold_in(self.k_loop, r))
      archs_np = np.asarray(archs)
      rewards, new = [], 0
      for a in archs_np:
        k = a.tobytes()
        if k not in seen:
          seen[k] = fill
          new += 1
        rewards.append(seen[k])
      novelty.append(float(new))
      if r + 1 < end:
        state = self.feedback(state, archs,
                              jax.numpy.asarray(np.asarray(rewards,
                                                           reward_dtype)))
    return novelty

  def remaining(self, state, next_round: int, seen: dict,
                reward_dtype) -> float:
    """Seconds left after ``next_round - 1`` (needs one steady round)."""
    left = self.num_rounds - next_round
    if left <= 0 or not self.steady:
      return 0.0
    overhead, per_child = self._cost_model()
    if not self.caching or per_child == 0.0:
      return float(np.mean([t for t, _, _ in self.steady])) * left
    if not self.novelty or self.spent <= self.budget * self.elapsed:
      t0 = time.perf_counter()
      self.novelty = self._replay(state, next_round, seen, reward_dtype)
      self.spent += time.perf_counter() - t0
    novelty = self.novelty[:left]
    tail = novelty[-4:] if novelty else [0.0]
    new = sum(novelty) + float(np.mean(tail)) * max(left - len(novelty), 0)
    return overhead * left + per_child * new


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
  # Rounds after this session's first (which compiles) feed the ETA. The
  # replay runs only where it is this process's own work: with jit=False
  # the functions may hold collectives, and processes would not agree on
  # when to replay (it is timed), so they would wait on each other.
  forecast = _Forecast(propose, feedback, k_loop, num_rounds,
                       caching=(hasattr(evaluate, "state_dict") or
                                getattr(evaluate, "cache", None) is not None)
                       and jit and jax.process_count() == 1)
  seen = {rec.arch.tobytes(): rec.reward for rec in records}
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
      new = len({a.tobytes() for a in archs_np} - seen.keys())
      t_eval = clock()
      ev = evaluate(archs_np)
      t_eval = clock() - t_eval
      reward_dtype = np.asarray(ev.reward).dtype
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
        seen[rec.arch.tobytes()] = rec.reward
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
      stop = guard is not None and guard.requested and r + 1 < num_rounds
      if checkpointer is not None and (
          (r + 1) % checkpoint_every == 0 or r + 1 == num_rounds or stop):
        save(r)
        saved = True
      else:
        saved = False
      if guard is not None:
        guard.nothing_to_save = saved
      if r != start:  # the first round of a session compiles
        forecast.add_round(clock() - t_round, t_eval, new)
      done = r + 1 - start
      if done % log_every == 0 or r + 1 == num_rounds:
        remaining = num_rounds - r - 1
        if forecast.steady:
          per = float(np.mean([t for t, _, _ in forecast.steady]))
          left = forecast.remaining(state, r + 1, seen, reward_dtype)
          eta = f"{per:.1f}s/round | ETA {_fmt_seconds(left)}"
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
