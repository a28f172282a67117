"""Regularized (aging) evolution (Real et al., AAAI 2019, Algorithm 1).

The population is a ring buffer of the ``population_size`` most recent
children: inserting a child overwrites the oldest, which is the "aging" that
regularizes the search. A parent is the fittest of ``sample_size`` members
drawn at random; the child changes exactly one decision of it. Until the
population is full, children are uniform random architectures.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nas_jax.algorithms import base
from nas_jax.spaces import base as spaces_base


class EvolutionState(NamedTuple):
  population: jax.Array  # int32[P, T]
  fitness: jax.Array     # f32[P]
  size: jax.Array        # i32[]: filled members, <= P
  oldest: jax.Array      # i32[]: ring position of the oldest member


def mutate(space: spaces_base.SearchSpace, arch: jax.Array,
           key: jax.Array) -> jax.Array:
  """Changes one decision that has more than one choice to a different value.

  Decisions with a single choice (e.g. the first ENAS RNN "previous index")
  cannot change, so they are never picked.
  """
  nc = jnp.asarray(space.num_choices)
  mutable = np.flatnonzero(space.num_choices > 1)
  if mutable.size == 0:
    return arch
  k_pos, k_val = jax.random.split(key)
  t = jnp.asarray(mutable)[jax.random.randint(k_pos, (), 0, mutable.size)]
  shift = 1 + jax.random.randint(k_val, (), 0, nc[t] - 1)
  return arch.at[t].set((arch[t] + shift) % nc[t])


def regularized_evolution(space: spaces_base.SearchSpace, *,
                          population_size: int = 10, sample_size: int = 3,
                          batch_size: int = 1,
                          with_replacement: bool = False) -> base.Algorithm:
  """Aging evolution over ``space``.

  Args:
    population_size: P, the members kept (the most recent children).
    sample_size: S, the tournament size.
    batch_size: children proposed per round (1: Algorithm 1's loop).
    with_replacement: how the S contestants are drawn from the population.
      ``False`` (default): S distinct members, so S = P always picks the
      fittest. ``True``: S independent uniform draws, a member may be drawn
      twice -- Real et al.'s Algorithm 1 ("sample <- S random individuals")
      as the authors' and NAS-Bench-201's code write it
      (``random.choice(list(population))`` S times, NB201
      ``exps/algos/R_EA.py``).
  """
  base.check_positive("population_size", population_size)
  if not 0 < sample_size <= population_size:
    raise ValueError(f"sample_size must be in 1..population_size "
                     f"({population_size}), got {sample_size}")
  if not 0 < batch_size <= population_size:
    raise ValueError(f"batch_size must be in 1..population_size "
                     f"({population_size}), got {batch_size}")
  T = space.num_decisions

  def init(key):
    del key
    return EvolutionState(jnp.zeros((population_size, T), jnp.int32),
                          jnp.full((population_size,), -jnp.inf),
                          jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))

  def child(state, key):
    k_rand, k_pick, k_mut = jax.random.split(key, 3)
    if with_replacement:
      contestants = jax.random.randint(k_pick, (sample_size,), 0,
                                       jnp.maximum(state.size, 1))
    else:
      # S distinct members of the filled part: the S smallest of uniform
      # scores, unfilled slots scored out of reach.
      scores = jax.random.uniform(k_pick, (population_size,))
      scores = jnp.where(jnp.arange(population_size) < state.size, scores,
                         2.0)
      contestants = jnp.argsort(scores)[:sample_size]
    parent = state.population[
        contestants[jnp.argmax(state.fitness[contestants])]]
    return jnp.where(state.size >= population_size,
                     mutate(space, parent, k_mut),
                     space.sample_uniform(k_rand))

  def propose(state, key):
    keys = jax.random.split(key, batch_size)
    return state, jax.vmap(child, (None, 0))(state, keys)

  def feedback(state, archs, rewards):
    slots = (state.oldest + jnp.arange(batch_size)) % population_size
    # While filling, members go to the next free slots in order.
    return EvolutionState(
        state.population.at[slots].set(archs.astype(jnp.int32)),
        state.fitness.at[slots].set(rewards.astype(jnp.float32)),
        jnp.minimum(state.size + batch_size, population_size),
        (state.oldest + batch_size) % population_size)

  return base.guard_nonfinite(  # NaN / inf rewards never update it
      base.Algorithm(init, propose, feedback, batch_size, "evolution"))
