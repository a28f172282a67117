"""The workdir lock (issue 7, item 6): atomic, never held by two processes
(200 seeded races), stale locks taken over, damaged locks handled."""

import multiprocessing as mp
import os
import pathlib
import subprocess
import sys

import pytest

from nas_jax.train import workdir as workdir_lib

RACES = 200
RACERS = 4


def _dead_pid() -> int:
  proc = subprocess.Popen([sys.executable, "-c", "pass"])
  proc.wait()
  return proc.pid


def _racer(root: str, barrier, results, rank: int):
  """For each race: wait for all, try the lock, record success, hold it
  until every racer has tried, release."""
  for race in range(RACES):
    wd = pathlib.Path(root) / f"race{race}"
    barrier.wait()
    lock = workdir_lib.WorkdirLock(wd)
    try:
      lock.__enter__()
      got = True
    except workdir_lib.WorkdirBusyError:
      got = False
    results[race * RACERS + rank] = got
    barrier.wait()  # everyone has tried while the winner holds it
    if got:
      lock.release()


def test_two_processes_never_both_hold_the_lock(tmp_path):
  # Half the races start from a stale lock (a dead pid, the case that let
  # two processes in before), half from none; odd races hold garbage or -1.
  dead = _dead_pid()
  for race in range(RACES):
    wd = tmp_path / f"race{race}"
    wd.mkdir()
    if race % 2:
      text = {1: f"{dead}\n", 3: "-1\n"}.get(race % 4, f"{dead}\n")
      (wd / workdir_lib.LOCK_NAME).write_text(text)
  # forkserver: racers forked from a fresh process, not from this one
  # (which runs JAX threads).
  ctx = mp.get_context("forkserver")
  barrier = ctx.Barrier(RACERS)
  results = ctx.Array("b", RACES * RACERS)
  procs = [ctx.Process(target=_racer, args=(str(tmp_path), barrier, results,
                                            rank)) for rank in range(RACERS)]
  for p in procs:
    p.start()
  for p in procs:
    p.join(timeout=120)
    assert p.exitcode == 0
  holders = [sum(results[r * RACERS:(r + 1) * RACERS]) for r in range(RACES)]
  assert holders == [1] * RACES
  # Every lock was released and no temporary file was left behind.
  left = [p.name for p in tmp_path.rglob(".lock*")]
  assert left == []


def test_lock_holds_the_owner_pid_and_refuses_a_live_owner(tmp_path):
  with workdir_lib.WorkdirLock(tmp_path / "wd") as lock:
    assert lock.path.read_text().strip() == str(os.getpid())
    other = subprocess.Popen([sys.executable, "-c",
                              "import time; time.sleep(30)"])
    try:
      (tmp_path / "wd2").mkdir()
      (tmp_path / "wd2" / ".lock").write_text(f"{other.pid}\n")
      with pytest.raises(workdir_lib.WorkdirBusyError,
                         match=f"in use by process {other.pid}"):
        workdir_lib.WorkdirLock(tmp_path / "wd2").__enter__()
    finally:
      other.kill()
      other.wait()
  assert not lock.path.exists()


@pytest.mark.parametrize("content", ["-1", "0", "", "garbage", "99999999999"])
def test_a_lock_with_an_impossible_pid_is_taken_over(tmp_path, content):
  # Before: "-1" was refused forever (kill(-1, 0) succeeds).
  (tmp_path / ".lock").write_text(content)
  with workdir_lib.WorkdirLock(tmp_path):
    assert (tmp_path / ".lock").read_text().strip() == str(os.getpid())


def test_a_lock_that_is_a_directory_is_a_one_line_error(tmp_path):
  (tmp_path / ".lock").mkdir()
  with pytest.raises(workdir_lib.WorkdirError, match="is a directory.*rmdir"):
    workdir_lib.WorkdirLock(tmp_path).__enter__()


# -- the workdir's path and identity ----------------------------------------

@pytest.mark.parametrize("text,needle", [
    ("gs://bucket/run", "is a URL"), ("s3://b/r", "is a URL"),
    ("", "is empty")])
def test_urls_and_empty_workdirs_are_refused(text, needle, tmp_path):
  with pytest.raises(workdir_lib.WorkdirError, match=needle):
    workdir_lib.check_path(text)


def test_a_file_in_the_way_is_refused(tmp_path):
  (tmp_path / "f").write_text("x")
  with pytest.raises(workdir_lib.WorkdirError, match="is a file"):
    workdir_lib.check_path(tmp_path / "f")
  with pytest.raises(workdir_lib.WorkdirError, match="is a file"):
    workdir_lib.check_path(tmp_path / "f" / "run")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_an_unwritable_parent_is_refused(tmp_path):
  ro = tmp_path / "ro"
  ro.mkdir()
  ro.chmod(0o500)
  try:
    with pytest.raises(workdir_lib.WorkdirError, match="not writable"):
      workdir_lib.check_path(ro / "run")
  finally:
    ro.chmod(0o700)


def _config(**changes):
  import ml_collections
  c = ml_collections.ConfigDict({"seed": 0, "num_rounds": 3, "keep": 3,
                                 "ppo": {"learning_rate": 0.01}})
  for k, v in changes.items():
    node = c
    *head, last = k.split(".")
    for h in head:
      node = node[h]
    node[last] = v
  return c


def _finished(wd, config):
  workdir_lib.record(wd, config)
  (wd / "summary.json").write_text('{"status": "done"}')


def test_identity_lists_result_fields_and_allows_safe_ones(tmp_path):
  _finished(tmp_path, _config())
  assert workdir_lib.is_done(tmp_path, _config())
  with pytest.raises(workdir_lib.IdentityError,
                     match=r"ppo.learning_rate: 0.01 -> 0.1; seed: 0 -> 5"
                     r".*another --workdir.*--config.resume=force"):
    workdir_lib.check_identity(tmp_path, _config(
        seed=5, **{"ppo.learning_rate": 0.1}))
  assert workdir_lib.check_identity(tmp_path, _config(keep=5)) == [
      "keep: 3 -> 5"]
  assert workdir_lib.is_done(tmp_path, _config(keep=5))
  # Growing rounds is safe and not done; shrinking them is not safe.
  grow = workdir_lib.check_identity(tmp_path, _config(num_rounds=4),
                                    grow_only=("num_rounds",))
  assert grow == ["num_rounds: 3 -> 4"]
  assert not workdir_lib.is_done(tmp_path, _config(num_rounds=4))
  with pytest.raises(workdir_lib.IdentityError, match="num_rounds: 3 -> 2"):
    workdir_lib.check_identity(tmp_path, _config(num_rounds=2),
                               grow_only=("num_rounds",))
  assert workdir_lib.check_identity(tmp_path, _config(seed=5), force=True) \
      == ["forced: seed: 0 -> 5"]
  a = workdir_lib.fingerprint(_config())
  assert a == workdir_lib.fingerprint(_config(keep=9))
  assert a != workdir_lib.fingerprint(_config(seed=1))


@pytest.mark.parametrize("damage", ["{trunc", "[1, 2]", ""])
def test_a_damaged_config_json_is_a_one_line_error(tmp_path, damage):
  _finished(tmp_path, _config())
  (tmp_path / "config.json").write_text(damage)
  with pytest.raises(workdir_lib.WorkdirError,
                     match="config.json.*(damaged|does not hold).*restore "
                     "it") as e:
    workdir_lib.check_identity(tmp_path, _config())
  assert "\n" not in str(e.value)


def test_a_damaged_summary_means_not_done(tmp_path):
  # The run then redoes its end from the last checkpoint, rewriting it.
  _finished(tmp_path, _config())
  (tmp_path / "summary.json").write_text('{"stat')
  assert not workdir_lib.is_done(tmp_path, _config())
