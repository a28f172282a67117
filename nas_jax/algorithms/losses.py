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


def ppo_clip_loss_per_decision(log_probs: chex.Array,
                               old_log_probs: chex.Array,
                               advantage: chex.Array,
                               epsilon: float) -> chex.Array:
  """PPO's clipped surrogate with one ratio per decision, summed, negated.

  Each decision ``t`` is a time step of Schulman et al. (2017, Eq. 7) with
  the architecture's advantage at every step:
  ``L = -sum_t min(r_t A, clip(r_t, 1 - eps, 1 + eps) A)``,
  ``r_t = exp(log_probs[t] - old_log_probs[t])``. At ``r_t = 1`` its gradient
  is REINFORCE's ``-A sum_t grad log P(a_t)``, as the per-architecture loss's.
  """
  chex.assert_rank([log_probs, old_log_probs, advantage], [1, 1, 0])
  per_step = jax.vmap(ppo_clip_loss, (0, 0, None, None))(
      log_probs, old_log_probs, advantage, epsilon)
  return jnp.sum(per_step)


def make_baseline(decay, update: str = "after", debias: bool = False):
  """The EMA baseline as ``fn(b, num_updates, rewards) -> (advantages, b')``.

  ``update="after"``: advantages use the baseline of earlier rewards, then
  it is updated (NAS-RL, Sec. 3.2). ``"before"``: updated first, advantages
  against the new value (ENAS and NAS-Bench-201 code). ``debias=False``:
  ``b`` starts at the first batch's mean; ``True``: ``b`` starts at 0 and is
  read as ``b / (1 - decay^n)`` after ``n`` updates (NAS-Bench-201's
  numerator / denominator EMA). ``decay`` may be a traced scalar (the
  tuning script vmaps over it). See ``algorithms.reinforce`` for citations.
  """
  if update not in ("after", "before"):
    raise ValueError(f"baseline_update must be 'after' or 'before', got "
                     f"{update!r}")

  def fn(b, num_updates, rewards):
    mean = jnp.mean(rewards)
    if debias:
      new = ema(b, mean, decay)
      if update == "before":
        used = new / (1.0 - jnp.power(decay, num_updates + 1))
      else:  # no earlier reward on the first batch: its own mean
        denom = jnp.where(num_updates == 0, 1.0,
                          1.0 - jnp.power(decay, num_updates))
        used = jnp.where(num_updates == 0, mean, b / denom)
      return rewards - used, new
    b = jnp.where(num_updates == 0, mean, b)
    new = ema(b, mean, decay)
    return rewards - (new if update == "before" else b), new

  return fn
