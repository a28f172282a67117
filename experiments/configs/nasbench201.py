r"""NAS-Bench-201 search on CIFAR-10 (Dong & Yang, ICLR 2020, Sec. 5).

  python experiments/main.py \
    --config=experiments/configs/nasbench201.py:reinforce --workdir=/tmp/nb201

Variants: ``random``, ``rea`` (regularized evolution), ``reinforce``, ``ppo``.
Reward = ``valid_acc_12ep`` / 100; each evaluation is charged 12 epochs of
training time against a 12,000 s budget; the returned cell is reported by its
200-epoch test accuracy. The table is read from ``$NAS_JAX_DATA_DIR`` or
``../shared/data`` (override: ``--config.table_path=...``).
"""

import ml_collections

VARIANTS = ("random", "rea", "reinforce", "ppo")


def get_config(variant: str = "reinforce") -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise ValueError(f"unknown variant {variant!r}; choose one of {VARIANTS}")
  c = ml_collections.ConfigDict()
  c.run = "tabular"
  c.algorithm = variant
  c.seed = 0
  c.num_seeds = 1  # >1 runs seeds together under vmap
  c.evaluator = "nasbench201"
  c.table_path = ""
  c.reward_column = "valid_acc_12ep"
  c.epochs_charged = 12.0
  c.time_budget = 12000.0
  c.max_evals = 1000
  c.rounds_per_checkpoint = 25  # the jitted search is checkpointed this often
  c.keep = 3                    # checkpoints kept in <workdir>/checkpoints
  c.nonfinite_reward = "skip"  # a NaN/inf reward: "skip" the update or "error"
  c.controller = dict(hidden_size=32, num_layers=1, temperature=1.0,
                      tanh_constant=None)
  c.reinforce = dict(batch_size=1, learning_rate=0.01, baseline_decay=0.9,
                     entropy_weight=0.0)
  c.ppo = dict(batch_size=4, minibatch_size=2, num_epochs=4,
               learning_rate=0.01, baseline_decay=0.9, clip_epsilon=0.2)
  c.evolution = dict(population_size=10, sample_size=3)
  c.random = dict(batch_size=1)
  return c
