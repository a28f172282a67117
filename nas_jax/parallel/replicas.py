"""Synchronous controller replicas for the search loop (Zoph & Le 2017,
Sec. 3.3; Zoph et al. 2018, Sec. 3; DESIGN.md, "Multi-device").

NAS-RL ran ``K`` controller replicas, each sampling ``m`` children and
sending gradients to parameter servers that applied them asynchronously.
Here the ``K`` replicas are the devices of the mesh's ``"data"`` axis and
they are synchronous, with no parameter server:

* **propose**: device ``d`` samples its ``m`` children from
  ``fold_in(key, d)`` (``parallel.children.sample_per_device``), so a round
  is ``m * K`` children, the same for any split of the devices into
  processes;
* **REINFORCE feedback**: each device computes the gradient on its own ``m``
  children; gradients and the batch-mean reward (for the baseline) are
  averaged with ``lax.pmean`` and every replica applies the same Adam update
  (``parallel.children.data_parallel_reinforce_update``);
* **PPO feedback** (NASNet, Zoph et al. 2018, Sec. 3): the replicated update
  on the gathered batch. PPO's epochs shuffle the *whole* round into
  minibatches, so splitting it by device would change which children share a
  minibatch; running the update on all ``m * K`` children on every device
  gives each replica exactly the update one controller computes on the
  round, and the gradient of each minibatch's mean loss is, by linearity, the
  mean of the replicas' gradients on equal parts of it, i.e. what a
  synchronous ``pmean`` computes, without its cross-device reduction.
  Random search and evolution have no controller gradients; they propose and
  update the same way (replicated).

The functions take and return process-local states (each process holds the
same copy, which it checkpoints), and run their work on the global mesh, so
they are host functions: ``host_search.run(..., jit=False)``.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from nas_jax.algorithms import base
from nas_jax.controllers import lstm_policy
from nas_jax.parallel import children
from nas_jax.parallel.many_children import check_divisible, global_array
from nas_jax.parallel.mesh import data_size

# Options of ``reinforce(...)`` that the data-parallel update implements
# with their defaults only.
_REINFORCE_DEFAULTS = {"baseline_update": "after", "debias_baseline": False,
                       "entropy_in_reward": False}


def _is_key(x) -> bool:
  return isinstance(x, jax.Array) and jax.dtypes.issubdtype(
      x.dtype, jax.dtypes.prng_key)


def on_mesh(fn: Callable, mesh: Mesh) -> Callable:
  """``fn`` (jittable) as a host function that runs on every device of
  ``mesh``, replicated: process-local arguments in, process-local results
  out (typed PRNG keys included), every process calling it alike."""
  rep = NamedSharding(mesh, P())
  out_info = {}

  def body(flat_args, key_impls, treedef):
    flat_args = [jax.random.wrap_key_data(x, impl=i) if i is not None else x
                 for x, i in zip(flat_args, key_impls)]
    out = fn(*jax.tree.unflatten(treedef, flat_args))
    leaves, out_treedef = jax.tree.flatten(out)
    out_info["treedef"] = out_treedef
    out_info["impls"] = [jax.random.key_impl(x) if _is_key(x) else None
                         for x in leaves]
    return [jax.random.key_data(x) if _is_key(x) else x for x in leaves]

  compiled = jax.jit(body, static_argnums=(1, 2), out_shardings=rep)

  def host(*args):
    leaves, treedef = jax.tree.flatten(args)
    impls = tuple(jax.random.key_impl(x) if _is_key(x) else None
                  for x in leaves)
    data = [jax.random.key_data(x) if _is_key(x) else x for x in leaves]
    out = compiled([global_array(x, rep) for x in data], impls, treedef)
    local = [jax.numpy.asarray(np.asarray(x.addressable_data(0)))
             for x in out]
    local = [jax.random.wrap_key_data(x, impl=i) if i is not None else x
             for x, i in zip(local, out_info["impls"])]
    return jax.tree.unflatten(out_info["treedef"], local)

  return host


def synchronous_replicas(algorithm: base.Algorithm, mesh: Mesh, *,
                         controller: lstm_policy.Controller | None = None,
                         reinforce: dict[str, Any] | None = None
                         ) -> base.Algorithm:
  """``algorithm`` with its work spread over the mesh's ``K`` devices.

  Args:
    algorithm: the single-controller algorithm (``tabular_run.
      build_algorithm``); its ``batch_size`` is ``m * K``.
    mesh: a mesh with a ``"data"`` axis (may span processes).
    controller: the policy of a REINFORCE / PPO algorithm: then each device
      samples its own ``m`` children. None (random search, evolution): the
      algorithm's own ``propose``, replicated.
    reinforce: the arguments ``reinforce(...)`` was built with: then the
      feedback is the synchronous data-parallel REINFORCE update. None: the
      algorithm's ``feedback`` on the gathered round, replicated (PPO; see
      the module docstring for why this equals the synchronous mean).

  Returns:
    An ``Algorithm`` of host functions (``host_search.run(..., jit=False)``)
    with the same state type as ``algorithm``.

  Raises:
    ValueError: the batch is not a multiple of ``K``, or a REINFORCE option
      the data-parallel update does not implement is set.
  """
  k = data_size(mesh)
  check_divisible(algorithm.batch_size, k,
                  f"{algorithm.name}.batch_size (children per round)")
  m = algorithm.batch_size // k
  if controller is not None:
    sample = children.sample_per_device(controller, mesh, m)
    propose = on_mesh(lambda state, key: (state, sample(state.params,
                                                        key).arch), mesh)
  else:
    propose = on_mesh(algorithm.propose, mesh)
  if reinforce is not None:
    for name, default in _REINFORCE_DEFAULTS.items():
      if reinforce.get(name, default) != default:
        raise ValueError(
            f"reinforce.{name}={reinforce[name]!r} is not supported by the "
            f"synchronous controller replicas; use {default!r} or turn "
            f"per-device children off")
    if controller is None:
      raise ValueError("the REINFORCE replicas need the controller")
    optimizer = base.controller_optimizer(
        reinforce.get("learning_rate", 0.01),
        reinforce.get("max_grad_norm"))
    update = children.data_parallel_reinforce_update(
        controller, optimizer, mesh,
        baseline_decay=reinforce.get("baseline_decay", 0.9),
        entropy_weight=reinforce.get("entropy_weight", 0.0))
    feedback = on_mesh(update, mesh)
  else:
    feedback = on_mesh(algorithm.feedback, mesh)
  return base.Algorithm(jax.jit(algorithm.init), propose, feedback,
                        algorithm.batch_size,
                        f"{algorithm.name} x{k} replicas")
