r"""Runs a search from an ml_collections config.

  python experiments/main.py \
    --config=experiments/configs/nasbench201.py:reinforce --workdir=/tmp/run

Override any field: ``--config.seed=3 --config.num_seeds=10``.
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from nas_jax.train import tabular_run

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a config file, optionally `path.py:variant`.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where results are written.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    tabular_run.run(_CONFIG.value, _WORKDIR.value)
  except (FileNotFoundError, ValueError) as e:
    logging.error("%s", e)
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
