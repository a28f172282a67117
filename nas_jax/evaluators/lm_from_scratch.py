"""Language-model children trained from scratch on a token stream (NAS-RL's
Penn Treebank search, Zoph & Le 2017 Sec. 4.2: every child cell is trained
and its validation perplexity turned into the reward ``c / ppl^2``), and the
from-scratch retraining of a derived cell (ENAS, Pham et al. 2018 Sec. 3.1).

:class:`LMTrainer` has the interface ``train_from_scratch.ChildTrainer``'s
evaluator needs (``space``, ``train_and_evaluate(arch) -> ChildResult``), so
``TrainFromScratchEvaluator`` caches and checkpoints its rewards unchanged.
One jitted train step and one eval step serve every child of a space: the
architecture is an argument of the cell.
"""

from __future__ import annotations

import math
import time
import zlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
from absl import logging

from nas_jax.children import lm
from nas_jax.data import ptb
from nas_jax.evaluators.train_from_scratch import ChildResult
from nas_jax.spaces import base


def reward_from_perplexity(ppl: float, constant: float, power: float) -> float:
  """``c / ppl^p`` (NAS-RL: p = 2; ENAS: p = 1, c = 80); 0 for a diverged
  child (NaN or infinite perplexity)."""
  if not math.isfinite(ppl) or ppl <= 0:
    return 0.0
  return float(constant / ppl ** power)


class LMTrainer:
  """Trains one child language model at a time from its seeded init.

  Args:
    space: the cell's search space (None for a fixed model, e.g. an LSTM).
    model: an ``lm.LanguageModel`` whose cell takes the arch as input (or
      ignores it, for a fixed cell).
    corpus: a ``ptb.Corpus``.
    steps: training windows per child (the short budget of a search).
    batch_size, bptt: training layout; evaluation uses ``eval_batch_size``
      streams and windows of ``eval_bptt`` (default ``bptt``; the state is
      carried, so the value is exact either way) over the whole split, or
      only its first ``max_eval_windows`` windows when that is > 0.
    reward_constant, reward_power: reward ``c / ppl^p`` on validation.
  """

  def __init__(self, space: base.SearchSpace | None, model: lm.LanguageModel,
               corpus: ptb.Corpus, *, steps: int, batch_size: int = 20,
               bptt: int = 35, learning_rate: float = 20.0,
               grad_clip: float = 0.25, weight_decay: float = 0.0,
               eval_batch_size: int = 10, eval_bptt: int = 0,
               max_eval_windows: int = 0,
               reward_constant: float = 80.0, reward_power: float = 2.0,
               seed: int = 0):
    if steps < 1:
      raise ValueError(f"steps must be >= 1, got {steps}")
    self.space, self.model, self.corpus = space, model, corpus
    self.steps, self.batch_size, self.bptt = steps, batch_size, bptt
    self.eval_batch_size = eval_batch_size
    self.eval_bptt = eval_bptt or bptt
    self.max_eval_windows = max_eval_windows
    self.reward_constant, self.reward_power = reward_constant, reward_power
    self.seed = seed
    self.train_stream = ptb.batchify(corpus.train, batch_size)
    ptb.check_bptt(self.train_stream, bptt, "training split")
    self.windows = ptb.fixed_windows(self.train_stream.shape[1], bptt,
                                     drop_last=True)
    self.eval_streams = {s: ptb.batchify(corpus.split(s), eval_batch_size)
                         for s in ("valid", "test")}
    for s, stream in self.eval_streams.items():
      ptb.check_bptt(stream, self.eval_bptt, f"{s} split")
    self.tx = lm.make_optimizer(learning_rate, grad_clip, weight_decay)
    self.num_traces = 0
    step = lm.make_train_step(model, self.tx)

    def counted(*args):
      self.num_traces += 1
      return step(*args)

    self._train_step = jax.jit(counted, donate_argnums=0)
    self._eval_step = jax.jit(lm.make_eval_step(model))
    self._init = jax.jit(lambda k, a: lm.init_state(model, self.tx, k,
                                                    batch_size, a))

  def _arch(self, arch):
    if self.space is None:
      return None, "fixed"
    a = self.space.validate(arch)
    return jnp.asarray(a), self.space.to_text(a)

  def child_key(self, text: str) -> jax.Array:
    return jax.random.fold_in(jax.random.key(self.seed),
                              zlib.crc32(text.encode()) & 0x7FFFFFFF)

  def train(self, arch, steps: int | None = None):
    """Trains from the child's seeded init for ``steps`` windows (default
    the trainer's budget), cycling over epochs; returns ``(state, mean loss
    of the last up-to-100 steps)``."""
    arch_j, text = self._arch(arch)
    k_init, k_drop = jax.random.split(self.child_key(text))
    state = self._init(k_init, arch_j)
    n = len(self.windows)
    losses = []
    for i in range(steps or self.steps):
      start, length = self.windows[i % n]
      w = ptb.window(self.train_stream, int(start), int(length))
      batch = lm.Batch(w.inputs, w.targets, w.mask,
                       jnp.float32(i % n == 0))
      state, m = self._train_step(state, arch_j, batch,
                                  jax.random.fold_in(k_drop, i))
      losses.append(m["loss"])
    return state, float(jnp.mean(jnp.stack(losses[-100:])))

  def perplexity(self, params, arch, split: str = "valid", *,
                 full: bool = False) -> lm.Perplexity:
    """Exact perplexity of the split (only its first ``max_eval_windows``
    windows unless ``full``)."""
    arch_j, _ = self._arch(arch)
    stream = self.eval_streams[split]
    if self.max_eval_windows and not full:
      stream = stream[:, :self.max_eval_windows * self.eval_bptt + 1]
    return lm.evaluate(self._eval_step, params, arch_j, stream,
                       self.eval_bptt,
                       self.model.zero_carry(stream.shape[0]))

  def train_and_evaluate(self, arch) -> ChildResult:
    """``ChildResult(val_accuracy=reward, ...)``: the field holds the reward
    ``c / ppl^p`` so the shared evaluator caches it unchanged."""
    t0 = time.perf_counter()
    state, loss = self.train(arch)
    ppl = self.perplexity(state.params, arch).perplexity
    reward = reward_from_perplexity(ppl, self.reward_constant,
                                    self.reward_power)
    logging.info("child %s: valid ppl %.2f, reward %.4f", self._arch(arch)[1],
                 ppl, reward)
    return ChildResult(reward, loss, time.perf_counter() - t0,
                       lm.param_count(state.params))


class RetrainResult(NamedTuple):
  valid_perplexity: float
  test_perplexity: float
  num_params: int
  steps: int
  seconds: float


def retrain(trainer: LMTrainer, arch, steps: int) -> RetrainResult:
  """Trains ``arch`` from scratch for ``steps`` windows and reports exact
  validation and test perplexity over the whole splits."""
  t0 = time.perf_counter()
  state, _ = trainer.train(arch, steps)
  valid = trainer.perplexity(state.params, arch, "valid", full=True)
  test = trainer.perplexity(state.params, arch, "test", full=True)
  return RetrainResult(valid.perplexity, test.perplexity,
                       lm.param_count(state.params), steps,
                       time.perf_counter() - t0)
