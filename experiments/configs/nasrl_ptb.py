r"""NAS-RL's recurrent-cell search on Penn Treebank (Zoph & Le, ICLR 2017,
Sec. 3.4 and 4.2): REINFORCE (or PPO) over tree cells, every child language
model trained from scratch, reward ``c / (validation perplexity)^2``.

  python experiments/main.py \
    --config=experiments/configs/nasrl_ptb.py:cpu --workdir=runs/nasrl_ptb

Variants:

* ``paper``: base 8, the paper's reward (``c = 80``, perplexity squared),
  a 2-layer 35-unit controller (Sec. 3.1) and long child training; far
  beyond this CPU (the paper used 400 CPUs' worth of parallel children).
* ``cpu``: base 8, 64-wide children trained 200 windows each on PTB, 8
  rounds of 4 children; a child took about 2.4 minutes on the shared 2-core
  CPU (load 10), so about an hour and a quarter in all.
* ``tiny``: base 2, 16-wide children, a few windows each, on the synthetic
  stream; CI runs it (and on PTB with ``--config.data.name=ptb``).

``--config.algorithm=ppo`` searches with PPO instead of REINFORCE.
"""

import ml_collections

VARIANTS = ("paper", "cpu", "tiny")


def get_config(variant: str = "cpu") -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise ValueError(f"unknown variant {variant!r}; choose one of {VARIANTS}")
  c = ml_collections.ConfigDict()
  c.run = "nasrl_ptb"
  c.seed = 0
  c.space = "nasrl_rnn"
  c.space_kwargs = {"base": 2 if variant == "tiny" else 8}
  c.algorithm = "reinforce"
  c.num_rounds = {"paper": 2000, "cpu": 8, "tiny": 3}[variant]
  c.checkpoint_every = 1
  c.keep = 3
  c.data = dict(name="synthetic" if variant == "tiny" else "ptb",
                data_dir="", vocab_size=32, num_tokens=4000, seed=0)
  hidden = {"paper": 650, "cpu": 64, "tiny": 16}[variant]
  keep = 1.0 if variant == "tiny" else 0.75
  c.model = dict(hidden_size=hidden, embed_keep=keep, input_keep=keep,
                 hidden_keep=keep, output_keep=keep)
  c.child = dict(
      steps={"paper": 35 * 663, "cpu": 200, "tiny": 30}[variant],
      batch_size={"paper": 20, "cpu": 20, "tiny": 8}[variant],
      bptt={"paper": 35, "cpu": 35, "tiny": 10}[variant],
      learning_rate={"paper": 1.0, "cpu": 1.0, "tiny": 1.0}[variant],
      grad_clip=5.0, weight_decay=0.0,
      eval_batch_size={"paper": 10, "cpu": 10, "tiny": 4}[variant],
      # Sec. 4.2: reward c / ppl^2 with c = 80.
      reward_constant=80.0, reward_power=2.0,
      max_eval_windows={"paper": 0, "cpu": 40, "tiny": 10}[variant])
  # Sec. 3.1: a two-layer LSTM controller of 35 units, its own softmax per
  # decision.
  c.controller = dict(hidden_size=35 if variant != "tiny" else 16,
                      num_layers=2 if variant != "tiny" else 1)
  c.reinforce = dict(batch_size=4 if variant != "paper" else 20,
                     learning_rate=6e-4 if variant == "paper" else 5e-3,
                     baseline_decay=0.95 if variant == "paper" else 0.8)
  c.ppo = dict(batch_size=4, minibatch_size=2, num_epochs=4,
               learning_rate=5e-3, baseline_decay=0.8, clip_epsilon=0.2)
  c.random = dict(batch_size=4)
  c.evolution = dict(population_size=8, sample_size=3, batch_size=4)
  return c
