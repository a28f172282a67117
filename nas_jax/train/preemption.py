"""SIGTERM / SIGINT -> checkpoint and exit cleanly.

TPU VMs and batch schedulers send SIGTERM shortly before taking a machine.
Inside ``PreemptionGuard`` the first SIGTERM or SIGINT only sets a flag; the
search loop checks it between rounds, writes a checkpoint and returns, so the
same command resumes the run. A second SIGINT interrupts at once (Ctrl-C
twice), as users expect.
"""

from __future__ import annotations

import signal
import threading

from absl import logging


class PreemptionGuard:

  def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
    self.signals = tuple(signals)
    self.requested = False
    self.signal_name: str | None = None
    self._previous = {}

  def _handler(self, signum, frame):
    if self.requested and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.requested = True
    self.signal_name = signal.Signals(signum).name
    logging.warning("%s received: the run will checkpoint and stop after the "
                    "current round", self.signal_name)

  def __enter__(self) -> "PreemptionGuard":
    # Signal handlers can only be installed from the main thread; elsewhere
    # (e.g. a library user's worker thread) the guard is inert.
    if threading.current_thread() is threading.main_thread():
      for s in self.signals:
        self._previous[s] = signal.signal(s, self._handler)
    return self

  def __exit__(self, *exc):
    for s, h in self._previous.items():
      signal.signal(s, h)
    self._previous.clear()
    return False
