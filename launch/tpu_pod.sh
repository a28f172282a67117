#!/usr/bin/env bash
# Runs one search on a Cloud TPU VM slice or pod: puts the code on every
# worker, installs it there, and starts the same binary on all workers at
# once, with the run directory on a filesystem path that every worker (and a
# later, resumed run) can reach: a Cloud Storage bucket mounted with gcsfuse
# at the same path on every worker. Needs the gcloud CLI, logged in, and
# an existing TPU VM (`gcloud compute tpus tpu-vm create ...`).
#
# Usage:
#   launch/tpu_pod.sh --tpu NAME --zone ZONE [--project P]
#                     [--repo URL [--branch REF] | --sync-dir DIR]
#                     [--remote-dir NAME] [--skip-install] [--detach]
#                     [--dry-run] [-h|--help]
#                     CONFIG WORKDIR [FLAGS...]
#
# Arguments:
#   CONFIG     config file, optionally with a variant after a colon, relative
#              to the repository root (it is read on the workers):
#              experiments/configs/seed003_digits.py:large
#   WORKDIR    the run directory: an absolute path that every worker sees,
#              e.g. /mnt/gcs/runs/NAME where a bucket is mounted with
#              `gcsfuse BUCKET /mnt/gcs` on each worker. nas_jax writes its
#              files with ordinary file I/O, so a gs:// URL is refused.
#   FLAGS...   passed to experiments/main.py unchanged, e.g.
#              --config.seed=3 (write flags as --name=value). Everything
#              after a lone `--` is passed on too.
#
# Options:
#   --tpu NAME         the TPU VM (required).
#   --zone ZONE        its zone, e.g. us-central2-b (required).
#   --project P        the Google Cloud project (default: gcloud's).
#   --repo URL         get the code on each worker with
#                      `git clone --depth 1 URL` (a fresh clone every launch).
#   --branch REF       the branch or tag to clone (with --repo; default: the
#                      repository's default branch).
#   --sync-dir DIR     copy this local checkout to every worker (default, with
#                      this script's checkout as DIR): DIR is packed into one
#                      tarball (without .git, virtual environments, caches and
#                      runs/), sent with `gcloud compute tpus tpu-vm scp
#                      --worker=all` and unpacked on each worker. One file
#                      instead of `scp --recurse` of the tree: a local .venv
#                      or run directory is never sent, and a file deleted
#                      locally does not linger on the workers.
#   --remote-dir NAME  where the code lives on each worker, under the home
#                      directory (default: nas_jax).
#   --skip-install     skip getting and installing the code (it is already
#                      on the workers, e.g. when relaunching a resumed run).
#   --detach           start the run under nohup and return; its output goes
#                      to ~/NAME.log on each worker (NAME from --remote-dir).
#                      Without it the run's output streams here, and closing
#                      this terminal stops the run. Use it for long runs.
#   --dry-run          print the commands instead of running them, then exit
#                      0 (needs neither gcloud nor a TPU).
#   -h, --help         print this text.
#
# What it runs, in order:
#   1. Code: with --sync-dir, `tar` here, then `gcloud compute tpus tpu-vm
#      scp TARBALL NAME:... --worker=all`; with --repo, nothing here.
#   2. Install, on every worker (`gcloud compute tpus tpu-vm ssh NAME
#      --worker=all --command ...`): unpack the tarball or `git clone` the
#      repo into ~/REMOTE_DIR, then `python3 -m pip install -U 'jax[tpu]'`
#      and `python3 -m pip install -e .` of that checkout.
#   3. Run, on every worker at once (same ssh, --worker=all):
#      `cd ~/REMOTE_DIR && NAS_JAX_DISTRIBUTED=1 python3 experiments/main.py
#      --config=CONFIG --workdir=WORKDIR FLAGS...`.
#
# Multi-host: every worker runs the same program. The run calls
# jax.distributed.initialize() itself when it runs on a pod
# (nas_jax.parallel.mesh.initialize_distributed detects a Cloud TPU VM;
# NAS_JAX_DISTRIBUTED=1, set here, forces it. On Cloud TPU the call needs no
# arguments: it finds the coordinator and the process ids from the TPU
# metadata), after which jax.devices() lists the chips of all hosts. Every
# process runs the same seeded search; process 0 writes WORKDIR and process
# i > 0 writes WORKDIR/process_i, so no two processes write one file.
# The mesh spans every host's chips: with --config.per_device_children=True
# every chip of the pod trains its own child at once and runs a synchronous
# controller replica (launch/multi_host.sh starts the same on other clusters).
#
# Preemption and resuming: on preemption or maintenance the workers get
# SIGTERM; the run then writes a checkpoint to WORKDIR and exits. Re-running
# the same command (after recreating the TPU if it was deleted) reinstalls
# the code and resumes from that checkpoint; --skip-install saves the
# install when the workers survived. With the same seed the resumed search
# reaches the same result as an uninterrupted one.
#
# Example:
#   launch/tpu_pod.sh --tpu my-v4-32 --zone us-central2-b \
#     experiments/configs/seed003_digits.py:large /mnt/gcs/runs/large
set -euo pipefail

SCRIPT=${BASH_SOURCE[0]}
# shellcheck source=launch/lib/common.sh
. "$(dirname "$SCRIPT")/lib/common.sh"

dry_run=0
# Runs a command, or prints it under --dry-run.
run() {
  if ((dry_run)); then
    quote "$@"
  else
    "$@"
  fi
}

# A step heading: a comment in the dry-run listing, a log line otherwise.
step() {
  if ((dry_run)); then echo "# $*"; else echo "==> $*" >&2; fi
}

tpu=""
zone=""
project=""
repo_url=""
branch=""
sync_dir=""
remote_dir=nas_jax
skip_install=0
detach=0
positional=()
passthrough=()

need_value() { (($1 >= 2)) || die_usage "$2 needs a value"; }

while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --dry-run) dry_run=1 ;;
    --tpu) need_value $# "$1"; tpu=$2; shift ;;
    --tpu=*) tpu=${1#*=} ;;
    --zone) need_value $# "$1"; zone=$2; shift ;;
    --zone=*) zone=${1#*=} ;;
    --project) need_value $# "$1"; project=$2; shift ;;
    --project=*) project=${1#*=} ;;
    --repo) need_value $# "$1"; repo_url=$2; shift ;;
    --repo=*) repo_url=${1#*=} ;;
    --branch) need_value $# "$1"; branch=$2; shift ;;
    --branch=*) branch=${1#*=} ;;
    --sync-dir) need_value $# "$1"; sync_dir=$2; shift ;;
    --sync-dir=*) sync_dir=${1#*=} ;;
    --remote-dir) need_value $# "$1"; remote_dir=$2; shift ;;
    --remote-dir=*) remote_dir=${1#*=} ;;
    --skip-install) skip_install=1 ;;
    --detach) detach=1 ;;
    --) shift; passthrough+=("$@"); break ;;
    *) collect_arg "$1" ;;
  esac
  shift
done

[[ -n $tpu ]] || die_usage "--tpu NAME is required"
[[ -n $zone ]] || die_usage "--zone ZONE is required"
((${#positional[@]} == 2)) || die_usage "CONFIG and WORKDIR are required"
config=${positional[0]}
workdir=${positional[1]}
if [[ -n $repo_url && -n $sync_dir ]]; then
  die_usage "give --repo or --sync-dir, not both"
fi
[[ -z $branch || -n $repo_url ]] || die_usage "--branch needs --repo"
[[ $remote_dir =~ ^[A-Za-z0-9_.-]+$ ]] ||
  die_usage "--remote-dir must be a plain directory name, got '$remote_dir'"
if [[ $workdir == *://* ]]; then
  die_usage "WORKDIR must be a path, not a URL ('$workdir'): mount the" \
    "bucket on every worker with gcsfuse (e.g. gcsfuse BUCKET /mnt/gcs)" \
    "and pass /mnt/gcs/..."
fi
[[ $workdir == /* ]] ||
  die_usage "WORKDIR must be an absolute path every worker sees, got '$workdir'"
if [[ -z $repo_url && -z $sync_dir ]]; then
  sync_dir=$REPO
fi
if [[ -n $sync_dir && $skip_install == 0 ]]; then
  [[ -f $sync_dir/setup.cfg && -f $sync_dir/experiments/main.py ]] ||
    die_usage "--sync-dir '$sync_dir' is not a nas_jax checkout"
fi
if ((!dry_run)) && ! command -v gcloud > /dev/null 2>&1; then
  echo "error: gcloud not found (install the Google Cloud CLI)" >&2
  exit 1
fi

gcloud_where=("--zone=$zone" --worker=all)
[[ -n $project ]] && gcloud_where+=("--project=$project")
# Remote paths are relative to the worker's home directory.
remote="\$HOME/$remote_dir"

if ((!skip_install)); then
  if [[ -n $sync_dir ]]; then
    tarball=${TMPDIR:-/tmp}/$remote_dir-src-$tpu.tar.gz
    step "1. pack $sync_dir and copy it to every worker"
    run tar -C "$sync_dir" --exclude=.git --exclude=.venv --exclude=.ci-venv \
      --exclude=venv --exclude=__pycache__ --exclude='*.egg-info' \
      --exclude=.pytest_cache --exclude=./runs --exclude=./build \
      -czf "$tarball" .
    run gcloud compute tpus tpu-vm scp "$tarball" \
      "$tpu:$remote_dir-src.tar.gz" "${gcloud_where[@]}"
    fetch="rm -rf $remote && mkdir -p $remote && tar -xzf \$HOME/$remote_dir-src.tar.gz -C $remote"
  else
    step "1. the code comes from $repo_url (cloned on each worker)"
    clone=(git clone --depth 1)
    [[ -n $branch ]] && clone+=(--branch "$branch")
    clone+=("$repo_url")
    fetch="rm -rf $remote && $(quote "${clone[@]}") $remote"
  fi
  install="$fetch && cd $remote && python3 -m pip install -U \"jax[tpu]\" && python3 -m pip install -e ."
  step "2. install jax[tpu] and the project on every worker"
  run gcloud compute tpus tpu-vm ssh "$tpu" "${gcloud_where[@]}" \
    --command "$install"
fi

main_cmd=(python3 experiments/main.py "--config=$config" "--workdir=$workdir"
          ${passthrough[@]+"${passthrough[@]}"})
launch="cd $remote && NAS_JAX_DISTRIBUTED=1 $(quote "${main_cmd[@]}")"
if ((detach)); then
  launch="cd $remote && NAS_JAX_DISTRIBUTED=1 nohup $(quote "${main_cmd[@]}") > \$HOME/$remote_dir.log 2>&1 < /dev/null &"
fi
step "3. start the run on every worker at once"
run gcloud compute tpus tpu-vm ssh "$tpu" "${gcloud_where[@]}" \
  --command "$launch"
if ((detach)) && ((!dry_run)); then
  echo "started; follow it with: gcloud compute tpus tpu-vm ssh $tpu" \
    "--zone=$zone --worker=0 --command='tail -f ~/$remote_dir.log'" >&2
fi
