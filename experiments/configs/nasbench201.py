r"""NAS-Bench-201 search on CIFAR-10 (Dong & Yang, ICLR 2020, Sec. 5).

  python experiments/main.py \
    --config=experiments/configs/nasbench201.py:reinforce --workdir=/tmp/nb201

Variants, each a preset of ``nas_jax.algorithms.presets`` (the settings the
benchmark ``benchmarks/nasbench201.py`` runs, one source of truth):

* the paper's own variants: ``random``, ``rea_paper`` (tournament drawn with
  replacement), ``reinforce_paper`` (factorised softmax policy, Adam 0.001,
  bias-corrected EMA 0.9 updated before the advantage);
* ours: ``rea`` (distinct contestants), ``reinforce`` and ``ppo`` (LSTM
  controller, tuned on validation only by ``benchmarks/tune_nasbench201.py``),
  ``q_learning`` (Block-QNN's tabular Q-learning, epsilon-greedy with
  replay), ``pnas`` (PNAS: progressive over the edges, LSTM-ensemble
  predictor).

Reward = ``valid_acc_12ep`` / 100; each evaluation is charged 12 epochs of
training time against a 12,000 s budget; the returned cell is reported by its
200-epoch test accuracy. The table is read from ``$NAS_JAX_DATA_DIR`` or
``../shared/data`` (override: ``--config.table_path=...``).
"""

import ml_collections

from nas_jax.algorithms import presets

VARIANTS = {"random": "nb201_random", "rea_paper": "nb201_rea_paper",
            "reinforce_paper": "nb201_reinforce_paper", "rea": "nb201_rea",
            "reinforce": "nb201_reinforce", "ppo": "nb201_ppo",
            "q_learning": "nb201_q_learning", "pnas": "nb201_pnas"}


def get_config(variant: str = "reinforce") -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise ValueError(f"unknown variant {variant!r}; choose one of "
                     f"{tuple(VARIANTS)}")
  c = ml_collections.ConfigDict()
  c.run = "tabular"
  c.preset = VARIANTS[variant]
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
  # Every algorithm's section is present, filled from our preset for it (so
  # --config.ppo.learning_rate=... works whatever the variant); the chosen
  # preset then sets ``algorithm``, ``controller`` and its own section.
  for section, name in (("random", "nb201_random"), ("evolution", "nb201_rea"),
                        ("reinforce", "nb201_reinforce"), ("ppo", "nb201_ppo"),
                        ("q_learning", "nb201_q_learning"),
                        ("pnas", "nb201_pnas")):
    c[section] = dict(presets.get(name).options)
  preset = presets.get(VARIANTS[variant])
  c.algorithm = preset.algorithm
  c.controller = dict(preset.controller or presets.get("nb201_reinforce")
                      .controller)
  c[presets.options_field(VARIANTS[variant])] = dict(preset.options)
  return c
