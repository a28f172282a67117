r"""Your own table in the binary: a search over a table read from a file.

  python experiments/main.py \
    --config=experiments/configs/custom_table.py:ppo --workdir=/tmp/custom

Variants: ``ppo`` (default), ``reinforce``, ``random``, ``rea``, the presets
``nb201_ppo`` etc. of ``nas_jax.algorithms.presets``. The table is
the project's own: the validation accuracies of all 64 children of the
seed-003 small space on the embedded digits (built by
``benchmarks/seed003_table.py`` into ``benchmarks/results/``). Point
``table.path`` at your own CSV / JSON file, name the column holding the
architecture (``table.key``, its ``key_format``), the reward column and the
columns to report; ``space`` names a registered space (register yours with
``nas_jax.spaces.registry.register`` in this file or a module it imports;
WORKSPACE.md, "Your own space and table"). Every architecture of the space
must be in the table exactly once; rewards are best in [0, 1]
(``table.reward_scale=0.01`` for percentages).
"""

import pathlib

import ml_collections

from nas_jax.algorithms import presets

# Each variant is a named preset of nas_jax.algorithms.presets: the settings
# tuned on NAS-Bench-201 (validation only), shared with its benchmark and
# config; any field can still be overridden, e.g. --config.ppo.learning_rate.
VARIANTS = {"ppo": "nb201_ppo", "reinforce": "nb201_reinforce",
            "random": "nb201_random", "rea": "nb201_rea"}
_ROOT = pathlib.Path(__file__).resolve().parents[2]


def get_config(variant: str = "ppo") -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise ValueError(f"unknown variant {variant!r}; choose one of "
                     f"{tuple(VARIANTS)}")
  c = ml_collections.ConfigDict()
  c.run = "tabular"
  c.seed = 0
  c.num_seeds = 1  # >1 runs seeds together under vmap
  c.evaluator = "table"
  c.space = "seed003_small"
  c.space_kwargs = {}
  c.table = dict(
      path=str(_ROOT / "benchmarks/results/seed003_small_digits.json"),
      records="children",   # the list of records inside the JSON file
      key="text",           # the field naming the architecture ...
      key_format="text",    # ... in the space's text form, conv_3x3>identity
      reward="val_acc",     # what the search maximises (fraction in [0, 1])
      report=("test_acc",),  # written to best.json, never seen by the search
      cost="",              # optional simulated seconds per evaluation
      reward_scale=1.0)
  c.time_budget = 0.0  # no simulated-time budget: max_evals bounds the run
  c.max_evals = 32     # a multiple of every variant's batch size
  c.rounds_per_checkpoint = 2
  c.keep = 3
  c.preset = VARIANTS[variant]
  c.update(presets.config(c.preset))  # algorithm, controller, its options
  return c
