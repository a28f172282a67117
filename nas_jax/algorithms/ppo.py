"""PPO for the controller (Schulman et al. 2017; NASNet, Zoph et al. 2018
Sec. 4; the seed-003 study: "take K steps of SGD using the PPO loss where
mini-batches are drawn from D").

Each ``feedback`` receives the collected set ``D = {(arch_k, R_k)}`` of one
round, fixes the old log-probabilities, and runs ``num_epochs`` passes of
shuffled minibatches of the clipped surrogate with advantages ``R_k - b``
(EMA baseline ``b``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from nas_jax.algorithms import base, losses
from nas_jax.controllers import lstm_policy


class PPOState(NamedTuple):
  params: Any
  opt_state: optax.OptState
  baseline: jax.Array     # f32[]
  key: jax.Array          # shuffles the minibatches
  num_updates: jax.Array  # i32[]
  loss: jax.Array         # f32[]: mean over the last round's SGD steps
  entropy: jax.Array      # f32[]: mean policy entropy, last round


RATIOS = ("architecture", "decision")


def ppo(controller: lstm_policy.Controller, *, batch_size: int = 4,
        minibatch_size: int | None = None, num_epochs: int = 2,
        clip_epsilon: float = 0.2, learning_rate: float = 0.01,
        baseline_decay: float = 0.9, entropy_weight: float = 0.0,
        max_grad_norm: float | None = None, ratio: str = "architecture",
        normalize_advantages: bool = False, baseline_update: str = "after",
        debias_baseline: bool = False,
        optimizer: optax.GradientTransformation | None = None
        ) -> base.Algorithm:
  """PPO over ``controller``; ``batch_size`` architectures per round.

  Args:
    ratio: ``"architecture"`` (default): one probability ratio per sampled
      architecture, ``exp(log P(arch) - log P_old(arch))``, clipped as a
      whole -- the architecture is one action, as in NASNet's description
      (Zoph et al. 2018, Sec. 4, PPO over the controller's samples).
      ``"decision"``: one ratio per decision, each clipped, summed
      (``losses.ppo_clip_loss_per_decision``): every decision is a time step
      with the architecture's advantage, as Schulman et al. (2017, Eq. 7)
      clip per time step. A whole-architecture ratio moves far from 1 once
      several decisions change a little, so it clips sooner.
    normalize_advantages: scale the round's advantages to zero mean and unit
      std (``(A - mean) / (std + 1e-8)``), as OpenAI Baselines' PPO2 does per
      minibatch; done over the round here, since minibatches of 1-2
      architectures have no usable std. Default off (the seed-003 study's
      loss uses ``R - b`` as is).
    baseline_update, debias_baseline: see ``algorithms.reinforce``.
    The defaults of ``batch_size``, ``num_epochs``, ``learning_rate`` and
    ``baseline_decay`` (4, 2, 0.01, 0.9) are the validation-tuned
    NAS-Bench-201 settings, for rewards in [0, 1] and small budgets
    (``benchmarks/tune_nasbench201.py``, ``benchmarks/small_budget.py``).
    Other arguments as ``algorithms.reinforce`` plus ``minibatch_size``
    (divides ``batch_size``), ``num_epochs`` and ``clip_epsilon``.
  """
  minibatch_size = minibatch_size or batch_size
  base.check_positive("batch_size", batch_size)
  base.check_positive("num_epochs", num_epochs)
  base.check_positive("clip_epsilon", clip_epsilon)
  if minibatch_size <= 0 or batch_size % minibatch_size:
    raise ValueError(
        f"minibatch_size ({minibatch_size}) must be positive and divide "
        f"batch_size ({batch_size})")
  base.check_decay("baseline_decay", baseline_decay)
  base.check_positive("entropy_weight", entropy_weight, allow_zero=True)
  if ratio not in RATIOS:
    raise ValueError(f"ratio must be one of {RATIOS}, got {ratio!r}")
  baseline_fns = losses.make_baseline(baseline_decay, baseline_update,
                                      debias_baseline)
  num_minibatches = batch_size // minibatch_size
  opt = optimizer or base.controller_optimizer(learning_rate, max_grad_norm)

  def rescore(params, archs):
    return jax.vmap(controller.rescore, (None, 0))(params, archs)

  def old_log_probs_of(params, archs):
    r = rescore(params, archs)
    return r.log_prob if ratio == "architecture" else r.log_probs

  def loss_fn(params, archs, old_log_probs, advantages):
    r = rescore(params, archs)
    if ratio == "architecture":
      pg = jax.vmap(losses.ppo_clip_loss, (0, 0, 0, None))(
          r.log_prob, old_log_probs, advantages, clip_epsilon)
    else:
      pg = jax.vmap(losses.ppo_clip_loss_per_decision, (0, 0, 0, None))(
          r.log_probs, old_log_probs, advantages, clip_epsilon)
    entropy = jnp.mean(r.entropy)
    return jnp.mean(pg) - entropy_weight * entropy, entropy

  def init(key):
    k_params, k_state = jax.random.split(key)
    params = controller.init(k_params)
    return PPOState(params, opt.init(params), jnp.zeros(()), k_state,
                    jnp.zeros((), jnp.int32), jnp.zeros(()), jnp.zeros(()))

  def propose(state, key):
    keys = jax.random.split(key, batch_size)
    rollout = jax.vmap(controller.sample, (None, 0))(state.params, keys)
    return state, rollout.arch

  def feedback(state, archs, rewards):
    rewards = rewards.astype(jnp.float32)
    advantages, baseline = baseline_fns(state.baseline, state.num_updates,
                                        rewards)
    if normalize_advantages:
      advantages = ((advantages - jnp.mean(advantages))
                    / (jnp.std(advantages) + 1e-8))
    old_log_probs = old_log_probs_of(state.params, archs)
    key, k_epochs = jax.random.split(state.key)

    def sgd_step(carry, idx):
      params, opt_state = carry
      (loss, entropy), grads = jax.value_and_grad(loss_fn, has_aux=True)(
          params, archs[idx], old_log_probs[idx], advantages[idx])
      updates, opt_state = opt.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), (loss,
                                                                 entropy)

    def epoch(carry, k):
      perm = jax.random.permutation(k, batch_size)
      batches = perm.reshape(num_minibatches, minibatch_size)
      return jax.lax.scan(sgd_step, carry, batches)

    (params, opt_state), (step_losses, step_entropies) = jax.lax.scan(
        epoch, (state.params, state.opt_state),
        jax.random.split(k_epochs, num_epochs))
    return PPOState(params, opt_state, baseline, key, state.num_updates + 1,
                    jnp.mean(step_losses), jnp.mean(step_entropies))

  return base.guard_nonfinite(  # NaN / inf rewards never update it
      base.Algorithm(init, propose, feedback, batch_size, "ppo"))
