r"""Runs a search from an ml_collections config.

  python experiments/main.py \
    --config=experiments/configs/seed003_digits.py:ppo --workdir=/tmp/run

``config.run`` picks the loop (a module of ``nas_jax/train`` in ``RUNS``):
``"tabular"`` (rewards from a table, the whole search jitted;
``nasbench201.py``) or ``"train"`` (children trained from scratch;
``seed003_*.py``). Override any field: ``--config.seed=3``; list the fields
with their values, ranges and meanings: ``--config_fields``.

Before anything is written (or JAX is imported, data loaded or anything
compiled) the binary checks the config path, every override and every
field's range (the run kind's ``check_config``), the workdir (a local,
writable directory) and the workdir's identity: a workdir holding a run of
another config is refused with the fields that differ
(``--config.resume=force`` resumes anyway); a finished run of the same
config is reported as already done and left as it is. Each problem is one
line on stderr and exit status 2.
"""

import difflib
import importlib
import os
import pathlib
import runpy
import signal
import sys

# The binary runs the nas_jax of the checkout it lives in (not another
# installed copy): `python experiments/main.py` puts experiments/ on the
# path, not the checkout's root.
_ROOT = str(pathlib.Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

from absl import app, flags, logging  # pylint: disable=g-import-not-at-top
from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
from nas_jax import compile_cache  # noqa: F401  (defines --compile_cache)

# config.run -> the run kind's module (imported only when used, so a bad
# config is reported before JAX or any data library is imported).
RUNS = {
    "tabular": "nas_jax.train.tabular_run",
    "train": "nas_jax.train.child_search_run",
    "enas": "nas_jax.train.enas_run",
    "retrain": "nas_jax.train.retrain",
    "enas_ptb": "nas_jax.train.enas_ptb_run",
    "nasrl_ptb": "nas_jax.train.nasrl_ptb_run",
    "darts": "nas_jax.train.darts_run",
}

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a config file, optionally `path.py:variant`.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where results are written.")
_RESUME = flags.DEFINE_enum(
    "resume", "", ["", "force"],
    "'force': resume a workdir although the config changes fields that "
    "determine results (also accepted as --config.resume=force).")
_FIELDS = flags.DEFINE_bool(
    "config_fields", False,
    "List the config's fields with their values, allowed ranges and "
    "meanings, then exit (needs --config only).")

EXIT_USAGE = 2


def _fail(message: str) -> None:
  """One line on stderr, exit status 2; no traceback."""
  line = " ".join(str(message).split())
  print(f"error: {line}", file=sys.stderr)
  sys.exit(EXIT_USAGE)


def _module_of(entry):
  """A RUNS entry (module name, module, or a module's ``run``) -> module."""
  if isinstance(entry, str):
    return importlib.import_module(entry)
  if callable(entry) and not hasattr(entry, "check_config"):
    return importlib.import_module(entry.__module__)
  return entry


# ---------------------------------------------------------------------------
# Flag parsing with one-line errors.

def _config_arg(argv):
  for i, a in enumerate(argv):
    if a.startswith("--config="):
      return a[len("--config="):]
    if a == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _overrides(argv):
  """``[(dotted field, raw value, the argument)]`` of ``--config.x=v``."""
  out = []
  for a in argv:
    if a.startswith("--config.") or a.startswith("--noconfig."):
      body = a.split(".", 1)[1]
      name, _, value = body.partition("=")
      out.append((name, value, a))
  return out


def _explain_config_path(spec: str) -> str | None:
  path, _, _ = spec.partition(":")
  p = pathlib.Path(path)
  if p.is_file():
    return None
  folder = p.parent if p.parent.is_dir() else pathlib.Path(
      __file__).parent / "configs"
  known = sorted(str(folder / q.name) for q in folder.glob("*.py")
                 if not q.name.startswith("_")) if folder.is_dir() else []
  close = difflib.get_close_matches(str(p), known, n=1, cutoff=0.5)
  hint = f'; did you mean "{close[0]}"?' if close else (
      f"; configs there: {', '.join(known)}" if known else "")
  return f"config file {path} not found{hint}"


def _load_config(spec: str):
  path, _, variant = spec.partition(":")
  module = runpy.run_path(path)
  return module["get_config"](variant) if variant else module["get_config"]()


def _explain_override(argv) -> str | None:
  """The first ``--config.x`` naming no field of the config, with a hint."""
  from nas_jax import config_check  # cheap: no JAX
  spec = _config_arg(argv)
  if spec is None:
    return None
  try:
    config = _load_config(spec)
  except Exception as e:  # the config's own error, e.g. an unknown variant
    return f"{spec}: {(str(e).strip().splitlines() or [type(e).__name__])[-1]}"
  known = list(config_check.flatten(config))
  prefixes = {k.rsplit(".", i)[0] for k in known for i in range(1, 4)}
  for name, _, arg in _overrides(argv):
    if name in known or name in prefixes:
      continue
    node = config
    for part in name.split("."):
      node = node.get(part) if hasattr(node, "get") else None
    if node is not None:
      continue
    return (f"{arg}: the config has no field {name!r}"
            f"{config_check.did_you_mean(name, known)} (list the fields "
            f"with --config={spec} --config_fields)")
  return None


def _parse_flags(argv):
  """absl's parsing, with every failure reported as one clear line."""
  argv = [("--resume=" + a.split("=", 1)[1])
          if a.startswith("--config.resume=") else a for a in argv]
  # ml_collections finds the --config.x overrides in sys.argv itself.
  sys.argv[:] = argv
  spec = _config_arg(argv)
  if spec is not None:
    problem = _explain_config_path(spec)
    if problem:
      _fail(problem)
  try:
    return flags.FLAGS(argv)
  except SystemExit:
    raise
  except Exception as e:  # absl, ml_collections and the config raise many
    problem = _explain_override(argv)
    if problem is None:
      lines = [l.strip() for l in str(e).splitlines() if l.strip()]
      # The innermost cause is the last line; absl puts the flag first.
      problem = lines[-1] if lines else type(e).__name__
      if isinstance(e, flags.Error) and len(lines) > 1:
        problem = lines[0]
      problem = problem.replace("FATAL Flags parsing error: ", "")
    _fail(problem)


# ---------------------------------------------------------------------------

def main(argv):
  if len(argv) > 1:
    _fail(f"unexpected arguments: {' '.join(argv[1:])} (fields are set "
          "with --config.name=value)")
  # Signals before the run's own handling (loading, compiling) stop quietly.
  signal.signal(signal.SIGTERM, _quiet_exit)
  signal.signal(signal.SIGINT, _quiet_exit)
  config = _CONFIG.value
  if config is None:
    _fail("--config is required, e.g. "
          "--config=experiments/configs/seed003_digits.py:ppo")
  logging.info("checking config %s", _config_arg(sys.argv) or "")
  from nas_jax import config_check  # cheap: no JAX
  from nas_jax.train import workdir as workdir_lib
  kind = config.get("run", "tabular")
  if kind not in RUNS:
    _fail(f"config.run must be one of {sorted(RUNS)}, got {kind!r}"
          f"{config_check.did_you_mean(str(kind), list(RUNS))}")
  if not _FIELDS.value:
    if not _WORKDIR.value:
      _fail("--workdir is required, e.g. --workdir=runs/digits")
    try:
      workdir = workdir_lib.check_path(_WORKDIR.value)
    except ValueError as e:
      _fail(str(e))
  module = _module_of(RUNS[kind])
  schema = getattr(module, "SCHEMA", {})
  if _FIELDS.value:
    print(config_check.describe(config, schema))
    return
  try:
    module.check_config(config)
  except ValueError as e:
    _fail(str(e))
  force = _RESUME.value == "force"
  safe = getattr(module, "SAFE_FIELDS", ())
  grow = getattr(module, "GROW_FIELDS", ())

  # On a TPU pod or a multi-process launch this joins the processes; on a
  # single machine it does nothing (NAS_JAX_DISTRIBUTED=0/1 overrides).
  logging.info("starting JAX")
  import jax
  from nas_jax.parallel import mesh as mesh_lib
  try:
    mesh_lib.initialize_distributed()
  except RuntimeError as e:  # an unreachable coordinator, a bad process id
    _fail(str(e))
  logging.info("%s", mesh_lib.process_info())
  if jax.process_count() > 1 and jax.process_index() > 0:
    # Every process runs the same seeded search; only process 0 writes the
    # workdir itself, so no two processes ever write one file.
    workdir = workdir / f"process_{jax.process_index()}"

  try:
    changes = workdir_lib.check_identity(workdir, config, safe=safe,
                                         grow_only=grow, force=force)
    if workdir_lib.is_done(workdir, config, safe):
      logging.info("%s already holds this finished run (summary.json: "
                   "done); nothing was changed. Use another --workdir to "
                   "run it again.", workdir)
      return
  except ValueError as e:
    _fail(str(e))
  for c in changes:
    logging.warning("resuming with a changed field: %s", c)

  from nas_jax.checkpoint import CheckpointError
  from nas_jax.data.datasets import CorruptDataError
  from nas_jax.spaces.base import InvalidArchitectureError
  from nas_jax.train import preemption
  try:
    with workdir_lib.WorkdirLock(workdir) as lock:
      preemption.add_cleanup(lock.release)
      try:
        # Every run kind's workdir records its config and identity (a
        # forced config replaces the old one before the run re-checks it).
        workdir_lib.record(workdir, config, safe=safe)
        module.run(config, str(workdir))
      finally:
        preemption.remove_cleanup(lock.release)
  except (FileNotFoundError, ValueError, InvalidArchitectureError,
          CheckpointError, workdir_lib.WorkdirBusyError, CorruptDataError,
          PermissionError) as e:
    logging.error("%s", e)
    _fail(str(e))


def _quiet_exit(signum, frame):
  from nas_jax.train import preemption
  preemption.quiet_exit_handler(signum, frame)


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
