"""Policy-gradient losses for one architecture (rlax style: vmap to batch).

Each loss takes the log-probability of one sampled architecture (the sum over
its decisions, ``sum_t log P(a_t | a_<t)``) and returns a scalar to *minimise*.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


def reinforce_loss(log_prob: chex.Array, advantage: chex.Array) -> chex.Array:
  """REINFORCE with a baseline (Williams 1992; Zoph & Le 2017, Eq. 3).

  The gradient of ``-(R_k - b) * sum_t log P(a_t|a_<t)`` is one term of
  ``1/m sum_k sum_t grad log P(a_t|a_<t) (R_k - b)``; averaging over ``k`` with
  ``vmap`` + ``mean`` gives the estimator. The advantage is a constant.
  """
  chex.assert_rank([log_prob, advantage], 0)
  return -jax.lax.stop_gradient(advantage) * log_prob


def ppo_clip_loss(log_prob: chex.Array, old_log_prob: chex.Array,
                  advantage: chex.Array, epsilon: float) -> chex.Array:
  """PPO's clipped surrogate (Schulman et al. 2017, Eq. 7), negated.

  ``ratio = exp(log_prob - old_log_prob)``;
  ``L = -min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A)``.
  ``old_log_prob`` and ``advantage`` are constants.
  """
  chex.assert_rank([log_prob, old_log_prob, advantage], 0)
  advantage = jax.lax.stop_gradient(advantage)
  ratio = jnp.exp(log_prob - jax.lax.stop_gradient(old_log_prob))
  clipped = jnp.clip(ratio, 1.0 - epsilon, 1.0 + epsilon)
  return -jnp.minimum(ratio * advantage, clipped * advantage)


def ema(value: chex.Array, new: chex.Array, decay: float) -> chex.Array:
  """Exponential moving average ``decay * value + (1 - decay) * new``.

  The NAS-RL baseline ``b`` (Zoph & Le 2017, Sec. 3.2): "an exponential moving
  average of the previous architecture accuracies".
  """
  return decay * value + (1.0 - decay) * new
