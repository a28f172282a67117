"""Rewards from a precomputed table: one gather, so a search jits end to end
(DESIGN.md, 4).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nas_jax.spaces import base


class Evaluation(NamedTuple):
  reward: jax.Array  # f32[m]: what the algorithm sees
  cost: jax.Array    # f32[m]: simulated seconds charged to the budget


class TabularEvaluator:
  """Looks architectures up by ``space.index``.

  Args:
    space: a space small enough for an int32 index.
    reward: ``[num_architectures]`` rewards in index order.
    cost: optional ``[num_architectures]`` simulated evaluation seconds.
    extra: optional named columns reported but never shown to the search
      (e.g. ``test_acc_200ep``).
  """

  def __init__(self, space: base.SearchSpace, reward, cost=None, extra=None):
    n = space.num_architectures
    reward = np.asarray(reward, np.float32)
    if reward.shape != (n,):
      raise ValueError(f"reward table has shape {reward.shape}, space "
                       f"{space.name!r} needs ({n},)")
    if not np.isfinite(reward).all():
      bad = np.flatnonzero(~np.isfinite(reward))
      raise ValueError(
          f"reward table has {bad.size} non-finite entries, e.g. "
          + ", ".join(f"index {i} ({space.to_text(space.from_index(int(i)))}"
                      f": {reward[i]})" for i in bad[:3])
          + "; fix or drop them (nas_jax.evaluators.table builds a checked "
          "table from {architecture: value})")
    self.space = space
    self.reward = jnp.asarray(reward)
    self.cost = jnp.zeros(n) if cost is None else jnp.asarray(cost, jnp.float32)
    self.extra = {k: jnp.asarray(v, jnp.float32) for k, v in
                  (extra or {}).items()}

  def __call__(self, archs: jax.Array) -> Evaluation:
    idx = self.space.index(archs)
    return Evaluation(self.reward[idx], self.cost[idx])

  def lookup(self, column: str, archs: jax.Array) -> jax.Array:
    return self.extra[column][self.space.index(archs)]

  @property
  def best_reward(self) -> float:
    return float(self.reward.max())


def nasbench201(table, reward_column: str = "valid_acc_12ep",
                epochs_charged: float = 12.0) -> TabularEvaluator:
  """The NAS-Bench-201 protocol: reward = ``reward_column`` / 100 and each
  evaluation costs ``epochs_charged * train_seconds_per_epoch`` seconds, plus
  ``valid_seconds`` (one validation pass) when the table has that column, as
  NB201's ``simulate_train_eval`` charges ``train-all-time +
  valid-per-time``. The shipped CSV has no validation time."""
  from nas_jax.spaces import nasbench201 as nb201_space
  cost = epochs_charged * np.asarray(table.train_seconds_per_epoch)
  if getattr(table, "valid_seconds", None) is not None:
    cost = cost + np.asarray(table.valid_seconds)
  return TabularEvaluator(
      nb201_space.space(),
      reward=getattr(table, reward_column) / 100.0,
      cost=cost,
      extra={"test_acc_200ep": table.test_acc_200ep,
             "valid_acc_200ep": table.valid_acc_200ep})
