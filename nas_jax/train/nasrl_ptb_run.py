"""The NAS-RL recurrent-cell search on Penn Treebank (Zoph & Le 2017, Sec.
3.4 and 4.2): the controller proposes tree cells (``spaces.nasrl_rnn``),
each child language model is trained from scratch for a short budget, and
``c / (validation perplexity)^2`` is its reward; REINFORCE or PPO.

The loop is ``train.host_search.run`` (checkpointed, resumable bit-exact,
SIGTERM-safe), with the pattern and workdir files of ``child_search_run``:
``config.json``, ``data.json`` (the vocabulary a resume must match),
``history.jsonl``, ``metrics.jsonl`` + ``tensorboard/``,
``checkpoints/``, ``best.json``, ``best_arch.png``, ``search_curve.png``,
``summary.json``.
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
from nas_jax.evaluators import lm_from_scratch
from nas_jax.evaluators import train_from_scratch
from nas_jax.spaces import registry
from nas_jax.train import host_search
from nas_jax.train import preemption
from nas_jax.train import ptb_common
from nas_jax.train import tabular_run


def check_config(config: ml_collections.ConfigDict) -> None:
  """Cheap checks: no data is read, nothing compiled or written."""
  c = ptb_common
  c.check_space_and_algorithm(config, "nasrl_rnn",
                              ("reinforce", "ppo", "random", "evolution"))
  c.check_positive_int(config, "num_rounds")
  c.check_data(config)
  c.check_model(config)
  for k in ("steps", "batch_size", "bptt", "eval_batch_size"):
    c.check_positive_int(config, f"child.{k}")
  for k in ("learning_rate", "reward_constant", "reward_power"):
    c.check_positive(config, f"child.{k}")
  for k in ("grad_clip", "weight_decay", "max_eval_windows"):
    c.check_non_negative(config, f"child.{k}")


def build_trainer(config) -> lm_from_scratch.LMTrainer:
  space = registry.get(config.space, **config.space_kwargs)
  corpus = ptb_common.load_corpus(config.data)
  model = ptb_common.build_model(corpus.vocab_size, "tree", config.model,
                                 base=space.base)
  return lm_from_scratch.LMTrainer(space, model, corpus, seed=config.seed,
                                   **config.child)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  check_config(config)
  workdir = pathlib.Path(workdir)
  trainer = build_trainer(config)
  ptb_common.guard_vocab(workdir, trainer.corpus)
  (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
  space = trainer.space
  evaluator = train_from_scratch.TrainFromScratchEvaluator(trainer)
  algo = tabular_run.build_algorithm(config, space)
  logging.info("%s on %s (%d training tokens, vocabulary %d): %s, %d rounds "
               "x %d children, %d steps each", space.name,
               trainer.corpus.name, len(trainer.corpus.train),
               trainer.corpus.vocab_size, algo.name, config.num_rounds,
               algo.batch_size, trainer.steps)

  history_path = workdir / "history.jsonl"
  history = None
  power, const = config.child.reward_power, config.child.reward_constant

  def write(rec: host_search.Record):
    ppl = (const / rec.reward) ** (1 / power) if rec.reward > 0 else None
    history.write(json.dumps({
        "step": rec.step, "round": rec.round,
        "arch": space.to_text(rec.arch), "reward": rec.reward,
        "valid_perplexity": ppl, "seconds": rec.cost,
        "cached": rec.cost == 0.0,
        "params": getattr(evaluator.cache.get(space.to_text(rec.arch)),
                          "num_params", None)}) + "\n")
    history.flush()

  writer = metrics_lib.MetricWriter(workdir)
  best_so_far = [-float("inf")]

  def on_resume(records):
    nonlocal history
    history = open(history_path, "w")
    for rec in records:
      write(rec)
    writer.truncate_after(records[-1].round if records else -1)
    best_so_far[0] = max((r.reward for r in records), default=-float("inf"))

  def on_round(r, state, ev):
    best_so_far[0] = max(best_so_far[0], float(np.max(ev.reward)))
    writer.write_scalars(r, {
        "reward/mean": float(np.mean(ev.reward)),
        "reward/max": float(np.max(ev.reward)),
        "reward/best_so_far": best_so_far[0],
        **{f"controller/{k}": v
           for k, v in algo_base.state_scalars(state).items()}})
    writer.flush()  # durable before this round's checkpoint

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
  text = space.to_text(best.arch)
  best_info = {"text": text, "spec": space.to_spec(best.arch),
               "formulas": space.formulas(best.arch), "reward": best.reward,
               "valid_perplexity": (const / best.reward) ** (1 / power)
                                   if best.reward > 0 else None,
               "step": best.step,
               "num_params": evaluator.cache[text].num_params}
  (workdir / "best.json").write_text(json.dumps(best_info, indent=2))
  viz.draw(space, best.arch, workdir / "best_arch.png")
  viz.search_curve([r.reward for r in result.records],
                   workdir / "search_curve.png",
                   title=f"{algo.name} on {space.name} ({trainer.corpus.name})",
                   ylabel=f"reward {const:g} / ppl^{power:g}")
  summary = {"status": "done", "algorithm": algo.name, "space": space.name,
             "dataset": trainer.corpus.name, "wall_seconds": wall,
             "children_evaluated": len(result.records),
             "distinct_children_trained": len(evaluator.cache),
             "compilations_of_train_step": trainer.num_traces,
             "best_reward": best.reward, "best_text": text,
             "best_valid_perplexity": best_info["valid_perplexity"]}
  (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
  logging.info("done in %.1fs: %d children (%d trained, train step compiled "
               "%d time(s)); best %s reward %.4f", wall, len(result.records),
               len(evaluator.cache), trainer.num_traces, text, best.reward)
  return summary
