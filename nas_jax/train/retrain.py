"""Run kind ``"retrain"``: train one architecture from scratch as a
stand-alone network (Pham et al. 2018, Sec. 3.2: the derived cell or network
"re-trained from scratch"), ``experiments/configs/enas_retrain.py``.

``config.arch`` is the architecture's one-line text (``best.json``'s
``text``, e.g. ``"0,1,2,..."``) or a published name
(``nas_jax.spaces.enas.NAMED``, ``nas_jax.spaces.nasnet.NAMED``). The network
is built with fixed ops (``enas_cnn.MicroNet`` / ``MacroNet`` or
``nasnet.NASNet`` with ``fixed_arch``: no switch, only the chosen ops exist),
sized ``N @ F`` (``network.num_cells`` normal cells per stage and
``network.channels`` filters, or for NASNet ``network.penultimate_filters``,
the paper's ``F``; ``experiments/configs/nasnet_retrain.py``), and trained
with the final recipe of the authors' ``cifar10_micro_final.sh``: Nesterov SGD on the SGDR cosine
schedule, L2, gradient clipping, cutout (``data.cutout``),
ScheduledDropPath (the drop rate grows linearly from 0 to
``train.drop_path``; Zoph et al. 2018, Sec. 4.1) and the auxiliary head
(loss weight ``train.aux_weight``).

Writes ``config.json``, ``history.jsonl`` (one line per epoch),
``metrics.jsonl`` + ``tensorboard/``, ``checkpoints/`` (every epoch; a
killed run resumes), ``best.json`` (text, spec, test accuracy, parameter
count), ``best_arch.png``, ``search_curve.png`` (validation accuracy per
epoch) and ``summary.json``.
"""

from __future__ import annotations

import json
import pathlib
import time

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
from nas_jax.children import nasnet
from nas_jax.data import pipeline
from nas_jax.evaluators.train_from_scratch import ChildState
from nas_jax.spaces import base as spaces_base
from nas_jax.spaces import enas as enas_space
from nas_jax.spaces import nasnet as nasnet_space
from nas_jax.spaces import registry
from nas_jax.train import enas_run
from nas_jax.train import preemption

SPACES = enas_run.SPACES + ("nasnet",)
NAMED = enas_space.NAMED + nasnet_space.NAMED

# The fields of experiments/configs/enas_retrain.py and nasnet_retrain.py;
# the network fields a space does not use are refused by its network.
SCHEMA: dict[str, cc.Rule] = {
    "run": cc.Choice(("retrain",), doc="the run kind (this module)"),
    "seed": cc.Int(0, 2**31 - 1, doc="seed of everything"),
    "space": cc.Choice(SPACES, doc="the architecture's space"),
    "space_kwargs": cc.Dict(doc="arguments of the space's factory"),
    "arch": cc.Str(doc="architecture text (best.json 'text') or a published "
                   f"name ({', '.join(NAMED)})"),
    "keep": cc.Int(2, 10**6, doc="checkpoints kept"),
    "eval_batch_size": cc.Int(1, 10**6, doc="evaluation batch"),
    **cc.image_data_rules(),
    "data.num_val": cc.Int(1, 10**7, doc="validation images"),
    "network.num_cells": cc.Int(1, 64, doc="N: normal cells per stage"),
    "network.channels": cc.Int(1, 4096, doc="filters of the first stage "
                               "(micro/NASNet) or of every layer (macro)"),
    "network.penultimate_filters": cc.Int(0, 10**5, doc="NASNet: F of "
                                          "'N @ F' (0: use channels)"),
    "network.num_reductions": cc.Int(0, 8, doc="reduction cells"),
    "network.stem": cc.Choice(("cifar", "imagenet"), doc="NASNet stem"),
    "network.stem_multiplier": cc.Int(1, 64, doc="stem filters / channels"),
    "network.aux_head": cc.Bool(doc="auxiliary head (loss weight "
                                "train.aux_weight)"),
    "network.dropout": cc.Float(ge=0, lt=1, doc="dropout before the "
                                "classifier"),
    "network.grow_channels": cc.Bool(doc="macro: double the width at each "
                                     "reduction"),
    "train.epochs": cc.Int(1, 10**5, doc="training epochs"),
    "train.batch_size": cc.Int(1, 10**6, doc="training batch"),
    "train.lr_max": cc.Float(gt=0, doc="peak learning rate (SGDR cosine)"),
    "train.lr_min": cc.Float(ge=0, doc="final learning rate"),
    "train.lr_t0": cc.Float(gt=0, doc="first cosine cycle, epochs"),
    "train.lr_t_mul": cc.Float(ge=1, doc="cycle length multiplier"),
    "train.momentum": cc.Float(ge=0, lt=1, doc="Nesterov momentum"),
    "train.weight_decay": cc.Float(ge=0, doc="L2 weight decay"),
    "train.grad_clip": cc.Float(ge=0, doc="global gradient norm clip (0: "
                                "off)"),
    "train.drop_path": cc.Float(ge=0, lt=1, doc="ScheduledDropPath's final "
                                "rate (rises linearly from 0)"),
    "train.aux_weight": cc.Float(ge=0, doc="auxiliary loss weight"),
}


def _named(text: str):
  """``(space, arch)`` of a published architecture."""
  if text in nasnet_space.NAMED:
    return nasnet_space.named(text)[:2]
  return enas_space.named(text)


def parse_arch(config) -> tuple[spaces_base.SearchSpace, np.ndarray]:
  """``(space, arch)`` from ``config.arch``; a clear error naming the fix."""
  text = (config.get("arch") or "").strip()
  if not text:
    raise spaces_base.InvalidArchitectureError(
        "arch is empty; pass --config.arch='<text>' with the 'text' of a "
        f"run's best.json, or a published name ({', '.join(NAMED)})")
  if text in NAMED:
    space, arch = _named(text)
    if space.name != config.space:
      raise spaces_base.InvalidArchitectureError(
          f"arch {text!r} belongs to space {space.name!r}, but space is "
          f"{config.space!r}; set --config.space={space.name} (or use "
          f"{'nasnet_retrain.py' if space.name == 'nasnet' else 'the ' + repr(space.name.split('_')[1]) + ' variant'})")
    return space, arch
  space = registry.get(config.space, **config.get("space_kwargs", {}))
  try:
    return space, space.from_text(text)
  except spaces_base.InvalidArchitectureError as e:
    raise spaces_base.InvalidArchitectureError(
        f"arch does not belong to space {space.name!r} with space_kwargs "
        f"{dict(config.get('space_kwargs', {}))}: {e}. Pass the 'text' line "
        f"of a best.json from a search over the same space (and the same "
        f"space_kwargs), or a published name ({', '.join(NAMED)})"
    ) from None


def _macro_layers(space) -> int:
  """L from a macro space's L(L+1)/2 decisions."""
  return int(round((np.sqrt(8 * space.num_decisions + 1) - 1) / 2))


def check_config(config: ml_collections.ConfigDict) -> None:
  """Cheap checks: every field, the arch string, the sizes."""
  cc.check(config, SCHEMA)
  space, arch = parse_arch(config)
  hw = enas_run.IMAGE_HW[config.data.name]
  if config.space == "nasnet":
    try:
      net = build_network(config, space, arch, 10)
    except TypeError as e:
      raise ValueError(f"config.network: {e}") from None
    nasnet.check_sizes(net)
    stem = 3 if net.stem == "imagenet" else 0
    enas_cnn.check_image_size(
        (hw, hw), net.num_reductions + stem,
        f"network.num_reductions ({config.data.name}: {hw}x{hw} images)")
  elif config.space == "enas_micro":
    enas_cnn.check_image_size(
        (hw, hw), config.network.get("num_reductions", 2),
        f"network.num_reductions ({config.data.name}: {hw}x{hw} images)")
  else:
    pools = enas_cnn.macro_pool_layers(_macro_layers(space))
    enas_cnn.check_image_size((hw, hw), len(pools),
                              f"the macro network ({config.data.name})")


def build_network(config, space, arch, num_classes: int):
  kwargs = dict(config.network)
  fixed = tuple(int(v) for v in arch)
  if config.space == "nasnet":
    text = (config.get("arch") or "").strip()
    concat = nasnet_space.named(text)[2] if text in nasnet_space.NAMED else None
    return nasnet.NASNet(num_classes=num_classes, fixed_arch=fixed,
                         fixed_concat=concat,
                         num_blocks=space.num_decisions // 10, **kwargs)
  if config.space == "enas_micro":
    kwargs["num_nodes"] = space.num_decisions // 8
  else:
    kwargs.pop("aux_head", None)
    kwargs["num_layers"] = _macro_layers(space)
  return enas_cnn.make_network(config.space, num_classes=num_classes,
                               fixed_arch=fixed, **kwargs)


def make_steps(network, dataset, tx, *, augment, drop_path: float,
               aux_weight: float, total_steps: int):
  """Jitted ``train_step(state, images, labels, key)`` and
  ``eval_step(state, images, labels) -> correct``."""

  def train_step(state, images, labels, key):
    k_aug, k_drop, k_dropout = jax.random.split(key, 3)
    images = dataset.normalize(images)
    if augment is not None:
      images = augment(k_aug, images)
    rate = drop_path * jnp.minimum(state.step / total_steps, 1.0)

    def loss_fn(params):
      (logits, upd) = network.apply(
          {"params": params, "batch_stats": state.batch_stats}, images, None,
          True, rate, mutable=["batch_stats", "intermediates"],
          rngs={"drop_path": k_drop, "dropout": k_dropout})
      loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
          logits, labels))
      aux = upd.get("intermediates", {}).get("aux_logits")
      if aux is not None and aux_weight:
        aux_logits = jax.tree.leaves(aux)[0]
        loss = loss + aux_weight * jnp.mean(
            optax.softmax_cross_entropy_with_integer_labels(aux_logits,
                                                            labels))
      return loss, upd["batch_stats"]

    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return ChildState(params, stats, opt_state, state.step + 1), loss

  def eval_step(state, images, labels):
    logits = network.apply(
        {"params": state.params, "batch_stats": state.batch_stats},
        dataset.normalize(images), None, False)
    return jnp.sum(jnp.argmax(logits, -1) == labels)

  return jax.jit(train_step, donate_argnums=0), jax.jit(eval_step)


def accuracy(eval_step, state, images, labels, batch_size: int) -> float:
  correct = 0
  for x, y in pipeline.batches(images, labels, batch_size, seed=0, epoch=0,
                               shuffle=False, drop_remainder=False):
    correct += int(eval_step(state, x, y))
  return correct / max(len(labels), 1)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  check_config(config)
  space, arch = parse_arch(config)
  dataset = enas_run.load_data(config)  # before writing: a missing data set
  workdir = pathlib.Path(workdir)       # leaves the workdir untouched
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
  network = build_network(config, space, arch, dataset.num_classes)
  tr = config.train
  n = len(dataset.train_labels)
  if tr.batch_size > n:
    raise ValueError(f"train.batch_size must be <= {n} (the training set "
                     f"size), got {tr.batch_size}")
  steps_per_epoch = n // tr.batch_size
  tx = enas_run.make_shared_optimizer(
      lr_max=tr.lr_max, lr_min=tr.lr_min, lr_t0=tr.lr_t0,
      lr_t_mul=tr.lr_t_mul, steps_per_epoch=steps_per_epoch,
      momentum=tr.momentum, weight_decay=tr.weight_decay,
      grad_clip=tr.grad_clip)
  train_step, eval_step = make_steps(
      network, dataset, tx, augment=enas_run.make_augment(config),
      drop_path=tr.drop_path, aux_weight=tr.aux_weight,
      total_steps=tr.epochs * steps_per_epoch)
  key = jax.random.key(config.seed)

  @jax.jit
  def init(key):
    v = network.init(key, jnp.zeros((1, *dataset.image_shape)), None, False)
    return ChildState(v["params"], v.get("batch_stats", {}),
                      tx.init(v["params"]), jnp.zeros((), jnp.int32))

  state = init(jax.random.fold_in(key, 0))
  num_params = enas_cnn.param_count(
      {k: v for k, v in state.params.items() if k != "aux_head"})
  logging.info("retraining %s (%s) on %s: %d parameters, %d epochs x %d "
               "steps", space.name, space.to_text(arch)[:60], dataset.name,
               num_params, tr.epochs, steps_per_epoch)
  ckpt = checkpoint_lib.Checkpointer(workdir, max_to_keep=config.get("keep", 3))
  writer = metrics_lib.MetricWriter(workdir)
  epochs: list[dict] = []
  start = 0
  restored = ckpt.restore(state)
  if restored is not None:
    _, state, meta = restored
    epochs = list(meta["epochs"])
    start = len(epochs)
    logging.info("resumed after epoch %d", start)
  writer.truncate_after(start - 1)
  with open(workdir / "history.jsonl", "w") as f:
    for e in epochs:
      f.write(json.dumps(e) + "\n")
  t0 = time.perf_counter()
  status = "done"
  eval_bs = config.get("eval_batch_size", 500)
  try:
    with preemption.PreemptionGuard() as guard, open(
        workdir / "history.jsonl", "a") as history:
      for epoch in range(start, tr.epochs):
        losses = []
        for i, (x, y) in enumerate(pipeline.batches(
            dataset.train_images, dataset.train_labels, tr.batch_size,
            seed=config.seed, epoch=epoch)):
          k = jax.random.fold_in(jax.random.fold_in(key, epoch + 1), i)
          state, loss = train_step(state, x, y, k)
          losses.append(loss)
        val = accuracy(eval_step, state, dataset.val_images,
                       dataset.val_labels, eval_bs)
        rec = {"epoch": epoch, "train_loss": float(jnp.mean(jnp.stack(losses))),
               "val_accuracy": val}
        epochs.append(rec)
        history.write(json.dumps(rec) + "\n")
        history.flush()
        writer.write_scalars(epoch, {"train/loss": rec["train_loss"],
                                     "val/accuracy": val})
        writer.flush()
        ckpt.save(epoch, state, {"epochs": epochs})
        logging.info("epoch %d/%d: loss %.4f, val acc %.4f", epoch + 1,
                     tr.epochs, rec["train_loss"], val)
        if guard.requested and epoch + 1 < tr.epochs:
          status = "preempted"
          break
  finally:
    writer.close()
    ckpt.close()
  if status == "preempted":
    return {"status": status, "epochs": len(epochs)}
  test = accuracy(eval_step, state, dataset.test_images, dataset.test_labels,
                  eval_bs)
  best = {"text": space.to_text(arch), "spec": space.to_spec(arch),
          "test_accuracy": test,
          "val_accuracy": epochs[-1]["val_accuracy"] if epochs else None,
          "num_params": num_params}
  (workdir / "best.json").write_text(json.dumps(best, indent=2))
  viz.draw(space, arch, workdir / "best_arch.png")
  viz.search_curve([e["val_accuracy"] for e in epochs],
                   workdir / "search_curve.png",
                   title=f"retrain {space.name} ({dataset.name})",
                   ylabel="validation accuracy")
  summary = {"status": "done", "space": space.name, "dataset": dataset.name,
             "test_accuracy": test, "num_params": num_params,
             "epochs": tr.epochs, "wall_seconds": time.perf_counter() - t0}
  (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
  logging.info("test accuracy %.4f with %d parameters", test, num_params)
  return summary
