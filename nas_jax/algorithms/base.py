"""The ask/tell interface every search algorithm implements (DESIGN.md, 3).

An algorithm is a NamedTuple of pure functions over a NamedTuple state, in the
style of optax's ``GradientTransformation``::

    state = algo.init(key)
    state, archs = algo.propose(state, key)      # archs: int32[m, T]
    state = algo.feedback(state, archs, rewards)  # rewards: f32[m]

All three are jittable, so a search over a cheap evaluator runs under
``jit(lax.while_loop)`` and over many seeds with ``vmap``.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import optax


class Algorithm(NamedTuple):
  init: Callable[[jax.Array], Any]
  propose: Callable[[Any, jax.Array], tuple[Any, jax.Array]]
  feedback: Callable[[Any, jax.Array, jax.Array], Any]
  batch_size: int
  name: str


def controller_optimizer(learning_rate: float | optax.Schedule,
                         max_grad_norm: float | None = None,
                         b1: float = 0.9) -> optax.GradientTransformation:
  """Adam with optional global-norm clipping, as ENAS trains its controller.

  ``b1`` is exposed because REINFORCE with few architectures per update likes
  a shorter momentum (ENAS uses Adam's default; NB201's REINFORCE uses Adam).
  """
  parts = []
  if max_grad_norm is not None:
    parts.append(optax.clip_by_global_norm(max_grad_norm))
  parts.append(optax.adam(learning_rate, b1=b1))
  return optax.chain(*parts)


def check_positive(name: str, value, *, allow_zero: bool = False):
  """Raises a ValueError naming a config value that is out of range.

  A traced value (the tuning script vmaps over hyperparameters) is not
  checked: it has no concrete value at build time.
  """
  if isinstance(value, jax.core.Tracer):
    return
  ok = value >= 0 if allow_zero else value > 0
  if not ok:
    bound = ">= 0" if allow_zero else "> 0"
    raise ValueError(f"{name} must be {bound}, got {value!r}")


def check_decay(name: str, value):
  """``value`` must be in [0, 1) (EMA decays); traced values pass."""
  if isinstance(value, jax.core.Tracer):
    return
  if not 0.0 <= value < 1.0:
    raise ValueError(f"{name} must be in [0, 1), got {value}")


def state_scalars(state) -> dict[str, float]:
  """The scalars worth logging from an algorithm state (baseline, loss,
  entropy, updates), averaged if the state is batched over seeds."""
  out = {}
  for name in ("baseline", "loss", "entropy", "num_updates", "epsilon"):
    if hasattr(state, name):
      out[name] = float(jax.numpy.mean(getattr(state, name)))
  return out


NONFINITE_POLICIES = ("skip", "error")
# Rewards beyond this are treated like inf: Adam squares gradients scaled by
# the advantage, and a float32 square overflows above ~1.8e19.
MAX_ABS_REWARD = 1e15


def usable_rewards(rewards):
  """``bool[...]``: finite and within ``MAX_ABS_REWARD`` (jnp or numpy)."""
  xp = jax.numpy if isinstance(rewards, jax.Array) else __import__("numpy")
  return xp.isfinite(rewards) & (xp.abs(xp.where(
      xp.isfinite(rewards), rewards, 0)) <= MAX_ABS_REWARD)


def guard_nonfinite(algorithm: Algorithm) -> Algorithm:
  """Wraps ``algorithm.feedback`` so NaN / inf rewards never update it.

  A batch holding any reward that is not finite (or beyond
  ``MAX_ABS_REWARD``, e.g. 3e38, which overflows the optimiser's
  statistics) leaves the state unchanged; finite batches are updated
  exactly as before. Pure (no host callback, so a jitted, vmapped search
  pays one select); the host loops (``host_search.run``, the binary's
  runs) name the architectures in a warning or stop with an error, as the
  config's ``nonfinite_reward`` says. Wrapping twice is a no-op.
  """
  if getattr(algorithm.feedback, "_skips_nonfinite", False):
    return algorithm
  inner = algorithm.feedback

  def feedback(state, archs, rewards):
    rewards = jax.numpy.asarray(rewards)
    usable = usable_rewards(rewards)
    ok = jax.numpy.all(usable)
    new = inner(state, archs, jax.numpy.where(usable, rewards, 0).astype(
        rewards.dtype))
    return jax.tree.map(lambda n, o: jax.numpy.where(ok, n, o), new, state)

  feedback._skips_nonfinite = True
  return algorithm._replace(feedback=feedback)
