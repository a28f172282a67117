"""Many children trained at once: one child per device (Zoph & Le 2017,
Sec. 3.3; Zoph et al. 2018, Sec. 3: "the controller samples m architectures
that can be trained in parallel"; DESIGN.md, "Multi-device").

NAS-RL and NASNet trained 12,800-20,000 children on 450-800 GPUs, each GPU
training its own child. Here the same idea is one SPMD program: a
``jax.shard_map`` over the mesh's ``"data"`` axis in which device ``d``
initialises, trains and evaluates child ``d`` with the same compiled step
(the network takes the architecture as an input, ``children.cell_net``), its
parameters and optimizer state stacked on a leading device axis. The mesh may
span several processes (``mesh.initialize_distributed``): every process feeds
its local devices and all of them get every reward back.

Each child sees exactly what ``ChildTrainer.train_and_evaluate`` would feed
it: its initial weights from ``(seed, arch)``, its own augmentation keys, the
data order ``(seed, epoch)``, the same validation set. So a child's reward does
not depend on which device trained it, with which neighbours, or whether it
was trained alone (tested bit for bit, ``tests/test_many_children.py``).
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from nas_jax.children import cell_net
from nas_jax.data import pipeline
from nas_jax.evaluators import train_from_scratch
from nas_jax.evaluators.tabular import Evaluation
from nas_jax.parallel.mesh import DATA_AXIS, data_size


def check_divisible(children_per_round: int, num_devices: int,
                    field: str = "children per round") -> None:
  """A controller round must fill every device equally (m per device).

  Raises:
    ValueError: naming both numbers and the fix.
  """
  if children_per_round % num_devices:
    lower = children_per_round // num_devices * num_devices
    examples = " or ".join(str(v) for v in (lower, lower + num_devices) if v)
    raise ValueError(
        f"{field} = {children_per_round} is not divisible by the "
        f"{num_devices} devices that each train one child at a time; use a "
        f"multiple of {num_devices} (e.g. {examples}), or run on a device "
        f"count that divides it (XLA_FLAGS="
        f"--xla_force_host_platform_device_count=N on CPU), or set "
        f"--config.per_device_children=False")


def global_array(x: Any, sharding: NamedSharding) -> jax.Array:
  """A global array from a host value every process holds in full.

  Each process builds only its addressable shards, so this works on a mesh
  that spans processes (``jax.device_put`` of host data does not).
  """
  x = np.asarray(x)
  return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def _stack(tree):
  return jax.tree.map(lambda x: x[None], tree)


def _unstack(tree):
  return jax.tree.map(lambda x: x[0], tree)


class PerDeviceChildTrainer:
  """Trains and evaluates one child per device of ``mesh``'s ``"data"`` axis.

  Args:
    trainer: a ``ChildTrainer`` without a mesh of its own; its network,
      optimizer, data, augmentation and seed define every child.
    mesh: a mesh with a ``"data"`` axis of ``K`` devices (may span
      processes).

  ``train_and_evaluate(archs int32[K, T])`` returns ``K`` ``ChildResult``s
  equal to ``trainer.train_and_evaluate`` on each row.
  """

  def __init__(self, trainer: train_from_scratch.ChildTrainer, mesh: Mesh):
    if trainer.mesh is not None:
      raise ValueError(
          "per-device children need a ChildTrainer without a mesh: each "
          "device trains a whole child, so a child's batches are not split "
          "over devices (turn data_parallel off)")
    self.trainer, self.mesh = trainer, mesh
    self.num_devices = data_size(mesh)
    self.space = trainer.space
    self._per_device = NamedSharding(mesh, P(DATA_AXIS))
    self._replicated = NamedSharding(mesh, P())
    t = trainer
    per_dev, rep = P(DATA_AXIS), P()

    def shard(fn, in_specs, out_specs):
      return jax.shard_map(fn, mesh=mesh, in_specs=in_specs,
                           out_specs=out_specs)

    def init(key_data, archs):
      k_init, k_aug = jax.random.split(jax.random.wrap_key_data(key_data[0]))
      state = t._init_impl(k_init, archs[0])  # pylint: disable=protected-access
      return _stack(state), jax.random.key_data(k_aug)[None]

    def step(state, loss_sum, aug_data, archs, images, labels, step_index):
      # The key ChildTrainer.train uses for this step of this child.
      key = jax.random.fold_in(jax.random.wrap_key_data(aug_data[0]),
                               step_index)
      # The batch is each device's own copy (varying), as the child's
      # gradient flows through it (a custom VJP insists on matching types).
      images, labels = jax.lax.pcast((images, labels), DATA_AXIS,
                                     to="varying")
      state, loss = t._train_step_impl(  # pylint: disable=protected-access
          _unstack(state), archs[0], images, labels, key)
      return _stack(state), loss_sum + loss[None]

    def evaluate(state, correct, archs, images, labels):
      state = _unstack(state)
      n = t._eval_step_impl(  # pylint: disable=protected-access
          state.params, state.batch_stats, archs[0], images, labels)
      return correct + n[None].astype(jnp.int32)

    # Arch and keys per device; images, labels and the step replicated: every
    # child reads the batch ChildTrainer would give it (order (seed, epoch)).
    self._init = jax.jit(shard(init, (per_dev, per_dev), (per_dev, per_dev)))
    self._step = jax.jit(
        shard(step, (per_dev, per_dev, per_dev, per_dev, rep, rep, rep),
              (per_dev, per_dev)), donate_argnums=(0, 1))
    self._eval = jax.jit(
        shard(evaluate, (per_dev, per_dev, per_dev, rep, rep), per_dev),
        donate_argnums=1)
    # Every process gets every child's result (an all-gather under GSPMD).
    self._gather = jax.jit(lambda *a: a, out_shardings=self._replicated)
    self._abstract_params = None

  def _num_params(self, arch: np.ndarray) -> int:
    """The child's own parameter count, from the (shared) parameter shapes."""
    if self._abstract_params is None:
      shapes = jax.eval_shape(
          self.trainer._init_impl,  # pylint: disable=protected-access
          jax.random.key(0), jnp.asarray(arch)).params
      # Host zeros of the right shapes: some counts slice the kernels.
      self._abstract_params = jax.tree.map(
          lambda s: np.zeros(s.shape, s.dtype), shapes)
    return cell_net.child_param_count(self.space, self._abstract_params, arch)

  def train_and_evaluate(self, archs: Sequence[np.ndarray]
                         ) -> list[train_from_scratch.ChildResult]:
    """Trains ``K`` children at once; the results in the order of ``archs``.

    Every process of the mesh must call this with the same ``archs``.
    """
    t, ds = self.trainer, self.trainer.dataset
    archs = np.stack([self.space.validate(a) for a in archs]).astype(np.int32)
    if len(archs) != self.num_devices:
      raise ValueError(f"train_and_evaluate takes one child per device: "
                       f"{self.num_devices} architectures, got {len(archs)}")
    t0 = time.perf_counter()
    key_data = np.stack([np.asarray(jax.random.key_data(t.child_key(a)))
                         for a in archs])
    archs_g = global_array(archs, self._per_device)
    state, aug = self._init(global_array(key_data, self._per_device), archs_g)
    put = lambda x: global_array(x, self._replicated)
    zeros = global_array(np.zeros(self.num_devices, np.float32),
                         self._per_device)
    for epoch in range(t.epochs):
      loss_sum = zeros  # The reported loss is the last epoch's mean.
      for i, (x, y) in enumerate(pipeline.batches(
          ds.train_images, ds.train_labels, t.batch_size, seed=t.seed,
          epoch=epoch)):
        state, loss_sum = self._step(
            state, loss_sum, aug, archs_g, put(ds.normalize(x)), put(y),
            put(np.int32(epoch * t.steps_per_epoch + i)))
    correct = global_array(np.zeros(self.num_devices, np.int32),
                           self._per_device)
    for x, y in pipeline.batches(ds.val_images, ds.val_labels,
                                 t.eval_batch_size, seed=0, epoch=0,
                                 shuffle=False, drop_remainder=False):
      correct = self._eval(state, correct, archs_g, put(ds.normalize(x)),
                           put(np.asarray(y, np.int32)))
    correct, loss_sum = (np.asarray(v) for v in self._gather(correct,
                                                             loss_sum))
    seconds = time.perf_counter() - t0
    n_val = len(ds.val_labels)
    return [train_from_scratch.ChildResult(
        int(c) / n_val, float(l) / t.steps_per_epoch, seconds,
        self._num_params(a)) for a, c, l in zip(archs, correct, loss_sum)]


class PerDeviceEvaluator(train_from_scratch.TrainFromScratchEvaluator):
  """``TrainFromScratchEvaluator`` that trains a round's new children ``K``
  at a time, one per device.

  The reward cache works as before: cached and repeated children cost
  nothing; the new ones are trained in groups of ``K`` (the last group is
  filled up by repeating its last child, whose extra copies are discarded,
  so a group always uses the one compiled program). A child's cost is its
  group's wall time shared among the group's real children.
  """

  def __init__(self, trainer: train_from_scratch.ChildTrainer, mesh: Mesh):
    super().__init__(trainer)
    self.parallel = PerDeviceChildTrainer(trainer, mesh)
    self.num_devices = self.parallel.num_devices

  def __call__(self, archs) -> Evaluation:
    archs = np.asarray(archs)
    texts = [self.space.to_text(a) for a in archs]
    new = list(dict.fromkeys(t for t in texts if t not in self.cache))
    first = {t: i for i, t in reversed(list(enumerate(texts)))}
    cost = {}
    k = self.num_devices
    for g in range(0, len(new), k):
      group = new[g:g + k]
      rows = [archs[first[t]] for t in group]
      rows += [rows[-1]] * (k - len(rows))
      results = self.parallel.train_and_evaluate(rows)
      for text, result in zip(group, results):
        self.cache[text] = result._replace(seconds=result.seconds /
                                           len(group))
        cost[text] = self.cache[text].seconds
        logging.info("child %s: val acc %.4f, loss %.3f", text,
                     result.val_accuracy, result.train_loss)
    rewards, costs, seen = [], [], set()
    for text in texts:
      rewards.append(self.cache[text].val_accuracy)
      # Like the one-at-a-time evaluator: only a child's first occurrence in
      # the round that trained it costs time.
      costs.append(cost[text] if text in cost and text not in seen else 0.0)
      seen.add(text)
    return Evaluation(np.asarray(rewards, np.float32),
                      np.asarray(costs, np.float32))
