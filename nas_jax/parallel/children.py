"""Per-device controller work with ``jax.shard_map`` (DESIGN.md, Multi-device).

NAS-RL (Zoph & Le, ICLR 2017, Sec. 3.3, "Accelerate training with parallelism
and asynchronous updates") runs a parameter server of controller replicas,
each sampling many child networks that train in parallel, and applies the
replicas' gradients asynchronously. Here the same work runs on a device mesh
as synchronous replicas:

* :func:`sample_per_device`: every device of the ``"data"`` axis folds its
  index into the key and samples its own children with ``vmap``, so a mesh
  of ``D`` devices proposes ``D * num_per_device`` children per call;
* :func:`reinforce_grads_synchronous` / :func:`data_parallel_reinforce_update`:
  every device computes the REINFORCE gradient on its shard of the batch and
  the replicas average gradients, and the reward baseline, with
  ``lax.pmean`` (no home-made parameter server, DESIGN.md). With equal shards
  this equals the single-device update over the whole batch.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from nas_jax.algorithms import losses
from nas_jax.algorithms.reinforce import ReinforceState
from nas_jax.controllers import lstm_policy
from nas_jax.parallel.mesh import DATA_AXIS, data_size


def sample_per_device(controller: lstm_policy.Controller, mesh: Mesh,
                      num_per_device: int
                      ) -> Callable[[object, jax.Array], lstm_policy.Rollout]:
  """Builds a jitted sampler that draws ``num_per_device`` children on every
  device of the mesh's ``"data"`` axis (Zoph & Le 2017, Sec. 3.3: "the
  controller samples m architectures that can be trained in parallel").

  Device ``d`` samples with ``split(fold_in(key, d), num_per_device)``, so the
  result is a function of ``key`` only and devices never share a key
  (DESIGN.md, "Randomness").

  Args:
    controller: the policy's pure functions.
    mesh: a mesh with a ``"data"`` axis (other axes get replicated work).
    num_per_device: children per device.

  Returns:
    ``(params, key) -> Rollout`` with ``arch [D * num_per_device, T]`` and
    ``log_prob``, ``entropy [D * num_per_device]``, sharded over ``"data"``;
    rows ``d * num_per_device ... (d + 1) * num_per_device - 1`` come from
    device ``d``.
  """
  if num_per_device < 1:
    raise ValueError(f"num_per_device must be >= 1, got {num_per_device}")
  data_size(mesh)  # Raises a clear error for a mesh without a "data" axis.

  def per_device(params, key):
    key = jax.random.fold_in(key, jax.lax.axis_index(DATA_AXIS))
    # Device-varying params, so a scanned rollout's carry (from the params)
    # and its per-step outputs (from the device's key) have one type.
    params = jax.lax.pcast(params, DATA_AXIS, to="varying")
    keys = jax.random.split(key, num_per_device)
    return jax.vmap(controller.sample, (None, 0))(params, keys)

  # Params and key are replicated in; each device's rollouts are its block of
  # the output, concatenated along the batch axis.
  return jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P()),
                               out_specs=P(DATA_AXIS)))


def _local_loss(controller: lstm_policy.Controller, entropy_weight: float):
  """The REINFORCE loss of ``reinforce.reinforce`` on one batch (shard)."""

  def loss_fn(params, archs, advantages):
    rescored = jax.vmap(controller.rescore, (None, 0))(params, archs)
    pg = jax.vmap(losses.reinforce_loss)(rescored.log_prob, advantages)
    entropy = jnp.mean(rescored.entropy)
    return jnp.mean(pg) - entropy_weight * entropy, entropy

  return loss_fn


def _mean_grads(loss_fn, params, archs, advantages):
  """Gradient of ``loss_fn`` on this device's shard, averaged over devices.

  Inside ``shard_map`` (with its default ``check_vma=True``) the gradient with
  respect to a replicated (device-invariant) input is already *summed* over
  devices, since JAX transposes the implicit broadcast into a ``psum``, and a
  later ``pmean`` of that invariant value is the identity: the result would
  be ``D`` times the mean. Casting the params to device-varying first makes
  the gradient the local one, and the explicit ``pmean`` is the replicas'
  synchronous average (the parameter server's job in NAS-RL).
  """
  local = jax.lax.pcast(params, DATA_AXIS, to="varying")
  (loss, entropy), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      local, archs, advantages)
  return jax.lax.pmean((grads, loss, entropy), DATA_AXIS)


def reinforce_grads_synchronous(controller: lstm_policy.Controller,
                                mesh: Mesh, *, entropy_weight: float = 0.0
                                ) -> Callable:
  """Builds the data-parallel REINFORCE gradient (Zoph & Le 2017, Eq. 3 and
  Sec. 3.3, as synchronous replicas; DESIGN.md, "Multi-device").

  Args:
    controller: the policy's pure functions.
    mesh: a mesh with a ``"data"`` axis; the batch must be a multiple of its
      size.
    entropy_weight: weight of the entropy bonus, as in ``reinforce``.

  Returns:
    Jitted ``(params, archs [m, T], advantages [m]) -> grads``: the gradient
    of the mean loss over all ``m`` architectures, replicated; equal (up to
    float rounding) to ``jax.grad`` of the same loss on one device.
  """
  data_size(mesh)
  loss_fn = _local_loss(controller, entropy_weight)

  def per_device(params, archs, advantages):
    return _mean_grads(loss_fn, params, archs, advantages)[0]

  return jax.jit(jax.shard_map(
      per_device, mesh=mesh, in_specs=(P(), P(DATA_AXIS), P(DATA_AXIS)),
      out_specs=P()))


def data_parallel_reinforce_update(
    controller: lstm_policy.Controller,
    optimizer: optax.GradientTransformation, mesh: Mesh, *,
    baseline_decay: float = 0.95, entropy_weight: float = 0.0) -> Callable:
  """Builds ``reinforce``'s ``feedback`` as one synchronous data-parallel step.

  Each device scores its shard of (archs, rewards); the batch-mean reward (for
  the first update's baseline and the EMA) and the gradients are averaged
  across devices with ``lax.pmean``, then every replica applies the same
  optimizer update, so the state stays replicated and identical to what
  ``nas_jax.algorithms.reinforce.reinforce(...).feedback`` computes on one
  device over the whole batch (Zoph & Le 2017, Sec. 3.2-3.3).

  Args:
    controller: the policy's pure functions.
    optimizer: the controller optimizer (the one ``state.opt_state`` is of).
    mesh: a mesh with a ``"data"`` axis; the batch must be a multiple of its
      size.
    baseline_decay: EMA decay of the reward baseline.
    entropy_weight: weight of the entropy bonus.

  Returns:
    Jitted ``(state: ReinforceState, archs [m, T], rewards [m]) ->
    ReinforceState``, replicated.
  """
  if not 0.0 <= baseline_decay < 1.0:
    raise ValueError(f"baseline_decay must be in [0, 1), got {baseline_decay}")
  data_size(mesh)
  loss_fn = _local_loss(controller, entropy_weight)

  def per_device(state: ReinforceState, archs, rewards):
    rewards = rewards.astype(jnp.float32)
    mean_reward = jax.lax.pmean(jnp.mean(rewards), DATA_AXIS)
    baseline = jnp.where(state.num_updates == 0, mean_reward, state.baseline)
    grads, loss, entropy = _mean_grads(loss_fn, state.params, archs,
                                       rewards - baseline)
    updates, opt_state = optimizer.update(grads, state.opt_state,
                                          state.params)
    params = optax.apply_updates(state.params, updates)
    baseline = losses.ema(baseline, mean_reward, baseline_decay)
    return ReinforceState(params, opt_state, baseline, state.num_updates + 1,
                          loss, entropy)

  return jax.jit(jax.shard_map(
      per_device, mesh=mesh, in_specs=(P(), P(DATA_AXIS), P(DATA_AXIS)),
      out_specs=P()))
