"""Run kind ``"enas_ptb"``: the ENAS recurrent-cell search on Penn Treebank
(Pham et al., ICML 2018, Sec. 2.1, 2.2 and 3.1) on the shared alternating
loop ``nas_jax.train.enas``.

* Shared weights: the language model around the shared ENAS cell
  (``children.enas_rnn``, ``children.lm``); every training window samples one
  child from the controller and takes one SGD step; the hidden state is
  carried from window to window and reset at the start of each pass over the
  data (it lives in the task's state).
* Controller: REINFORCE with reward ``c / valid_ppl`` on one random
  validation window, the hidden state starting from zero (the authors'
  ``build_valid_rl``: ``should_carry=False``, ``c = 80``, the window loss
  capped at 10 nats).
* Derive: sample ``derive_samples`` cells, keep the best on one validation
  window; retrain it from scratch (its own weights only) for
  ``retrain.steps`` windows and report exact validation and test perplexity
  over the whole splits, and its parameter count.

Workdir (WORKSPACE.md): ``config.json``, ``data.json`` (the vocabulary a
resume must match), ``history.jsonl``, ``metrics.jsonl`` + ``tensorboard/``,
``checkpoints/`` (after every epoch; SIGKILL-and-resume is bit-exact),
``best.json``, ``best_arch.png``, ``search_curve.png``, ``summary.json``.
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

from nas_jax import checkpoint as checkpoint_lib
from nas_jax import config_check as cc
from nas_jax import metrics as metrics_lib
from nas_jax import viz
from nas_jax.children import enas_rnn
from nas_jax.children import lm
from nas_jax.data import ptb
from nas_jax.evaluators import lm_from_scratch
from nas_jax.spaces import enas as enas_spaces
from nas_jax.spaces import registry
from nas_jax.train import enas
from nas_jax.train import preemption
from nas_jax.train import ptb_common
from nas_jax.train import tabular_run


def make_lm_task(space, model: lm.LanguageModel, corpus: ptb.Corpus, *,
                 batch_size: int, bptt: int, val_batch_size: int, tx,
                 reward_constant: float = 80.0, max_log_ppl: float = 10.0,
                 steps_per_epoch: int = 0, variable_bptt: bool = False,
                 seed: int = 0) -> enas.SharedTask:
  """The ENAS language-model search as a ``SharedTask``.

  Training windows run over the ``batch_size`` training streams in order;
  ``steps_per_epoch`` (0: a whole pass) windows make an epoch, and the run
  continues where the previous epoch stopped, so short CPU epochs still see
  all of the data. The carried state resets at the start of each pass.
  ``variable_bptt``: AWD-LSTM / ENAS-LM random window lengths
  (``ptb.variable_windows``), padded and masked to one compiled shape.
  """
  stream = ptb.batchify(corpus.train, batch_size)
  ptb.check_bptt(stream, bptt, "training split")
  windows = ptb.WindowSchedule(stream.shape[1], bptt,
                               variable=variable_bptt, seed=seed)
  val = ptb.batchify(corpus.valid, val_batch_size)
  ptb.check_bptt(val, bptt, "validation split")
  num_val_starts = val.shape[1] - bptt  # a window needs bptt + 1 tokens
  per_epoch = steps_per_epoch or windows.windows_per_pass()
  train_step_lm = lm.make_train_step(model, tx)
  zero_val_carry = model.zero_carry(val_batch_size)

  def init(key):
    return lm.init_state(model, tx, key, batch_size,
                         jnp.zeros((space.num_decisions,), jnp.int32))

  def reward(state, arch, batch):
    inputs, targets = batch
    logits, _ = model.apply({"params": state.params}, inputs, zero_val_carry,
                            arch)
    loss = jnp.mean(lm.token_nll(logits, targets))
    # The authors cap the loss at 10 nats; a diverged child (NaN) gets the
    # cap too, so one bad cell cannot poison the controller's update.
    loss = jnp.where(jnp.isfinite(loss), jnp.minimum(loss, max_log_ppl),
                     max_log_ppl)
    return reward_constant / jnp.exp(loss)

  def train_batch(epoch, i):
    start, length, first = windows[epoch * per_epoch + i]
    w = ptb.window(stream, start, length, pad_to=windows.pad_to)
    return lm.Batch(w.inputs, w.targets, w.mask, np.float32(first))

  def val_batch(step):
    # A random validation window per controller step (the authors'
    # randomized valid_rl producer), a pure function of (seed, step).
    rng = np.random.default_rng([seed, step + 1, 0x7A1])
    w = ptb.window(val, int(rng.integers(num_val_starts)), bptt)
    return (w.inputs, w.targets)

  return enas.SharedTask(space, init, train_step_lm, reward, train_batch,
                         per_epoch, val_batch, name=f"enas[{space.name}]")


SCHEMA: dict[str, cc.Rule] = {
    "run": cc.Choice(("enas_ptb",), doc="the run kind (this module)"),
    "seed": cc.Int(0, 2**31 - 1, doc="seed of everything"),
    "space": cc.Choice(("enas_rnn",), doc="the ENAS recurrent cell space"),
    "space_kwargs": cc.Dict(doc="arguments of the space's factory"),
    "algorithm": cc.Choice(("reinforce", "random"), doc="controller "
                           "training, or the same loop without learning"),
    "fixed_arch": cc.Str(doc="a cell to train instead of searching ('': "
                         "search)"),
    "num_epochs": cc.Int(1, 10**6, doc="epochs of the alternation"),
    "controller_steps": cc.Int(0, 10**6, doc="controller updates per "
                               "epoch"),
    "val_batch_size": cc.Int(1, 10**6, doc="validation batch of a reward"),
    "derive_samples": cc.Int(1, 10**6, doc="cells sampled to derive the "
                             "best"),
    "reward_constant": cc.Float(gt=0, doc="reward = c / valid perplexity "
                                "(ENAS: 80)"),
    "keep": cc.Int(2, 10**6, doc="checkpoints kept"),
    **cc.ptb_rules(),
    "shared.batch_size": cc.Int(1, 10**6, doc="shared-weight batch"),
    "shared.bptt": cc.Int(1, 10**6, doc="truncated BPTT length"),
    "shared.steps_per_epoch": cc.Int(0, 10**9, doc="shared steps per epoch "
                                     "(0: a whole pass over the data)"),
    "shared.variable_bptt": cc.Bool(doc="AWD-LSTM's random BPTT length"),
    "shared.learning_rate": cc.Float(gt=0, doc="shared SGD learning rate"),
    "shared.grad_clip": cc.Float(ge=0, doc="global norm clip (0: none)"),
    "shared.weight_decay": cc.Float(ge=0, doc="L2 weight"),
    "retrain.steps": cc.Int(1, 10**9, doc="steps of the derived cell's "
                            "training from scratch"),
    "retrain.batch_size": cc.Int(1, 10**6, doc="retraining batch"),
    "retrain.eval_batch_size": cc.Int(1, 10**6, doc="evaluation batch"),
    "retrain.eval_bptt": cc.Int(0, 10**6, doc="evaluation window (0: "
                                "shared.bptt)"),
    "retrain.learning_rate": cc.Float(gt=0, doc="retraining SGD rate"),
    "retrain.grad_clip": cc.Float(ge=0, doc="global norm clip (0: none)"),
    "retrain.weight_decay": cc.Float(ge=0, doc="L2 weight"),
    **cc.controller_rules(),
    **cc.algorithm_rules(),
}


def check_config(config: ml_collections.ConfigDict) -> None:
  """Cheap checks (no data, no compilation, nothing written)."""
  cc.check(config, SCHEMA, extra=[cc.algorithm_cross_checks])
  ptb_common.check_space_kwargs(config)
  if config.get("fixed_arch"):
    space = registry.get(config.space, **config.space_kwargs)
    try:
      fixed_arch(config, space)
    except ValueError as e:
      raise ValueError(f"fixed_arch: {e}") from None


def build(config):
  """``(space, corpus, model, task, algorithm)`` from a checked config."""
  space = registry.get(config.space, **config.space_kwargs)
  corpus = ptb_common.load_corpus(config.data)
  model = ptb_common.build_model(corpus.vocab_size, "enas", config.model,
                                 num_nodes=space.num_decisions // 2 + 1)
  sh = config.shared
  tx = lm.make_optimizer(sh.learning_rate, sh.grad_clip, sh.weight_decay)
  task = make_lm_task(space, model, corpus, batch_size=sh.batch_size,
                      bptt=sh.bptt, val_batch_size=config.val_batch_size,
                      tx=tx, reward_constant=config.reward_constant,
                      steps_per_epoch=sh.steps_per_epoch,
                      variable_bptt=sh.get("variable_bptt", False),
                      seed=config.seed)
  algo = tabular_run.build_algorithm(config, space)
  return space, corpus, model, task, algo


def retrain_trainer(config, corpus, arch=None, cell: str = "enas"
                    ) -> lm_from_scratch.LMTrainer:
  """A trainer for one fixed cell (the derived ENAS cell, an LSTM, ...) from
  scratch with ``config.retrain``."""
  num_nodes = registry.get(config.space, **config.space_kwargs
                           ).num_decisions // 2 + 1
  model = ptb_common.build_model(corpus.vocab_size, cell, config.model,
                                 num_nodes=num_nodes, fixed_arch=arch)
  rt = config.retrain
  return lm_from_scratch.LMTrainer(
      None, model, corpus, steps=rt.steps, batch_size=rt.batch_size,
      bptt=config.shared.bptt, learning_rate=rt.learning_rate,
      grad_clip=rt.grad_clip, weight_decay=rt.weight_decay,
      eval_batch_size=rt.eval_batch_size, eval_bptt=rt.get("eval_bptt", 0),
      seed=config.seed)


def fixed_arch(config, space):
  """``config.fixed_arch`` as an arch: a named cell (``"enas_ptb"``, the
  paper's) or a text form; None when unset (search)."""
  text = config.get("fixed_arch") or ""
  if not text:
    return None
  if text in enas_spaces.NAMED_RNN_CELLS:
    text = enas_spaces.NAMED_RNN_CELLS[text]
  return space.from_text(text)


def retrain_only(config, workdir: pathlib.Path, space, corpus, arch) -> dict:
  """Trains one given cell from scratch (no search) and reports it."""
  t0 = time.perf_counter()
  rt = lm_from_scratch.retrain(retrain_trainer(config, corpus, arch), None,
                               config.retrain.steps)
  text = space.to_text(arch)
  (workdir / "best.json").write_text(json.dumps(
      {"text": text, "spec": space.to_spec(arch), "retrain": rt._asdict()},
      indent=2))
  viz.draw(space, arch, workdir / "best_arch.png")
  summary = {"status": "done", "space": space.name, "dataset": corpus.name,
             "fixed_arch": text, "wall_seconds": time.perf_counter() - t0,
             "retrain_valid_perplexity": rt.valid_perplexity,
             "retrain_test_perplexity": rt.test_perplexity,
             "retrain_params": rt.num_params}
  (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
  logging.info("retrained %s for %d steps: valid ppl %.2f, test ppl %.2f, "
               "%d parameters", text, rt.steps, rt.valid_perplexity,
               rt.test_perplexity, rt.num_params)
  return summary


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  check_config(config)
  workdir = pathlib.Path(workdir)
  space, corpus, model, task, algo = build(config)
  arch = fixed_arch(config, space)
  ptb_common.guard_vocab(workdir, corpus)
  (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
  if arch is not None:
    return retrain_only(config, workdir, space, corpus, arch)
  logging.info("ENAS %s on %s (%d training tokens, vocabulary %d): %d epochs "
               "x (%d shared steps of %d x %d tokens, %d controller steps), "
               "%s", space.name, corpus.name, len(corpus.train),
               corpus.vocab_size, config.num_epochs, task.steps_per_epoch,
               config.shared.batch_size, config.shared.bptt,
               config.controller_steps, algo.name)

  history_path = workdir / "history.jsonl"
  history = None
  writer = metrics_lib.MetricWriter(workdir)

  def write(rec: enas.Record):
    history.write(json.dumps({
        "step": rec.step, "epoch": rec.epoch, "arch": space.to_text(rec.arch),
        "reward": rec.reward,
        "valid_perplexity": config.reward_constant / rec.reward}) + "\n")
    history.flush()

  def on_resume(records, next_epoch):
    nonlocal history
    history = open(history_path, "w")
    for rec in records:
      write(rec)
    writer.truncate_after(next_epoch - 1)

  def on_epoch(epoch, state, summary):
    # examples_per_second counts [B, T] windows' rows: streams per second.
    summary = dict(summary, **{
        "shared/perplexity": float(np.exp(summary.get("shared/loss", 0.0))),
        "shared/tokens_per_second": summary["shared/examples_per_second"]
                                    * config.shared.bptt})
    writer.write_scalars(epoch, summary)
    writer.flush()  # durable before this epoch's checkpoint

  ckpt = checkpoint_lib.Checkpointer(workdir, max_to_keep=config.get("keep", 3))
  key = jax.random.key(config.seed)
  t0 = time.perf_counter()
  try:
    with preemption.PreemptionGuard() as guard:
      result = enas.run_enas(
          task, algo, key, num_epochs=config.num_epochs,
          controller_steps=config.controller_steps, checkpointer=ckpt,
          guard=guard, on_record=write, on_epoch=on_epoch,
          on_resume=on_resume)
  finally:
    if history is not None:
      history.close()
    writer.close()
    ckpt.close()
  search_wall = time.perf_counter() - t0
  if result.status == "preempted":
    return {"status": "preempted", "epochs": len(result.epochs)}

  derived = enas.derive(task, algo, result.state,
                        jax.random.fold_in(key, 2**31 - 1),
                        num_samples=config.derive_samples)
  text = space.to_text(derived.arch)
  logging.info("derived %s (valid-window ppl %.2f); retraining it from "
               "scratch for %d windows", text,
               config.reward_constant / derived.reward, config.retrain.steps)
  trainer = retrain_trainer(config, corpus, derived.arch)
  rt = lm_from_scratch.retrain(trainer, None, config.retrain.steps)
  num_nodes = space.num_decisions // 2 + 1
  best = {"text": text, "spec": space.to_spec(derived.arch),
          "reward": derived.reward,
          "derive_valid_window_perplexity":
              config.reward_constant / derived.reward,
          "derive_samples": config.derive_samples,
          "retrain": rt._asdict(),
          "shared_cell_params": enas_rnn.shared_param_count(
              num_nodes, config.model.hidden_size),
          "retrain_command": (
              "python experiments/main.py --config=experiments/configs/"
              f"enas_ptb.py:paper --config.fixed_arch='{text}' "
              "--workdir=<dir>")}
  (workdir / "best.json").write_text(json.dumps(best, indent=2))
  viz.draw(space, derived.arch, workdir / "best_arch.png")
  viz.search_curve([r.reward for r in result.records],
                   workdir / "search_curve.png",
                   title=f"ENAS {space.name} ({corpus.name})",
                   ylabel=f"reward {config.reward_constant:g} / valid ppl")
  summary = {"status": "done", "space": space.name, "dataset": corpus.name,
             "algorithm": algo.name, "search_seconds": search_wall,
             "wall_seconds": time.perf_counter() - t0,
             "epochs": config.num_epochs,
             "controller_samples": len(result.records),
             "best_text": text, "best_reward": derived.reward,
             "retrain_valid_perplexity": rt.valid_perplexity,
             "retrain_test_perplexity": rt.test_perplexity,
             "retrain_params": rt.num_params,
             "last_epoch": result.epochs[-1] if result.epochs else {}}
  (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
  logging.info("done: derived %s; retrained %d steps: valid ppl %.2f, test "
               "ppl %.2f, %d parameters", text, rt.steps,
               rt.valid_perplexity, rt.test_perplexity, rt.num_params)
  return summary
