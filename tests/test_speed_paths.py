"""The fast paths of issue 14 compute what the plain code computes.

* ``SwitchOp``, plain and recomputing the chosen op's forward in the
  backward pass (``ops.REMAT_BRANCHES``, off by default): same gradients,
  for every op, as the op on its own;
* the between-cells reduction (``cell_net._reduce``) as a reshaped max: same
  values and gradients as ``nn.max_pool`` (inputs without ties), odd sizes
  included;
* ``ops.relu`` (its gradient mask taken from the output): same values and
  gradients as ``jax.nn.relu``, zeros included;
* 1x1 convolutions as matrix products: covered by ``tests/test_conv.py``
  (its cases include ``(1, 1)`` kernels, checked against autodiff).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_jax.children import cell_net
from nas_jax.children import ops
from nas_jax.spaces import seed003

C = 4


def _grads(sw_or_op, variables, x, index=None):
  """Gradients of a scalar of the train-mode output w.r.t. params and x."""
  w = jax.random.normal(jax.random.key(9), x.shape)

  def loss(params, x):
    args = (x, True) if index is None else (x, index, True)
    y, _ = sw_or_op.apply({**variables, "params": params}, *args,
                          mutable=["batch_stats"])
    return jnp.sum(jnp.sin(y) * w)

  return jax.jit(jax.grad(loss, argnums=(0, 1)))(variables["params"], x)


@pytest.mark.parametrize("remat", [False, True])
def test_switch_gradients_equal_the_chosen_ops(monkeypatch, remat):
  monkeypatch.setattr(ops, "REMAT_BRANCHES", remat)
  x = jax.random.normal(jax.random.key(1), (2, 6, 6, C))
  sw = ops.SwitchOp(seed003.OPS, C)
  variables = sw.init(jax.random.key(2), x, 0, False)
  for k, name in enumerate(seed003.OPS):
    g_params, g_x = _grads(sw, variables, x, jnp.int32(k))
    sub = {c: variables[c][f"ops_{k}"] for c in variables
           if f"ops_{k}" in variables[c]}
    op = ops.make_op(name, C)
    if "params" in sub:
      want_params, want_x = _grads(op, sub, x)
      jax.tree.map(lambda a, b: np.testing.assert_allclose(
          a, b, rtol=1e-5, atol=1e-5), g_params[f"ops_{k}"], want_params)
    else:  # a pool or the identity: no weights
      want_x = jax.grad(lambda x: jnp.sum(jnp.sin(op.apply({}, x, True)) * (
          jax.random.normal(jax.random.key(9), x.shape))))(x)
    np.testing.assert_allclose(g_x, want_x, rtol=1e-5, atol=1e-5)
    # The other candidates get exactly zero gradient.
    for other, tree in g_params.items():
      if other != f"ops_{k}":
        assert all(not np.any(leaf) for leaf in jax.tree.leaves(tree))


@pytest.mark.parametrize("shape", [(2, 8, 8, 3), (2, 7, 9, 3)])
def test_reshape_max_pool_matches_flax(shape):
  # A random normal input has no ties, so the gradients are unique.
  x = jax.random.normal(jax.random.key(3), shape)
  w = jax.random.normal(jax.random.key(4),
                        (shape[0], (shape[1] + 1) // 2, (shape[2] + 1) // 2,
                         shape[3]))
  ref = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
  np.testing.assert_array_equal(cell_net._reduce(x), ref(x))
  g = jax.grad(lambda x: jnp.sum(cell_net._reduce(x) * w))(x)
  g_ref = jax.grad(lambda x: jnp.sum(ref(x) * w))(x)
  np.testing.assert_allclose(g, g_ref, atol=1e-6)


def test_lstm_gradient_barrier_keeps_the_gradients(monkeypatch):
  """The controller's re-scoring gradient (unrolled, the REINFORCE update's
  path) is the same with and without ``lstm_policy._grad_barrier`` and the
  select-based pick of fed-back inputs (``lstm_policy._pick``)."""
  from nas_jax.controllers import lstm_policy
  from nas_jax.spaces import registry

  space = registry.get("enas_rnn", num_nodes=4)
  ctrl = lstm_policy.make_controller(space, hidden_size=8, unroll=True,
                                     tanh_constant=2.5)
  params = ctrl.init(jax.random.key(0))
  archs = jax.vmap(ctrl.sample, (None, 0))(
      params, jax.random.split(jax.random.key(1), 5)).arch
  weights = jnp.linspace(-1.0, 1.0, 5)

  def grad(barrier):
    monkeypatch.setattr(lstm_policy, "GRAD_BARRIER", barrier)
    monkeypatch.setattr(lstm_policy, "PICK_BY_SELECT", barrier)
    return jax.grad(lambda p: jnp.sum(
        weights * jax.vmap(ctrl.log_prob, (None, 0))(p, archs)))(params)

  with_barrier, without = grad(True), grad(False)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5,
                                                       atol=1e-6),
               with_barrier, without)
  x = jnp.arange(6.0).reshape(2, 3)
  np.testing.assert_array_equal(lstm_policy._grad_barrier(x), x)
  g = jax.grad(lambda x: jnp.sum(lstm_policy._grad_barrier(x) * x))(x)
  np.testing.assert_array_equal(g, 2 * x)


def test_relu_with_the_output_mask_equals_jax_relu():
  # Zeros included: both give gradient 0 at x == 0.
  x = jnp.array([[-2.0, -0.0, 0.0, 1e-30, 3.0], [5.0, -1e-30, 0.5, -7.0, 0.0]])
  g = jnp.arange(10.0).reshape(2, 5) + 1.0
  y, vjp = jax.vjp(ops.relu, x)
  y_ref, vjp_ref = jax.vjp(jax.nn.relu, x)
  np.testing.assert_array_equal(y, y_ref)
  np.testing.assert_array_equal(vjp(g)[0], vjp_ref(g)[0])
  np.testing.assert_array_equal(vjp(g)[0], [[0, 0, 0, 4, 5], [6, 0, 8, 0, 0]])
