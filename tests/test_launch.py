"""Tests for the launch scripts in ``launch/``: they parse, their ``--dry-run``
listings hold the expected commands (and are valid shell that splits back
into the intended arguments), and bad arguments exit non-zero with usage."""

from __future__ import annotations

import os
import pathlib
import shlex
import shutil
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch"
SCRIPTS = sorted(LAUNCH.glob("*.sh"))
CONFIG = "experiments/configs/seed003_digits.py:ppo"
WORKDIR = "runs/test_launch"
GS_WORKDIR = "/mnt/gcs/runs/test_launch"  # a gcsfuse-mounted bucket
TPU = ["--tpu", "my-v4-32", "--zone", "us-central2-b"]

pytestmark = pytest.mark.skipif(shutil.which("bash") is None,
                                reason="needs bash")


def _run(script: str, *args: str, env: dict[str, str] | None = None,
         cwd: pathlib.Path = REPO) -> subprocess.CompletedProcess:
  full_env = dict(os.environ)
  full_env.pop("CUDA_VISIBLE_DEVICES", None)
  full_env.pop("XLA_PYTHON_CLIENT_MEM_FRACTION", None)
  full_env["PYTHON"] = "python"
  full_env.update(env or {})
  return subprocess.run(["bash", str(LAUNCH / script), *args], cwd=cwd,
                        env=full_env, capture_output=True, text=True,
                        timeout=60)


def _commands(stdout: str) -> list[list[str]]:
  """The dry-run listing's command lines (comments skipped), split as the
  shell would split them."""
  return [shlex.split(line) for line in stdout.splitlines()
          if line.strip() and not line.startswith("#")]


def test_all_scripts_present():
  assert {p.name for p in SCRIPTS} >= {"local.sh", "multi_gpu.sh",
                                       "tpu_pod.sh"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bash_syntax(script):
  subprocess.run(["bash", "-n", str(script)], check=True)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_help(script):
  for flag in ("-h", "--help"):
    out = _run(script.name, flag)
    assert out.returncode == 0, out.stderr
    assert "Usage:" in out.stdout and "--dry-run" in out.stdout
    assert "CONFIG" in out.stdout and "WORKDIR" in out.stdout


@pytest.mark.parametrize("script,args", [
    ("local.sh", []), ("local.sh", [CONFIG]),
    ("multi_gpu.sh", [CONFIG]), ("multi_gpu.sh", ["--gpus"]),
    ("multi_gpu.sh", ["--gpus", "zero", CONFIG, WORKDIR]),
    ("multi_gpu.sh", ["--mem-fraction", "2", CONFIG, WORKDIR]),
    ("tpu_pod.sh", [CONFIG, GS_WORKDIR]),
    ("tpu_pod.sh", ["--tpu", "t", CONFIG, GS_WORKDIR]),
    ("tpu_pod.sh", [*TPU, CONFIG]),
    ("tpu_pod.sh", [*TPU, CONFIG, "gs://bucket/run"]),
    ("tpu_pod.sh", [*TPU, "--repo", "u", "--sync-dir", ".", CONFIG,
                    GS_WORKDIR]),
    ("tpu_pod.sh", [*TPU, "--branch", "main", CONFIG, GS_WORKDIR]),
    ("tpu_pod.sh", [*TPU, "--remote-dir", "a/b", CONFIG, GS_WORKDIR]),
    ("tpu_pod.sh", [*TPU, "--sync-dir", "/nonexistent", CONFIG, GS_WORKDIR]),
])
def test_bad_arguments_exit_nonzero_with_usage(script, args):
  out = _run(script, "--dry-run", *args)
  assert out.returncode != 0
  assert "error:" in out.stderr and "Usage:" in out.stderr
  assert not out.stdout


def test_local_dry_run():
  out = _run("local.sh", "--dry-run", CONFIG, WORKDIR, "--config.seed=3",
             "it's a b")
  assert out.returncode == 0, out.stderr
  assert _commands(out.stdout) == [[
      "python", "experiments/main.py", f"--config={CONFIG}",
      f"--workdir={WORKDIR}", "--config.seed=3", "it's a b"]]


def test_local_dry_run_elsewhere_and_passthrough(tmp_path):
  # Flags before CONFIG pass through; `--dry-run` after `--` is main.py's.
  out = _run("local.sh", "--dry-run", "--config.seed=1", CONFIG, WORKDIR,
             "--", "--dry-run", cwd=tmp_path)
  assert out.returncode == 0, out.stderr
  assert _commands(out.stdout) == [[
      "python", str(REPO / "experiments" / "main.py"), f"--config={CONFIG}",
      f"--workdir={WORKDIR}", "--config.seed=1", "--dry-run"]]


def test_multi_gpu_dry_run():
  out = _run("multi_gpu.sh", "--dry-run", "--gpus", "4", CONFIG, WORKDIR,
             "--config.seed=2")
  assert out.returncode == 0, out.stderr
  assert _commands(out.stdout) == [[
      "env", "CUDA_VISIBLE_DEVICES=0,1,2,3",
      "XLA_PYTHON_CLIENT_MEM_FRACTION=0.9", "python", "experiments/main.py",
      f"--config={CONFIG}", f"--workdir={WORKDIR}", "--config.seed=2"]]


def test_multi_gpu_respects_visible_devices():
  out = _run("multi_gpu.sh", "--dry-run", "--gpus=2", "--mem-fraction=.5",
             CONFIG, WORKDIR, env={"CUDA_VISIBLE_DEVICES": "3,5,7"})
  assert out.returncode == 0, out.stderr
  (cmd,) = _commands(out.stdout)
  assert cmd[1:3] == ["CUDA_VISIBLE_DEVICES=3,5",
                      "XLA_PYTHON_CLIENT_MEM_FRACTION=.5"]
  # Without --gpus every GPU is used: CUDA_VISIBLE_DEVICES is left alone.
  out = _run("multi_gpu.sh", "--dry-run", CONFIG, WORKDIR)
  (cmd,) = _commands(out.stdout)
  assert not any(a.startswith("CUDA_VISIBLE_DEVICES") for a in cmd)
  assert "experiments/main.py" in cmd
  # More GPUs than are visible is an error.
  out = _run("multi_gpu.sh", "--dry-run", "--gpus", "3", CONFIG, WORKDIR,
             env={"CUDA_VISIBLE_DEVICES": "0,1"})
  assert out.returncode != 0 and "lists only 2" in out.stderr


def _ssh_command(cmd: list[str]) -> str:
  assert cmd[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"], cmd
  assert "--worker=all" in cmd and "--zone=us-central2-b" in cmd
  return cmd[cmd.index("--command") + 1]


def test_tpu_pod_dry_run_sync_dir():
  out = _run("tpu_pod.sh", "--dry-run", *TPU, CONFIG, GS_WORKDIR,
             "--config.seed=4", "a b")
  assert out.returncode == 0, out.stderr
  tar, scp, install, start = _commands(out.stdout)
  assert tar[:3] == ["tar", "-C", str(REPO)] and "--exclude=.venv" in tar
  tarball = tar[tar.index("-czf") + 1]
  assert scp[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"]
  assert scp[5:7] == [tarball, "my-v4-32:nas_jax-src.tar.gz"]
  assert "--worker=all" in scp
  install_cmd = _ssh_command(install)
  assert "tar -xzf $HOME/nas_jax-src.tar.gz -C $HOME/nas_jax" in install_cmd
  assert 'pip install -U "jax[tpu]"' in install_cmd
  assert install_cmd.endswith("&& python3 -m pip install -e .")
  start_cmd = _ssh_command(start)
  assert start_cmd.startswith("cd $HOME/nas_jax && NAS_JAX_DISTRIBUTED=1 ")
  remote_argv = shlex.split(start_cmd.split("NAS_JAX_DISTRIBUTED=1 ", 1)[1])
  assert remote_argv == ["python3", "experiments/main.py",
                         f"--config={CONFIG}", f"--workdir={GS_WORKDIR}",
                         "--config.seed=4", "a b"]
  # The listing is a valid shell script.
  subprocess.run(["bash", "-n"], input=out.stdout, text=True, check=True)


def test_tpu_pod_dry_run_repo_detach_project():
  out = _run("tpu_pod.sh", "--dry-run", *TPU, "--project", "proj",
             "--repo", "https://github.com/me/nas_jax.git", "--branch", "v1",
             "--remote-dir", "nj", "--detach", CONFIG, GS_WORKDIR)
  assert out.returncode == 0, out.stderr
  install, start = _commands(out.stdout)
  assert "--project=proj" in install and "--project=proj" in start
  install_cmd = _ssh_command(install)
  assert ("git clone --depth 1 --branch v1 https://github.com/me/nas_jax.git"
          " $HOME/nj") in install_cmd
  assert "pip install -e ." in install_cmd
  start_cmd = _ssh_command(start)
  assert "nohup python3 experiments/main.py" in start_cmd
  assert start_cmd.endswith("> $HOME/nj.log 2>&1 < /dev/null &")
  assert f"--workdir={GS_WORKDIR}" in start_cmd


def test_tpu_pod_skip_install():
  out = _run("tpu_pod.sh", "--dry-run", *TPU, "--skip-install", CONFIG,
             GS_WORKDIR)
  assert out.returncode == 0, out.stderr
  (start,) = _commands(out.stdout)
  assert "experiments/main.py" in _ssh_command(start)


def test_dry_run_needs_no_gcloud(tmp_path):
  """--dry-run works with a PATH holding only the basic tools."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  for tool in ("bash", "awk", "dirname"):
    (bin_dir / tool).symlink_to(shutil.which(tool))
  out = _run("tpu_pod.sh", "--dry-run", *TPU, CONFIG, GS_WORKDIR,
             env={"PATH": str(bin_dir)})
  assert out.returncode == 0, out.stderr
  assert "gcloud compute tpus tpu-vm ssh" in out.stdout
  out = _run("tpu_pod.sh", *TPU, CONFIG, GS_WORKDIR,
             env={"PATH": str(bin_dir)})
  assert out.returncode != 0 and "gcloud not found" in out.stderr


@pytest.mark.parametrize("workdir,why", [("gs://bucket/run", "gcsfuse"),
                                         ("runs/relative", "absolute")])
def test_tpu_pod_rejects_url_and_relative_workdirs(workdir, why):
  proc = subprocess.run(["bash", str(LAUNCH / "tpu_pod.sh"), "--dry-run",
                         *TPU, CONFIG, workdir], capture_output=True,
                        text=True)
  assert proc.returncode == 2
  assert why in proc.stderr
