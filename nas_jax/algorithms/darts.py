"""DARTS's bilevel optimisation (Liu et al., "DARTS: Differentiable
Architecture Search", ICLR 2019, Sec. 2.3, Alg. 1), as small pure functions
with a NamedTuple state (the optax pattern).

The problem (Eq. 3-4)::

    min_alpha L_val(w*(alpha), alpha)  s.t.  w*(alpha) = argmin_w L_train(w, alpha)

is approximated by alternating one architecture step on a validation batch
and one weight step on a training batch (Alg. 1). The architecture gradient
is, with ``xi`` the virtual step's learning rate (Eq. 6-8):

* **first order** (``order=1``, ``xi = 0``): ``grad_alpha L_val(w, alpha)``;
* **second order** (``order=2``): the gradient of the one-step unrolled
  objective ``L_val(w', alpha)``, ``w' = w - xi grad_w L_train(w, alpha)``::

      grad_alpha L_val(w', alpha)
        - xi * [grad_alpha L_train(w+, alpha) - grad_alpha L_train(w-, alpha)]
               / (2 eps)

  with ``w+- = w +- eps grad_w' L_val(w', alpha)`` and
  ``eps = 0.01 / ||grad_w' L_val(w', alpha)||`` (Eq. 8): a central finite
  difference for the Hessian-vector product, so no second derivative is
  ever formed. For a ``L_train`` quadratic in ``w`` it is exact.

The virtual step is plain SGD (Eq. 6); the authors' code adds the weight
optimiser's momentum and weight decay to it, which we do not. ``xi`` is a
schedule of the step, so it can follow the weights' learning rate as the
paper sets it ("xi equal to the learning rate for w").

A model is a ``loss_fn(params, model_state, alpha, batch) -> (loss,
new_model_state)``; ``model_state`` carries what is not trained by gradient
(BN running statistics). Only the real weight step keeps its
``new_model_state``; the architecture step's evaluations (virtual steps,
``w+-``) leave it unchanged.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

LossFn = Callable[[Any, Any, Any, Any], tuple[jax.Array, Any]]
ORDERS = (1, 2)
EPS_SCALE = 0.01  # Eq. 8: eps = 0.01 / ||grad||


class DartsState(NamedTuple):
  params: Any        # the op weights w
  model_state: Any   # e.g. BN statistics (not trained by gradient)
  alpha: Any         # the architecture weights
  w_opt_state: Any
  a_opt_state: Any
  step: jax.Array    # int32[]


class Darts(NamedTuple):
  """``init(params, model_state, alpha) -> state``;
  ``step(state, train_batch, val_batch) -> (state, metrics)``;
  ``arch_grad(state, train_batch, val_batch) -> grad_alpha`` (for tests)."""

  init: Callable[..., DartsState]
  step: Callable[..., tuple[DartsState, dict]]
  arch_grad: Callable[..., Any]
  order: int


def _tree_axpy(a, x, y):
  """``a * x + y`` leaf by leaf."""
  return jax.tree.map(lambda u, v: a * u + v, x, y)


def first_order_arch_grad(loss_fn: LossFn, params, model_state, alpha,
                          val_batch) -> tuple[Any, jax.Array]:
  """``(grad_alpha L_val(w, alpha), L_val)``: DARTS's ``xi = 0`` (Eq. 6)."""
  def val_loss(a):
    return loss_fn(params, model_state, a, val_batch)[0]
  loss, grad = jax.value_and_grad(val_loss)(alpha)
  return grad, loss


def second_order_arch_grad(loss_fn: LossFn, params, model_state, alpha,
                           train_batch, val_batch, xi
                           ) -> tuple[Any, jax.Array]:
  """``(approximate grad_alpha L_val(w', alpha), L_val(w', alpha))`` with the
  finite-difference Hessian-vector product of Eq. 7-8 (module doc)."""
  def train_loss(w, a):
    return loss_fn(w, model_state, a, train_batch)[0]

  def val_loss(w, a):
    return loss_fn(w, model_state, a, val_batch)[0]

  g_w = jax.grad(train_loss)(params, alpha)
  w_virtual = _tree_axpy(-xi, g_w, params)  # Eq. 6: one SGD step
  loss, (dw, dalpha) = jax.value_and_grad(val_loss, argnums=(0, 1))(
      w_virtual, alpha)
  # Eq. 8; the floor keeps eps finite when the gradient vanishes (then the
  # correction term is 0 anyway: w+ = w-).
  eps = EPS_SCALE / jnp.maximum(optax.tree.norm(dw), 1e-12)
  g_plus = jax.grad(train_loss, argnums=1)(_tree_axpy(eps, dw, params), alpha)
  g_minus = jax.grad(train_loss, argnums=1)(_tree_axpy(-eps, dw, params),
                                            alpha)
  hvp = jax.tree.map(lambda p, m: (p - m) / (2.0 * eps), g_plus, g_minus)
  return _tree_axpy(-xi, hvp, dalpha), loss


def darts(loss_fn: LossFn, w_optimizer: optax.GradientTransformation,
          a_optimizer: optax.GradientTransformation, *, order: int = 1,
          xi: float | optax.Schedule = 0.0) -> Darts:
  """The DARTS optimiser (Alg. 1) for the model ``loss_fn``.

  Args:
    loss_fn: ``(params, model_state, alpha, batch) -> (loss,
      new_model_state)``.
    w_optimizer: updates the weights from ``grad_w L_train`` (the paper: SGD
      with momentum, cosine schedule, weight decay).
    a_optimizer: updates alpha from the architecture gradient (the paper:
      Adam, learning rate 3e-4, betas (0.5, 0.999), weight decay 1e-3).
    order: 1 (first order, ``xi = 0``) or 2 (second order, Eq. 7-8).
    xi: the virtual step's learning rate, a number or a schedule of the
      step (``order=2`` only).

  Returns:
    A :class:`Darts`; ``step`` first updates alpha on ``val_batch`` at the
    current weights, then the weights on ``train_batch`` at the new alpha.

  Raises:
    ValueError: ``order`` not in {1, 2}, or a negative ``xi``.
  """
  if order not in ORDERS or isinstance(order, bool):
    raise ValueError(f"order must be 1 (first order) or 2 (second order), "
                     f"got {order!r}")
  if not callable(xi) and not xi >= 0:
    raise ValueError(f"xi (the virtual step's learning rate) must be >= 0, "
                     f"got {xi!r}")
  xi_fn = xi if callable(xi) else (lambda step: xi)

  def init(params, model_state, alpha) -> DartsState:
    return DartsState(params, model_state, alpha, w_optimizer.init(params),
                      a_optimizer.init(alpha), jnp.zeros((), jnp.int32))

  def arch_grad(state: DartsState, train_batch, val_batch):
    if order == 1:
      return first_order_arch_grad(loss_fn, state.params, state.model_state,
                                   state.alpha, val_batch)
    return second_order_arch_grad(loss_fn, state.params, state.model_state,
                                  state.alpha, train_batch, val_batch,
                                  xi_fn(state.step))

  def step(state: DartsState, train_batch, val_batch
           ) -> tuple[DartsState, dict]:
    g_alpha, val_loss = arch_grad(state, train_batch, val_batch)
    a_updates, a_opt_state = a_optimizer.update(g_alpha, state.a_opt_state,
                                                state.alpha)
    alpha = optax.apply_updates(state.alpha, a_updates)
    (train_loss, model_state), g_w = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params, state.model_state, alpha,
                               train_batch)
    w_updates, w_opt_state = w_optimizer.update(g_w, state.w_opt_state,
                                                state.params)
    params = optax.apply_updates(state.params, w_updates)
    metrics = {"train_loss": train_loss, "val_loss": val_loss,
               "arch_grad_norm": optax.tree.norm(g_alpha),
               "weight_grad_norm": optax.tree.norm(g_w)}
    return DartsState(params, model_state, alpha, w_opt_state, a_opt_state,
                      state.step + 1), metrics

  return Darts(init, step, arch_grad, order)
