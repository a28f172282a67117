"""One run per workdir: a lock file that names the owning process.

Two processes writing the same workdir would interleave their histories and
checkpoints. The lock holds the owner's pid; a lock left by a dead process
(SIGKILL, a lost machine) is taken over, so resuming after a crash needs no
manual clean-up.
"""

from __future__ import annotations

import os
import pathlib

LOCK_NAME = ".lock"


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


class WorkdirBusyError(RuntimeError):
  """Another live process runs in this workdir."""


class WorkdirLock:

  def __init__(self, workdir: str | os.PathLike):
    self.path = pathlib.Path(workdir) / LOCK_NAME

  def __enter__(self) -> "WorkdirLock":
    self.path.parent.mkdir(parents=True, exist_ok=True)
    while True:
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
      except FileExistsError:
        try:
          pid = int(self.path.read_text().strip() or 0)
        except (OSError, ValueError):
          pid = 0
        if pid and pid != os.getpid() and _alive(pid):
          raise WorkdirBusyError(
              f"workdir {self.path.parent} is in use by process {pid}; wait "
              f"for it to finish or stop it, or choose another --workdir")
        self.path.unlink(missing_ok=True)  # stale: its owner is gone
        continue
      with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))
      return self

  def __exit__(self, *exc):
    self.path.unlink(missing_ok=True)
    return False
