"""Host side of a tabular search run: build from a config, run the jitted
search over seeds, write the results to the workdir.

Files written (see WORKSPACE.md): ``config.json``, ``history.jsonl`` (one line
per evaluated architecture: seed, step, arch text, reward, cost),
``best.json`` (per seed: spec, text line, reward, and any reported columns)
and ``summary.json``.
"""

from __future__ import annotations

import json
import pathlib
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from nas_jax import algorithms
from nas_jax import checkpoint as checkpoint_lib
from nas_jax import metrics as metrics_lib
from nas_jax.controllers import make_controller
from nas_jax.data import nasbench201 as nb201_data
from nas_jax.evaluators import table as table_lib
from nas_jax.evaluators import tabular
from nas_jax.spaces import base as spaces_base
from nas_jax.algorithms.base import state_scalars as algos_state_scalars
from nas_jax.train import preemption
from nas_jax.train import search as search_lib


def build_evaluator(config: ml_collections.ConfigDict):
  """The config's evaluator: ``"nasbench201"`` (its CSV and protocol) or
  ``"table"`` (any table of ``config.space``; fields in ``config.table``, see
  ``nas_jax.evaluators.table.evaluator``)."""
  if config.evaluator == "nasbench201":
    table = nb201_data.load(config.get("table_path") or None)
    return tabular.nasbench201(table, reward_column=config.reward_column,
                               epochs_charged=config.epochs_charged)
  if config.evaluator == "table":
    return table_lib.evaluator_from_config(config)
  raise ValueError(f"config.evaluator: unknown evaluator "
                   f"{config.evaluator!r}; known: 'nasbench201', 'table'")


def build_algorithm(config: ml_collections.ConfigDict,
                    space: spaces_base.SearchSpace) -> algorithms.Algorithm:
  name = config.algorithm
  if name == "random":
    return algorithms.random_search(space, **config.random)
  if name in ("evolution", "rea"):
    return algorithms.regularized_evolution(space, **config.evolution)
  if name in ("reinforce", "ppo"):
    ctrl = make_controller(space, **config.controller)
    factory = algorithms.reinforce if name == "reinforce" else algorithms.ppo
    return factory(ctrl, **config[name])
  if name == "q_learning":
    return algorithms.q_learning(space, **config.q_learning)
  if name == "pnas":
    return algorithms.pnas(space, **config.pnas)
  raise ValueError(f"unknown algorithm {name!r}; known: random, evolution "
                   "(rea), reinforce, ppo, q_learning, pnas")


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs (or resumes) the search and writes its files; see module doc.

  The jitted search advances ``config.rounds_per_checkpoint`` rounds per call
  and is checkpointed in between, so a killed run resumes where it stopped
  and reaches the same result as an uninterrupted one.
  """
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
  evaluator = build_evaluator(config)
  space = evaluator.space
  algo = build_algorithm(config, space)
  fns = search_lib.make_search_fns(
      algo, evaluator, space.num_decisions, max_evals=config.max_evals,
      time_budget=config.get("time_budget") or None)
  if config.num_seeds < 1:
    raise ValueError(f"num_seeds must be >= 1, got {config.num_seeds}")
  chunk = config.get("rounds_per_checkpoint", 0) or config.max_evals + 1
  if chunk < 1:
    raise ValueError(f"rounds_per_checkpoint must be >= 1, got {chunk}")
  keys = jax.random.split(jax.random.key(config.seed), config.num_seeds)
  init = jax.jit(jax.vmap(fns.init))
  advance = jax.jit(jax.vmap(fns.advance, (0, None)))
  carry = init(keys)
  ckpt = checkpoint_lib.Checkpointer(workdir,
                                     max_to_keep=config.get("keep", 3))
  restored = ckpt.restore(carry)
  n_chunk = 0
  if restored is not None:
    n_chunk, carry, meta = restored
    logging.info("resumed from checkpoint %d (round %d)", n_chunk,
                 meta["round"])
  logging.info("searching %s with %s: %d seed(s), budget %s s, <= %d evals",
               space.name, algo.name, config.num_seeds,
               config.get("time_budget"), config.max_evals)
  writer = metrics_lib.MetricWriter(workdir)
  writer.truncate_after(int(np.max(carry.round)) - 1)
  t0 = time.perf_counter()
  status = "done"
  with preemption.PreemptionGuard() as guard:
    while not bool(np.all(carry.done)):
      n_chunk += 1
      t_chunk, evals_before = time.perf_counter(), int(np.sum(carry.num_evals))
      carry = advance(carry, n_chunk * chunk)
      rnd = int(np.max(carry.round))
      new_evals = int(np.sum(carry.num_evals)) - evals_before
      writer.write_scalars(rnd - 1, {
          "reward/best_so_far_mean_over_seeds": float(
              np.mean(np.max(carry.rewards, axis=1))),
          "search/evaluations_mean_over_seeds": float(
              np.mean(carry.num_evals)),
          "search/simulated_seconds_mean": float(np.mean(carry.time_used)),
          "search/evaluations_per_second": new_evals / max(
              time.perf_counter() - t_chunk, 1e-9),
          **{f"controller/{k}": v
             for k, v in algos_state_scalars(carry.state).items()}})
      writer.flush()  # durable before the checkpoint that covers it
      ckpt.save(n_chunk, carry, {"round": rnd})
      logging.info("round %d: %d evaluations per seed so far, best reward "
                   "%.4f (mean over seeds)", rnd, int(np.mean(carry.num_evals)),
                   float(np.mean(np.max(carry.rewards, axis=1))))
      if guard.requested and not bool(np.all(carry.done)):
        status = "preempted"
        break
  ckpt.close()
  writer.close()
  wall = time.perf_counter() - t0
  if status == "preempted":
    logging.warning("stopped by %s after checkpoint %d; run the same command "
                    "to resume", guard.signal_name, n_chunk)
    return {"status": status, "checkpoint": n_chunk}
  result = jax.vmap(fns.finish)(carry)
  result = jax.tree.map(np.asarray, result._replace(state=None))
  return _write_results(config, workdir, space, evaluator, algo, result, wall)


def _write_results(config, workdir, space, evaluator, algo, result,
                   wall) -> dict:
  with open(workdir / "history.jsonl", "w") as f:
    for s in range(config.num_seeds):
      for i in range(int(result.num_evals[s])):
        f.write(json.dumps({
            "seed": s, "step": i, "arch": space.to_text(result.archs[s, i]),
            "reward": float(result.rewards[s, i]),
            "cost": float(result.costs[s, i])}) + "\n")
  best = []
  for s in range(config.num_seeds):
    arch = result.best_arch[s]
    entry = {"seed": s, "text": space.to_text(arch),
             "spec": space.to_spec(arch),
             "reward": float(result.best_reward[s]),
             "num_evals": int(result.num_evals[s]),
             "time_used": float(result.time_used[s])}
    for col in evaluator.extra:
      entry[col] = float(evaluator.lookup(col, jnp.asarray(arch)))
    best.append(entry)
  (workdir / "best.json").write_text(json.dumps(
      best[0] if config.num_seeds == 1 else best, indent=2))
  summary = {"status": "done", "algorithm": algo.name, "space": space.name,
             "num_seeds": config.num_seeds, "wall_seconds": wall,
             "mean_best_reward": float(np.mean(result.best_reward)),
             "mean_num_evals": float(np.mean(result.num_evals))}
  for col in evaluator.extra:
    vals = [b[col] for b in best]
    summary[f"{col}_mean"] = float(np.mean(vals))
    summary[f"{col}_std"] = float(np.std(vals))
  (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
  logging.info("done in %.2fs: best %s reward %.4f %s", wall, best[0]["text"],
               best[0]["reward"],
               {k: v for k, v in summary.items() if k.endswith("_mean")})
  return summary
