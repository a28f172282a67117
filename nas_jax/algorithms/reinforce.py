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
  baseline: jax.Array     # f32[]: the EMA (not bias-corrected if debiased)
  num_updates: jax.Array  # i32[]
  loss: jax.Array         # f32[]: of the last update, for metrics
  entropy: jax.Array      # f32[]: mean policy entropy of the last batch


BASELINE_UPDATES = ("after", "before")


def reinforce(controller: lstm_policy.Controller, *, batch_size: int = 1,
              learning_rate: float = 0.01, baseline_decay: float = 0.9,
              entropy_weight: float = 0.0, entropy_in_reward: bool = False,
              max_grad_norm: float | None = None,
              baseline_update: str = "after", debias_baseline: bool = False,
              optimizer: optax.GradientTransformation | None = None
              ) -> base.Algorithm:
  """REINFORCE over ``controller``'s policy; ``batch_size`` is the paper's m.

  Args:
    controller: an LSTM (``controllers.make_controller``) or factorised
      (``controllers.factorized``) policy.
    batch_size: architectures per update (NAS-RL's m).
    learning_rate: Adam's step size (ignored if ``optimizer`` is given).
      The defaults of ``learning_rate`` and ``baseline_decay`` (0.01, 0.9)
      are the validation-tuned NAS-Bench-201 settings
      (``benchmarks/tune_nasbench201.py``), for rewards in [0, 1] and small
      budgets: with them a user who changes nothing beats random search at
      100 evaluations (``benchmarks/small_budget.py``). The papers' own
      values (NAS-RL 6e-4, ENAS 3.5e-4, decay 0.95-0.99) are in their configs
      and ``algorithms.presets``.
    baseline_decay: the EMA baseline's decay.
    entropy_weight: weight of the entropy bonus (ENAS: 1e-4).
    entropy_in_reward: add ``entropy_weight * H`` (stop-gradient) to each
      reward, as the ENAS code does, instead of a differentiable loss term.
    max_grad_norm: global-norm gradient clipping, None for none.
    baseline_update: when the EMA baseline takes this batch's mean reward.
      ``"after"`` (default): the advantage is ``R - b`` with ``b`` the
      average of *earlier* rewards, then ``b`` is updated -- NAS-RL's wording
      (Zoph & Le 2017, Sec. 3.2, "a moving average of the previous
      architecture accuracies"). ``"before"``: ``b`` is updated first and the
      advantage uses the new value -- the ENAS code
      (``micro_controller.py``: ``baseline_update`` runs under the loss's
      ``control_dependencies``) and NAS-Bench-201's
      (``exps/algos/reinforce.py``: ``baseline.update(reward)`` before the
      loss).
    debias_baseline: ``False`` (default): the baseline starts at the first
      batch's mean reward (so the first update does not push every sampled
      decision up by the raw accuracy). ``True``: the baseline starts at 0
      and is read bias-corrected, ``b_n / (1 - decay^n)`` after ``n``
      updates, as NAS-Bench-201's ``ExponentialMovingAverage`` (numerator /
      denominator) does; with ``"after"`` the first batch, which has no
      earlier reward, uses its own mean.
    optimizer: overrides Adam.
  """
  base.check_positive("batch_size", batch_size)
  base.check_decay("baseline_decay", baseline_decay)
  base.check_positive("entropy_weight", entropy_weight, allow_zero=True)
  if baseline_update not in BASELINE_UPDATES:
    raise ValueError(f"baseline_update must be one of {BASELINE_UPDATES}, "
                     f"got {baseline_update!r}")
  opt = optimizer or base.controller_optimizer(learning_rate, max_grad_norm)
  baseline_fns = losses.make_baseline(baseline_decay, baseline_update,
                                      debias_baseline)

  def init(key):
    params = controller.init(key)
    return ReinforceState(params, opt.init(params), jnp.zeros(()),
                          jnp.zeros((), jnp.int32), jnp.zeros(()),
                          jnp.zeros(()))

  def propose(state, key):
    keys = jax.random.split(key, batch_size)
    rollout = jax.vmap(controller.sample, (None, 0))(state.params, keys)
    return state, rollout.arch

  def loss_fn(params, archs, rewards, baseline, num_updates):
    rescored = jax.vmap(controller.rescore, (None, 0))(params, archs)
    entropy = jnp.mean(rescored.entropy)
    if entropy_in_reward:
      rewards = rewards + entropy_weight * jax.lax.stop_gradient(
          rescored.entropy)
    advantages, baseline = baseline_fns(baseline, num_updates, rewards)
    pg = jax.vmap(losses.reinforce_loss)(rescored.log_prob, advantages)
    loss = jnp.mean(pg) + jnp.mean(rescored.penalty)
    if not entropy_in_reward:
      loss = loss - entropy_weight * entropy
    return loss, (entropy, baseline)

  def feedback(state, archs, rewards):
    rewards = rewards.astype(jnp.float32)
    (loss, (entropy, baseline)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params, archs, rewards, state.baseline,
                               state.num_updates)
    updates, opt_state = opt.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return ReinforceState(params, opt_state, baseline, state.num_updates + 1,
                          loss, entropy)

  return base.guard_nonfinite(  # NaN / inf rewards never update it
      base.Algorithm(init, propose, feedback, batch_size, "reinforce"))
