"""REINFORCE with an EMA baseline (Zoph & Le, ICLR 2017, Sec. 3.2, Eq. 3).

``grad J ~= 1/m sum_k sum_t grad log P(a_t | a_<t; theta) (R_k - b)``, where
``b`` is an exponential moving average of past rewards, plus an optional
entropy bonus (ENAS, Pham et al. 2018, Sec. 3: entropy weight 1e-4).

``entropy_in_reward=True`` is how the authors' code applies that bonus
(``self.reward += self.entropy_weight * self.sample_entropy`` in
``micro_controller.py``): the sampled child's policy entropy, a constant, is
added to its reward before the baseline, instead of a differentiable loss
term. A policy's rollout ``penalty`` (ENAS's skip-rate KL) is added to the
loss.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from nas_jax.algorithms import base, losses
from nas_jax.controllers import lstm_policy


class ReinforceState(NamedTuple):
  params: Any
  opt_state: optax.OptState
  baseline: jax.Array     # f32[]
  num_updates: jax.Array  # i32[]
  loss: jax.Array         # f32[]: of the last update, for metrics
  entropy: jax.Array      # f32[]: mean policy entropy of the last batch


def reinforce(controller: lstm_policy.Controller, *, batch_size: int = 1,
              learning_rate: float = 3.5e-4, baseline_decay: float = 0.95,
              entropy_weight: float = 0.0, entropy_in_reward: bool = False,
              max_grad_norm: float | None = None,
              optimizer: optax.GradientTransformation | None = None
              ) -> base.Algorithm:
  """REINFORCE over ``controller``'s policy; ``batch_size`` is the paper's m.

  The baseline starts at the first batch's mean reward (so the first update
  does not push every sampled decision up by the raw accuracy).
  """
  base.check_positive("batch_size", batch_size)
  if not 0.0 <= baseline_decay < 1.0:
    raise ValueError(f"baseline_decay must be in [0, 1), got {baseline_decay}")
  base.check_positive("entropy_weight", entropy_weight, allow_zero=True)
  opt = optimizer or base.controller_optimizer(learning_rate, max_grad_norm)

  def init(key):
    params = controller.init(key)
    return ReinforceState(params, opt.init(params), jnp.zeros(()),
                          jnp.zeros((), jnp.int32), jnp.zeros(()),
                          jnp.zeros(()))

  def propose(state, key):
    keys = jax.random.split(key, batch_size)
    rollout = jax.vmap(controller.sample, (None, 0))(state.params, keys)
    return state, rollout.arch

  def loss_fn(params, archs, rewards, baseline, first):
    rescored = jax.vmap(controller.rescore, (None, 0))(params, archs)
    entropy = jnp.mean(rescored.entropy)
    if entropy_in_reward:
      rewards = rewards + entropy_weight * jax.lax.stop_gradient(
          rescored.entropy)
    baseline = jnp.where(first, jnp.mean(rewards), baseline)
    pg = jax.vmap(losses.reinforce_loss)(rescored.log_prob,
                                         rewards - baseline)
    loss = jnp.mean(pg) + jnp.mean(rescored.penalty)
    if not entropy_in_reward:
      loss = loss - entropy_weight * entropy
    return loss, (entropy, baseline, jnp.mean(rewards))

  def feedback(state, archs, rewards):
    rewards = rewards.astype(jnp.float32)
    (loss, (entropy, baseline, mean_reward)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params, archs, rewards, state.baseline,
                               state.num_updates == 0)
    updates, opt_state = opt.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    baseline = losses.ema(baseline, mean_reward, baseline_decay)
    return ReinforceState(params, opt_state, baseline, state.num_updates + 1,
                          loss, entropy)

  return base.Algorithm(init, propose, feedback, batch_size, "reinforce")
