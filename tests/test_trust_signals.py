"""Signals (issue 7, item 6): a main thread stuck in one long call (as in
XLA compilation) still stops within seconds; a second signal and a signal
after the run stopped exit quietly and release the lock."""

import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]

# A process holding a workdir lock inside a PreemptionGuard. MODE picks what
# the main thread does while signals arrive.
SCRIPT = textwrap.dedent("""
    import os, signal, sys, time
    sys.path.insert(0, {root!r})
    from nas_jax.train import preemption, workdir
    lock = workdir.WorkdirLock({wd!r}).__enter__()
    preemption.add_cleanup(lock.release)
    mode = {mode!r}
    signal.signal(signal.SIGTERM, preemption.quiet_exit_handler)
    signal.signal(signal.SIGINT, preemption.quiet_exit_handler)
    if mode == "after_stop":
      with preemption.PreemptionGuard():
        pass
      print("ready", flush=True)
      try:  # like main.py's `with WorkdirLock(...)` around the run
        time.sleep(60)
      finally:
        lock.release()
      sys.exit(0)
    with preemption.PreemptionGuard() as guard:
      guard.nothing_to_save = mode == "stuck"
      if mode == "stuck":
        # Like a main thread inside XLA compilation: it runs no Python, so
        # Python-level handlers cannot run (the signal is blocked here and
        # delivered to the watcher thread instead).
        signal.pthread_sigmask(signal.SIG_BLOCK, {{signal.SIGTERM}})
        print("ready", flush=True)
        time.sleep(60)
      else:  # a loop that has rounds to save: finishes the round first
        print("ready", flush=True)
        for _ in range(600):
          time.sleep(0.1)
      print("loop ended", flush=True)
""")


def _start(tmp_path, mode):
  wd = tmp_path / "wd"
  proc = subprocess.Popen(
      [sys.executable, "-c", SCRIPT.format(root=str(ROOT), wd=str(wd),
                                           mode=mode)],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  assert proc.stdout.readline().strip() == "ready"
  return proc, wd


def test_sigterm_while_the_main_thread_is_stuck_exits_in_seconds(tmp_path):
  proc, wd = _start(tmp_path, "stuck")
  assert (wd / ".lock").exists()
  t0 = time.monotonic()
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=30)
  took = time.monotonic() - t0
  assert proc.returncode == 0, err
  assert took < 15, took  # grace 3 s; before: after the call returned
  assert "stopped at once" in err and "Traceback" not in err
  assert "loop ended" not in out
  assert not (wd / ".lock").exists()


def test_second_signal_stops_at_once_quietly(tmp_path):
  proc, wd = _start(tmp_path, "loop")
  proc.send_signal(signal.SIGINT)
  time.sleep(0.5)
  assert proc.poll() is None  # the first one only asks for a stop
  proc.send_signal(signal.SIGINT)
  out, err = proc.communicate(timeout=30)
  assert proc.returncode == 128 + signal.SIGINT, err
  assert "second SIGINT" in err
  assert "Traceback" not in err and "KeyboardInterrupt" not in err
  assert not (wd / ".lock").exists()


def test_signal_after_the_run_stopped_is_quiet_and_releases_the_lock(
    tmp_path):
  proc, wd = _start(tmp_path, "after_stop")
  proc.send_signal(signal.SIGINT)
  out, err = proc.communicate(timeout=30)
  assert proc.returncode == 128 + signal.SIGINT, err
  assert "Traceback" not in err and "KeyboardInterrupt" not in err
  assert not (wd / ".lock").exists()
