"""SIGTERM / SIGINT -> exit at once when nothing would be lost, else
checkpoint after the current round and exit cleanly.

TPU VMs and batch schedulers send SIGTERM shortly before taking a machine.
The search loop tells its ``PreemptionGuard`` whether everything it did is
covered by the last checkpoint (``guard.nothing_to_save``: true right after
a checkpoint, so always with ``checkpoint_every=1``). Then a signal ends the
process at once with status 0: the round in progress is redone identically
by the resumed run (round ``r`` always uses ``fold_in(key, r)``). Otherwise
the first signal only sets a flag; the loop checks it after the round,
writes a checkpoint and returns, so the same command resumes the run.

Python runs signal handlers only between bytecodes of the main thread, so a
main thread inside one long XLA call (compiling the first train step can
take minutes) would not see the signal until the call returns. The guard
therefore also watches the signals from a helper thread (through
``signal.set_wakeup_fd``): if the main thread has not taken the signal
within ``grace_seconds`` and is not inside a ``critical()`` section (a
checkpoint being written), the work since the last checkpoint is only a
round in progress, which a resumed run redoes identically; the watcher runs
the registered clean-ups (releasing the workdir lock) and exits with status
0. A second signal stops at once the same way, quietly, whatever the main
thread does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
import time
from typing import Callable

from absl import logging

_cleanups: list[Callable[[], None]] = []


def add_cleanup(fn: Callable[[], None]) -> None:
  """Registers ``fn`` to run before an immediate exit (e.g. lock release)."""
  _cleanups.append(fn)


def remove_cleanup(fn: Callable[[], None]) -> None:
  if fn in _cleanups:
    _cleanups.remove(fn)


def exit_now(code: int, message: str) -> None:
  """Runs the clean-ups, logs ``message`` and ends the process at once."""
  for fn in list(_cleanups):
    try:
      fn()
    except Exception as e:  # an exit must not turn into a traceback
      logging.warning("clean-up before exit failed: %s", e)
  logging.warning("%s", message)
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except Exception:
      pass
  os._exit(code)


class PreemptionGuard:
  """``with PreemptionGuard() as guard:`` ... ``if guard.requested: stop``.

  Args:
    signals: the signals that request a stop.
    grace_seconds: how long the main thread has to take a signal before
      the watcher stops the process itself (see the module doc).
    resume_hint: appended to the exit message (e.g. the checkpoint).
  """

  def __init__(self, signals=(signal.SIGTERM, signal.SIGINT), *,
               grace_seconds: float = 3.0):
    self.signals = tuple(signals)
    self.grace_seconds = grace_seconds
    self.requested = False
    self.nothing_to_save = False  # set by the loop (see the module doc)
    self.signal_name: str | None = None
    self.resume_hint = "run the same command to resume"
    self._previous = {}
    self._handled = threading.Event()
    self._critical = 0
    self._lock = threading.Lock()
    self._sock: tuple[socket.socket, socket.socket] | None = None
    self._old_wakeup = -1
    self._watcher: threading.Thread | None = None
    self._closing = False

  def _handler(self, signum, frame):
    name = signal.Signals(signum).name
    if self.requested:
      # A second signal: the user wants out now. A checkpoint being written
      # is finished by the watcher's wait on the critical section.
      self._stop_now(f"second {name}: stopped at once; "
                     f"{self.resume_hint}", 128 + signum)
      return
    self.requested = True
    self.signal_name = name
    self._handled.set()
    if self.nothing_to_save:
      self._stop_now(
          f"{name} received: stopped at once; everything before the round "
          f"in progress is in the last checkpoint and a resumed run redoes "
          f"that round identically; {self.resume_hint}", 0)
      return
    logging.warning("%s received: the run will checkpoint and stop after the "
                    "current round (a second signal stops at once)", name)

  def _stop_now(self, message: str, code: int) -> None:
    deadline = time.monotonic() + 60
    while self._critical and time.monotonic() < deadline:
      time.sleep(0.05)
    exit_now(code, message)

  @contextlib.contextmanager
  def critical(self):
    """A section an immediate exit must not cut (a checkpoint save)."""
    with self._lock:
      self._critical += 1
    try:
      yield
    finally:
      with self._lock:
        self._critical -= 1

  def _watch(self):
    rsock = self._sock[0]
    count = 0
    while not self._closing:
      try:
        data = rsock.recv(64)
      except OSError:
        return
      if not data or self._closing:
        return
      for signum in data:
        if signum not in [int(s) for s in self.signals]:
          continue
        count += 1
        name = signal.Signals(signum).name
        if count >= 2:
          self._stop_now(f"second {name}: stopped at once; "
                         f"{self.resume_hint}", 128 + signum)
        if self._handled.wait(self.grace_seconds):
          continue  # the main thread took it
        if not self.nothing_to_save:
          continue  # rounds since the checkpoint: the loop saves them
        self._stop_now(
            f"{name} received while the main thread was inside one long "
            f"call (e.g. compiling); stopped at once, nothing since the last "
            f"checkpoint is lost: {self.resume_hint}", 0)

  def __enter__(self) -> "PreemptionGuard":
    # Signal handlers can only be installed from the main thread; elsewhere
    # (e.g. a library user's worker thread) the guard is inert.
    if threading.current_thread() is threading.main_thread():
      for s in self.signals:
        self._previous[s] = signal.signal(s, self._handler)
      self._sock = socket.socketpair()
      for sock in self._sock:
        sock.setblocking(sock is self._sock[0])
      try:
        self._old_wakeup = signal.set_wakeup_fd(
            self._sock[1].fileno(), warn_on_full_buffer=False)
      except ValueError:
        self._old_wakeup = -1
      self._watcher = threading.Thread(target=self._watch, daemon=True,
                                       name="preemption-watcher")
      self._watcher.start()
    return self

  def __exit__(self, *exc):
    self._closing = True
    if self._sock is not None:
      try:
        signal.set_wakeup_fd(self._old_wakeup)
      except ValueError:
        pass
      try:
        self._sock[1].send(b"\0")  # wakes the watcher so it ends
      except OSError:
        pass
      if self._watcher is not None:
        self._watcher.join(timeout=1)
      for sock in self._sock:
        sock.close()
      self._sock = None
    for s, h in self._previous.items():
      signal.signal(s, h)
    self._previous.clear()
    return False


def quiet_exit_handler(signum, frame):
  """For outside a guard: a signal ends the process without a traceback
  (``SystemExit`` unwinds, so ``with`` blocks release the workdir lock)."""
  name = signal.Signals(signum).name
  logging.warning("%s received: stopping; run the same command to resume",
                  name)
  # A scheduler's SIGTERM is a normal preemption (status 0, as inside a
  # guard); Ctrl-C is the user's stop (130).
  raise SystemExit(0 if signum == signal.SIGTERM else 128 + signum)
