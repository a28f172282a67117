"""A search whose children are trained from scratch (the seed-003 study:
controller proposes, children train on real images, validation accuracy is
the reward).

Writes to the workdir as it goes (see WORKSPACE.md): ``config.json``,
``history.jsonl`` (one line per child, flushed when the child finishes),
then ``best.json``, ``best_arch.png`` / ``.dot`` (the cell), and
``search_curve.png`` (reward against step).
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
from nas_jax import metrics as metrics_lib
from nas_jax import viz
from nas_jax.algorithms import base as algo_base
from nas_jax.children import cell_net
from nas_jax.data import augment as augment_lib
from nas_jax.data import datasets
from nas_jax.evaluators import train_from_scratch
from nas_jax.parallel import mesh as mesh_lib
from nas_jax.spaces import registry
from nas_jax.train import host_search
from nas_jax.train import preemption
from nas_jax.train import tabular_run


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


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
  space, dataset, trainer = build_trainer(config)
  evaluator = train_from_scratch.TrainFromScratchEvaluator(trainer)
  algo = tabular_run.build_algorithm(config, space)
  logging.info("%s on %s (%d train / %d val images %s): %s, %d rounds x %d "
               "children, %d epoch(s) each", space.name, dataset.name,
               len(dataset.train_labels), len(dataset.val_labels),
               dataset.train_images.shape[1:], algo.name, config.num_rounds,
               algo.batch_size, trainer.epochs)

  history_path = workdir / "history.jsonl"
  history = None

  def write(rec: host_search.Record):
    history.write(json.dumps({
        "step": rec.step, "round": rec.round,
        "arch": space.to_text(rec.arch), "reward": rec.reward,
        "seconds": rec.cost, "cached": rec.cost == 0.0}) + "\n")
    history.flush()

  writer = metrics_lib.MetricWriter(workdir)
  best_so_far = [-float("inf")]

  def on_resume(records):
    # Lines written after the checkpoint a killed run resumes from would
    # otherwise be duplicated: rewrite the history from the checkpoint.
    nonlocal history
    history = open(history_path, "w")
    for rec in records:
      write(rec)
    writer.truncate_after(records[-1].round if records else -1)
    best_so_far[0] = max((r.reward for r in records), default=-float("inf"))

  def on_round(r, state, ev):
    trained = ev.cost[ev.cost > 0]
    best_so_far[0] = max(best_so_far[0], float(np.max(ev.reward)))
    writer.write_scalars(r, {
        "reward/mean": float(np.mean(ev.reward)),
        "reward/max": float(np.max(ev.reward)),
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

  ckpt = checkpoint_lib.Checkpointer(workdir,
                                     max_to_keep=config.get("keep", 3))
  t0 = time.perf_counter()
  try:
    with preemption.PreemptionGuard() as guard:
      result = host_search.run(
          algo, evaluator, jax.random.key(config.seed),
          num_rounds=config.num_rounds, on_record=write, on_resume=on_resume,
          on_round=on_round, checkpointer=ckpt,
          checkpoint_every=config.get("checkpoint_every", 1), guard=guard)
  finally:
    if history is not None:
      history.close()
    writer.close()
    ckpt.close()
  wall = time.perf_counter() - t0
  if result.status == "preempted":
    return {"status": "preempted", "children": len(result.records)}

  best = result.best
  best_info = {"text": space.to_text(best.arch),
               "spec": space.to_spec(best.arch), "reward": best.reward,
               "step": best.step,
               "num_params": evaluator.cache[space.to_text(best.arch)
                                             ].num_params}
  (workdir / "best.json").write_text(json.dumps(best_info, indent=2))
  pictures = viz.draw(space, best.arch, workdir / "best_arch.png")
  viz.search_curve([r.reward for r in result.records],
                   workdir / "search_curve.png",
                   title=f"{algo.name} on {space.name} ({dataset.name})",
                   ylabel="validation accuracy")
  summary = {"status": "done", "algorithm": algo.name, "space": space.name,
             "dataset": dataset.name, "wall_seconds": wall,
             "children_evaluated": len(result.records),
             "distinct_children_trained": len(evaluator.cache),
             "compilations_of_train_step": trainer.num_traces,
             "best_reward": best.reward, "best_text": best_info["text"]}
  (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
  logging.info("done in %.1fs: %d children (%d trained, train step compiled "
               "%d time(s)); best %s val acc %.4f; pictures: %s", wall,
               len(result.records), len(evaluator.cache), trainer.num_traces,
               best_info["text"], best.reward,
               ", ".join(p.name for p in pictures))
  return summary
