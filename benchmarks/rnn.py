"""Training throughput of the ENAS shared recurrent cell, and a short CPU
perplexity comparison (issue "Recurrent cells on Penn Treebank").

Throughput (default): one jitted shared-weight training step of the
language model around ``nas_jax.children.enas_rnn.ENASCell`` (12 nodes, all
66 weight pairs shared; embedding tied to the softmax; SGD with gradient
clipping; dropouts of the ENAS search on), vocabulary 10,000, BPTT 35, batch
64, at hidden (= embedding) size 256 and 1,000. Every timed step trains a
different uniformly sampled cell (the architecture is an input of the one
compiled step). Reported: the first call (trace + compile + one step), then
the median of ``--steps`` steps after ``--warmup``, as seconds/step and
tokens/s (batch x BPTT / step time). The *static reference* is the same
cell built for one fixed architecture (its own 12 weight pairs, Python-level
wiring, no gathers or index-selected activations; ``ENASCell(fixed_arch=)``),
timed on the first sampled cell; the ratio is shared / static tokens/s.

Perplexity (``--perplexity``): on PTB, the same CPU budget (``--ppl_steps``
windows of batch 32 x BPTT 35, hidden ``--ppl_hidden``) for a search's
derived cell (``--derived``), the ENAS paper's cell, a random cell of the
space, and an LSTM whose width gives about the same parameter count; exact
validation and test perplexity over the whole splits.

Run from the repository root::

    PYTHONPATH=. python benchmarks/rnn.py                  # throughput
    PYTHONPATH=. python benchmarks/rnn.py --quick          # smoke test
    PYTHONPATH=. python benchmarks/rnn.py --perplexity     # CPU budget ppl
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # noqa: E402

from nas_jax.children import enas_rnn, lm  # noqa: E402
from nas_jax.data import ptb  # noqa: E402
from nas_jax.evaluators import lm_from_scratch  # noqa: E402
from nas_jax.spaces import enas  # noqa: E402
from nas_jax.train import ptb_common  # noqa: E402

# Keep probabilities of the authors' ptb_search.sh (e, x, h, o).
KEEP = dict(embed_keep=0.75, input_keep=0.25, hidden_keep=0.75,
            output_keep=0.25)


def time_step(model, arch_list, batch_size, bptt, vocab, steps, warmup,
              arch_is_input: bool):
  """(first call s, median s, list of step s) of the jitted train step."""
  tx = lm.make_optimizer(20.0, 0.25)
  step = jax.jit(lm.make_train_step(model, tx), donate_argnums=0)
  arch0 = jnp.asarray(arch_list[0]) if arch_is_input else None
  state = lm.init_state(model, tx, jax.random.key(0), batch_size, arch0)
  rng = np.random.default_rng(0)
  x = rng.integers(0, vocab, (batch_size, bptt + 1)).astype(np.int32)
  batch = lm.Batch(jnp.asarray(x[:, :-1]), jnp.asarray(x[:, 1:]),
                   jnp.ones((batch_size, bptt)), jnp.float32(0))
  times = []
  first = None
  for i in range(1 + warmup + steps):
    a = (jnp.asarray(arch_list[i % len(arch_list)]) if arch_is_input
         else None)
    t0 = time.perf_counter()
    state, m = step(state, a, batch, jax.random.key(i))
    jax.block_until_ready(m["loss"])
    dt = time.perf_counter() - t0
    if i == 0:
      first = dt
    elif i > warmup:
      times.append(dt)
  return first, statistics.median(times), times


def throughput(args):
  space = enas.rnn_space(args.nodes)
  keys = jax.random.split(jax.random.key(1), 16)
  archs = [np.asarray(space.sample_uniform(k)) for k in keys]
  rows, results = [], []
  tokens = args.batch * args.bptt
  for h in args.hidden:
    opts = dict(unroll=args.unroll, remat=args.remat)
    shared = lm.LanguageModel(
        args.vocab, enas_rnn.ENASCell(h, args.nodes, **opts), **KEEP)
    first, med, ts = time_step(shared, archs, args.batch, args.bptt,
                               args.vocab, args.steps, args.warmup, True)
    res = {"hidden": h, "shared_first_s": first, "shared_median_s": med,
           "shared_steps_s": ts, "shared_tokens_per_s": tokens / med,
           "shared_params": enas_rnn.shared_param_count(args.nodes, h)}
    row = [h, f"{first:.1f}", f"{med:.3f}", f"{tokens / med:,.0f}"]
    if not args.no_static:
      static = lm.LanguageModel(
          args.vocab, enas_rnn.ENASCell(h, args.nodes,
                                        fixed_arch=tuple(archs[0].tolist()),
                                        **opts), **KEEP)
      s_first, s_med, s_ts = time_step(static, archs, args.batch, args.bptt,
                                       args.vocab, args.steps, args.warmup,
                                       False)
      res.update({"static_first_s": s_first, "static_median_s": s_med,
                  "static_steps_s": s_ts, "static_tokens_per_s": tokens / s_med,
                  "ratio_shared_over_static": s_med / med})
      row += [f"{s_med:.3f}", f"{tokens / s_med:,.0f}", f"{s_med / med:.2f}"]
    rows.append(row)
    results.append(res)
    print(f"hidden {h}: shared {tokens / med:,.0f} tokens/s", flush=True)
  head = ["hidden", "first call s", "shared s/step", "shared tokens/s"]
  if not args.no_static:
    head += ["static s/step", "static tokens/s", "shared/static"]
  print(f"\nENAS shared cell, {args.nodes} nodes, vocab {args.vocab}, batch "
        f"{args.batch}, BPTT {args.bptt}, unroll {args.unroll}, remat "
        f"{args.remat}; median of {args.steps} steps after {args.warmup} "
        f"warm-up")
  print(common.text_table(head, rows))
  return results


def perplexity(args):
  corpus = (ptb.load() if ptb.available() else
            ptb.synthetic(64, 50_000))
  c = ml_collections.ConfigDict({"hidden_size": args.ppl_hidden, **KEEP})
  space = enas.rnn_space(12)
  # An LSTM with 4H(E+H)+4H weights plus the tied embedding matches the ENAS
  # cell's (E+H)2H + 11 H 2H = 24 H^2 at H_lstm = sqrt(24/8) H ~ 1.73 H.
  h_lstm = int(round(math.sqrt(3.0) * args.ppl_hidden))
  cells = []
  if args.derived:
    # A search's derived cell: its workdir (best.json) or the cell's text.
    path = pathlib.Path(args.derived) / "best.json"
    text = (json.loads(path.read_text())["text"] if path.is_file()
            else args.derived)
    cells.append(("derived ENAS cell", "enas", space.from_text(text),
                  args.ppl_hidden))
  cells += [
      ("ENAS paper cell", "enas", enas.named_rnn_cell("enas_rnn_paper"),
       args.ppl_hidden),
      ("random cell", "enas",
       np.asarray(space.sample_uniform(jax.random.key(args.seed))),
       args.ppl_hidden),
      ("LSTM", "lstm", None, h_lstm)]
  rows, results = [], []
  for name, kind, arch, h in cells:
    model_cfg = ml_collections.ConfigDict(dict(c, hidden_size=h))
    model = ptb_common.build_model(corpus.vocab_size, kind, model_cfg,
                                   fixed_arch=arch)
    trainer = lm_from_scratch.LMTrainer(
        None, model, corpus, steps=args.ppl_steps, batch_size=32, bptt=35,
        learning_rate=20.0, grad_clip=0.25, eval_batch_size=64,
        eval_bptt=70, seed=args.seed)
    rt = lm_from_scratch.retrain(trainer, None, args.ppl_steps)
    cell_params = rt.num_params - corpus.vocab_size * h
    text = space.to_text(arch) if arch is not None else f"LSTM {h}"
    rows.append([name, text if len(text) < 40 else text[:37] + "...",
                 f"{cell_params:,}", f"{rt.valid_perplexity:.1f}",
                 f"{rt.test_perplexity:.1f}", f"{rt.seconds:.0f}"])
    results.append({"name": name, "arch": text, **rt._asdict(),
                    "cell_params": cell_params, "hidden": h})
    print(f"{name}: valid {rt.valid_perplexity:.1f} test "
          f"{rt.test_perplexity:.1f} ({rt.seconds:.0f} s)", flush=True)
  print(f"\n{corpus.name}: {args.ppl_steps} windows of 32 x 35 tokens each "
        f"(SGD 20, clip 0.25, ENAS dropouts), ENAS hidden {args.ppl_hidden}")
  print(common.text_table(["cell", "arch", "cell params", "valid ppl",
                           "test ppl", "seconds"], rows))
  return results


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--hidden", default="256,1000")
  p.add_argument("--nodes", type=int, default=12)
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--bptt", type=int, default=35)
  p.add_argument("--vocab", type=int, default=10_000)
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--warmup", type=int, default=1)
  p.add_argument("--no_static", action="store_true")
  p.add_argument("--unroll", type=int, default=1,
                 help="lax.scan unroll over time steps (35: fully)")
  p.add_argument("--remat", action="store_true",
                 help="recompute each step's nodes in the backward pass")
  p.add_argument("--perplexity", action="store_true")
  p.add_argument("--ppl_hidden", type=int, default=128)
  p.add_argument("--ppl_steps", type=int, default=400)
  p.add_argument("--derived", default="",
                 help="--perplexity: also a derived cell (a search workdir "
                      "with best.json, or the cell's text)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--quick", action="store_true",
                 help="tiny sizes: checks the script runs")
  p.add_argument("--out_json", default="")
  args = p.parse_args()
  if args.quick:
    args.hidden, args.nodes, args.batch, args.bptt = "16", 4, 4, 5
    args.vocab, args.steps, args.warmup = 50, 2, 1
    args.ppl_hidden, args.ppl_steps = 8, 3
  args.hidden = [int(v) for v in args.hidden.split(",")]
  info = common.machine_info()
  common.print_header(info, [common.WALL_CLOCK_NOTE])
  out = {"machine": info, "args": vars(args)}
  if args.perplexity:
    out["perplexity"] = perplexity(args)
  else:
    out["throughput"] = throughput(args)
  if args.out_json:
    pathlib.Path(args.out_json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
  main()
