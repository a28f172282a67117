"""Checkpoints of a whole search state with orbax (DESIGN.md, "Randomness,
state, resume").

A checkpoint holds one pytree (algorithm state, loop carry, PRNG keys, ...)
and a JSON-able ``meta`` dict (history records, reward cache, counters) under
``<workdir>/checkpoints/<step>/``. Orbax writes each step to a temporary
directory and renames it when complete, so a run killed mid-save leaves the
previous checkpoint intact. A checkpoint that is present but unreadable
(truncated or corrupt files, damaged or incomplete meta data) is reported
and skipped in favour of the one before it; it is moved aside to
``<workdir>/checkpoints_unreadable/<step>.<time>`` (never deleted), so the
redone round can save its step again and the run completes.

Typed PRNG keys are stored as their raw ``uint32`` data and re-wrapped on
restore from the template, so the restored state is bit-identical.
"""

from __future__ import annotations

import logging as std_logging
import os
import pathlib
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging


class _QuietOrbax(std_logging.Filter):
  """Orbax logs every save at INFO; keep its warnings, drop the rest, so a
  run's own progress lines stay readable."""

  def filter(self, record):
    return (record.levelno >= std_logging.WARNING
            or "/orbax/" not in record.pathname)


std_logging.getLogger("absl").addFilter(_QuietOrbax())


def _is_key(x) -> bool:
  return isinstance(x, jax.Array) and jax.dtypes.issubdtype(
      x.dtype, jax.dtypes.prng_key)


def _to_saveable(tree):
  """Typed keys -> raw key data; every leaf -> a host numpy array."""
  return jax.tree.map(
      lambda x: np.asarray(jax.random.key_data(x)) if _is_key(x)
      else np.asarray(x), tree)


def _from_saveable(tree, template):
  def restore_leaf(saved, tmpl):
    if _is_key(tmpl):
      return jax.random.wrap_key_data(
          saved, impl=jax.random.key_impl(tmpl))
    return jax.numpy.asarray(saved, dtype=np.asarray(tmpl).dtype)
  return jax.tree.map(restore_leaf, tree, template)


class CheckpointError(RuntimeError):
  """No readable checkpoint although some exist."""


class Checkpointer:
  """Periodic checkpoints of ``(state pytree, meta dict)`` in a workdir.

  Args:
    workdir: the run's directory; checkpoints go to ``workdir/checkpoints``.
    max_to_keep: how many recent checkpoints are kept (>= 2, so there is a
      previous one to fall back to).
  """

  def __init__(self, workdir: str | os.PathLike, *, max_to_keep: int = 3,
               required_meta: tuple[str, ...] = (), read_only: bool = False):
    if max_to_keep < 2:
      raise ValueError(f"max_to_keep must be >= 2 so a corrupt latest "
                       f"checkpoint has a fallback, got {max_to_keep}")
    self.directory = pathlib.Path(workdir).absolute() / "checkpoints"
    self.unreadable_directory = self.directory.with_name(
        "checkpoints_unreadable")
    self.required_meta = tuple(required_meta)
    # Restores only: never saves, never moves a step aside (another process
    # of a multi-process job owns these checkpoints).
    self.read_only = read_only
    options = {"max_to_keep": max_to_keep,
               "enable_async_checkpointing": False, "create": True,
               **self._own_process_options()}
    self._manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(**options))

  def _own_process_options(self) -> dict:
    """In a multi-process job each process uses its Checkpointer on its
    own (process 0 writes, the others read process 0's checkpoints with
    ``read_only``): orbax would otherwise synchronise them at every call."""
    if jax.process_count() == 1:
      return {}
    i = jax.process_index()
    self.directory.mkdir(parents=True, exist_ok=True)
    return {"create": False,
            "multiprocessing_options": ocp.options.MultiprocessingOptions(
                primary_host=i, active_processes={i},
                barrier_sync_key_prefix=f"process_{i}")}

  def steps(self) -> list[int]:
    self._manager.reload()
    steps = set(self._manager.all_steps())
    # A step folder orbax does not list (e.g. empty: a save cut before it
    # wrote anything) would still block saving that step again.
    if self.directory.is_dir():
      steps |= {int(p.name) for p in self.directory.iterdir()
                if p.name.isdigit()}
    return sorted(steps)

  def _set_aside(self, step: int) -> pathlib.Path | None:
    """Moves an unreadable step out of orbax's view; returns where."""
    if self.read_only:
      return None
    src = self.directory / str(step)
    if not src.exists():
      return None
    self.unreadable_directory.mkdir(parents=True, exist_ok=True)
    dst = self.unreadable_directory / f"{step}.{time.strftime('%Y%m%dT%H%M%S')}"
    n = 0
    while dst.exists():
      n += 1
      dst = dst.with_name(f"{dst.name.split('~')[0]}~{n}")
    os.replace(src, dst)
    self._manager.reload()
    return dst

  def save(self, step: int, state: Any, meta: dict) -> None:
    if self.read_only:
      return
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(_to_saveable(state)),
        meta=ocp.args.JsonSave(meta)), force=True)
    self._manager.wait_until_finished()

  def restore(self, template: Any) -> tuple[int, Any, dict] | None:
    """The newest readable checkpoint as ``(step, state, meta)``, or None.

    ``template`` is a state of the right structure (e.g. a fresh
    ``algorithm.init(key)``); its dtypes and key types are used.
    """
    steps = self.steps()
    if not steps:
      return None
    abstract = jax.tree.map(lambda x: x, _to_saveable(template))
    failures = []
    for step in reversed(steps):
      try:
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract),
            meta=ocp.args.JsonRestore()))
        state = _from_saveable(restored["state"], template)
        meta = restored["meta"]
        if not isinstance(meta, dict):
          raise ValueError(f"meta data is a {type(meta).__name__}, not a "
                           "JSON object")
        missing = [k for k in self.required_meta if k not in meta]
        if missing:
          raise ValueError(f"meta data lacks {missing}")
        meta = dict(meta)
      except Exception as e:  # orbax raises many types for bad files
        failures.append(step)
        msg = (str(e).splitlines() or [""])[0][:200]
        logging.warning(
            "checkpoint %d in %s is unreadable (%s: %s); falling back to the "
            "previous one", step, self.directory, type(e).__name__, msg)
        continue
      if failures:
        moved = [self._set_aside(s) for s in failures]
        logging.warning(
            "resumed from checkpoint %d; the unreadable newer checkpoint(s) "
            "%s were moved to %s (kept for inspection; delete them when no "
            "longer needed)", step, failures,
            ", ".join(str(m) for m in moved if m is not None))
      return step, state, meta
    raise CheckpointError(
        f"none of the checkpoints {steps} in {self.directory} could be read "
        "(damaged files, or a state of another config). Move that directory "
        "away (or use another --workdir) to start the run afresh.")

  def close(self):
    self._manager.close()
