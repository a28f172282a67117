r"""Runs a search from an ml_collections config.

  python experiments/main.py \
    --config=experiments/configs/seed003_digits.py:ppo --workdir=/tmp/run

``config.run`` picks the loop: ``"tabular"`` (rewards from a table, the whole
search jitted; ``nasbench201.py``) or ``"train"`` (children trained from
scratch; ``seed003_*.py``). Override any field: ``--config.seed=3``.
"""

import os
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from nas_jax.checkpoint import CheckpointError
from nas_jax.parallel import mesh as mesh_lib
from nas_jax.spaces.base import InvalidArchitectureError
from nas_jax.train import child_search_run, tabular_run
from nas_jax.train import enas_run
from nas_jax.train import retrain
from nas_jax.train import enas_ptb_run, nasrl_ptb_run
from nas_jax.train.workdir import WorkdirBusyError, WorkdirLock

RUNS = {"tabular": tabular_run.run, "train": child_search_run.run}
RUNS["enas"] = enas_run.run
RUNS["retrain"] = retrain.run
RUNS["nasrl_ptb"] = nasrl_ptb_run.run
RUNS["enas_ptb"] = enas_ptb_run.run

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a config file, optionally `path.py:variant`.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where results are written.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # On a TPU pod or a multi-process launch this joins the processes; on a
  # single machine it does nothing (NAS_JAX_DISTRIBUTED=0/1 overrides).
  mesh_lib.initialize_distributed()
  logging.info("%s", mesh_lib.process_info())
  config = _CONFIG.value
  workdir = _WORKDIR.value
  if jax.process_count() > 1 and jax.process_index() > 0:
    # Every process runs the same seeded search; only process 0 writes the
    # workdir itself, so no two processes ever write one file.
    workdir = os.path.join(workdir, f"process_{jax.process_index()}")
  kind = config.get("run", "tabular")
  if kind not in RUNS:
    raise app.UsageError(f"config.run must be one of {sorted(RUNS)}, got "
                         f"{kind!r}")
  try:
    with WorkdirLock(workdir):
      RUNS[kind](config, workdir)
  except (FileNotFoundError, ValueError, InvalidArchitectureError,
          CheckpointError, WorkdirBusyError) as e:
    logging.error("%s", e)
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
