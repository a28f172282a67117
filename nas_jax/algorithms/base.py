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
