"""A factorised policy: one independent softmax per decision, no LSTM.

The policy NAS-Bench-201's REINFORCE baseline uses (Dong & Yang, ICLR 2020,
Sec. 5; the authors' ``exps/algos/reinforce.py``, class ``Policy``): a
learnable logit table ``alpha[T, C]`` initialised ``1e-3 * N(0, 1)``, and
``P(arch) = prod_t softmax(alpha_t)[a_t]``. Decisions do not condition on
each other, so an architecture's log-probability is one gather and a sum.

It works for every space (each decision, whatever its kind, is a categorical
over its ``num_choices``; pointer and skip decisions become per-position
categoricals) and returns the same :class:`~nas_jax.controllers.lstm_policy.
Controller` as ``lstm_policy.make_controller``, so ``algorithms.reinforce``
and ``algorithms.ppo`` take either.

Sampling and re-scoring call the same :meth:`FactorizedPolicy._score`, so the
log-probability reported at sampling is bit-identical to ``rescore``'s.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nas_jax.controllers.lstm_policy import Controller, Rollout
from nas_jax.spaces import base

_NEG_INF = -1e9  # finite so that 0 * masked log-prob stays 0 in the entropy


class FactorizedPolicy(nn.Module):
  """Independent per-decision softmax policy (Flax Linen).

  Attributes:
    space: the search space whose decisions the policy emits.
    init_scale: std of the normal initialiser of the logits (NB201: 1e-3).
    temperature: logits are divided by it before the softmax (NB201: 1).
  """

  space: base.SearchSpace
  init_scale: float = 1e-3
  temperature: float = 1.0

  def setup(self):
    nc = np.asarray(self.space.num_choices)
    self._width = max(int(nc.max()), 2)
    self._valid = np.arange(self._width)[None, :] < nc[:, None]  # [T, C]
    self.logits = self.param(
        "logits", nn.initializers.normal(self.init_scale),
        (len(nc), self._width))

  def _log_softmax(self):
    logits = jnp.where(self._valid, self.logits / self.temperature, _NEG_INF)
    return jax.nn.log_softmax(logits, axis=-1)  # [T, C]

  def _score(self, logp_all, arch):
    """``Rollout`` of ``arch`` under the per-decision log-softmax table."""
    logp = jnp.take_along_axis(logp_all, arch[:, None], axis=-1)[:, 0]  # [T]
    ent = -jnp.sum(jnp.exp(logp_all) * logp_all, axis=-1)  # [T]
    return Rollout(arch, jnp.sum(logp), jnp.sum(ent), log_probs=logp)

  def sample(self, key: jax.Array) -> Rollout:
    """Gumbel-max draw of every decision at once, then :meth:`_score`."""
    logp_all = self._log_softmax()
    noise = jax.random.gumbel(key, logp_all.shape)
    arch = jnp.argmax(jnp.where(self._valid, logp_all + noise, _NEG_INF),
                      axis=-1).astype(jnp.int32)
    return self._score(logp_all, arch)

  def log_prob(self, arch: jax.Array) -> Rollout:
    return self._score(self._log_softmax(), arch.astype(jnp.int32))

  def __call__(self, key: jax.Array) -> Rollout:
    return self.sample(key)

  def create_params(self) -> jax.Array:
    """Runs ``setup`` only (creates the logit table, traces no rollout)."""
    return self.logits


def policy_mode(space: base.SearchSpace, params) -> jax.Array:
  """``int32[T]``: each decision's most probable choice under ``params``.

  NAS-Bench-201's REINFORCE returns this cell, not the best one it
  evaluated (``exps/algos/reinforce.py``: ``best_arch = policy.genotype()``,
  the per-edge argmax of the learned logits).
  """
  nc = np.asarray(space.num_choices)
  logits = params["logits"]  # [T, C]
  valid = np.arange(logits.shape[-1])[None, :] < nc[:, None]
  return jnp.argmax(jnp.where(valid, logits, _NEG_INF),
                    axis=-1).astype(jnp.int32)


def make_factorized_controller(space: base.SearchSpace, *,
                               init_scale: float = 1e-3,
                               temperature: float = 1.0) -> Controller:
  """The factorised policy's pure functions (see the module docstring)."""
  if not init_scale >= 0:
    raise ValueError(f"controller.init_scale must be >= 0, got {init_scale}")
  if not temperature > 0:
    raise ValueError(
        f"controller.temperature must be > 0, got {temperature}")
  module = FactorizedPolicy(space=space, init_scale=init_scale,
                            temperature=temperature)

  def init(key: jax.Array):
    return module.init(key, method=FactorizedPolicy.create_params)["params"]

  def sample(params, key: jax.Array) -> Rollout:
    return module.apply({"params": params}, key, method=FactorizedPolicy.sample)

  def rescore(params, arch: jax.Array) -> Rollout:
    return module.apply({"params": params}, arch,
                        method=FactorizedPolicy.log_prob)

  def log_prob(params, arch: jax.Array) -> jax.Array:
    return rescore(params, arch).log_prob

  return Controller(init, sample, log_prob, rescore, module)
