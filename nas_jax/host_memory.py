"""Keeps freed host memory mapped, so XLA:CPU does not page-fault every call.

Why: XLA:CPU gives each call of a compiled program one scratch ("temp")
buffer holding all of its intermediates (129.7 MB for a seed-003 child's
train step at batch 64) and frees it when the call returns. glibc's
``malloc`` serves a request that large with a fresh ``mmap`` and returns it
with ``munmap``, and XLA's worker threads allocate from per-thread arenas,
which must ``mmap`` anything over 64 MB whatever the settings. So every call
touches tens of thousands of new pages, and the kernel faults and zeroes each
one: 31,600 page faults per train step, about a third of the step's time on
one core (``benchmarks/host_memory.py`` measures it; benchmarks/README.md,
"Speed against plain PyTorch").

:func:`keep_freed_memory` sets three documented ``mallopt(3)`` parameters:

* ``M_ARENA_MAX = 1``: every thread allocates from the main arena, the only
  one that can hold a chunk over 64 MB on its heap;
* ``M_MMAP_MAX = 0``: no request is served by ``mmap``;
* ``M_TRIM_THRESHOLD = 2 GiB - 1``: freed memory at the top of the heap is
  kept for the next call, not handed back to the kernel (up to 2 GiB).

The scratch buffer is then reused from the heap after the first call. The
price: the process's resident memory stays at its high-water mark, and all
threads share one malloc arena (XLA allocates a handful of buffers per call,
so the lock is not contended in practice).

``import nas_jax`` calls it, because it only works before XLA starts its
threads (a thread keeps the arena it first allocated from): import
``nas_jax`` before running any JAX computation. Set
``NAS_JAX_KEEP_HOST_MEMORY=0`` to leave ``malloc`` alone. Elsewhere than
Linux with glibc it does nothing. Results are unchanged either way; only
where the memory comes from differs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

ENV = "NAS_JAX_KEEP_HOST_MEMORY"
_OFF = ("0", "off", "false", "no")

# mallopt(3) parameter numbers, from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int

_status: str | None = None


def _glibc():
  if not sys.platform.startswith("linux"):
    return None
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.gnu_get_libc_version  # only glibc has it (not musl)
    libc.mallopt  # noqa: B018
  except (OSError, AttributeError):
    return None
  return libc


def _xla_started() -> bool:
  """Whether a JAX backend (and so XLA's threads) exists already."""
  jax_bridge = sys.modules.get("jax._src.xla_bridge")
  try:
    return bool(jax_bridge and jax_bridge.backends_are_initialized())
  except Exception:  # noqa: BLE001  (a private API: assume the worst)
    return True


def keep_freed_memory() -> str:
  """Applies the malloc settings of the module docstring, once per process.

  Returns:
    What happened: ``"applied"``, ``"applied after XLA started"`` (threads
    XLA already runs keep their arenas, so large programs still fault:
    import ``nas_jax`` first), or ``"skipped: <reason>"``.
  """
  global _status
  if _status is not None:
    return _status
  if os.environ.get(ENV, "").strip().lower() in _OFF:
    _status = f"skipped: ${ENV} is off"
    return _status
  libc = _glibc()
  if libc is None:
    _status = "skipped: not Linux with glibc"
    return _status
  started = _xla_started()
  ok = all(libc.mallopt(param, value) == 1 for param, value in (
      (M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, TRIM_THRESHOLD)))
  if not ok:
    _status = "skipped: mallopt refused a setting"
  elif started:
    _status = "applied after XLA started"
    logging.getLogger(__name__).warning(
        "nas_jax was imported after JAX ran a computation: XLA:CPU's "
        "threads keep their malloc arenas and large programs will page-"
        "fault on every call; import nas_jax before using JAX (or set "
        "MALLOC_ARENA_MAX=1 MALLOC_MMAP_MAX_=0 in the environment).")
  else:
    _status = "applied"
  return _status


def status() -> str:
  """What :func:`keep_freed_memory` did in this process (``"not called"``
  before it ran)."""
  return _status or "not called"
