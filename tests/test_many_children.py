"""Many children at once (nas_jax.parallel.many_children / replicas), across
devices and processes, and the NAS-RL / NASNet search configs.

XLA fixes the device count when JAX starts, so the 8-device and 2-process
checks run in fresh Python processes (fake CPU devices): one library script
that prints its findings as JSON, and the binary on the ``tiny`` configs.
Expensive parts are shared: one uninterrupted 8-device NAS-RL run is the
reference of the SIGKILL-resume and of the 2-process runs.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from nas_jax.parallel import mesh as mesh_lib
from nas_jax.parallel import many_children
from nas_jax.train import child_search_run

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments" / "configs"))
import nasrl_cifar  # pylint: disable=g-import-not-at-top,wrong-import-position

_MARK = "RESULT_JSON "


def _env(num_devices: int, **extra) -> dict:
  env = dict(os.environ, JAX_PLATFORMS="cpu", NAS_JAX_COMPILE_CACHE="off",
             XLA_FLAGS=(f"--xla_force_host_platform_device_count={num_devices}"
                        " --xla_backend_optimization_level=0"))
  for var in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES",
              "JAX_PROCESS_ID", "NAS_JAX_DISTRIBUTED"):
    env.pop(var, None)
  env.update(extra)
  return env


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


# ------------------------------------------------------------- in process


def test_children_per_round_must_fill_the_devices():
  many_children.check_divisible(16, 8)
  with pytest.raises(ValueError) as e:
    many_children.check_divisible(6, 8, "ppo.batch_size (children per "
                                  "round)")
  msg = str(e.value)
  assert "ppo.batch_size (children per round) = 6 is not divisible by the 8"\
      in msg
  assert "e.g. 8)" in msg and "per_device_children=False" in msg
  with pytest.raises(ValueError, match=r"e\.g\. 8 or 16\)"):
    many_children.check_divisible(12, 8)


def test_unreachable_coordinator_is_a_clear_error_not_a_hang():
  port = _free_port()  # nobody listens there
  t0 = time.monotonic()
  with pytest.raises(RuntimeError) as e:
    mesh_lib._check_coordinator(f"127.0.0.1:{port}", 1, 1.0, "test")
  assert time.monotonic() - t0 < 30
  msg = str(e.value)
  assert f"could not reach the coordinator at 127.0.0.1:{port}" in msg
  assert "NAS_JAX_INIT_TIMEOUT" in msg and "host:port" in msg
  with pytest.raises(RuntimeError, match="is not host:port"):
    mesh_lib._check_coordinator("localhost", 1, 1.0, "test")
  # Process 0 cannot serve on a port that is taken.
  with socket.socket() as busy:
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    taken = busy.getsockname()[1]
    with pytest.raises(RuntimeError, match="cannot listen on the coordinator"
                       r".*free port"):
      mesh_lib._check_coordinator(f"127.0.0.1:{taken}", 0, 1.0, "test")


def test_binary_unreachable_coordinator_exits_with_the_fix(tmp_path):
  port = _free_port()
  proc = subprocess.run(
      [sys.executable, "experiments/main.py",
       "--config=experiments/configs/nasrl_cifar.py:tiny",
       f"--workdir={tmp_path / 'run'}"], cwd=ROOT, capture_output=True,
      text=True, timeout=120,
      env=_env(1, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
               JAX_NUM_PROCESSES="2", JAX_PROCESS_ID="1",
               NAS_JAX_INIT_TIMEOUT="2"))
  assert proc.returncode == 2, proc.stderr[-3000:]
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("error: process 1 could not reach the coordinator")
  assert "NAS_JAX_INIT_TIMEOUT" in last


def test_config_checks_of_the_parallel_and_nasrl_fields():
  c = nasrl_cifar.get_config("tiny")
  child_search_run.check_config(c)
  c.data_parallel = True
  with pytest.raises(ValueError, match="data_parallel and "
                     "per_device_children are both True"):
    child_search_run.check_config(c)
  c = nasrl_cifar.get_config("cpu")
  c.network.num_layers = 4
  with pytest.raises(ValueError, match=r"network.num_layers = 4 differs from "
                     r"space_kwargs.num_layers = 3"):
    child_search_run.check_config(c)
  c.space_kwargs.num_layers = 4  # 3^4 = 81 > 28 pixels
  with pytest.raises(ValueError, match=r"below 1 pixel.*at most 3 layers"):
    child_search_run.check_config(c)
  for variant in nasrl_cifar.VARIANTS:
    child_search_run.check_config(nasrl_cifar.get_config(variant))


# ---------------------------------------------------- 8 fake CPU devices

_LIBRARY = """
import json
import jax, jax.numpy as jnp, numpy as np
from nas_jax import algorithms
from nas_jax.children import cell_net
from nas_jax.controllers import make_controller
from nas_jax.data import datasets
from nas_jax.evaluators import train_from_scratch
from nas_jax.parallel import children, many_children, replicas
from nas_jax.parallel import mesh as mesh_lib
from nas_jax.spaces import registry

out = {"devices": jax.device_count()}
mesh = mesh_lib.make_mesh()
space = registry.get("seed003_small")
ds = datasets.load("digits", num_val=100, max_train=128)
net = cell_net.make_network("seed003_small", num_classes=10, num_cells=1,
                            channels=4)
trainer = train_from_scratch.ChildTrainer(
    space, net, ds, epochs=1, batch_size=32, seed=3, eval_batch_size=64)
archs = [np.asarray([i, (3 * i + 1) % 8], np.int32) for i in range(8)]
out["distinct"] = len({space.to_text(a) for a in archs})
one = [trainer.train_and_evaluate(a) for a in archs]
many = many_children.PerDeviceChildTrainer(trainer, mesh).train_and_evaluate(
    archs)
out["one"] = [[r.val_accuracy, r.train_loss, r.num_params] for r in one]
out["many"] = [[r.val_accuracy, r.train_loss, r.num_params] for r in many]
out["traces"] = trainer.num_traces

# The evaluator: a round with repeats and cached children, 9 new children
# (two groups, the second filled up).
ev = many_children.PerDeviceEvaluator(trainer, mesh)
ev.cache[space.to_text(archs[0])] = one[0]
extra = [np.asarray([i, i], np.int32) for i in range(2)]
round_ = archs + [archs[3]] + extra
res = ev(np.stack(round_))
out["ev_reward"] = res.reward.tolist()
out["ev_cost_zero"] = (res.cost == 0).tolist()
out["ev_cache"] = len(ev.cache)
solo = [trainer.train_and_evaluate(a).val_accuracy for a in extra]
out["extra_solo"] = solo

# Synchronous replicas: sampling per device, REINFORCE and PPO updates.
ctrl = make_controller(space, hidden_size=8)
alg = algorithms.reinforce(ctrl, batch_size=16, learning_rate=0.05,
                          baseline_decay=0.9)
rep = replicas.synchronous_replicas(
    alg, mesh, controller=ctrl,
    reinforce=dict(learning_rate=0.05, baseline_decay=0.9))
state = rep.init(jax.random.key(0))
key = jax.random.key(7)
_, proposed = rep.propose(state, key)
direct = children.sample_per_device(ctrl, mesh, 2)(state.params, key).arch
out["propose_equal"] = bool(np.array_equal(np.asarray(proposed),
                                           np.asarray(direct)))
rewards = jnp.linspace(0.1, 0.9, 16)
s1 = rep.feedback(state, proposed, rewards)
s2 = jax.jit(alg.feedback)(state, proposed, rewards)
raw = lambda x: np.asarray(jax.random.key_data(x) if jnp.issubdtype(
    x.dtype, jax.dtypes.prng_key) else x, np.float64)
close = lambda a, b: max(float(np.max(np.abs(raw(x) - raw(y))))
                         for x, y in zip(jax.tree.leaves(a),
                                         jax.tree.leaves(b)))
out["reinforce_diff"] = close((s1.params, s1.opt_state, s1.baseline),
                              (s2.params, s2.opt_state, s2.baseline))
out["reinforce_moved"] = close(s1.params, state.params)
alg = algorithms.ppo(ctrl, batch_size=16, minibatch_size=4, num_epochs=2,
              learning_rate=0.05)
rep = replicas.synchronous_replicas(alg, mesh, controller=ctrl)
state = rep.init(jax.random.key(0))
p1 = rep.feedback(state, proposed, rewards)
p2 = jax.jit(alg.feedback)(state, proposed, rewards)
out["ppo_diff"] = close(p1, p2)
try:
  replicas.synchronous_replicas(alg._replace(batch_size=12), mesh,
                                controller=ctrl)
except ValueError as e:
  out["replica_error"] = str(e)
print("RESULT_JSON " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def library():
  proc = subprocess.run([sys.executable, "-c", textwrap.dedent(_LIBRARY)],
                        cwd=ROOT, env=_env(8), capture_output=True, text=True,
                        timeout=600)
  lines = [l for l in proc.stdout.splitlines() if l.startswith(_MARK)]
  assert proc.returncode == 0 and lines, proc.stderr[-4000:]
  return json.loads(lines[-1][len(_MARK):])


def test_eight_children_at_once_equal_eight_one_by_one(library):
  assert library["devices"] == 8 and library["distinct"] == 8
  # Bit for bit: same rewards, same last-epoch losses, same sizes.
  assert library["many"] == library["one"]
  assert len({r[2] for r in library["one"]}) > 1  # different children
  # One program for every child, alone or eight at once.
  assert library["traces"] == 2  # the one-by-one jit and the shard_map


def test_evaluator_cache_repeats_and_a_partial_group(library):
  one = [r[0] for r in library["one"]]
  expected = one + [one[3]] + library["extra_solo"]
  assert library["ev_reward"] == [float(np.float32(v)) for v in expected]
  # archs[0] was cached, archs[3]'s repeat is free; 9 new children trained.
  assert library["ev_cost_zero"] == [True] + [False] * 7 + [True, False,
                                                            False]
  assert library["ev_cache"] == 10


def test_synchronous_replicas_equal_one_controller(library):
  assert library["propose_equal"]
  assert library["reinforce_moved"] > 1e-4  # the update did something
  assert library["reinforce_diff"] < 1e-6   # pmean vs one device: rounding
  assert library["ppo_diff"] < 1e-6
  assert "batch_size (children per round) = 12 is not divisible by the 8" \
      in library["replica_error"]


# ------------------------------------------- the binary, tiny NAS-RL search

NASRL_ARGS = ["--config=experiments/configs/nasrl_cifar.py:tiny",
              "--config.reinforce.batch_size=8"]  # one child per device


_CACHE = {}  # the module's compilation cache: later runs load, not compile


def _start(args, workdir, log, num_devices=8, **env):
  if "dir" in _CACHE:
    env.setdefault("NAS_JAX_COMPILE_CACHE", _CACHE["dir"])
  return subprocess.Popen(
      [sys.executable, "experiments/main.py", f"--workdir={workdir}", *args],
      cwd=ROOT, env=_env(num_devices, **env), stdout=log,
      stderr=subprocess.STDOUT)


def _finish(proc, log_path, timeout=600):
  try:
    proc.wait(timeout=timeout)
  except subprocess.TimeoutExpired:
    proc.kill()
    proc.wait()
  assert proc.returncode == 0, pathlib.Path(log_path).read_text()[-4000:]


def _read(workdir):
  workdir = pathlib.Path(workdir)
  hist = [json.loads(l) for l in
          (workdir / "history.jsonl").read_text().splitlines()]
  mets = [json.loads(l) for l in
          (workdir / "metrics.jsonl").read_text().splitlines()]
  return ([(h["step"], h["round"], h["arch"], h["reward"]) for h in hist],
          mets)


def _same_controller(mets, ref):
  assert [m["step"] for m in mets] == [m["step"] for m in ref]
  for m, r in zip(mets, ref):
    for k in ("controller/baseline", "controller/loss", "controller/entropy",
              "controller/num_updates", "reward/mean"):
      assert m[k] == pytest.approx(r[k], rel=1e-6, abs=1e-7), k


@pytest.fixture(scope="module")
def nasrl_reference(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("nasrl_ref")
  _CACHE["dir"] = str(tmp_path_factory.mktemp("compile_cache"))
  log = workdir.with_name(workdir.name + ".log")
  with open(log, "w") as f:
    _finish(_start(NASRL_ARGS, workdir / "run", f), log)
  return workdir / "run"


def test_tiny_nasrl_search_on_eight_devices(nasrl_reference):
  hist, mets = _read(nasrl_reference)
  assert [h[1] for h in hist] == [0] * 8 + [1] * 8  # 2 updates x 8 children
  assert len({h[2] for h in hist}) > 1
  assert all(0.0 <= h[3] <= 1.0 for h in hist)
  assert [m["controller/num_updates"] for m in mets] == [1, 2]
  summary = json.loads((nasrl_reference / "summary.json").read_text())
  assert summary["status"] == "done" and summary["algorithm"] == (
      "reinforce x8 replicas")
  assert summary["compilations_of_train_step"] == 1
  best = json.loads((nasrl_reference / "best.json").read_text())
  assert best["reward"] == max(h[3] for h in hist)
  for name in ("best_arch.png", "search_curve.png", "config.json"):
    assert (nasrl_reference / name).is_file()


def test_sigkill_resume_of_a_parallel_search_is_exact(nasrl_reference,
                                                       tmp_path):
  workdir = tmp_path / "run"
  with open(tmp_path / "log0.txt", "w") as log:
    proc = _start(NASRL_ARGS, workdir, log)
    ckpt = workdir / "checkpoints" / "0"
    t0 = time.time()
    while not ckpt.is_dir() and proc.poll() is None and time.time() - t0 < 600:
      time.sleep(0.05)
    assert proc.poll() is None, "finished before the kill"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  assert not (workdir / "summary.json").exists()
  with open(tmp_path / "log1.txt", "w") as log:
    _finish(_start(NASRL_ARGS, workdir, log), tmp_path / "log1.txt")
  assert "resumed after round" in (tmp_path / "log1.txt").read_text()
  hist, mets = _read(workdir)
  ref_hist, ref_mets = _read(nasrl_reference)
  assert hist == ref_hist
  _same_controller(mets, ref_mets)


def _has_gloo() -> bool:
  try:
    from jax._src.lib import _jax  # pylint: disable=g-import-not-at-top
  except ImportError:
    return False
  return hasattr(_jax, "make_gloo_tcp_collectives")


@pytest.mark.skipif(not _has_gloo(), reason="this jaxlib has no gloo CPU "
                    "collectives, so CPU devices cannot span processes")
def test_two_processes_of_four_devices_equal_one_of_eight(nasrl_reference,
                                                          tmp_path):
  workdir = tmp_path / "run"
  port = _free_port()
  procs = []
  for i in range(2):
    log = open(tmp_path / f"p{i}.txt", "w")  # pylint: disable=consider-using-with
    procs.append(_start(
        NASRL_ARGS, workdir, log, num_devices=4,
        JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
        JAX_PROCESS_ID=str(i)))
  for i, p in enumerate(procs):
    _finish(p, tmp_path / f"p{i}.txt")
  text = (tmp_path / "p0.txt").read_text()
  assert "process 0/2, 4 local / 8 global cpu devices" in text
  hist, mets = _read(workdir)
  ref_hist, ref_mets = _read(nasrl_reference)
  assert hist == ref_hist
  _same_controller(mets, ref_mets)
  # Process 1 ran the same search into its own folder; the one checkpoint
  # copy, which every process resumes from, is process 0's.
  assert _read(workdir / "process_1")[0] == ref_hist
  assert (workdir / "checkpoints" / "1").is_dir()
  assert not (workdir / "process_1" / "checkpoints").exists()


# ------------------------------------------- the binary, tiny NASNet search


def test_tiny_nasnet_ppo_search_on_eight_devices(tmp_path):
  workdir = tmp_path / "run"
  with open(tmp_path / "log.txt", "w") as log:
    _finish(_start(["--config=experiments/configs/nasnet_cifar.py:tiny",
                    "--config.ppo.batch_size=8",  # one child per device
                    "--config.ppo.minibatch_size=4"], workdir, log),
            tmp_path / "log.txt")
  hist, mets = _read(workdir)
  assert [h[1] for h in hist] == [0] * 8 + [1] * 8
  # Normal + reduction cell of one block each: 10 decisions per child.
  assert all(len(h[2].split(",")) == 10 for h in hist)
  assert len({h[2] for h in hist}) > 1
  assert all(0.0 <= h[3] <= 1.0 for h in hist)
  assert [m["controller/num_updates"] for m in mets] == [1, 2]
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["algorithm"] == "ppo x8 replicas"
  assert summary["compilations_of_train_step"] == 1
  best = json.loads((workdir / "best.json").read_text())
  assert best["reward"] == max(h[3] for h in hist)
  assert best["num_params"] > 0
  # Every child's parameter count is in its history line (issue 11).
  lines = [json.loads(l) for l in
           (workdir / "history.jsonl").read_text().splitlines()]
  assert all(isinstance(l["params"], int) and l["params"] > 0
             for l in lines)
  assert any(l["params"] == best["num_params"] and l["reward"] ==
             best["reward"] for l in lines)


def test_multi_host_launch_script_dry_run():
  script = str(ROOT / "launch" / "multi_host.sh")
  run = lambda *a: subprocess.run(["bash", script, *a], cwd=ROOT, text=True,
                                  capture_output=True, timeout=60,
                                  env=dict(os.environ, PYTHON="python"))
  out = run("--local", "2", "--devices-per-process", "4", "--port", "9999",
            "--dry-run", "experiments/configs/nasrl_cifar.py:tiny", "w")
  assert out.returncode == 0, out.stderr
  lines = out.stdout.strip().splitlines()
  assert len(lines) == 2
  for i, line in enumerate(lines):
    assert "JAX_COORDINATOR_ADDRESS=127.0.0.1:9999" in line
    assert f"JAX_NUM_PROCESSES=2 JAX_PROCESS_ID={i}" in line
    assert "--xla_force_host_platform_device_count=4" in line
  out = run("--coordinator", "h0:1234", "--num-processes", "2",
            "--process-id", "1", "--init-timeout", "30", "--dry-run",
            "c.py", "w", "--config.seed=1")
  assert out.returncode == 0, out.stderr
  assert ("JAX_COORDINATOR_ADDRESS=h0:1234 JAX_NUM_PROCESSES=2 "
          "JAX_PROCESS_ID=1 NAS_JAX_INIT_TIMEOUT=30") in out.stdout
  assert out.stdout.strip().endswith("--config=c.py --workdir=w "
                                     "--config.seed=1")
  out = run("--coordinator", "h0:1234", "--dry-run", "c.py", "w")
  assert out.returncode == 2 and "--process-id" in out.stderr
  out = run("--coordinator", "h0:1", "--num-processes", "2", "--process-id",
            "2", "--dry-run", "c.py", "w")
  assert out.returncode == 2 and "must be < --num-processes" in out.stderr
