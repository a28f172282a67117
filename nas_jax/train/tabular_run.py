"""Host side of a tabular search run: build from a config, run the jitted
search over seeds, write the results to the workdir.

Files written (see WORKSPACE.md): ``config.json`` / ``identity.json`` (the
config and the hash of its result-determining fields), ``history.jsonl``
(one line per evaluated architecture: seed, step, arch text, reward, cost),
``metrics.jsonl`` + ``tensorboard/``, ``checkpoints/``, ``best.json`` (per
seed: spec, text line, reward, and any reported columns), ``best_arch.png``
/ ``.dot`` (seed 0's best cell), ``search_curve.png`` (seed 0's rewards)
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
from nas_jax import config_check as cc
from nas_jax import costs
from nas_jax import metrics as metrics_lib
from nas_jax import viz
from nas_jax.controllers import make_controller
from nas_jax.data import nasbench201 as nb201_data
from nas_jax.evaluators import table as table_lib
from nas_jax.evaluators import tabular
from nas_jax.spaces import base as spaces_base
from nas_jax.algorithms import base as algo_base
from nas_jax.algorithms.base import state_scalars as algos_state_scalars
from nas_jax.train import preemption
from nas_jax.train import search as search_lib
from nas_jax.train import workdir as workdir_lib

ALGORITHMS = ("random", "evolution", "rea", "reinforce", "ppo", "q_learning",
              "pnas")
REWARD_COLUMNS = ("valid_acc_12ep", "valid_acc_200ep", "test_acc_200ep")

SCHEMA: dict[str, cc.Rule] = {
    "run": cc.Choice(("tabular",), doc="the run kind (this module)"),
    "algorithm": cc.Choice(ALGORITHMS, doc="search algorithm"),
    "seed": cc.Int(0, 2**31 - 1, doc="seed of everything"),
    "num_seeds": cc.Int(1, 100000, doc="searches run together under vmap"),
    "evaluator": cc.Choice(("nasbench201", "table"),
                           doc="the reward table: NAS-Bench-201's or your "
                           "own (config.table, config.space)"),
    "table_path": cc.Str(doc="the table's CSV ('': the data directory's)"),
    "reward_column": cc.Choice(REWARD_COLUMNS, doc="the column searched on"),
    "epochs_charged": cc.Float(gt=0, doc="simulated epochs charged per "
                               "evaluation"),
    "time_budget": cc.Float(ge=0, optional=True,
                            doc="simulated seconds (0 or None: no budget)"),
    "max_evals": cc.Int(1, 10**7, doc="evaluations per seed at most"),
    "rounds_per_checkpoint": cc.Int(0, 10**7, doc="rounds per jitted chunk "
                                    "and checkpoint (0: one chunk)"),
    "keep": cc.Int(2, 10**6, doc="checkpoints kept"),
    **cc.controller_rules(),
    **cc.algorithm_rules(),
    # evaluator="table" (nas_jax/evaluators/table.py; WORKSPACE.md, "Your
    # own space and table").
    "space": cc.Str(doc="a registered search space (evaluator='table')"),
    "space_kwargs": cc.Dict(doc="arguments of the space's factory"),
    "table.path": cc.Str(doc="CSV or JSON table of the space"),
    "table.key": cc.Str(doc="column holding the architecture"),
    "table.key_format": cc.Choice(table_lib.KEY_FORMATS, doc="how the key "
                                  "column encodes an architecture"),
    "table.records": cc.Str(doc="dotted path to the records in a JSON "
                            "table ('': the top level)"),
    "table.reward": cc.Str(doc="column that is the reward"),
    "table.report": cc.StrTuple(doc="columns reported beside the reward"),
    "table.cost": cc.Str(optional=True, doc="column of simulated training "
                         "seconds ('' or None: none)"),
    "table.reward_scale": cc.Float(gt=0, doc="rewards are divided by it "
                                   "(100 for percentages)"),
}
# Changing these never changes what a resumed run computes.
SAFE_FIELDS = ("keep", "table_path", "table.path", "nonfinite_reward")
GROW_FIELDS = ()


def check_config(config: ml_collections.ConfigDict) -> None:
  """Checks every field (cheap: nothing is loaded, compiled or written).

  Raises:
    ValueError: naming the dotted field, its allowed range and the value.
  """
  cc.check(config, SCHEMA, extra=[cc.algorithm_cross_checks])
  # The constructors' own checks, on a space built without its table.
  if config.evaluator == "table":
    table_lib.check_config(config)
    from nas_jax.spaces import registry
    space = registry.get(config.space, **config.get("space_kwargs", {}))
  else:
    from nas_jax.spaces import nasbench201 as nb201_space
    space = nb201_space.space()
  try:
    build_algorithm(config, space)
  except (TypeError, ValueError) as e:
    raise ValueError(f"config.{config.algorithm}: {e}") from None


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
  """The algorithm ``config.algorithm`` names; NaN / inf rewards never
  update it (``algorithms.base.guard_nonfinite``)."""
  name = config.algorithm
  guard = algo_base.guard_nonfinite
  if name == "random":
    return guard(algorithms.random_search(space, **config.random))
  if name in ("evolution", "rea"):
    return guard(algorithms.regularized_evolution(space, **config.evolution))
  if name in ("reinforce", "ppo"):
    ctrl = make_controller(space, **config.controller)
    factory = algorithms.reinforce if name == "reinforce" else algorithms.ppo
    return guard(factory(ctrl, **config[name]))
  if name == "q_learning":
    return guard(algorithms.q_learning(space, **config.q_learning))
  if name == "pnas":
    return guard(algorithms.pnas(space, **config.pnas))
  raise ValueError(f"unknown algorithm {name!r}; known: random, evolution "
                   "(rea), reinforce, ppo, q_learning, pnas")


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs (or resumes) the search and writes its files; see module doc.

  The jitted search advances ``config.rounds_per_checkpoint`` rounds per call
  and is checkpointed in between, so a killed run resumes where it stopped
  and reaches the same result as an uninterrupted one.
  """
  check_config(config)
  workdir = pathlib.Path(workdir)
  workdir_lib.check_identity(workdir, config, safe=SAFE_FIELDS)
  workdir_lib.record(workdir, config, safe=SAFE_FIELDS)
  logging.info("loading the reward table")
  evaluator = build_evaluator(config)
  space = evaluator.space
  algo = build_algorithm(config, space)
  fns = search_lib.make_search_fns(
      algo, evaluator, space.num_decisions, max_evals=config.max_evals,
      time_budget=config.get("time_budget") or None)
  chunk = config.get("rounds_per_checkpoint", 0) or config.max_evals + 1
  keys = jax.random.split(jax.random.key(config.seed), config.num_seeds)
  init = jax.jit(jax.vmap(fns.init))
  advance = jax.jit(jax.vmap(fns.advance, (0, None)))
  ckpt = checkpoint_lib.Checkpointer(workdir,
                                     max_to_keep=config.get("keep", 3),
                                     required_meta=("round",))
  writer = None
  with preemption.PreemptionGuard() as guard:
    guard.nothing_to_save = True  # until a chunk runs past the checkpoint
    try:
      logging.info("compiling the search's init (the first call compiles)")
      carry = init(keys)
      restored = ckpt.restore(carry)
      n_chunk, prior = 0, {}
      if restored is not None:
        n_chunk, carry, prior = restored
        logging.info("resumed from checkpoint %d (round %d)", n_chunk,
                     prior["round"])
      logging.info("searching %s with %s: %d seed(s), budget %s s, <= %d "
                   "evals", space.name, algo.name, config.num_seeds,
                   config.get("time_budget"), config.max_evals)
      writer = metrics_lib.MetricWriter(workdir)
      last = int(np.max(carry.round)) - 1
      writer.truncate_after(last)
      t0 = time.perf_counter()
      status = "done"
      first = True
      while not bool(np.all(carry.done)):
        n_chunk += 1
        t_chunk = time.perf_counter()
        evals_before = int(np.sum(carry.num_evals))
        if first:
          logging.info("compiling the jitted search chunk and running rounds "
                       "to %d", n_chunk * chunk)
        carry = advance(carry, n_chunk * chunk)
        rnd = int(np.max(carry.round))
        new_evals = int(np.sum(carry.num_evals)) - evals_before
        writer.write_scalars(rnd - 1, {
            "reward/best_so_far_mean_over_seeds": float(
                np.mean(_best_rewards(carry.rewards))),
            "search/evaluations_mean_over_seeds": float(
                np.mean(carry.num_evals)),
            "search/simulated_seconds_mean": float(np.mean(carry.time_used)),
            "search/evaluations_per_second": new_evals / max(
                time.perf_counter() - t_chunk, 1e-9),
            **{f"controller/{k}": v
               for k, v in algos_state_scalars(carry.state).items()}})
        writer.flush()  # durable before the checkpoint that covers it
        with guard.critical():
          ckpt.save(n_chunk, carry, {
              "round": rnd,
              "wall_seconds": prior.get("wall_seconds", 0.0) +
                              time.perf_counter() - t0,
              "sessions": prior.get("sessions", 0) + 1,
              "compilations": prior.get("compilations", 0) +
                              _compilations(init, advance)})
        logging.info("round %d: %d evaluations per seed so far, best reward "
                     "%.4f (mean over seeds)", rnd,
                     int(np.mean(carry.num_evals)),
                     float(np.mean(_best_rewards(carry.rewards))))
        first = False
        if guard.requested and not bool(np.all(carry.done)):
          status = "preempted"
          break
    finally:
      ckpt.close()
      if writer is not None:
        writer.close()
  wall = time.perf_counter() - t0
  if status == "preempted":
    logging.warning("stopped by %s after checkpoint %d; run the same command "
                    "to resume", guard.signal_name, n_chunk)
    return {"status": status, "checkpoint": n_chunk}
  result = jax.vmap(fns.finish)(carry)
  result = jax.tree.map(np.asarray, result._replace(state=None))
  _report_nonfinite(config, space, result)
  totals = {"wall_seconds": prior.get("wall_seconds", 0.0) + wall,
            "sessions": prior.get("sessions", 0) + 1,
            "compilations": prior.get("compilations", 0) +
                            _compilations(init, advance)}
  return _write_results(config, workdir, space, evaluator, algo, result,
                        totals)


def _report_nonfinite(config, space, result) -> None:
  """Names the architectures whose table reward was NaN / inf: their
  updates were skipped inside the jitted search; ``nonfinite_reward=error``
  stops the run here, before results are written."""
  bad = []
  for s in range(result.rewards.shape[0]):
    n = int(result.num_evals[s])
    r = result.rewards[s, :n]
    for i in np.flatnonzero(~algo_base.usable_rewards(r)):
      bad.append(f"seed {s} step {i}: {space.to_text(result.archs[s, i])} "
                 f"-> {float(r[i])!r}")
  if not bad:
    return
  shown = "; ".join(bad[:4]) + (f"; ... ({len(bad)} in all)"
                                if len(bad) > 4 else "")
  if config.get("nonfinite_reward", "skip") == "error":
    raise ValueError(f"non-finite reward(s) {shown}; fix the table, or set "
                     "--config.nonfinite_reward=skip")
  logging.warning("non-finite reward(s) %s; the updates on them were "
                  "skipped (nonfinite_reward=skip)", shown)


def _best_rewards(rewards: np.ndarray) -> np.ndarray:
  """Best usable reward per seed (NaN / inf ignored)."""
  r = np.asarray(rewards, np.float64)
  return np.max(np.where(algo_base.usable_rewards(r), r, -np.inf), axis=-1)


def _compilations(*jitted) -> int:
  """Programs compiled by these jitted functions in this process."""
  return sum(f._cache_size() for f in jitted if hasattr(f, "_cache_size"))


def _write_results(config, workdir, space, evaluator, algo, result,
                   totals) -> dict:
  wall = totals["wall_seconds"]
  child_costs = costs.table_costs(space, result.archs)  # params, flops
  with open(workdir / "history.jsonl", "w") as f:
    for s in range(config.num_seeds):
      for i in range(int(result.num_evals[s])):
        f.write(json.dumps({
            "seed": s, "step": i, "arch": space.to_text(result.archs[s, i]),
            "reward": (float(result.rewards[s, i])
                       if np.isfinite(result.rewards[s, i]) else None),
            "cost": float(result.costs[s, i]),
            **{k: float(v[s, i]) for k, v in child_costs.items()}}) + "\n")
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
             "sessions": totals["sessions"],
             "compilations_of_search": totals["compilations"],
             "mean_best_reward": float(np.mean(result.best_reward)),
             "mean_num_evals": float(np.mean(result.num_evals))}
  for col in evaluator.extra:
    vals = [b[col] for b in best]
    summary[f"{col}_mean"] = float(np.mean(vals))
    summary[f"{col}_std"] = float(np.std(vals))
  pictures = viz.draw(space, result.best_arch[0], workdir / "best_arch.png")
  n0 = int(result.num_evals[0])
  viz.search_curve(result.rewards[0, :n0], workdir / "search_curve.png",
                   title=f"{algo.name} on {space.name} (seed 0)",
                   ylabel=(config.reward_column + " / 100"
                           if config.evaluator == "nasbench201" else
                           f"reward ({config.table.get('reward', 'reward')})"))
  summary["pictures"] = [p.name for p in pictures] + ["search_curve.png"]
  (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
  logging.info("done in %.2fs: best %s reward %.4f %s", wall, best[0]["text"],
               best[0]["reward"],
               {k: v for k, v in summary.items() if k.endswith("_mean")})
  return summary
