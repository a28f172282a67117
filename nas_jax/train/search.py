"""A whole ask/evaluate/tell search as one jittable function (purejaxrl style).

``search = make_search(algorithm, evaluate, max_evals=..., time_budget=...)``
returns ``search(key) -> SearchResult``; with a cheap evaluator (a table
gather) ``jax.jit(jax.vmap(search))(keys)`` runs many seeded searches in one
call.

``evaluate(archs int32[m, T])`` is any jittable function returning either the
rewards ``f32[m]`` (evaluations then cost nothing) or an
``Evaluation(reward f32[m], cost f32[m])`` (simulated seconds charged to
``time_budget``). Rewards are best as fractions in [0, 1] (accuracy 0.94, not
94): the algorithms' default learning rates and baselines assume it.

Budget semantics (the NAS-Bench-201 protocol): each evaluation is charged its
simulated cost in order; an evaluation that would overrun ``time_budget`` is
not counted and ends the search. ``max_evals`` bounds the history buffer and
the number of evaluations. The algorithm learns from whole rounds only
(``algorithm.batch_size`` evaluations): a round cut short by either budget
is recorded but teaches nothing, so ``max_evals`` is best a multiple of the
batch size (``make_search`` warns otherwise).

``SearchResult.best_reward`` is the reward the search saw (e.g. NAS-Bench-201's
``valid_acc_12ep / 100``); a column it never saw, such as a test accuracy, is
``evaluator.lookup(column, result.best_arch)``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from absl import logging

from nas_jax.algorithms import base as algo_base
from nas_jax.evaluators.tabular import Evaluation


class SearchResult(NamedTuple):
  archs: jax.Array      # int32[max_evals, T], evaluation order
  rewards: jax.Array    # f32[max_evals]
  costs: jax.Array      # f32[max_evals]
  num_evals: jax.Array  # i32[]: valid prefix of the history
  time_used: jax.Array  # f32[]: simulated seconds charged
  best_arch: jax.Array  # int32[T]: highest reward seen (first on ties)
  best_reward: jax.Array  # f32[]: as the search saw it (e.g. accuracy / 100)
  state: Any            # the algorithm's final state


class SearchCarry(NamedTuple):
  """Everything a search needs to continue: checkpoint this to resume."""

  state: Any
  archs: jax.Array
  rewards: jax.Array
  costs: jax.Array
  num_evals: jax.Array
  time_used: jax.Array
  done: jax.Array
  round: jax.Array
  key: jax.Array        # the loop key; round r uses fold_in(key, r)


class SearchFns(NamedTuple):
  """``init(key) -> carry``; ``advance(carry, stop_round) -> carry`` runs
  rounds until the search is done or ``carry.round == stop_round``;
  ``finish(carry) -> SearchResult``. Chunked advancing gives exactly the
  rounds of one uninterrupted call, so a host loop can checkpoint between
  chunks."""

  init: Callable[[jax.Array], SearchCarry]
  advance: Callable[[SearchCarry, jax.Array], SearchCarry]
  finish: Callable[[SearchCarry], SearchResult]


_RETURN_HINT = ("return the rewards as an f32[m] array (one per "
                "architecture of the batch), or nas_jax.evaluators.tabular."
                "Evaluation(reward=f32[m], cost=f32[m]) to charge simulated "
                "seconds to a time_budget")


def as_evaluation(out: Any, m: int) -> Evaluation:
  """What ``evaluate`` returned, as an ``Evaluation`` for a batch of ``m``:
  a plain ``f32[m]`` reward array costs nothing. Anything else raises a
  TypeError saying exactly what to return."""
  if isinstance(out, Evaluation):
    reward, cost = out.reward, out.cost
  elif isinstance(out, tuple):
    raise TypeError(f"evaluate returned a {type(out).__name__} of "
                    f"{len(out)} items; {_RETURN_HINT}")
  else:
    reward, cost = out, None
  try:
    reward = jnp.asarray(reward)
  except TypeError:
    raise TypeError(f"evaluate returned {type(reward).__name__}; "
                    f"{_RETURN_HINT}") from None
  if reward.shape != (m,) or not (jnp.issubdtype(reward.dtype, jnp.floating)
                                  or jnp.issubdtype(reward.dtype,
                                                    jnp.integer)):
    raise TypeError(f"evaluate returned rewards of shape {reward.shape} and "
                    f"dtype {reward.dtype} for a batch of {m} architectures; "
                    f"{_RETURN_HINT}")
  reward = reward.astype(jnp.float32)
  if cost is None:
    cost = jnp.zeros((m,), jnp.float32)
  else:
    cost = jnp.asarray(cost, jnp.float32)
    if cost.shape != (m,):
      raise TypeError(f"evaluate returned costs of shape {cost.shape} for a "
                      f"batch of {m} architectures; {_RETURN_HINT}")
  return Evaluation(reward, cost)


def _check_proposals(algorithm: algo_base.Algorithm, shape,
                     num_decisions: int | None) -> None:
  if len(shape) != 2 or shape[0] != algorithm.batch_size:
    raise ValueError(
        f"algorithm {algorithm.name!r} proposes architectures of shape "
        f"{tuple(shape)}; propose must return int32[batch_size="
        f"{algorithm.batch_size}, T]")
  if num_decisions is not None and num_decisions != shape[1]:
    raise ValueError(
        f"num_decisions={num_decisions} but algorithm {algorithm.name!r} "
        f"proposes architectures of {shape[1]} decisions; omit "
        "num_decisions (make_search reads it from the algorithm)")


def _num_decisions(algorithm: algo_base.Algorithm,
                   num_decisions: int | None) -> int:
  """The architecture length ``T``: ``num_decisions`` if given (checked
  when the search is traced), else read off the shapes of ``init`` and
  ``propose`` (one extra trace, never run)."""
  if num_decisions is not None:
    return int(num_decisions)

  def propose_once():
    state = algorithm.init(jax.random.key(0))
    return algorithm.propose(state, jax.random.key(1))[1]
  archs = jax.eval_shape(propose_once)
  _check_proposals(algorithm, archs.shape, None)
  return int(archs.shape[1])


def _warn_about_budget(m: int, max_evals: int, name: str) -> None:
  if max_evals < m:
    logging.warning(
        "max_evals=%d is smaller than one round of %s (batch_size=%d): the "
        "search evaluates %d architectures and never updates; raise "
        "max_evals to a multiple of %d or lower batch_size", max_evals, name,
        m, max_evals, m)
  elif max_evals % m:
    logging.warning(
        "max_evals=%d is not a multiple of %s's batch_size=%d: the last %d "
        "evaluations are recorded but not learned from; use max_evals=%d",
        max_evals, name, m, max_evals % m, max_evals - max_evals % m + m)


def make_search_fns(algorithm: algo_base.Algorithm,
                    evaluate: Callable[[jax.Array], Evaluation | jax.Array],
                    num_decisions: int | None = None, *, max_evals: int,
                    time_budget: float | None = None) -> SearchFns:
  """The chunked search (see SearchFns and the module doc).

  ``num_decisions`` is read from the algorithm's proposals; older code
  passes it positionally, which is still accepted (and checked).
  """
  algo_base.check_positive("max_evals", max_evals)
  if time_budget is not None:
    algo_base.check_positive("time_budget", time_budget)
  num_decisions = _num_decisions(algorithm, num_decisions)
  m = algorithm.batch_size
  if algorithm.name != "random":  # random search learns nothing anyway
    _warn_about_budget(m, max_evals, algorithm.name)
  budget = math.inf if time_budget is None else float(time_budget)

  def body(c: SearchCarry) -> SearchCarry:
    state, archs = algorithm.propose(c.state, jax.random.fold_in(c.key,
                                                                 c.round))
    _check_proposals(algorithm, archs.shape, num_decisions)  # trace time
    ev = as_evaluation(evaluate(archs), m)
    spent = c.time_used + jnp.cumsum(ev.cost)
    slot = c.num_evals + jnp.arange(m)
    # An evaluation counts if it fits the budget, the buffer, and every
    # earlier one in this round counted too.
    counted = jnp.cumprod((spent <= budget) & (slot < max_evals)) > 0
    n = jnp.sum(counted)
    drop = jnp.where(counted, slot, max_evals)  # out of range: dropped
    # Learn only from a round whose evaluations were all charged: the round
    # that overruns the budget ends the search and teaches nothing.
    new_state = algorithm.feedback(state, archs, ev.reward)
    state = jax.tree.map(lambda a, b: jnp.where(n == m, a, b), new_state,
                         state)
    num_evals = c.num_evals + n
    return SearchCarry(
        state=state,
        archs=c.archs.at[drop].set(archs.astype(jnp.int32), mode="drop"),
        rewards=c.rewards.at[drop].set(ev.reward, mode="drop"),
        costs=c.costs.at[drop].set(ev.cost, mode="drop"),
        num_evals=num_evals,
        time_used=c.time_used + jnp.sum(jnp.where(counted, ev.cost, 0.0)),
        done=(n < m) | (num_evals >= max_evals),
        round=c.round + 1, key=c.key)

  def init(key: jax.Array) -> SearchCarry:
    k_init, k_loop = jax.random.split(key)
    return SearchCarry(algorithm.init(k_init),
                       jnp.zeros((max_evals, num_decisions), jnp.int32),
                       # Not weakly typed, like a restored or advanced
                       # carry, so every chunk reuses one compilation.
                       jnp.full((max_evals,), -jnp.inf, jnp.float32),
                       jnp.zeros((max_evals,)),
                       jnp.zeros((), jnp.int32), jnp.zeros(()),
                       jnp.zeros((), bool), jnp.zeros((), jnp.int32), k_loop)

  def advance(carry: SearchCarry, stop_round) -> SearchCarry:
    return jax.lax.while_loop(lambda c: ~c.done & (c.round < stop_round),
                              body, carry)

  def finish(c: SearchCarry) -> SearchResult:
    # Unfilled slots hold -inf; a NaN / overflowing reward is never the best.
    best = jnp.argmax(jnp.where(algo_base.usable_rewards(c.rewards),
                                c.rewards, -jnp.inf))
    return SearchResult(c.archs, c.rewards, c.costs, c.num_evals, c.time_used,
                        c.archs[best], c.rewards[best], c.state)

  return SearchFns(init, advance, finish)


def make_search(algorithm: algo_base.Algorithm,
                evaluate: Callable[[jax.Array], Evaluation | jax.Array],
                num_decisions: int | None = None, *, max_evals: int,
                time_budget: float | None = None
                ) -> Callable[[jax.Array], SearchResult]:
  """``search(key) -> SearchResult``: the whole search in one call.

  Args:
    algorithm: e.g. ``algorithms.ppo(controller)``; the architecture
      length is read from its proposals.
    evaluate: ``archs int32[m, T] -> f32[m]`` rewards, or an ``Evaluation``
      with costs (module doc); jittable.
    num_decisions: optional (checked against the proposals).
    max_evals: evaluations per search (best a multiple of the batch size).
    time_budget: simulated seconds, charged by ``Evaluation.cost``.
  """
  fns = make_search_fns(algorithm, evaluate, num_decisions,
                        max_evals=max_evals, time_budget=time_budget)
  # Rounds never exceed max_evals (each round counts >= 1 evaluation or
  # ends the search), so this bound never stops a search early.
  return lambda key: fns.finish(fns.advance(fns.init(key), max_evals + 1))
