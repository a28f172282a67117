"""Per-device children for the ENAS shared-weight step (an option no public
ENAS implementation has; DESIGN.md, "Multi-device").

ENAS trains one sampled child per minibatch (Pham et al. 2018, Sec. 2.2,
M = 1). On a mesh of D devices, :func:`per_device_children_step` lets every
device train its *own* child on its shard of the batch: device ``d`` gets
row ``d`` of ``archs [D, T]``, computes the gradient of the shared weights
on its shard (BatchNorm statistics of its own child, on its own shard), and
the devices average gradients and BN running statistics with ``pmean``
before one identical optimizer update. D devices thus explore D children
per step, which is the Monte-Carlo estimate of Sec. 2.2 with M = D.

The plain data-parallel variant needs nothing here: the ordinary jitted step
with the batch split over the mesh's ``"data"`` axis and the state
replicated runs under GSPMD and equals the one-device step.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import optax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from nas_jax.evaluators.train_from_scratch import ChildState
from nas_jax.parallel.mesh import DATA_AXIS, data_size

# (params, batch_stats, arch, batch, key) -> (loss, (batch_stats, metrics))
LocalLoss = Callable[[Any, Any, jax.Array, Any, jax.Array],
                     tuple[jax.Array, tuple[Any, dict]]]


def per_device_children_step(local_loss: LocalLoss,
                             tx: optax.GradientTransformation,
                             mesh: Mesh) -> Callable:
  """``step(state, archs [D, T], batch, key) -> (state, metrics)``.

  Args:
    local_loss: the loss of one child on one (local) batch, with its
      updated BN statistics and scalar metrics.
    tx: the shared weights' optimizer.
    mesh: a mesh whose ``"data"`` axis has D devices; ``batch``'s leading
      axis is split over it, ``archs`` has one row per device.

  Returns:
    A function to ``jax.jit``: ``state`` (a ``ChildState``) and ``key`` are
    replicated; device ``d`` uses ``fold_in(key, d)``. The new state is
    replicated: the update from the device-mean gradient.
  """
  data_size(mesh)

  def per_device(state: ChildState, archs, batch, key):
    key = jax.random.fold_in(key, jax.lax.axis_index(DATA_AXIS))
    # Local (device-varying) params: the gradient is this device's own; the
    # pmean below is the replicas' average (see parallel.children).
    # The BN statistics too: a switch's untaken branches return them as
    # they came in, and all branches must agree on being device-varying.
    params, stats = jax.lax.pcast((state.params, state.batch_stats),
                                  DATA_AXIS, to="varying")
    (loss, (stats, metrics)), grads = jax.value_and_grad(
        local_loss, has_aux=True)(params, stats, archs[0], batch, key)
    grads, stats, metrics = jax.lax.pmean((grads, stats, metrics), DATA_AXIS)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return ChildState(params, stats, opt_state, state.step + 1), metrics

  return jax.shard_map(per_device, mesh=mesh,
                       in_specs=(P(), P(DATA_AXIS), P(DATA_AXIS), P()),
                       out_specs=(P(), P()))
