r"""The seed-003 study (Arora & Krone, "Learning to Design CNNs with RL") on
the embedded scikit-learn digits: PPO over the small space (a cell of two
consecutive ops, 8 x 8 = 64 children), each child trained from scratch.

  python experiments/main.py \
    --config=experiments/configs/seed003_digits.py:ppo --workdir=runs/digits

Variants: ``ppo`` (default), ``reinforce``, ``random``, ``evolution``;
``large`` runs PPO on the large space (branching cells, 3,072 children).
Needs no download: the 1,797 8x8 digits ship inside scikit-learn.
"""

import ml_collections

VARIANTS = ("ppo", "reinforce", "random", "evolution", "large", "q_learning",
            "pnas")


def get_config(variant: str = "ppo") -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise ValueError(f"unknown variant {variant!r}; choose one of {VARIANTS}")
  c = ml_collections.ConfigDict()
  c.run = "train"
  c.seed = 0
  c.space = "seed003_large" if variant == "large" else "seed003_small"
  c.space_kwargs = {}
  c.algorithm = "ppo" if variant == "large" else variant
  c.num_rounds = 12
  c.data_parallel = False  # shard each child's batches over local devices
  c.per_device_children = False  # each device trains its own child
  c.checkpoint_every = 1  # rounds; a killed run resumes after the last one
  c.keep = 3              # checkpoints kept in <workdir>/checkpoints
  c.nonfinite_reward = "skip"  # a NaN/inf reward: "skip" the update or "error"
  c.data = dict(name="digits", data_dir="", num_val=300, max_train=0,
                split_seed=0, augment="")
  c.network = dict(num_cells=2, channels=16)
  c.child = dict(epochs=4, batch_size=32, learning_rate=0.05,
                 optimizer="sgd", weight_decay=1e-4)
  c.controller = dict(hidden_size=32, num_layers=1, temperature=1.0,
                      tanh_constant=None)
  # The seed's loop: sample m children, train them, K epochs of PPO on them.
  c.ppo = dict(batch_size=4, minibatch_size=2, num_epochs=4,
               learning_rate=0.01, baseline_decay=0.9, clip_epsilon=0.2)
  c.reinforce = dict(batch_size=4, learning_rate=0.01, baseline_decay=0.9)
  c.evolution = dict(population_size=8, sample_size=3, batch_size=4)
  c.random = dict(batch_size=4)
  # Block-QNN's agent and PNAS (K = 8: the 8 one-op cells, the second op
  # "identity" until it is chosen, then the 8 most promising two-op cells).
  c.q_learning = dict(batch_size=4, learning_rate=0.5, explore_episodes=16,
                      decay_episodes=24, replay_samples=20)
  c.pnas = dict(beam_size=8, fill=7, fit_steps=50,
                surrogate=dict(kind="mlp", ensemble_size=5))
  return c
