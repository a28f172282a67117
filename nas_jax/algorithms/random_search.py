"""Random search: uniform samples from the space (Li & Talwalkar 2019; the
baseline NASNet and NAS-Bench-201 compare against)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from nas_jax.algorithms import base
from nas_jax.spaces import base as spaces_base


class RandomSearchState(NamedTuple):
  num_proposed: jax.Array  # i32[]


def random_search(space: spaces_base.SearchSpace, *,
                  batch_size: int = 1) -> base.Algorithm:
  base.check_positive("batch_size", batch_size)

  def init(key):
    del key
    return RandomSearchState(jnp.zeros((), jnp.int32))

  def propose(state, key):
    archs = jax.vmap(space.sample_uniform)(jax.random.split(key, batch_size))
    return RandomSearchState(state.num_proposed + batch_size), archs

  def feedback(state, archs, rewards):
    del archs, rewards
    return state

  return base.guard_nonfinite(  # NaN / inf rewards never update it
      base.Algorithm(init, propose, feedback, batch_size, "random"))
