r"""Block-QNN (Zhong et al., AAAI 2018 / CVPR 2018; seed 000) with child
training on the embedded scikit-learn digits: tabular Q-learning picks a
block layer by layer (Table 1's code space), each block is stacked into a
3-stage network (block, pool, block, pool, block) and trained briefly
(early stop), and the reward is the paper's shaped one, ``accuracy -
mu log(MFLOPs) - rho log(density)``.

  python experiments/main.py \
    --config=experiments/configs/blockqnn_digits.py:cpu --workdir=runs/bqnn

Variants: ``cpu`` (default: 15 rounds of 4 blocks of up to 4 layers, a few
minutes on 2 CPU cores), ``random`` (the same with random search, the
baseline at the same number of children), ``tiny`` (seconds: a smoke test).
Needs no download: the 1,797 8x8 digits ship inside scikit-learn.

At this scale the shaped reward's FLOPs term dominates (twice the FLOPs
costs 0.35, more than most accuracy gaps between blocks), so the search
returns cheap blocks; ``--config.reward.kind=accuracy`` searches for
accuracy alone (as ``benchmarks/blockqnn.py`` does).
"""

import ml_collections

VARIANTS = ("cpu", "random", "tiny")


def get_config(variant: str = "cpu") -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise ValueError(f"unknown variant {variant!r}; choose one of {VARIANTS}")
  c = ml_collections.ConfigDict()
  c.run = "train"
  c.seed = 0
  c.space = "blockqnn"
  c.space_kwargs = {"max_layers": 4}
  c.algorithm = "random" if variant == "random" else "q_learning"
  c.num_rounds = 15
  c.data_parallel = False
  c.checkpoint_every = 1  # rounds; a killed run resumes after the last one
  c.keep = 3
  c.nonfinite_reward = "skip"
  c.data = dict(name="digits", data_dir="", num_val=300, max_train=0,
                split_seed=0, augment="")
  # Block x N, pool, Block x N, pool, Block x N (Fig. 3) with N = 1.
  c.network = dict(num_cells=3, channels=16, reduce_every=1)
  # Early stop: 60 steps (about 1.3 epochs) of a 4-epoch schedule.
  c.child = dict(epochs=4, batch_size=32, learning_rate=0.05,
                 optimizer="sgd", weight_decay=1e-4, early_stop_steps=60)
  # Seed 000: mu = rho = 1/2 (FLOPs in millions of multiply-accumulates).
  c.reward = dict(kind="blockqnn", mu=0.5, rho=0.5)
  # Epsilon 1 for 20 blocks, then down to 0.1 over 30; replay (Sec. 3.3).
  c.q_learning = dict(batch_size=4, learning_rate=0.5, explore_episodes=20,
                      decay_episodes=30, replay_samples=20)
  c.random = dict(batch_size=4)
  # For --config.algorithm=reinforce: a policy-gradient agent on the blocks.
  c.controller = dict(hidden_size=32, num_layers=1, temperature=1.0,
                      tanh_constant=None)
  c.reinforce = dict(batch_size=4, learning_rate=0.01, baseline_decay=0.9)
  if variant == "tiny":
    c.space_kwargs = {"max_layers": 2}
    c.num_rounds = 3
    c.data.update(num_val=64, max_train=96)
    c.network.update(num_cells=2, channels=4)
    c.child.update(epochs=1, early_stop_steps=2)
    c.q_learning.update(batch_size=2, explore_episodes=2, decay_episodes=2,
                        replay_samples=2)
  return c
