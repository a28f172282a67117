"""A whole ask/evaluate/tell search as one jittable function (purejaxrl style).

``search = make_search(algorithm, evaluate, max_evals=..., time_budget=...)``
returns ``search(key) -> SearchResult``; with a cheap evaluator (a table
gather) ``jax.jit(jax.vmap(search))(keys)`` runs many seeded searches in one
call.

Budget semantics (the NAS-Bench-201 protocol): each evaluation is charged its
simulated cost in order; an evaluation that would overrun ``time_budget`` is
not counted and ends the search. ``max_evals`` bounds the history buffer and
the number of evaluations.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from nas_jax.algorithms import base as algo_base
from nas_jax.evaluators.tabular import Evaluation


class SearchResult(NamedTuple):
  archs: jax.Array      # int32[max_evals, T], evaluation order
  rewards: jax.Array    # f32[max_evals]
  costs: jax.Array      # f32[max_evals]
  num_evals: jax.Array  # i32[]: valid prefix of the history
  time_used: jax.Array  # f32[]: simulated seconds charged
  best_arch: jax.Array  # int32[T]: highest reward seen (first on ties)
  best_reward: jax.Array
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


def make_search_fns(algorithm: algo_base.Algorithm,
                    evaluate: Callable[[jax.Array], Evaluation],
                    num_decisions: int, *, max_evals: int,
                    time_budget: float | None = None) -> SearchFns:
  algo_base.check_positive("max_evals", max_evals)
  if time_budget is not None:
    algo_base.check_positive("time_budget", time_budget)
  m = algorithm.batch_size
  budget = math.inf if time_budget is None else float(time_budget)

  def body(c: SearchCarry) -> SearchCarry:
    state, archs = algorithm.propose(c.state, jax.random.fold_in(c.key,
                                                                 c.round))
    ev = evaluate(archs)
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
                       jnp.full((max_evals,), -jnp.inf),
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
                evaluate: Callable[[jax.Array], Evaluation],
                num_decisions: int, *, max_evals: int,
                time_budget: float | None = None
                ) -> Callable[[jax.Array], SearchResult]:
  """``search(key) -> SearchResult``: the whole search in one call."""
  fns = make_search_fns(algorithm, evaluate, num_decisions,
                        max_evals=max_evals, time_budget=time_budget)
  # Rounds never exceed max_evals (each round counts >= 1 evaluation or
  # ends the search), so this bound never stops a search early.
  return lambda key: fns.finish(fns.advance(fns.init(key), max_evals + 1))
