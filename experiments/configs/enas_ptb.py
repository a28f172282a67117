r"""ENAS recurrent-cell search on Penn Treebank (Pham et al., ICML 2018,
Sec. 2.1-2.2 and 3.1): the shared-weight language model, the controller
trained by REINFORCE on ``80 / valid ppl``, derive, retrain from scratch.

  python experiments/main.py \
    --config=experiments/configs/enas_ptb.py:cpu --workdir=runs/enas_ptb

Variants:

* ``paper``: the authors' ``scripts/ptb_search.sh`` (12 nodes, 720 units,
  batch 20, BPTT 35, keep probabilities e/x/h/o 0.75/0.25/0.75/0.25, SGD
  0.25 on a loss summed over the 35 steps = 8.75 on the per-token mean used
  here, gradient bound 10 / 35, L2 1e-7; controller: 100-unit LSTM,
  temperature 5, tanh constant 2.5, pointer distance penalty 1/12 and input
  rescaling, Adam 1e-3, 100 updates of 10 samples per epoch, entropy 1e-3
  added to the reward, baseline decay 0.99) and
  their ``ptb_final.sh`` retrain (748 units, batch 64, SGD 20, bound 0.25);
  GPU-sized.
* ``cpu``: 12 nodes, 128 units, 4 short epochs on PTB: minutes on 2 cores.
* ``tiny``: 4 nodes, 16 units, the synthetic stream; CI runs it (and on PTB
  with ``--config.data.name=ptb``).

``--config.fixed_arch=enas_rnn_paper`` (or a cell's text, e.g.
``tanh;0:relu;...``) skips the search and trains that cell from scratch with
``retrain``: ``enas_rnn_paper`` is the cell the paper found (Fig. 6).
"""

import ml_collections

VARIANTS = ("paper", "cpu", "tiny")


def get_config(variant: str = "cpu") -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise ValueError(f"unknown variant {variant!r}; choose one of {VARIANTS}")
  paper, tiny = variant == "paper", variant == "tiny"
  c = ml_collections.ConfigDict()
  c.run = "enas_ptb"
  c.seed = 0
  c.space = "enas_rnn"
  c.space_kwargs = {"num_nodes": 4 if tiny else 12}
  c.algorithm = "reinforce"
  c.fixed_arch = ""  # set: train this cell from scratch, no search
  c.num_epochs = {"paper": 100, "cpu": 4, "tiny": 2}[variant]
  c.controller_steps = {"paper": 100, "cpu": 10, "tiny": 2}[variant]
  c.derive_samples = {"paper": 100, "cpu": 20, "tiny": 4}[variant]
  c.reward_constant = 80.0  # ptb_enas_controller.py: reward = 80 / valid ppl
  c.val_batch_size = {"paper": 20, "cpu": 16, "tiny": 4}[variant]
  c.keep = 3
  c.data = dict(name="synthetic" if tiny else "ptb", data_dir="",
                vocab_size=32, num_tokens=4000, seed=0)
  keep = (1.0, 1.0, 1.0, 1.0) if tiny else (0.75, 0.25, 0.75, 0.25)
  c.model = dict(hidden_size={"paper": 720, "cpu": 128, "tiny": 16}[variant],
                 embed_keep=keep[0], input_keep=keep[1], hidden_keep=keep[2],
                 output_keep=keep[3],
                 # Rows of h_t scaled to norm <= 25 (0: off); without it a
                 # cell of ReLU / identity nodes can blow up the carried
                 # state at these learning rates.
                 max_hidden_norm=25.0)
  c.shared = dict(
      batch_size={"paper": 20, "cpu": 32, "tiny": 4}[variant],
      bptt={"paper": 35, "cpu": 35, "tiny": 8}[variant],
      steps_per_epoch={"paper": 0, "cpu": 60, "tiny": 5}[variant],
      # True: AWD-LSTM-style random window lengths (the later ENAS LM code)
      # instead of the authors' fixed 35 (ptb_search.sh).
      variable_bptt=False,
      learning_rate=8.75 if paper else 20.0 if not tiny else 1.0,
      grad_clip=10.0 / 35.0 if paper else 0.25,
      weight_decay=1e-7 if paper else 0.0)
  # ptb_enas_controller.py: pointer logits minus (i - j)^2 / 12, the picked
  # node's state fed back divided by 0.1 + (i - j).
  c.controller = dict(hidden_size=16 if tiny else 100, num_layers=1,
                      temperature=5.0, tanh_constant=2.5,
                      pointer_distance_penalty=1.0 / 12.0,
                      pointer_input_rescale=True, unroll=True)
  c.reinforce = dict(batch_size=2 if tiny else 10,
                     learning_rate=1e-3 if not tiny else 5e-3,
                     baseline_decay=0.99 if paper else 0.9,
                     entropy_weight=1e-3, entropy_in_reward=True)
  c.random = dict(batch_size=2 if tiny else 10)
  c.retrain = dict(
      steps={"paper": 2000 * 415, "cpu": 300, "tiny": 10}[variant],
      batch_size={"paper": 64, "cpu": 32, "tiny": 4}[variant],
      learning_rate=20.0 if not tiny else 1.0, grad_clip=0.25,
      weight_decay=5e-7 if paper else 0.0,
      eval_batch_size={"paper": 10, "cpu": 10, "tiny": 4}[variant],
      eval_bptt={"paper": 0, "cpu": 0, "tiny": 32}[variant])  # 0: bptt
  return c
