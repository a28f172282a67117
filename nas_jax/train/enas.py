"""The ENAS alternating loop (Pham et al., ICML 2018, Sec. 2.2, "Training
ENAS and Deriving Architectures"), shared by the image search
(``nas_jax.children.enas_cnn``) and the Penn Treebank search.

One epoch alternates two phases, each a jitted step driven by this host loop:

(a) **shared weights** ``w``: ``task.steps_per_epoch`` minibatches; each one
    samples a fresh child ``m ~ pi(m; theta)`` and takes one SGD step on
    ``L(m; w)`` -- the paper's Monte-Carlo gradient with ``M = 1`` child per
    minibatch ("Surprisingly, M = 1 works just fine");
(b) **controller** ``theta``: ``controller_steps`` REINFORCE updates; the
    reward of a sampled child is ``task.reward`` on one validation minibatch
    with the current shared weights (accuracy for images, ``c / ppl`` for a
    language model).

After the last epoch, :func:`derive` samples ``K`` children, scores each on
one validation minibatch and keeps the best ("Deriving Architectures").

What a model must provide is a :class:`SharedTask`; the search algorithm is
any ``nas_jax.algorithms.Algorithm`` (REINFORCE over the LSTM controller for
ENAS; random search gives the "random child, same shared weights" baseline).
Nothing here knows about images or text.

Randomness and resume: every key is ``fold_in`` of the run key with the
epoch and the step, and every batch is a pure function of ``(epoch, i)`` or
the controller step, so a run resumed from the checkpoint written after epoch
``e`` repeats epoch ``e + 1`` exactly as an uninterrupted run does
(``tests/test_enas_loop.py`` kills runs with SIGKILL and compares bits).

Example (see ``nas_jax.train.enas_run`` for a complete run file)::

    task = SharedTask(space, init, train_step, reward, train_batch,
                      steps_per_epoch, val_batch)
    result = run_enas(task, algorithm, jax.random.key(0), num_epochs=10,
                      controller_steps=30, checkpointer=ckpt)
    best = derive(task, algorithm, result.state, jax.random.key(1))
"""

from __future__ import annotations

import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from nas_jax.algorithms import base as algo_base
from nas_jax.spaces import base as spaces_base


class SharedTask(NamedTuple):
  """What the alternation needs from a shared-weight model and its data.

  Attributes:
    space: the search space whose ``int32[T]`` codes the model reads.
    init: ``key -> shared`` state pytree (params, BN statistics or carried
      hidden state, optimizer state, step counter: whatever ``train_step``
      threads through).
    train_step: ``(shared, arch, batch, key) -> (shared, metrics)``,
      jittable; trains ONE child ``arch`` (``int32[T]``) on one minibatch.
      ``metrics`` is a dict of scalars (e.g. ``{"loss": ..., "accuracy":
      ...}``), averaged over the epoch for logging. With
      ``children_per_step = D > 1`` (``run_enas``), ``arch`` is
      ``int32[D, T]``: D children, one per device (see
      ``nas_jax.children.enas_cnn.per_device_train_step``).
    reward: ``(shared, arch, batch) -> f32[]``, jittable; the controller's
      reward for child ``arch`` on one validation minibatch.
    train_batch: ``(epoch, i) -> batch`` (any pytree of host arrays); must
      be a pure function of its arguments and the task's seed, so resumed
      runs see the same data.
    steps_per_epoch: shared-weight steps per epoch.
    val_batch: ``step -> batch`` for the controller phase and for
      :func:`derive` (``step`` counts controller steps over the whole run;
      derive uses ``-1``); pure, like ``train_batch``.
    name: for logs.
  """

  space: spaces_base.SearchSpace
  init: Callable[[jax.Array], Any]
  train_step: Callable[[Any, jax.Array, Any, jax.Array], tuple[Any, dict]]
  reward: Callable[[Any, jax.Array, Any], jax.Array]
  train_batch: Callable[[int, int], Any]
  steps_per_epoch: int
  val_batch: Callable[[int], Any]
  name: str = "enas"


class EnasState(NamedTuple):
  """Everything a resumed run needs (checkpointed after every epoch)."""

  shared: Any      # the task's shared-weight state
  controller: Any  # the algorithm's state


class Record(NamedTuple):
  """One child the controller phase sampled and scored (history line)."""

  step: int          # controller step over the whole run
  epoch: int
  arch: np.ndarray   # int32[T]
  reward: float


class EnasResult(NamedTuple):
  state: EnasState
  records: list[Record]
  epochs: list[dict]   # per-epoch summaries (what on_epoch received)
  status: str          # "done" or "preempted"
  steps: Any = None    # the jitted Steps (derive can reuse them)


def _sample(algorithm: algo_base.Algorithm, controller: Any, key: jax.Array,
            num: int) -> jax.Array:
  """``int32[num, T]`` children from the algorithm's current policy.

  ``propose`` is called ``ceil(num / batch_size)`` times with distinct keys;
  the state it returns is dropped, so sampling children for the shared
  weights never advances the controller (as in the paper: phase (a) holds
  ``theta`` fixed).
  """
  calls = -(-num // algorithm.batch_size)
  archs = [algorithm.propose(controller, jax.random.fold_in(key, c))[1]
           for c in range(calls)]
  return jnp.concatenate(archs)[:num]


class Steps(NamedTuple):
  """The jitted pieces the host loop alternates (each compiled once).

  ``shared_step(shared, arch, batch, key) -> (shared, metrics)`` (donates
  the state); ``propose(controller, key) -> (controller, archs[m, T])``;
  ``score(shared, archs[m, T], batch) -> rewards[m]``;
  ``feedback(controller, archs, rewards) -> controller``;
  ``sample(controller, key) -> archs[children_per_step, T]``. Derive reuses
  ``propose`` and ``score``, so it compiles nothing new.
  """

  shared_step: Callable
  propose: Callable
  score: Callable
  feedback: Callable
  sample: Callable


def make_steps(task: SharedTask, algorithm: algo_base.Algorithm,
               children_per_step: int = 1) -> Steps:
  """Jits the task's and the algorithm's functions for :func:`run_enas`."""

  def shared_step(shared, arch, batch, key):
    return task.train_step(shared, arch, batch, key)

  def score(shared, archs, batch):
    return jax.lax.map(lambda a: task.reward(shared, a, batch), archs)

  def sample(controller, key):
    return _sample(algorithm, controller, key, children_per_step)

  return Steps(jax.jit(shared_step, donate_argnums=0),
               jax.jit(algorithm.propose), jax.jit(score),
               jax.jit(algorithm.feedback, donate_argnums=0),
               jax.jit(sample))


def init_state(task: SharedTask, algorithm: algo_base.Algorithm,
               key: jax.Array) -> EnasState:
  k_shared, k_ctrl = jax.random.split(jax.random.fold_in(key, 0))
  return EnasState(jax.jit(task.init)(k_shared),
                   jax.jit(algorithm.init)(k_ctrl))


def _record_to_json(r: Record) -> list:
  return [r.step, r.epoch, [int(v) for v in r.arch], r.reward]


def _record_from_json(x) -> Record:
  return Record(int(x[0]), int(x[1]), np.asarray(x[2], np.int32), float(x[3]))


def run_enas(task: SharedTask, algorithm: algo_base.Algorithm,
             key: jax.Array, *, num_epochs: int, controller_steps: int,
             children_per_step: int = 1, checkpointer=None, guard=None,
             steps: Steps | None = None,
             on_record: Callable[[Record], None] | None = None,
             on_epoch: Callable[[int, EnasState, dict], None] | None = None,
             on_resume: Callable[[list[Record], int], None] | None = None,
             state: EnasState | None = None) -> EnasResult:
  """Runs (or resumes) ``num_epochs`` epochs of the ENAS alternation.

  Args:
    task: the shared-weight model and its data.
    algorithm: proposes children and learns from rewards (REINFORCE for
      ENAS).
    key: the run key; epoch ``e`` uses ``fold_in(key, e + 1)``.
    num_epochs: epochs of (shared phase, controller phase).
    controller_steps: controller updates per epoch (ENAS: 30 for the micro
      search, 50 for the macro search; ``--controller_train_steps``).
    children_per_step: children sampled per shared step (1: the paper's
      M = 1; D: one per device for a task whose ``train_step`` takes
      ``int32[D, T]``).
    checkpointer: a ``nas_jax.checkpoint.Checkpointer``; the state and the
      records are saved after every epoch, and a checkpoint found at start
      is resumed from.
    guard: a ``PreemptionGuard``; a requested stop checkpoints after the
      current epoch and returns with status ``"preempted"``.
    on_record: called for every child the controller phase scored.
    on_epoch: ``(epoch, state, summary)`` after every epoch, before its
      checkpoint (flush metrics there, so a checkpoint never covers a
      metric that was not written).
    on_resume: ``(records, next_epoch)`` once at start, after any restore,
      so the caller can rewrite its history files.
    state: a starting state (default: ``init_state(task, algorithm, key)``).
    steps: the jitted pieces (default: ``make_steps(task, algorithm,
      children_per_step)``).

  Returns:
    An :class:`EnasResult`.
  """
  algo_base.check_positive("num_epochs", num_epochs)
  algo_base.check_positive("controller_steps", controller_steps,
                           allow_zero=True)
  algo_base.check_positive("children_per_step", children_per_step)
  if state is None:
    state = init_state(task, algorithm, key)
  records: list[Record] = []
  epochs: list[dict] = []
  start = 0
  if checkpointer is not None:
    restored = checkpointer.restore(state)
    if restored is not None:
      _, state, meta = restored
      records = [_record_from_json(x) for x in meta["records"]]
      epochs = list(meta.get("epochs", []))
      start = int(meta["epoch"]) + 1
      logging.info("%s: resumed after epoch %d/%d (%d controller samples)",
                   task.name, start, num_epochs, len(records))
  if on_resume is not None:
    on_resume(records, start)
  steps = steps or make_steps(task, algorithm, children_per_step)
  status = "done"
  for epoch in range(start, num_epochs):
    t0 = time.perf_counter()
    k_epoch = jax.random.fold_in(key, epoch + 1)
    k_shared, k_ctrl = (jax.random.fold_in(k_epoch, 0),
                        jax.random.fold_in(k_epoch, 1))
    sums: dict[str, jax.Array] = {}
    distinct = set()
    for i in range(task.steps_per_epoch):
      # Phase (a): theta fixed; one freshly sampled child per minibatch.
      k_arch, k_train = jax.random.split(jax.random.fold_in(k_shared, i))
      archs = steps.sample(state.controller, k_arch)
      arch = archs[0] if children_per_step == 1 else archs
      shared, metrics = steps.shared_step(
          state.shared, arch, task.train_batch(epoch, i), k_train)
      state = state._replace(shared=shared)
      for k, v in metrics.items():
        sums[k] = sums.get(k, 0.0) + v
      distinct.add(np.asarray(arch).tobytes())
    t_shared = time.perf_counter() - t0
    rewards = []
    for j in range(controller_steps):
      step = epoch * controller_steps + j
      # Phase (b): w fixed; rewards on one validation minibatch.
      controller, archs = steps.propose(state.controller,
                                        jax.random.fold_in(k_ctrl, j))
      rew = steps.score(state.shared, archs, task.val_batch(step))
      state = state._replace(
          controller=steps.feedback(controller, archs, rew))
      for a, r in zip(np.asarray(archs), np.asarray(rew)):
        rec = Record(len(records), epoch, a, float(r))
        records.append(rec)
        rewards.append(rec.reward)
        if on_record is not None:
          on_record(rec)
    summary = {f"shared/{k}": float(v) / task.steps_per_epoch
               for k, v in sums.items()}
    summary.update({
        "shared/distinct_children": len(distinct),
        "shared/seconds": t_shared,
        "shared/examples_per_second": 0.0,
        "controller/seconds": time.perf_counter() - t0 - t_shared,
        **{f"controller/{k}": v for k, v in
           algo_base.state_scalars(state.controller).items()}})
    batch = task.train_batch(epoch, 0)
    leaves = jax.tree.leaves(batch)
    if leaves and np.ndim(leaves[0]) > 0 and t_shared > 0:
      summary["shared/examples_per_second"] = (
          np.shape(leaves[0])[0] * task.steps_per_epoch / t_shared)
    if rewards:
      summary["reward/mean"] = float(np.mean(rewards))
      summary["reward/max"] = float(np.max(rewards))
    epochs.append({"epoch": epoch, **summary})
    if on_epoch is not None:
      on_epoch(epoch, state, summary)
    logging.info(
        "%s epoch %d/%d | shared %.1fs, %s | controller %.1fs, reward %.4f",
        task.name, epoch + 1, num_epochs, t_shared,
        ", ".join(f"{k[7:]} {v:.4f}" for k, v in summary.items()
                  if k.startswith("shared/") and k[7:] in sums),
        summary["controller/seconds"], summary.get("reward/mean", float("nan")))
    stop = guard is not None and guard.requested and epoch + 1 < num_epochs
    if checkpointer is not None:
      checkpointer.save(epoch, state, {
          "epoch": epoch, "records": [_record_to_json(r) for r in records],
          "epochs": epochs})
    if stop:
      status = "preempted"
      logging.warning("stopped after epoch %d (%s); checkpoint saved, run the "
                      "same command to resume", epoch + 1, guard.signal_name)
      break
  return EnasResult(state, records, epochs, status, steps)


class Derived(NamedTuple):
  arch: np.ndarray       # int32[T], the best sampled child
  reward: float          # its reward on the derive minibatch
  archs: np.ndarray      # int32[K, T], every sampled child
  rewards: np.ndarray    # f32[K]


def derive(task: SharedTask, algorithm: algo_base.Algorithm,
           state: EnasState, key: jax.Array, *, num_samples: int = 100,
           batch=None, steps: Steps | None = None) -> Derived:
  """Samples ``num_samples`` children, scores each with the shared weights
  on ONE validation minibatch, and returns the best (Pham et al. 2018,
  Sec. 2.2: "we sample several models from the trained policy ... compute
  its reward on a single minibatch sampled from the validation set ... take
  only the model with the highest reward to re-train from scratch").

  ``batch`` defaults to ``task.val_batch(-1)``. Ties go to the first sample.
  Children are drawn ``algorithm.batch_size`` at a time with the loop's
  jitted ``propose`` and ``score`` (pass ``steps`` to reuse their
  compilations).
  """
  algo_base.check_positive("num_samples", num_samples)
  batch = task.val_batch(-1) if batch is None else batch
  steps = steps or make_steps(task, algorithm)
  archs, rewards = [], []
  for c in range(-(-num_samples // algorithm.batch_size)):
    _, a = steps.propose(state.controller, jax.random.fold_in(key, c))
    archs.append(np.asarray(a))
    rewards.append(np.asarray(steps.score(state.shared, a, batch)))
  archs = np.concatenate(archs)[:num_samples]
  rewards = np.concatenate(rewards)[:num_samples]
  best = int(np.argmax(rewards))
  return Derived(archs[best], float(rewards[best]), archs, rewards)
