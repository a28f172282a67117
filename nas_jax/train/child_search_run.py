"""A search whose children are trained from scratch (the seed-003 study:
controller proposes, children train on real images, validation accuracy is
the reward).

Writes to the workdir as it goes (see WORKSPACE.md): ``config.json`` /
``identity.json``, ``history.jsonl`` (one line per child, flushed when the
child finishes), ``metrics.jsonl`` + ``tensorboard/``, ``checkpoints/``,
then ``best.json``, ``best_arch.png`` / ``.dot`` (the cell),
``search_curve.png`` (reward against step) and ``summary.json``.
"""

from __future__ import annotations

import json
import pathlib
import time

import jax
import ml_collections
import numpy as np
from absl import logging

from nas_jax import checkpoint as checkpoint_lib
from nas_jax import config_check as cc
from nas_jax import costs
from nas_jax import metrics as metrics_lib
from nas_jax import viz
from nas_jax.algorithms import base as algo_base
from nas_jax.children import cell_net
from nas_jax.children import nasrl_cnn
from nas_jax.data import augment as augment_lib
from nas_jax.data import datasets
from nas_jax.evaluators import train_from_scratch
from nas_jax.controllers import make_controller
from nas_jax.parallel import many_children
from nas_jax.parallel import mesh as mesh_lib
from nas_jax.parallel import replicas
from nas_jax.spaces import registry
from nas_jax.train import host_search
from nas_jax.train import preemption
from nas_jax.train import tabular_run
from nas_jax.train import workdir as workdir_lib

SCHEMA: dict[str, cc.Rule] = {
    "run": cc.Choice(("train",), doc="the run kind (this module)"),
    "seed": cc.Int(0, 2**31 - 1, doc="seed of everything"),
    "space": cc.Choice(tuple(cell_net._NETWORKS),  # pylint: disable=protected-access
                       doc="search space (a child network exists for it)"),
    "space_kwargs": cc.Dict(doc="arguments of the space's factory"),
    "algorithm": cc.Choice(tabular_run.ALGORITHMS, doc="search algorithm"),
    "num_rounds": cc.Int(1, 10**7, doc="rounds of batch_size children"),
    "data_parallel": cc.Bool(doc="shard each child's batches over the local "
                             "devices"),
    "per_device_children": cc.Bool(
        doc="every device (of every process) trains its own child and runs "
        "a synchronous controller replica; the children per round must be "
        "a multiple of the device count"),
    "checkpoint_every": cc.Int(1, 10**7, doc="rounds between checkpoints"),
    "keep": cc.Int(2, 10**6, doc="checkpoints kept"),
    **cc.image_data_rules(),
    "network.num_cells": cc.Int(1, 64, doc="cells in a child"),
    "network.channels": cc.Int(1, 4096, doc="channels of a child's cells"),
    "network.num_layers": cc.Int(1, 64, doc="NAS-RL: conv layers (= "
                                 "space_kwargs.num_layers)"),
    "network.search_strides": cc.Bool(doc="NAS-RL: layers choose a stride "
                                      "(= space_kwargs.search_strides)"),
    "network.skip_connections": cc.Bool(doc="NAS-RL: learned skip "
                                        "connections (= space_kwargs."
                                        "skip_connections)"),
    "network.num_blocks": cc.Int(1, 64, doc="NASNet: blocks per cell, B (= "
                                 "space_kwargs.num_blocks)"),
    "network.num_reductions": cc.Int(0, 16, doc="NASNet: reduction cells "
                                     "(each halves the image)"),
    "child.epochs": cc.Int(1, 10**5, doc="training epochs per child"),
    "child.batch_size": cc.Int(1, 10**6, doc="child training batch"),
    "child.learning_rate": cc.Float(gt=0, doc="child learning rate (cosine "
                                    "decayed)"),
    "child.optimizer": cc.Choice(("sgd", "adam"), doc="child optimizer"),
    "child.momentum": cc.Float(ge=0, lt=1, doc="SGD momentum"),
    "child.weight_decay": cc.Float(ge=0, doc="child weight decay"),
    "child.eval_batch_size": cc.Int(1, 10**6, doc="evaluation batch"),
    "child.early_stop_steps": cc.Int(0, 10**9, doc="Block-QNN early stop: "
                                     "train steps per child (0: all epochs)"),
    "network.reduce_every": cc.Int(0, 64, doc="cells between 2x2 max pools"),
    "reward.kind": cc.Choice(("accuracy", "blockqnn"), doc="the reward: val "
                             "accuracy, or Block-QNN's accuracy - mu "
                             "log(MFLOPs) - rho log(density)"),
    "reward.mu": cc.Float(ge=0, doc="Block-QNN FLOPs weight"),
    "reward.rho": cc.Float(ge=0, doc="Block-QNN density weight"),
    **cc.controller_rules(),
    **cc.algorithm_rules(),
}
# Changing these never changes what a resumed run computes; num_rounds may
# grow (a finished run is extended by the rounds added).
SAFE_FIELDS = ("keep", "checkpoint_every", "data.data_dir",
               "nonfinite_reward")
GROW_FIELDS = ("num_rounds",)


def shaped(config, space, trainer, evaluator):
  """``evaluator`` with the reward of ``config.reward`` (default accuracy)."""
  reward = config.get("reward", {})
  if reward.get("kind", "accuracy") == "accuracy":
    return evaluator
  return costs.ShapedEvaluator(evaluator, costs.blockqnn_shaping(
      trainer.network, space, trainer.dataset.train_images.shape[1:],
      mu=reward.get("mu", 0.5), rho=reward.get("rho", 0.5)))


def check_config(config: ml_collections.ConfigDict) -> None:
  """Checks every field (cheap: nothing is loaded, compiled or written).

  Raises:
    ValueError: naming the dotted field, its allowed range and the value.
  """
  cc.check(config, SCHEMA, extra=[cc.algorithm_cross_checks])
  if config.get("data_parallel") and config.get("per_device_children"):
    raise ValueError("data_parallel and per_device_children are both True; "
                     "a device either trains its own child or a shard of "
                     "every child's batch: set one of them to False")
  space = registry.get(config.space, **config.get("space_kwargs", {}))
  try:
    tabular_run.build_algorithm(config, space)
  except (TypeError, ValueError) as e:
    raise ValueError(f"config.{config.algorithm}: {e}") from None
  try:
    cell_net.make_network(config.space, num_classes=10, **config.network)
  except (TypeError, ValueError) as e:
    raise ValueError(f"config.network: {e}") from None
  if config.space == "nasrl":
    _check_nasrl(config)
  if config.space == "nasnet":
    _check_nasnet(config)


# Image height of each data set, so a config is checked without loading it.
_IMAGE_SIZE = {"digits": 8, "mnist": 28, "fashion_mnist": 28, "cifar10": 32}


def _check_same(config: ml_collections.ConfigDict, names) -> None:
  """The child network must have the space's layout."""
  kwargs = dict(config.get("space_kwargs", {}))
  for name in names:
    if name in config.network and name in kwargs and (
        config.network[name] != kwargs[name]):
      raise ValueError(
          f"network.{name} = {config.network[name]!r} differs from "
          f"space_kwargs.{name} = {kwargs[name]!r}; the child network must "
          f"have the space's layout: set both to the same value")


def _check_nasnet(config: ml_collections.ConfigDict) -> None:
  """NASNet (Zoph et al. 2018): cells of the space's B blocks, and enough
  pixels for the reductions."""
  _check_same(config, ("num_blocks",))
  from nas_jax.children import nasnet  # pylint: disable=g-import-not-at-top
  nasnet.check_sizes(cell_net.make_network("nasnet", num_classes=10,
                                           **config.network))
  size = _IMAGE_SIZE[config.data.name]
  reductions = config.network.get("num_reductions", 2)
  if 2 ** reductions > size:
    raise ValueError(
        f"network.num_reductions = {reductions} halves the {size}x{size} "
        f"images of data.name={config.data.name!r} below 1 pixel; use at "
        f"most {int(np.log2(size))}")


def _check_nasrl(config: ml_collections.ConfigDict) -> None:
  """The NAS-RL network must match its space, and no code of the space
  may shrink the images below one pixel (Zoph & Le 2017, Sec. 3.1)."""
  kwargs = dict(config.get("space_kwargs", {}))
  _check_same(config, ("num_layers", "search_strides", "skip_connections"))
  size = _IMAGE_SIZE[config.data.name]
  nasrl_cnn.check_image_size(
      (size, size), kwargs.get("num_layers", 6),
      kwargs.get("search_strides", True),
      what=f"space_kwargs (data.name={config.data.name!r})")


def build_trainer(config: ml_collections.ConfigDict):
  space = registry.get(config.space, **config.get("space_kwargs", {}))
  data = config.data
  dataset = datasets.load(data.name, data_dir=data.get("data_dir") or None,
                          num_val=data.get("num_val") or None,
                          max_train=data.get("max_train") or None,
                          seed=data.get("split_seed", 0))
  network = cell_net.make_network(config.space,
                                  num_classes=dataset.num_classes,
                                  **config.network)
  augment = None
  if data.get("augment") == "cifar":
    augment = lambda k, x: augment_lib.standard_cifar(
        k, x, cutout_size=data.get("cutout", 0))
  elif data.get("augment"):
    raise ValueError(f"data.augment must be '' or 'cifar', got "
                     f"{data.augment!r}")
  # Data parallelism over every local device (GSPMD): same results as one
  # device, within float tolerance (tests/test_parallel.py).
  mesh = mesh_lib.make_mesh() if config.get("data_parallel") else None
  trainer = train_from_scratch.ChildTrainer(
      space, network, dataset, augment=augment, seed=config.seed, mesh=mesh,
      **config.child)
  return space, dataset, trainer


def per_device(config: ml_collections.ConfigDict, space, trainer, algo):
  """Many children at once: the evaluator trains one child per device of
  the mesh over every process's devices, and the algorithm runs as
  synchronous replicas on the same mesh (``nas_jax.parallel``)."""
  mesh = mesh_lib.make_mesh()
  many_children.check_divisible(
      algo.batch_size, mesh_lib.data_size(mesh),
      f"{config.algorithm}.batch_size (children per round)")
  controller = reinforce = None
  if config.algorithm in ("reinforce", "ppo"):
    controller = make_controller(space, **config.controller)
  if config.algorithm == "reinforce":
    reinforce = dict(config.reinforce)
  logging.info("per-device children: %s; %d children per round, %d per "
               "device", mesh_lib.process_info(), algo.batch_size,
               algo.batch_size // mesh_lib.data_size(mesh))
  evaluator = many_children.PerDeviceEvaluator(trainer, mesh)
  algo = replicas.synchronous_replicas(algo, mesh, controller=controller,
                                       reinforce=reinforce)
  return evaluator, algo


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  check_config(config)
  if config.get("per_device_children"):
    # Needs the devices of every process (after jax.distributed started), so
    # it is checked here rather than in check_config.
    many_children.check_divisible(
        tabular_run.build_algorithm(
            config, registry.get(config.space, **config.get(
                "space_kwargs", {}))).batch_size,
        jax.device_count(),
        f"{config.algorithm}.batch_size (children per round)")
  workdir = pathlib.Path(workdir)
  workdir_lib.check_identity(workdir, config, safe=SAFE_FIELDS,
                             grow_only=GROW_FIELDS)
  workdir_lib.record(workdir, config, safe=SAFE_FIELDS)
  logging.info("loading data set %r", config.data.name)
  space, dataset, trainer = build_trainer(config)
  algo = tabular_run.build_algorithm(config, space)
  if config.get("per_device_children"):
    evaluator, algo = per_device(config, space, trainer, algo)
  else:
    evaluator = train_from_scratch.TrainFromScratchEvaluator(trainer)
  logging.info("%s on %s (%d train / %d val images %s): %s, %d rounds x %d "
               "children, %d epoch(s) each", space.name, dataset.name,
               len(dataset.train_labels), len(dataset.val_labels),
               dataset.train_images.shape[1:], algo.name, config.num_rounds,
               algo.batch_size, trainer.epochs)

  history_path = workdir / "history.jsonl"
  history = None

  def write(rec: host_search.Record):
    reward = rec.reward if np.isfinite(rec.reward) else None
    result = evaluator.cache.get(space.to_text(rec.arch))
    cost = costs.history_costs(trainer.network, space, rec.arch,
                               dataset.train_images.shape[1:])
    if not cost and getattr(result, "num_params", None):
      # No analytic model of this network (NAS-RL, NASNet): the trained
      # child's own parameter count.
      cost = {"params": int(result.num_params)}
    history.write(json.dumps({
        "step": rec.step, "round": rec.round,
        "arch": space.to_text(rec.arch), "reward": reward,
        "seconds": rec.cost, "cached": rec.cost == 0.0,
        "accuracy": getattr(result, "val_accuracy", None),
        **cost}) + "\n")
    history.flush()

  writer = metrics_lib.MetricWriter(workdir)
  best_so_far = [-float("inf")]
  prior = {}

  def on_restore(meta):
    prior.update(meta)

  def on_resume(records):
    # Lines written after the checkpoint a killed run resumes from would
    # otherwise be duplicated: rewrite the history from the checkpoint.
    nonlocal history
    history = open(history_path, "w")
    for rec in records:
      write(rec)
    last = records[-1].round if records else -1
    writer.truncate_after(last, expected_steps=range(last + 1))
    best_so_far[0] = max((r.reward for r in records
                          if host_search.is_better(r.reward, None)),
                         default=-float("inf"))

  def on_round(r, state, ev):
    trained = ev.cost[ev.cost > 0]
    rewards = np.asarray(ev.reward, np.float64)
    usable = rewards[algo_base.usable_rewards(rewards)]
    if usable.size:
      best_so_far[0] = max(best_so_far[0], float(np.max(usable)))
    writer.write_scalars(r, {
        "reward/mean": float(np.mean(rewards)),
        "reward/max": float(np.max(rewards)),
        "reward/best_so_far": best_so_far[0],
        "children/trained_this_round": int(trained.size),
        "children/seconds_per_trained": (float(np.mean(trained))
                                         if trained.size else 0.0),
        "controller/learning_rate": float(
            config.get(config.algorithm, {}).get("learning_rate", 0.0)
            if config.algorithm in ("ppo", "reinforce") else 0.0),
        **{f"controller/{k}": v
           for k, v in algo_base.state_scalars(state).items()}})
    # Durable before this round's checkpoint, so a SIGKILL after it loses no
    # metric the checkpoint covers.
    writer.flush()

  if jax.process_index() > 0:
    # Every process holds the same search state (replicated), so one copy
    # is kept: process 0's, in the main workdir (this process writes into
    # WORKDIR/process_i), and every process resumes from it.
    ckpt = checkpoint_lib.Checkpointer(workdir.parent, read_only=True,
                                       max_to_keep=config.get("keep", 3))
  else:
    ckpt = checkpoint_lib.Checkpointer(workdir,
                                       max_to_keep=config.get("keep", 3))
  t0 = time.perf_counter()

  def totals():
    return {"wall_seconds": prior.get("wall_seconds", 0.0) +
                            time.perf_counter() - t0,
            "sessions": prior.get("sessions", 0) + 1,
            "compilations": prior.get("compilations", 0) + trainer.num_traces}

  try:
    with preemption.PreemptionGuard() as guard:
      result = host_search.run(
          algo, shaped(config, space, trainer, evaluator),
          jax.random.key(config.seed),
          num_rounds=config.num_rounds, on_record=write, on_resume=on_resume,
          on_round=on_round, checkpointer=ckpt,
          checkpoint_every=config.get("checkpoint_every", 1), guard=guard,
          nonfinite=config.get("nonfinite_reward", "skip"),
          on_restore=on_restore, extra_meta=totals,
          jit=not config.get("per_device_children"))
  finally:
    if history is not None:
      history.close()
    writer.close()
    ckpt.close()
  if result.status == "preempted":
    return {"status": "preempted", "children": len(result.records)}

  best = result.best
  if best is None:
    raise ValueError("every child's reward was NaN or infinite, so there is "
                     "no best architecture; see the warnings above and the "
                     "history.jsonl of this workdir")
  best_info = {"text": space.to_text(best.arch),
               "spec": space.to_spec(best.arch), "reward": best.reward,
               "step": best.step,
               "num_params": evaluator.cache[space.to_text(best.arch)
                                             ].num_params,
               **costs.history_costs(trainer.network, space, best.arch,
                                     dataset.train_images.shape[1:])}
  (workdir / "best.json").write_text(json.dumps(best_info, indent=2))
  pictures = viz.draw(space, best.arch, workdir / "best_arch.png")
  viz.search_curve([r.reward for r in result.records],
                   workdir / "search_curve.png",
                   title=f"{algo.name} on {space.name} ({dataset.name})",
                   ylabel="validation accuracy")
  t = totals()
  summary = {"status": "done", "algorithm": algo.name, "space": space.name,
             "dataset": dataset.name, "wall_seconds": t["wall_seconds"],
             "sessions": t["sessions"],
             "children_evaluated": len(result.records),
             "distinct_children_trained": len(evaluator.cache),
             "compilations_of_train_step": t["compilations"],
             "best_reward": best.reward, "best_text": best_info["text"]}
  (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
  logging.info("done in %.1fs (this session %.1fs): %d children (%d "
               "trained, train step compiled %d time(s)); best %s val acc "
               "%.4f; pictures: %s", t["wall_seconds"],
               time.perf_counter() - t0, len(result.records),
               len(evaluator.cache), trainer.num_traces, best_info["text"],
               best.reward, ", ".join(p.name for p in pictures))
  return summary
