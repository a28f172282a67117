"""Run kind ``"enas"``: the ENAS image search (Pham et al., ICML 2018) from a
config (``experiments/configs/enas_micro.py``, ``enas_macro.py``).

Builds the shared-weight supernet (``nas_jax.children.enas_cnn``) and its data
as a :class:`nas_jax.train.enas.SharedTask`, runs the alternation
(``enas.run_enas``), derives the final child (``enas.derive``) and writes the
workdir (see WORKSPACE.md): ``config.json``, ``history.jsonl`` (one line per
child the controller scored), ``metrics.jsonl`` + ``tensorboard/`` (one step
per epoch), ``checkpoints/``, ``best.json`` (the derived child: text, spec,
reward on the derive minibatch), ``best_arch.png`` / ``.dot``,
``search_curve.png`` and ``summary.json``. A killed run resumes from its last
epoch with the same command and reaches the same bits.

The shared weights train with the authors' recipe (``cifar10_micro_search.sh``
/ ``cifar10_macro_search.sh``): Nesterov momentum 0.9, cosine learning rate
with warm restarts (SGDR: max 0.05, min 0.0005, T_0 = 10 epochs, T_mul = 2),
weight decay, gradient clipping by global norm 5.0.
"""

from __future__ import annotations

import functools
import json
import pathlib
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from nas_jax import checkpoint as checkpoint_lib
from nas_jax import config_check as cc
from nas_jax import metrics as metrics_lib
from nas_jax import viz
from nas_jax.children import enas_cnn
from nas_jax.data import augment as augment_lib
from nas_jax.data import datasets
from nas_jax.data import pipeline
from nas_jax.evaluators.train_from_scratch import ChildState
from nas_jax.parallel import enas_children
from nas_jax.parallel import mesh as mesh_lib
from nas_jax.spaces import registry
from nas_jax.train import enas
from nas_jax.train import preemption
from nas_jax.train import tabular_run

# Image sizes of the known data sets, so check_config can refuse impossible
# reductions without loading anything.
IMAGE_HW = {"digits": 8, "mnist": 28, "fashion_mnist": 28, "cifar10": 32}
SPACES = ("enas_micro", "enas_macro")
PARALLEL = ("none", "data", "per_device")


# -- learning rate ----------------------------------------------------------


def sgdr_schedule(lr_max: float, lr_min: float, t0: float, t_mul: float,
                  steps_per_epoch: int) -> optax.Schedule:
  """Cosine annealing with warm restarts (Loshchilov & Hutter 2017, Eq. 5),
  as ENAS's ``--child_lr_cosine``: cycle ``k`` lasts ``t0 * t_mul^k``
  epochs, and within it ``lr = lr_min + (lr_max - lr_min) (1 + cos(pi
  t_cur / T_k)) / 2`` with ``t_cur`` the (fractional) epochs into the cycle.
  """
  def schedule(step):
    e = step / steps_per_epoch
    if t_mul == 1.0:
      k = jnp.floor(e / t0)
      start = k * t0
    else:
      k = jnp.floor(jnp.log(e * (t_mul - 1.0) / t0 + 1.0) / jnp.log(t_mul))
      start = t0 * (t_mul ** k - 1.0) / (t_mul - 1.0)
    length = t0 * t_mul ** k
    frac = (e - start) / length
    return lr_min + 0.5 * (lr_max - lr_min) * (1.0 + jnp.cos(jnp.pi * frac))
  return schedule


def make_shared_optimizer(*, lr_max: float, lr_min: float, lr_t0: float,
                          lr_t_mul: float, steps_per_epoch: int,
                          momentum: float = 0.9, weight_decay: float = 1e-4,
                          grad_clip: float = 5.0
                          ) -> optax.GradientTransformation:
  """Clip by global norm, L2 weight decay, Nesterov SGD on the SGDR
  schedule (the authors' ``get_train_ops`` with ``clip_mode="norm"``)."""
  parts = []
  if grad_clip:
    parts.append(optax.clip_by_global_norm(grad_clip))
  if weight_decay:
    parts.append(optax.add_decayed_weights(weight_decay))
  parts.append(optax.sgd(
      sgdr_schedule(lr_max, lr_min, lr_t0, lr_t_mul, steps_per_epoch),
      momentum=momentum, nesterov=True))
  return optax.chain(*parts)


# -- the image task ---------------------------------------------------------


def _apply(network, state, images, arch, train, rngs=None, drop_rate=0.0):
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  if train:
    logits, upd = network.apply(variables, images, arch, True, drop_rate,
                                mutable=["batch_stats"], rngs=rngs)
    return logits, upd["batch_stats"]
  return network.apply(variables, images, arch, False), state.batch_stats


def image_loss(network, dataset, augment=None):
  """``(params, batch_stats, arch, (uint8 images, labels), key) -> (loss,
  (batch_stats, {"loss", "accuracy"}))``: one child's cross-entropy on one
  batch, normalized and augmented inside the step."""

  def local_loss(params, stats, arch, batch, key):
    images, labels = batch
    images = dataset.normalize(images)
    if augment is not None:
      images = augment(key, images)
    logits, stats = _apply(network, ChildState(params, stats, None, None),
                           images, arch, True)
    loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
        logits, labels))
    acc = jnp.mean(jnp.argmax(logits, -1) == labels)
    return loss, (stats, {"loss": loss, "accuracy": acc})

  return local_loss


def make_image_task(space, network, dataset, *, batch_size: int,
                    val_batch_size: int, tx: optax.GradientTransformation,
                    augment: Callable | None = None, seed: int = 0,
                    mesh=None, per_device: bool = False) -> enas.SharedTask:
  """The ENAS image search as a :class:`~nas_jax.train.enas.SharedTask`.

  ``train_step`` is one SGD step of the supernet on child ``arch``;
  ``reward`` is that child's accuracy on one validation minibatch with BN in
  training mode (batch statistics, nothing updated), as the authors'
  ``build_valid_rl`` computes it: running statistics are a blend of every
  child's and would misjudge a single child. Batches are uint8 on the host,
  normalized (and augmented) inside the jitted step; on a ``mesh`` they are
  split over its ``"data"`` axis and the replicated step runs data-parallel.
  With ``per_device``, ``train_step`` takes ``archs [D, T]`` and every
  device of the mesh trains its own child on its shard
  (``nas_jax.parallel.enas_children``).
  """
  n_train, n_val = len(dataset.train_labels), len(dataset.val_labels)
  if not 0 < batch_size <= n_train:
    raise ValueError(f"shared.batch_size must be in 1..{n_train} (the "
                     f"training set size), got {batch_size}")
  if not 0 < val_batch_size <= n_val:
    raise ValueError(f"val_batch_size must be in 1..{n_val} (the validation "
                     f"set size), got {val_batch_size}")
  steps_per_epoch = n_train // batch_size
  place = ((lambda b: mesh_lib.shard_batch(b, mesh)) if mesh is not None
           else (lambda b: b))

  def init(key):
    shape = (1, *dataset.image_shape)
    variables = network.init(key, jnp.zeros(shape, jnp.float32),
                             jnp.zeros((space.num_decisions,), jnp.int32),
                             False)
    params = variables["params"]
    return ChildState(params, variables.get("batch_stats", {}),
                      tx.init(params), jnp.zeros((), jnp.int32))

  local_loss = image_loss(network, dataset, augment)

  def train_step(state, arch, batch, key):
    (_, (stats, metrics)), grads = jax.value_and_grad(
        local_loss, has_aux=True)(state.params, state.batch_stats, arch,
                                  batch, key)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return ChildState(params, stats, opt_state, state.step + 1), metrics

  if per_device:
    if mesh is None:
      raise ValueError("per_device children need a mesh")
    train_step = enas_children.per_device_children_step(local_loss, tx, mesh)

  def reward(state, arch, batch):
    images, labels = batch
    logits, _ = _apply(network, state, dataset.normalize(images), arch, True)
    return jnp.mean(jnp.argmax(logits, -1) == labels).astype(jnp.float32)

  @functools.lru_cache(maxsize=2)
  def order(epoch):
    return pipeline.epoch_permutation(n_train, seed=seed, epoch=epoch)

  def train_batch(epoch, i):
    idx = np.sort(order(epoch)[i * batch_size:(i + 1) * batch_size])
    return place((dataset.train_images[idx],
                  np.asarray(dataset.train_labels[idx], np.int32)))

  def val_batch(step):
    # A fresh random minibatch per controller step ("a minibatch sampled
    # from the validation set"), a pure function of (seed, step).
    idx = np.sort(pipeline.epoch_permutation(
        n_val, seed=seed + 1, epoch=step + 1)[:val_batch_size])
    return place((dataset.val_images[idx],
                  np.asarray(dataset.val_labels[idx], np.int32)))

  return enas.SharedTask(space, init, train_step, reward, train_batch,
                         steps_per_epoch, val_batch,
                         name=f"enas[{space.name}]")


# -- config -----------------------------------------------------------------


def _fail(field: str, msg: str):
  raise ValueError(f"{field} {msg}")


def _shared_rules() -> dict[str, cc.Rule]:
  """The shared weights' SGD with warm restarts (Loshchilov & Hutter 2017;
  ENAS Sec. 3.2)."""
  return {
      "shared.batch_size": cc.Int(1, 10**6, doc="shared-weight minibatch"),
      "shared.lr_max": cc.Float(gt=0, doc="SGDR peak learning rate"),
      "shared.lr_min": cc.Float(ge=0, doc="SGDR floor, <= shared.lr_max"),
      "shared.lr_t0": cc.Float(gt=0, doc="first SGDR period in epochs"),
      "shared.lr_t_mul": cc.Float(ge=1, doc="SGDR period growth"),
      "shared.momentum": cc.Float(ge=0, lt=1, doc="Nesterov momentum"),
      "shared.weight_decay": cc.Float(ge=0, doc="L2 weight"),
      "shared.grad_clip": cc.Float(ge=0, doc="global norm clip (0: none)"),
  }


def network_rules() -> dict[str, cc.Rule]:
  """``network`` fields of ``enas_cnn.make_network``."""
  return {
      "network.num_cells": cc.Int(1, 64, doc="normal cells per stage "
                                  "(micro)"),
      "network.channels": cc.Int(1, 4096, doc="channels of the first "
                                 "stage"),
      "network.num_reductions": cc.Int(0, 16, doc="reduction cells (micro)"),
      "network.stem_multiplier": cc.Int(1, 64, doc="stem channels = "
                                        "multiplier x channels"),
      "network.grow_channels": cc.Bool(doc="double channels at each "
                                       "reduction"),
      "network.aux_head": cc.Bool(doc="auxiliary classifier (retraining)"),
      "network.dropout": cc.Float(ge=0, lt=1, doc="dropout before the "
                                  "classifier"),
  }


SCHEMA: dict[str, cc.Rule] = {
    "run": cc.Choice(("enas",), doc="the run kind (this module)"),
    "seed": cc.Int(0, 2**31 - 1, doc="seed of everything"),
    "space": cc.Choice(SPACES, doc="ENAS micro (cells) or macro (layers)"),
    "space_kwargs": cc.Dict(doc="arguments of the space's factory"),
    "algorithm": cc.Choice(("reinforce", "random"), doc="controller "
                           "training, or the same loop without learning"),
    "num_epochs": cc.Int(1, 10**6, doc="epochs of the alternation"),
    "controller_steps": cc.Int(0, 10**6, doc="controller updates per "
                               "epoch"),
    "val_batch_size": cc.Int(1, 10**6, doc="validation minibatch of a "
                             "reward"),
    "derive_samples": cc.Int(1, 10**6, doc="cells sampled to derive the "
                             "best (Sec. 2.2)"),
    "parallel": cc.Choice(PARALLEL, doc="none, data-parallel batches, or "
                          "one child per device"),
    "keep": cc.Int(2, 10**6, doc="checkpoints kept"),
    **cc.image_data_rules(),
    **network_rules(),
    **_shared_rules(),
    **cc.controller_rules(),
    **cc.algorithm_rules(),
}


def check_config(config: ml_collections.ConfigDict) -> None:
  """Cheap checks (no data, no compilation, nothing written); raises a
  ValueError naming the dotted field and the fix."""
  cc.check(config, SCHEMA, extra=[cc.algorithm_cross_checks])
  registry.get(config.space, **config.get("space_kwargs", {}))
  sh = config.shared
  if sh.lr_min > sh.lr_max:
    _fail("shared.lr_min", f"must be in [0, shared.lr_max], got {sh.lr_min}")
  data = config.data
  net = config.network
  hw = IMAGE_HW[data.name]
  what = f"network (data.name={data.name!r}, {hw}x{hw} images)"
  if config.space == "enas_micro":
    enas_cnn.check_image_size((hw, hw), net.get("num_reductions", 2),
                              what + ": network.num_reductions")
  else:
    num_layers = config.space_kwargs.get("num_layers", 12)
    enas_cnn.check_image_size(
        (hw, hw), len(enas_cnn.macro_pool_layers(num_layers)),
        what + f": space_kwargs.num_layers={num_layers} pools after layers "
        f"{enas_cnn.macro_pool_layers(num_layers)}")


def build_network(config, num_classes: int):
  kwargs = dict(config.network)
  if config.space == "enas_micro":
    kwargs["num_nodes"] = config.space_kwargs.get("num_nodes", 5)
  else:
    kwargs["num_layers"] = config.space_kwargs.get("num_layers", 12)
  return enas_cnn.make_network(config.space, num_classes=num_classes,
                               **kwargs)


def load_data(config):
  data = config.data
  return datasets.load(data.name, data_dir=data.get("data_dir") or None,
                       num_val=data.get("num_val") or None,
                       max_train=data.get("max_train") or None,
                       seed=data.get("split_seed", 0))


def make_augment(config):
  if config.data.get("augment") == "cifar":
    cut = config.data.get("cutout", 0)
    return lambda k, x: augment_lib.standard_cifar(k, x, cutout_size=cut)
  return None


def build(config):
  """(space, dataset, network, task, algorithm) from a checked config."""
  space = registry.get(config.space, **config.get("space_kwargs", {}))
  dataset = load_data(config)
  network = build_network(config, dataset.num_classes)
  sh = config.shared
  n = len(dataset.train_labels)
  steps = max(n // sh.batch_size, 1)
  tx = make_shared_optimizer(
      lr_max=sh.lr_max, lr_min=sh.lr_min, lr_t0=sh.lr_t0,
      lr_t_mul=sh.lr_t_mul, steps_per_epoch=steps, momentum=sh.momentum,
      weight_decay=sh.weight_decay, grad_clip=sh.grad_clip)
  mesh = mesh_lib.make_mesh() if config.parallel != "none" else None
  task = make_image_task(space, network, dataset, batch_size=sh.batch_size,
                         val_batch_size=config.val_batch_size, tx=tx,
                         augment=make_augment(config), seed=config.seed,
                         mesh=mesh, per_device=config.parallel == "per_device")
  algo = tabular_run.build_algorithm(config, space)
  return space, dataset, network, task, algo


# -- run --------------------------------------------------------------------


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  check_config(config)
  # Data first: a missing data set fails before anything is written.
  space, dataset, network, task, algo = build(config)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
  children = (mesh_lib.data_size(mesh_lib.make_mesh())
              if config.parallel == "per_device" else 1)
  logging.info("ENAS %s on %s (%d train / %d val images %s): %d epochs x "
               "(%d shared steps of batch %d, %d controller steps), %s",
               space.name, dataset.name, len(dataset.train_labels),
               len(dataset.val_labels), dataset.image_shape,
               config.num_epochs, task.steps_per_epoch,
               config.shared.batch_size, config.controller_steps, algo.name)

  history_path = workdir / "history.jsonl"
  history = None
  writer = metrics_lib.MetricWriter(workdir)

  def write(rec: enas.Record):
    history.write(json.dumps({"step": rec.step, "epoch": rec.epoch,
                              "arch": space.to_text(rec.arch),
                              "reward": rec.reward}) + "\n")
    history.flush()

  def on_resume(records, next_epoch):
    # Rewrite what a killed run may have written past its checkpoint.
    nonlocal history
    history = open(history_path, "w")
    for rec in records:
      write(rec)
    writer.truncate_after(next_epoch - 1)

  def on_epoch(epoch, state, summary):
    writer.write_scalars(epoch, summary)
    writer.flush()  # durable before this epoch's checkpoint

  ckpt = checkpoint_lib.Checkpointer(workdir, max_to_keep=config.get("keep", 3))
  key = jax.random.key(config.seed)
  t0 = time.perf_counter()
  try:
    with preemption.PreemptionGuard() as guard:
      result = enas.run_enas(
          task, algo, key, num_epochs=config.num_epochs,
          controller_steps=config.controller_steps,
          children_per_step=children, checkpointer=ckpt, guard=guard,
          on_record=write, on_epoch=on_epoch, on_resume=on_resume)
  finally:
    if history is not None:
      history.close()
    writer.close()
    ckpt.close()
  wall = time.perf_counter() - t0
  if result.status == "preempted":
    return {"status": "preempted", "epochs": len(result.epochs)}

  derived = enas.derive(task, algo, result.state,
                        jax.random.fold_in(key, 2**31 - 1),
                        num_samples=config.derive_samples,
                        steps=result.steps)
  best = {"text": space.to_text(derived.arch),
          "spec": space.to_spec(derived.arch), "reward": derived.reward,
          "derive_samples": config.derive_samples,
          "derive_reward_median": float(np.median(derived.rewards)),
          "retrain": (f"python experiments/main.py --config=experiments/"
                      f"configs/enas_retrain.py:{space.name.split('_')[1]} "
                      f"--config.arch='{space.to_text(derived.arch)}' "
                      f"--workdir=<dir>")}
  (workdir / "best.json").write_text(json.dumps(best, indent=2))
  pictures = viz.draw(space, derived.arch, workdir / "best_arch.png")
  viz.search_curve([r.reward for r in result.records],
                   workdir / "search_curve.png",
                   title=f"ENAS {space.name} ({dataset.name})",
                   ylabel="validation minibatch accuracy")
  summary = {"status": "done", "space": space.name, "dataset": dataset.name,
             "algorithm": algo.name, "wall_seconds": wall,
             "epochs": config.num_epochs,
             "controller_samples": len(result.records),
             "best_text": best["text"], "best_reward": derived.reward,
             "last_epoch": result.epochs[-1] if result.epochs else {}}
  (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
  logging.info("done in %.1fs; derived %s (reward %.4f on the derive "
               "minibatch; median of %d samples %.4f); pictures: %s", wall,
               best["text"], derived.reward, config.derive_samples,
               best["derive_reward_median"],
               ", ".join(p.name for p in pictures))
  return summary
