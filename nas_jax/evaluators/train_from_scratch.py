"""Reward = validation accuracy of a child trained from scratch (Zoph & Le
2017, Sec. 3.1; the seed-003 study trains each child on MNIST).

One jitted train step and one jitted eval step serve every child of a space:
the architecture is an argument of the step (the network selects its ops with
``lax.switch``), so a search compiles once, however many children it trains.
Rewards are cached by architecture, so a re-proposed child costs nothing.
"""

from __future__ import annotations

import time
import zlib
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from nas_jax.children import cell_net
from nas_jax.data import pipeline
from nas_jax.evaluators.tabular import Evaluation
from nas_jax.parallel import mesh as mesh_lib
from nas_jax.spaces import base


class ChildState(NamedTuple):
  params: Any
  batch_stats: Any
  opt_state: optax.OptState
  step: jax.Array


class ChildResult(NamedTuple):
  val_accuracy: float
  train_loss: float   # mean over the last epoch
  seconds: float      # wall time of training and evaluation
  num_params: int


def make_optimizer(name: str, learning_rate: float, total_steps: int,
                   momentum: float = 0.9, weight_decay: float = 0.0
                   ) -> optax.GradientTransformation:
  """SGD-momentum (NASNet / ENAS children) or Adam, cosine-decayed to 0."""
  if learning_rate <= 0:
    raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
  schedule = optax.cosine_decay_schedule(learning_rate, max(total_steps, 1))
  if name == "sgd":
    opt = optax.sgd(schedule, momentum=momentum, nesterov=True)
  elif name == "adam":
    opt = optax.adam(schedule)
  else:
    raise ValueError(f"optimizer must be 'sgd' or 'adam', got {name!r}")
  if weight_decay:
    return optax.chain(optax.add_decayed_weights(weight_decay), opt)
  return opt


class ChildTrainer:
  """Trains one child of ``space`` at a time with shared jitted steps.

  Args:
    network: a Linen module called as ``network(images, arch, train)`` with a
      ``batch_stats`` collection.
    dataset: a ``nas_jax.data.datasets.Dataset``.
    epochs, batch_size: training length; the last partial batch is dropped.
    augment: optional jittable ``(key, float_images) -> float_images``.
    seed: children are initialised from ``fold_in(seed, crc32(arch text))``,
      so a child's reward does not depend on when it was proposed.
    early_stop_steps: Block-QNN's early stop (Zhong et al., CVPR 2018, Sec.
      3.4): each child trains only this many steps of the ``epochs``-long
      schedule (the learning rate follows the full schedule, cut short),
      and the search corrects the early accuracy with the FLOPs/density
      reward shaping (``nas_jax.costs.blockqnn_reward``). 0: train fully.
    mesh: optional ``jax.sharding.Mesh`` with a ``"data"`` axis (see
      ``nas_jax.parallel.mesh``): batches are split over it and the state is
      replicated, so the same jitted step runs data-parallel under GSPMD.
      BatchNorm statistics are then over the global batch, as on one device.
  """

  def __init__(self, space: base.SearchSpace, network: nn.Module, dataset, *,
               epochs: int = 1, batch_size: int = 64,
               learning_rate: float = 0.05, optimizer: str = "sgd",
               momentum: float = 0.9, weight_decay: float = 5e-4,
               augment: Callable | None = None, seed: int = 0,
               eval_batch_size: int = 500,
               mesh: jax.sharding.Mesh | None = None,
               early_stop_steps: int = 0):
    if epochs < 1:
      raise ValueError(f"epochs must be >= 1, got {epochs}")
    if early_stop_steps < 0:
      raise ValueError(f"early_stop_steps must be >= 0 (0 trains every "
                       f"epoch), got {early_stop_steps}")
    n = len(dataset.train_labels)
    if not 0 < batch_size <= n:
      raise ValueError(f"batch_size must be in 1..{n} (the training set "
                       f"size), got {batch_size}")
    if mesh is not None and batch_size % mesh_lib.data_size(mesh):
      raise ValueError(
          f"batch_size {batch_size} is not divisible by the "
          f"{mesh_lib.data_size(mesh)} devices on the mesh's "
          f"{mesh_lib.DATA_AXIS!r} axis; data-parallel training needs equal "
          f"shards")
    self.space, self.network, self.dataset = space, network, dataset
    self.mesh = mesh
    self.epochs, self.batch_size, self.seed = epochs, batch_size, seed
    self.eval_batch_size = eval_batch_size
    self.steps_per_epoch = n // batch_size
    self.num_steps = epochs * self.steps_per_epoch
    if early_stop_steps:
      self.num_steps = min(self.num_steps, early_stop_steps)
    self.tx = make_optimizer(optimizer, learning_rate,
                             epochs * self.steps_per_epoch, momentum,
                             weight_decay)
    self.augment = augment
    self.num_traces = 0  # how often the train step was traced (compiled)
    # On a mesh, pin the state (and the loss) replicated, so every step sees
    # the same input shardings and compiles once.
    placed = ({} if mesh is None else
              {"out_shardings": mesh_lib.replicated(mesh)})
    self._train_step = jax.jit(self._train_step_impl, donate_argnums=0,
                               **placed)
    self._eval_step = jax.jit(self._eval_step_impl)
    self._init = jax.jit(self._init_impl, **placed)

  def _init_impl(self, key, arch):
    shape = (1, *self.dataset.train_images.shape[1:])
    variables = self.network.init(key, jnp.zeros(shape, jnp.float32), arch,
                                  False)
    params, stats = variables["params"], variables.get("batch_stats", {})
    return ChildState(params, stats, self.tx.init(params),
                      jnp.zeros((), jnp.int32))

  def _train_step_impl(self, state: ChildState, arch, images, labels, key):
    self.num_traces += 1
    if self.augment is not None:
      images = self.augment(key, images)

    def loss_fn(params):
      logits, updates = self.network.apply(
          {"params": params, "batch_stats": state.batch_stats}, images, arch,
          True, mutable=["batch_stats"])
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
      return jnp.mean(loss), updates.get("batch_stats", {})

    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params)
    updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return ChildState(params, stats, opt_state, state.step + 1), loss

  def _eval_step_impl(self, params, stats, arch, images, labels):
    logits = self.network.apply({"params": params, "batch_stats": stats},
                                images, arch, False)
    return jnp.sum(jnp.argmax(logits, -1) == labels)

  def child_key(self, arch: np.ndarray) -> jax.Array:
    text = self.space.to_text(arch)
    return jax.random.fold_in(jax.random.key(self.seed),
                              zlib.crc32(text.encode()) & 0x7FFFFFFF)

  def train(self, arch) -> tuple[ChildState, float]:
    """Trains child ``arch`` from its seeded init; returns the trained state
    and the mean training loss of the last epoch."""
    arch = self.space.validate(arch)
    k_init, k_aug = jax.random.split(self.child_key(arch))
    arch_j = jnp.asarray(arch)
    state = self._init(k_init, arch_j)
    ds = self.dataset
    losses = []
    for epoch in range(-(-self.num_steps // self.steps_per_epoch)):
      losses = []
      for i, (x, y) in enumerate(pipeline.batches(
          ds.train_images, ds.train_labels, self.batch_size,
          seed=self.seed, epoch=epoch)):
        if epoch * self.steps_per_epoch + i == self.num_steps:
          break  # early stop
        step_key = jax.random.fold_in(k_aug, epoch * self.steps_per_epoch + i)
        x, y = self._place(ds.normalize(x), y)
        state, loss = self._train_step(state, arch_j, x, y, step_key)
        losses.append(loss)
    return state, float(jnp.mean(jnp.stack(losses)))

  def accuracy(self, state: ChildState, arch, images, labels) -> float:
    """Accuracy of a trained child on uint8 ``images`` (e.g. a val or test
    split of the dataset)."""
    arch_j = jnp.asarray(self.space.validate(arch))
    correct = 0
    for x, y in pipeline.batches(images, labels, self.eval_batch_size,
                                 seed=0, epoch=0, shuffle=False,
                                 drop_remainder=False):
      x, y = self._place(self.dataset.normalize(x), y, pad=True)
      correct += int(self._eval_step(state.params, state.batch_stats, arch_j,
                                     x, y))
    return correct / len(labels)

  def train_and_evaluate(self, arch) -> ChildResult:
    arch = self.space.validate(arch)
    t0 = time.perf_counter()
    state, train_loss = self.train(arch)
    ds = self.dataset
    acc = self.accuracy(state, arch, ds.val_images, ds.val_labels)
    num_params = cell_net.child_param_count(self.space, state.params, arch)
    return ChildResult(acc, train_loss, time.perf_counter() - t0, num_params)

  def _place(self, images: np.ndarray, labels: np.ndarray, pad: bool = False
             ) -> tuple[jax.Array, jax.Array]:
    """Puts a host batch on the device(s): split over the mesh's data axis
    when there is one, else on the default device.

    With ``pad``, a batch that does not split evenly is padded with label -1
    (never an argmax, so padded rows count as wrong and add nothing to the
    eval step's sum of correct predictions).
    """
    labels = np.asarray(labels, np.int32)
    if self.mesh is None:
      return jnp.asarray(images), jnp.asarray(labels)
    extra = -len(labels) % mesh_lib.data_size(self.mesh)
    if pad and extra:
      images = np.concatenate(
          [images, np.zeros((extra, *images.shape[1:]), images.dtype)])
      labels = np.concatenate([labels, np.full((extra,), -1, np.int32)])
    return mesh_lib.shard_batch((images, labels), self.mesh)


class TrainFromScratchEvaluator:
  """Host-side evaluator with a reward cache, for the ask/tell loop.

  ``evaluator(archs)`` returns an :class:`Evaluation` of numpy arrays whose
  cost is the wall time spent (0 for a cached child).
  """

  def __init__(self, trainer: ChildTrainer):
    self.trainer = trainer
    self.space = trainer.space
    self.cache: dict[str, ChildResult] = {}

  def state_dict(self) -> dict:
    """The reward cache as JSON-able data, for checkpoints."""
    return {text: list(r) for text, r in self.cache.items()}

  def load_state_dict(self, d: dict) -> None:
    self.cache = {text: ChildResult(float(v[0]), float(v[1]), float(v[2]),
                                    int(v[3])) for text, v in d.items()}

  def __call__(self, archs) -> Evaluation:
    rewards, costs = [], []
    for arch in np.asarray(archs):
      text = self.space.to_text(arch)
      if text in self.cache:
        rewards.append(self.cache[text].val_accuracy)
        costs.append(0.0)
        continue
      result = self.trainer.train_and_evaluate(arch)
      self.cache[text] = result
      logging.info("child %s: val acc %.4f, loss %.3f, %.1fs", text,
                   result.val_accuracy, result.train_loss, result.seconds)
      rewards.append(result.val_accuracy)
      costs.append(result.seconds)
    return Evaluation(np.asarray(rewards, np.float32),
                      np.asarray(costs, np.float32))
