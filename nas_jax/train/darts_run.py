"""Run kind ``"darts"``: DARTS (Liu et al., ICLR 2019) from a config
(``experiments/configs/darts.py``).

Trains a mixed-op supernet (``nas_jax.children.darts_supernet``) with the
bilevel optimiser of ``nas_jax.algorithms.darts``: op weights on the
training split, architecture weights alpha on the validation split (the
paper's two halves of the CIFAR-10 training set), then derives the cell
(argmax op per edge excluding ``none``; top-2 incoming edges per node in
the two-input micro cell). A NAS-Bench-201 cell is looked up in the
CIFAR-10 table (when the table is present): the accuracy the derived cell
reaches when trained for 200 epochs on CIFAR-10, whatever data the
supernet saw.

Writes the workdir (WORKSPACE.md): ``config.json``, ``history.jsonl`` (one
line per epoch: the cell derived from alpha at that epoch, ``reward`` = the
supernet's validation accuracy, the softmaxed alphas, and for NAS-Bench-201
the table's accuracies), ``metrics.jsonl`` + ``tensorboard/``,
``checkpoints/`` (every ``checkpoint_every`` epochs; a killed run resumes
with the same command and reaches the same bits), ``best.json`` (the
derived cell), ``best_arch.png`` / ``.dot``, ``search_curve.png``,
``alpha_trajectory.png`` and ``summary.json``.
"""

from __future__ import annotations

import functools
import json
import pathlib
import time
from typing import Any

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
from nas_jax.algorithms import darts as darts_lib
from nas_jax.children import darts_supernet
from nas_jax.children import enas_cnn
from nas_jax.data import datasets
from nas_jax.data import nasbench201 as nb201_data
from nas_jax.data import pipeline
from nas_jax.spaces import nasbench201
from nas_jax.spaces import enas as enas_space
from nas_jax.spaces import registry
from nas_jax.train import preemption

IMAGE_HW = {"digits": 8, "mnist": 28, "fashion_mnist": 28, "cifar10": 32}
TABLE_COLUMNS = ("test_acc_200ep", "valid_acc_200ep", "valid_acc_12ep")

SCHEMA: dict[str, cc.Rule] = {
    "run": cc.Choice(("darts",), doc="the run kind (this module)"),
    "seed": cc.Int(0, 2**31 - 1, doc="seed of everything"),
    "space": cc.Choice(darts_supernet.SPACES, doc="the searched cell"),
    "space_kwargs": cc.Dict(doc="arguments of the space's factory "
                            "(enas_micro: num_nodes)"),
    "order": cc.Int(1, 2, doc="1: first-order DARTS; 2: second order "
                    "(finite-difference Hessian-vector product, Eq. 7-8)"),
    "num_epochs": cc.Int(1, 10**6, doc="passes over the training split"),
    "checkpoint_every": cc.Int(1, 10**6, doc="epochs between checkpoints"),
    "keep": cc.Int(2, 10**6, doc="checkpoints kept"),
    "table_path": cc.Str(doc="NAS-Bench-201 CSV ('': the data directory's, "
                         "no lookup if absent; 'off': no lookup)"),
    "eval_batch_size": cc.Int(1, 10**6, doc="batch of the validation "
                              "accuracy pass"),
    **cc.image_data_rules(),
    "data.num_val": cc.Int(1, 10**7, doc="validation images (alpha's "
                           "training data)"),
    "data.max_train": cc.Int(0, 10**8, doc="training images for the weights "
                             "(0: all)"),
    "network.channels": cc.Int(1, 4096, doc="width of the first stage"),
    "network.num_cells": cc.Int(1, 64, doc="cells per stage"),
    "network.num_reductions": cc.Int(0, 8, doc="reductions between stages"),
    "weights.batch_size": cc.Int(1, 10**6, doc="batch of the weight and the "
                                 "architecture steps"),
    "weights.learning_rate": cc.Float(gt=0, doc="SGD learning rate of w "
                                      "(cosine-annealed; DARTS: 0.025)"),
    "weights.lr_min": cc.Float(ge=0, doc="final learning rate of w "
                               "(DARTS: 0.001)"),
    "weights.momentum": cc.Float(ge=0, lt=1, doc="SGD momentum (0.9)"),
    "weights.weight_decay": cc.Float(ge=0, doc="L2 on w (3e-4)"),
    "weights.grad_clip": cc.Float(ge=0, doc="global norm clip of w's "
                                  "gradient (5; 0: none)"),
    "arch.learning_rate": cc.Float(gt=0, doc="Adam learning rate of alpha "
                                   "(DARTS: 3e-4)"),
    "arch.b1": cc.Float(ge=0, lt=1, doc="Adam beta1 of alpha (0.5)"),
    "arch.b2": cc.Float(ge=0, lt=1, doc="Adam beta2 of alpha (0.999)"),
    "arch.weight_decay": cc.Float(ge=0, doc="L2 on alpha (1e-3)"),
    "arch.init_scale": cc.Float(ge=0, doc="alpha = init_scale * N(0, 1) at "
                                "the start (1e-3)"),
}
# Changing these never changes what a resumed run computes.
SAFE_FIELDS = ("keep", "checkpoint_every", "data.data_dir", "table_path")
GROW_FIELDS = ()


def check_config(config: ml_collections.ConfigDict) -> None:
  """Checks every field (cheap: nothing is loaded, compiled or written).

  Raises:
    ValueError: naming the dotted field, its allowed range and the value.
  """
  cc.check(config, SCHEMA)
  kwargs = dict(config.get("space_kwargs", {}))
  if config.space == "nasbench201" and kwargs:
    raise ValueError(f"space_kwargs must be empty for nasbench201, got "
                     f"{kwargs}")
  try:
    registry.get(config.space, **kwargs)
  except (TypeError, ValueError) as e:
    raise ValueError(f"space_kwargs: {e}") from None
  if not config.weights.lr_min <= config.weights.learning_rate:
    raise ValueError(f"weights.lr_min must be <= weights.learning_rate "
                     f"({config.weights.learning_rate}), got "
                     f"{config.weights.lr_min}")
  hw = IMAGE_HW[config.data.name]
  enas_cnn.check_image_size(
      (hw, hw), config.network.num_reductions,
      f"network.num_reductions (data.name={config.data.name!r}, {hw}x{hw} "
      "images)")


# -- building -----------------------------------------------------------------


def _num_nodes(config) -> int:
  return int(config.get("space_kwargs", {}).get("num_nodes", 5))


def build_network(config, num_classes: int):
  kwargs = dict(config.network)
  if config.space == "enas_micro":
    kwargs["num_nodes"] = _num_nodes(config)
  return darts_supernet.make_network(config.space, num_classes=num_classes,
                                     **kwargs)


def weight_schedule(config, total_steps: int) -> optax.Schedule:
  """Cosine from ``learning_rate`` to ``lr_min`` over the run (DARTS)."""
  w = config.weights
  return optax.cosine_decay_schedule(
      w.learning_rate, max(total_steps, 1),
      alpha=w.lr_min / w.learning_rate)


def build_optimizers(config, total_steps: int):
  """(w optimizer, alpha optimizer, the weights' schedule)."""
  w, a = config.weights, config.arch
  schedule = weight_schedule(config, total_steps)
  parts = []
  if w.grad_clip:
    parts.append(optax.clip_by_global_norm(w.grad_clip))
  if w.weight_decay:
    parts.append(optax.add_decayed_weights(w.weight_decay))
  parts.append(optax.sgd(schedule, momentum=w.momentum or None))
  # PyTorch's Adam(weight_decay=...) adds the L2 term to the gradient
  # before the moments, as add_decayed_weights before adam does.
  a_parts = []
  if a.weight_decay:
    a_parts.append(optax.add_decayed_weights(a.weight_decay))
  a_parts.append(optax.adam(a.learning_rate, b1=a.b1, b2=a.b2))
  return optax.chain(*parts), optax.chain(*a_parts), schedule


def make_loss(network, dataset):
  """``(params, batch_stats, alpha, (uint8 images, labels)) -> (loss,
  batch_stats)``: the supernet's cross-entropy, BN in training mode."""

  def loss_fn(params, stats, alpha, batch):
    images, labels = batch
    logits, upd = network.apply(
        {"params": params, "batch_stats": stats},
        dataset.normalize(images), alpha, True, mutable=["batch_stats"])
    loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
        logits, labels))
    return loss, upd["batch_stats"]

  return loss_fn


def load_data(config):
  d = config.data
  return datasets.load(d.name, data_dir=d.get("data_dir") or None,
                       num_val=d.num_val, max_train=d.max_train or None,
                       seed=d.split_seed)


def softmax_weights(alpha) -> Any:
  """Alpha as softmaxed per-edge weights, a JSON-able nested list per cell."""
  if isinstance(alpha, dict):
    return {k: softmax_weights(v) for k, v in sorted(alpha.items())}
  w = jax.nn.softmax(jnp.asarray(alpha, jnp.float32), axis=-1)
  return np.round(np.asarray(w, np.float64), 6).tolist()


def edge_labels(config) -> tuple[list[str], tuple[str, ...]]:
  """Names of alpha's rows (cells concatenated in sorted key order) and of
  its columns."""
  if config.space == "nasbench201":
    return ([f"{j}->{i}" for i, j in nasbench201.EDGES], nasbench201.OPS)
  edges = darts_supernet.micro_edges(_num_nodes(config))
  labels = [f"{cell} {s}->n{i}" for cell in ("normal", "reduce")
            for i, s in edges]
  return labels, enas_space.MICRO_OPS


def _rows(weights) -> np.ndarray:
  """``[E, K]`` from one epoch's ``softmax_weights`` (cells stacked)."""
  if isinstance(weights, dict):
    return np.concatenate([np.asarray(weights[k]) for k in sorted(weights)])
  return np.asarray(weights)


def alpha_trajectory(trajectory, path, *, edges, ops, title="DARTS"
                     ) -> pathlib.Path:
  """One panel per edge: the softmax weight of every op against the epoch.

  ``trajectory`` is a list of ``softmax_weights`` (epoch 0 = before
  training)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  w = np.stack([_rows(t) for t in trajectory])  # [T, E, K]
  n = w.shape[1]
  cols = min(n, 5 if n > 6 else 3)
  rows = -(-n // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows),
                           sharex=True, sharey=True, squeeze=False)
  x = np.arange(w.shape[0])
  for e in range(rows * cols):
    ax = axes[e // cols][e % cols]
    if e >= n:
      ax.axis("off")
      continue
    for k, op in enumerate(ops):
      ax.plot(x, w[:, e, k], label=op, color=f"C{k}")
    ax.set_title(edges[e], fontsize=9)
    ax.grid(alpha=0.3)
  axes[0][0].legend(fontsize=7, loc="upper left")
  fig.supxlabel("epoch")
  fig.supylabel("softmax(alpha)")
  fig.suptitle(title)
  fig.tight_layout()
  path = pathlib.Path(path)
  fig.savefig(path, dpi=90)
  plt.close(fig)
  return path


def _load_table(config):
  path = config.get("table_path") or None
  if path == "off":
    return None
  try:
    return nb201_data.load(path)
  except FileNotFoundError as e:
    if path:  # asked for explicitly: an error
      raise
    logging.warning("no NAS-Bench-201 lookup of the derived cell: %s", e)
    return None


# -- run -----------------------------------------------------------------------


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  check_config(config)
  # Data (and the table) first: a missing file fails before anything is
  # written.
  dataset = load_data(config)
  space = registry.get(config.space, **config.get("space_kwargs", {}))
  table = _load_table(config) if config.space == "nasbench201" else None
  n_train, n_val = len(dataset.train_labels), len(dataset.val_labels)
  bs = config.weights.batch_size
  if not bs <= min(n_train, n_val):
    raise ValueError(f"weights.batch_size must be <= {min(n_train, n_val)} "
                     f"(the smaller of the {n_train} training and {n_val} "
                     f"validation images), got {bs}")
  steps_per_epoch = n_train // bs
  val_steps = n_val // bs
  total = steps_per_epoch * config.num_epochs
  network = build_network(config, dataset.num_classes)
  w_tx, a_tx, schedule = build_optimizers(config, total)
  algo = darts_lib.darts(make_loss(network, dataset), w_tx, a_tx,
                         order=config.order, xi=schedule)

  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
  logging.info("DARTS (order %d) on %s, %s (%d train / %d val images %s): "
               "%d epochs x %d steps of batch %d", config.order, space.name,
               dataset.name, n_train, n_val, dataset.image_shape,
               config.num_epochs, steps_per_epoch, bs)

  key = jax.random.key(config.seed)
  k_w, k_a = jax.random.split(key)
  alpha = darts_supernet.init_alpha(config.space, k_a,
                                    num_nodes=_num_nodes(config),
                                    scale=config.arch.init_scale)
  variables = jax.jit(network.init, static_argnums=3)(
      k_w, jnp.zeros((1, *dataset.image_shape)), alpha, False)
  state = algo.init(variables["params"], variables.get("batch_stats", {}),
                    alpha)
  step_fn = jax.jit(algo.step)

  @jax.jit
  def correct(params, stats, alpha, images, labels):
    logits = network.apply({"params": params, "batch_stats": stats},
                           dataset.normalize(images), alpha, False)
    return jnp.sum(jnp.argmax(logits, -1) == labels)

  def val_accuracy(st) -> float:
    n = 0
    eb = config.eval_batch_size
    for s in range(0, n_val, eb):
      n += int(correct(st.params, st.model_state, st.alpha,
                       dataset.val_images[s:s + eb],
                       np.asarray(dataset.val_labels[s:s + eb], np.int32)))
    return n / n_val

  split_seed = {"train": 0, "val": 1}

  @functools.lru_cache(maxsize=4)
  def order(split, epoch):
    size = n_train if split == "train" else n_val
    return pipeline.epoch_permutation(size, seed=config.seed + split_seed[
        split], epoch=epoch)

  def batch(split, epoch, i):
    images = dataset.train_images if split == "train" else dataset.val_images
    labels = dataset.train_labels if split == "train" else dataset.val_labels
    if split == "val":  # fewer val batches than train batches: cycle
      epoch, i = (epoch * steps_per_epoch + i) // val_steps, (
          epoch * steps_per_epoch + i) % val_steps
    idx = np.sort(order(split, epoch)[i * bs:(i + 1) * bs])
    return images[idx], np.asarray(labels[idx], np.int32)

  def record(epoch, st, reward, sums) -> dict:
    arch = darts_supernet.derive(config.space, st.alpha,
                                 num_nodes=_num_nodes(config))
    rec = {"step": epoch, "epoch": epoch, "arch": space.to_text(arch),
           "reward": reward, **{k: v for k, v in sums.items()},
           "weights": softmax_weights(st.alpha)}
    if table is not None:
      i = int(space.index(arch))
      for c in TABLE_COLUMNS:
        rec[c] = float(getattr(table, c)[i])
    return rec

  ckpt = checkpoint_lib.Checkpointer(workdir, max_to_keep=config.keep)
  records = [record(-1, state, val_accuracy(state), {})]
  start = 0
  restored = ckpt.restore(state)
  if restored is not None:
    _, state, meta = restored
    records = list(meta["records"])
    start = int(meta["epoch"]) + 1
    logging.info("resumed after epoch %d/%d", start, config.num_epochs)
  history_path = workdir / "history.jsonl"
  with open(history_path, "w") as f:  # drop what a killed run wrote past it
    f.writelines(json.dumps(r) + "\n" for r in records)
  writer = metrics_lib.MetricWriter(workdir)
  writer.truncate_after(start - 1)

  t_run = time.perf_counter()
  status = "done"
  try:
    with preemption.PreemptionGuard() as guard, open(history_path,
                                                     "a") as history:
      for epoch in range(start, config.num_epochs):
        t0 = time.perf_counter()
        sums: dict[str, float] = {}
        for i in range(steps_per_epoch):
          state, m = step_fn(state, batch("train", epoch, i),
                             batch("val", epoch, i))
          for k, v in m.items():
            sums[k] = sums.get(k, 0.0) + float(v) / steps_per_epoch
        reward = val_accuracy(state)
        rec = record(epoch, state, reward, sums)
        records.append(rec)
        history.write(json.dumps(rec) + "\n")
        history.flush()
        scalars = {**sums, "val_accuracy": reward,
                   "seconds": time.perf_counter() - t0,
                   **{c: rec[c] for c in TABLE_COLUMNS if c in rec}}
        writer.write_scalars(epoch, scalars)
        logging.info("epoch %d/%d | %.1fs | train loss %.4f | val acc %.4f "
                     "| derived %s%s", epoch + 1, config.num_epochs,
                     scalars["seconds"], sums.get("train_loss", 0.0), reward,
                     rec["arch"], f" | NB201 test {rec['test_acc_200ep']:.2f}"
                     if "test_acc_200ep" in rec else "")
        last = epoch + 1 == config.num_epochs
        stop = guard.requested and not last
        if stop or last or (epoch + 1) % config.checkpoint_every == 0:
          writer.flush()  # durable before the checkpoint that covers it
          with guard.critical():
            ckpt.save(epoch, state, {"epoch": epoch, "records": records})
        if stop:
          status = "preempted"
          logging.warning("stopped after epoch %d (%s); checkpoint saved, "
                          "run the same command to resume", epoch + 1,
                          guard.signal_name)
          break
  finally:
    writer.close()
    ckpt.close()
  wall = time.perf_counter() - t_run
  if status == "preempted":
    return {"status": "preempted", "epochs": len(records) - 1}

  final = records[-1]
  arch = space.from_text(final["arch"])
  best = {"text": final["arch"], "spec": space.to_spec(arch),
          "reward": final["reward"], "order": config.order,
          "weights": final["weights"],
          **{c: final[c] for c in TABLE_COLUMNS if c in final}}
  if config.space == "nasbench201":
    best["parameter_free_edges"] = int(sum(
        nasbench201.OPS[a] in ("skip_connect", "avg_pool_3x3") for a in arch))
  else:
    best["retrain"] = (
        "python experiments/main.py --config=experiments/configs/"
        f"enas_retrain.py:micro --config.space_kwargs.num_nodes="
        f"{_num_nodes(config)} --config.arch='{final['arch']}' "
        "--workdir=<dir>")
  (workdir / "best.json").write_text(json.dumps(best, indent=2))
  viz.draw(space, arch, workdir / "best_arch.png")
  viz.search_curve([r["reward"] for r in records],
                   workdir / "search_curve.png",
                   title=f"DARTS (order {config.order}) {space.name}, "
                   f"{dataset.name}", ylabel="supernet validation accuracy")
  edges, ops = edge_labels(config)
  alpha_trajectory([r["weights"] for r in records],
                   workdir / "alpha_trajectory.png", edges=edges, ops=ops,
                   title=f"DARTS (order {config.order}) on {space.name}, "
                   f"{dataset.name}")
  summary = {"status": "done", "space": space.name, "dataset": dataset.name,
             "order": config.order, "wall_seconds": wall,
             "epochs": config.num_epochs, "steps": int(state.step),
             "best_text": best["text"], "best_reward": best["reward"],
             **{c: best[c] for c in TABLE_COLUMNS if c in best}}
  if "parameter_free_edges" in best:
    summary["parameter_free_edges"] = best["parameter_free_edges"]
  (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
  logging.info("done in %.1fs; derived %s (supernet val acc %.4f)%s", wall,
               best["text"], best["reward"],
               f", NAS-Bench-201 CIFAR-10 test {best['test_acc_200ep']:.2f}"
               if "test_acc_200ep" in best else "")
  return summary
