"""One run per workdir, and a workdir that knows which run it holds.

* ``check_path(workdir)``: a workdir must be a local directory that can be
  created and written; a URL (``gs://...``), a file in the way or an
  unwritable parent is refused in one line before anything is created.
* ``WorkdirLock``: a lock file that names the owning process. It is taken
  atomically (the pid is written to a temporary file that is then
  hard-linked to ``.lock``, so the lock never exists half-written), and a
  lock left by a dead process (SIGKILL, a lost machine) is broken under a
  second short-lived lock, so two processes never both hold it.
* Config identity: ``config.json`` records the config that created the
  workdir and ``identity.json`` a hash of the fields that determine its
  results. ``compare`` lists the fields a new config changes; a run with
  changes in result-determining fields is refused (``IdentityError``) unless
  forced, changes in safe fields (more rounds, checkpoints kept, where data
  lives) are allowed and logged.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import pathlib
import time
import uuid
from typing import Any, Iterable, Mapping

from nas_jax import config_check

LOCK_NAME = ".lock"
CONFIG_NAME = "config.json"
IDENTITY_NAME = "identity.json"
SUMMARY_NAME = "summary.json"
# Fields that never change what a run computes, for every run kind.
ALWAYS_SAFE = ("keep", "nonfinite_reward", "data.data_dir", "table_path")


class WorkdirError(ValueError):
  """A workdir cannot be used (a URL, a file, unwritable, damaged)."""


class WorkdirBusyError(RuntimeError):
  """Another live process runs in this workdir."""


class IdentityError(ValueError):
  """The workdir holds a run of a different config."""


def check_path(workdir: str | os.PathLike) -> pathlib.Path:
  """Checks that ``workdir`` can be used as a run directory; creates nothing.

  Raises:
    WorkdirError: naming the problem and the fix.
  """
  text = os.fspath(workdir)
  if not text:
    raise WorkdirError("--workdir is empty; pass a directory, e.g. "
                       "--workdir=runs/digits")
  if "://" in text or text.startswith("gs:/"):
    raise WorkdirError(
        f"--workdir={text} is a URL; nas_jax writes with ordinary file I/O, "
        "so mount the bucket (e.g. gcsfuse BUCKET /mnt/gcs) and pass the "
        "mounted path")
  path = pathlib.Path(text)
  if path.exists() and not path.is_dir():
    raise WorkdirError(f"--workdir={text} is a file, not a directory; "
                       "choose another --workdir")
  # The nearest existing ancestor must be a writable directory.
  probe = path
  while not probe.exists():
    if probe.parent == probe:
      break
    probe = probe.parent
  if probe.exists() and not probe.is_dir():
    raise WorkdirError(f"--workdir={text}: {probe} is a file, so the "
                       "directory cannot be created; choose another --workdir")
  if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
    raise WorkdirError(f"--workdir={text}: {probe} is not writable by this "
                       "user; choose another --workdir or fix its permissions")
  return path


# ---------------------------------------------------------------------------
# Lock.

def _alive(pid: int) -> bool:
  if pid <= 0:  # kill(-1 or 0, ...) would address a group, not a process
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  except OverflowError:
    return False
  return True


def _read_pid(path: pathlib.Path) -> int | None:
  """The pid in a lock file; 0 for garbage; None if it vanished."""
  try:
    text = path.read_text().strip()
  except FileNotFoundError:
    return None
  except IsADirectoryError:
    raise WorkdirError(
        f"{path} is a directory, not a lock file; remove it "
        f"(rmdir {path}) if no run uses this workdir") from None
  except (OSError, UnicodeDecodeError):
    return 0
  try:
    return int(text.split()[0]) if text else 0
  except ValueError:
    return 0


class WorkdirLock:
  """``with WorkdirLock(workdir):`` holds the workdir for this process."""

  def __init__(self, workdir: str | os.PathLike):
    self.path = pathlib.Path(workdir) / LOCK_NAME
    self.held = False

  def _write_temp(self, suffix: str) -> pathlib.Path:
    tmp = self.path.with_name(f"{LOCK_NAME}.{os.getpid()}.{suffix}."
                              f"{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "w") as f:
      f.write(f"{os.getpid()}\n")
    return tmp

  def _break_stale(self, seen: int) -> None:
    """Removes a lock whose owner ``seen`` is dead, if it is still that one.

    Breaking happens under ``.lock.break`` (taken the same atomic way), so
    a racer that read the stale pid earlier cannot remove a lock another
    process has just taken.
    """
    breaker = self.path.with_name(LOCK_NAME + ".break")
    tmp = self._write_temp("break")
    try:
      try:
        os.link(tmp, breaker)
      except FileExistsError:
        # A breaker left by a killed process would block everyone.
        owner = _read_pid(breaker)
        try:
          old = time.time() - breaker.stat().st_mtime > 10
        except FileNotFoundError:
          return
        if owner is not None and not _alive(owner) and old:
          breaker.unlink(missing_ok=True)
        time.sleep(0.001)
        return
      try:
        if _read_pid(self.path) == seen:
          self.path.unlink(missing_ok=True)
      finally:
        breaker.unlink(missing_ok=True)
    finally:
      tmp.unlink(missing_ok=True)

  def __enter__(self) -> "WorkdirLock":
    try:
      self.path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
      raise WorkdirError(f"cannot create the workdir {self.path.parent} "
                         f"({e.strerror or e}); choose another --workdir"
                         ) from None
    if self.path.is_dir():
      _read_pid(self.path)  # raises the one-line error
    tmp = self._write_temp("lock")
    try:
      for _ in range(10000):
        try:
          os.link(tmp, self.path)  # atomic: fails if a lock exists
          self.held = True
          # Also released on any interpreter exit (a signal's SystemExit
          # between taking the lock and entering a `with` block).
          atexit.register(self.release)
          return self
        except FileExistsError:
          pass
        pid = _read_pid(self.path)
        if pid is None:
          continue  # released meanwhile
        if pid == os.getpid():
          raise WorkdirBusyError(
              f"workdir {self.path.parent} is already in use by this process")
        if _alive(pid):
          raise WorkdirBusyError(
              f"workdir {self.path.parent} is in use by process {pid}; wait "
              f"for it to finish or stop it, or choose another --workdir")
        self._break_stale(pid)
      raise WorkdirBusyError(f"could not take the lock {self.path}")
    finally:
      tmp.unlink(missing_ok=True)

  def release(self) -> None:
    """Drops the lock (idempotent; only if this process holds it)."""
    try:
      if self.held and _read_pid(self.path) == os.getpid():
        self.path.unlink(missing_ok=True)
    except (OSError, WorkdirError):
      pass
    self.held = False
    atexit.unregister(self.release)

  def __exit__(self, *exc):
    self.release()
    return False


# ---------------------------------------------------------------------------
# Config identity.

def _jsonable(config: Any) -> dict:
  if hasattr(config, "to_json_best_effort"):
    return json.loads(config.to_json_best_effort())
  return json.loads(json.dumps(config, default=repr))


def fingerprint(config: Any, safe: Iterable[str] = ()) -> str:
  """sha256 of the fields of ``config`` that are not in ``safe``."""
  safe = set(safe) | set(ALWAYS_SAFE)
  flat = config_check.flatten(_jsonable(config))
  kept = {k: v for k, v in sorted(flat.items()) if k not in safe}
  return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()


def _read_json(path: pathlib.Path, what: str) -> Any:
  try:
    return json.loads(path.read_text())
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise WorkdirError(
        f"{path} ({what}) is damaged ({type(e).__name__}: "
        f"{str(e).splitlines()[0][:120]}); restore it, or remove it to "
        "accept this run's config as the workdir's") from None


def stored_config(workdir: str | os.PathLike) -> dict | None:
  """The config recorded in ``workdir``, or None for a new workdir."""
  path = pathlib.Path(workdir) / CONFIG_NAME
  if not path.is_file():
    return None
  data = _read_json(path, "the config that created this workdir")
  if not isinstance(data, dict):
    raise WorkdirError(f"{path} does not hold a config (a JSON object); "
                       "restore it or remove it")
  return data


def has_results(workdir: str | os.PathLike) -> bool:
  """Whether ``workdir`` holds anything a run wrote beyond its config."""
  wd = pathlib.Path(workdir)
  ckpt = wd / "checkpoints"
  return ((ckpt.is_dir() and any(ckpt.iterdir())) or
          (wd / SUMMARY_NAME).exists() or (wd / "history.jsonl").exists())


def compare(old: Mapping, new: Any, safe: Iterable[str] = (),
            grow_only: Iterable[str] = ()) -> tuple[list[str], list[str]]:
  """Fields that differ between a stored and a new config.

  Returns ``(unsafe, safe)``: lines ``"name: old -> new"``. A field in
  ``grow_only`` is safe when it grows (more rounds), unsafe when it shrinks.
  """
  safe = set(safe) | set(ALWAYS_SAFE)
  grow_only = set(grow_only)
  a = config_check.flatten(old)
  b = config_check.flatten(_jsonable(new))
  unsafe_lines, safe_lines = [], []
  for name in sorted(set(a) | set(b)):
    va, vb = a.get(name, "<absent>"), b.get(name, "<absent>")
    if va == vb:
      continue
    line = f"{name}: {va!r} -> {vb!r}"
    if name in safe:
      safe_lines.append(line)
    elif (name in grow_only and isinstance(va, (int, float)) and
          isinstance(vb, (int, float)) and vb > va):
      safe_lines.append(line)
    else:
      unsafe_lines.append(line)
  return unsafe_lines, safe_lines


def check_identity(workdir: str | os.PathLike, config: Any, *,
                   safe: Iterable[str] = (), grow_only: Iterable[str] = (),
                   force: bool = False) -> list[str]:
  """Refuses to run ``config`` in a workdir that holds another run.

  Reads only. Returns the safe changes (to log). A workdir with a config
  but no results yet (a run stopped before its first checkpoint) takes the
  new config.

  Raises:
    IdentityError: result-determining fields differ and ``force`` is off;
      the message lists them and how to proceed.
    WorkdirError: ``config.json`` is damaged.
  """
  old = stored_config(workdir)
  if old is None or not has_results(workdir):
    return []
  unsafe, safe_changes = compare(old, config, safe, grow_only)
  if unsafe and not force:
    raise IdentityError(
        f"workdir {workdir} holds a run of another config; this one changes "
        f"{'; '.join(unsafe)}. Use another --workdir, or resume anyway with "
        "--config.resume=force (results then mix both configs)")
  return safe_changes + ([f"forced: {u}" for u in unsafe] if force else [])


def is_done(workdir: str | os.PathLike, config: Any,
            safe: Iterable[str] = ()) -> bool:
  """A finished run of this config (up to ``safe`` fields) is in
  ``workdir``."""
  wd = pathlib.Path(workdir)
  summary = wd / SUMMARY_NAME
  if not summary.is_file():
    return False
  try:
    status = json.loads(summary.read_text()).get("status")
  except (OSError, ValueError, AttributeError):
    return False  # damaged: the run redoes its end from the checkpoint
  old = stored_config(wd)
  if status != "done" or old is None:
    return False
  unsafe, changed = compare(old, config, safe, ())
  return not unsafe and not [c for c in changed if c.split(":")[0] not in
                             set(safe) | set(ALWAYS_SAFE)]


def record(workdir: str | os.PathLike, config: Any, *,
           safe: Iterable[str] = ()) -> None:
  """Writes ``config.json`` and ``identity.json`` (atomically)."""
  wd = pathlib.Path(workdir)
  wd.mkdir(parents=True, exist_ok=True)
  data = _jsonable(config)
  _atomic_write(wd / CONFIG_NAME, json.dumps(data, indent=2))
  _atomic_write(wd / IDENTITY_NAME, json.dumps({
      "sha256": fingerprint(config, safe),
      "safe_fields": sorted(set(safe) | set(ALWAYS_SAFE))}, indent=2))


def _atomic_write(path: pathlib.Path, text: str) -> None:
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(text)
  os.replace(tmp, path)
