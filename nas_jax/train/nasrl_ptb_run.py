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
from nas_jax import config_check as cc
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


SCHEMA: dict[str, cc.Rule] = {
    "run": cc.Choice(("nasrl_ptb",), doc="the run kind (this module)"),
    "seed": cc.Int(0, 2**31 - 1, doc="seed of everything"),
    "space": cc.Choice(("nasrl_rnn",), doc="the NAS-RL tree cell space"),
    "space_kwargs": cc.Dict(doc="arguments of the space's factory"),
    "algorithm": cc.Choice(("reinforce", "ppo", "random", "evolution"),
                           doc="search algorithm"),
    "num_rounds": cc.Int(1, 10**7, doc="rounds of batch_size children"),
    "checkpoint_every": cc.Int(1, 10**7, doc="rounds between checkpoints"),
    "keep": cc.Int(2, 10**6, doc="checkpoints kept"),
    **cc.ptb_rules(),
    "child.steps": cc.Int(1, 10**9, doc="training steps per child"),
    "child.batch_size": cc.Int(1, 10**6, doc="child training batch"),
    "child.bptt": cc.Int(1, 10**6, doc="truncated BPTT length"),
    "child.eval_batch_size": cc.Int(1, 10**6, doc="evaluation batch"),
    "child.learning_rate": cc.Float(gt=0, doc="child SGD learning rate"),
    "child.grad_clip": cc.Float(ge=0, doc="global norm clip (0: none)"),
    "child.weight_decay": cc.Float(ge=0, doc="L2 weight"),
    "child.max_eval_windows": cc.Int(0, 10**9, doc="validation windows of "
                                     "a reward (0: all)"),
    "child.reward_constant": cc.Float(gt=0, doc="reward = (c / valid "
                                      "perplexity) ** p (NAS-RL Sec. 4.2)"),
    "child.reward_power": cc.Float(gt=0, doc="p of the reward"),
    **cc.controller_rules(),
    **cc.algorithm_rules(),
}


def check_config(config: ml_collections.ConfigDict) -> None:
  """Cheap checks: no data is read, nothing compiled or written."""
  cc.check(config, SCHEMA, extra=[cc.algorithm_cross_checks])
  ptb_common.check_space_kwargs(config)


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
