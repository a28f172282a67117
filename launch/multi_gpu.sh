#!/usr/bin/env bash
# Runs one search on a multi-GPU host: ONE process drives all the GPUs it is
# given. This is JAX's single-process multi-device model: jax.devices() lists
# every local GPU, and the run places children and data on a
# jax.sharding.Mesh over them (jit + NamedSharding / shard_map). Do not start
# one process per GPU. --config.per_device_children=True trains one child
# per GPU at once (launch/multi_host.sh: several hosts). Installs nothing:
# run it inside the environment where
# `pip install -e .` (with a CUDA jax, e.g. `pip install 'jax[cuda12]'`) was
# done.
#
# Usage:
#   launch/multi_gpu.sh [--gpus N] [--mem-fraction F] [--dry-run] [-h|--help]
#                       CONFIG WORKDIR [FLAGS...]
#
# Arguments:
#   CONFIG     config file, optionally with a variant after a colon, relative
#              to the current directory:
#              experiments/configs/seed003_digits.py:ppo
#   WORKDIR    the run directory (created if absent; see WORKSPACE.md).
#   FLAGS...   passed to experiments/main.py unchanged, e.g.
#              --config.seed=3 (write flags as --name=value). Everything
#              after a lone `--` is passed on too.
#
# Options:
#   --gpus N          use the first N GPUs: sets CUDA_VISIBLE_DEVICES to the
#                     first N entries of the current CUDA_VISIBLE_DEVICES, or
#                     to 0,...,N-1 when it is unset. Default: leave
#                     CUDA_VISIBLE_DEVICES alone (JAX uses every GPU).
#   --mem-fraction F  XLA_PYTHON_CLIENT_MEM_FRACTION, the share of each GPU's
#                     memory JAX preallocates (default: the current value of
#                     that variable, else 0.9; JAX's own default is 0.75).
#   --dry-run         print the command instead of running it, then exit 0.
#   -h, --help        print this text.
#
# Environment:
#   PYTHON            the interpreter (default: `python`, else `python3`).
#
# Resuming: re-running the same command with the same WORKDIR resumes the
# search from the checkpoint in WORKDIR (the run checkpoints when it gets
# SIGTERM, e.g. from a scheduler's preemption; this script execs the run so
# the signal reaches it). Tabular searches keep no checkpoint and simply run
# again.
#
# Example:
#   launch/multi_gpu.sh --gpus 4 experiments/configs/seed003_digits.py:large \
#     runs/digits_large
set -euo pipefail

SCRIPT=${BASH_SOURCE[0]}
# shellcheck source=launch/lib/common.sh
. "$(dirname "$SCRIPT")/lib/common.sh"

dry_run=0
gpus=""
mem_fraction=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
positional=()
passthrough=()
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --dry-run) dry_run=1 ;;
    --gpus) (($# >= 2)) || die_usage "--gpus needs a value"; gpus=$2; shift ;;
    --gpus=*) gpus=${1#*=} ;;
    --mem-fraction)
      (($# >= 2)) || die_usage "--mem-fraction needs a value"
      mem_fraction=$2; shift ;;
    --mem-fraction=*) mem_fraction=${1#*=} ;;
    --) shift; passthrough+=("$@"); break ;;
    *) collect_arg "$1" ;;
  esac
  shift
done
((${#positional[@]} == 2)) || die_usage "CONFIG and WORKDIR are required"
config=${positional[0]}
workdir=${positional[1]}
[[ $mem_fraction =~ ^(0?\.[0-9]+|1(\.0*)?)$ ]] ||
  die_usage "--mem-fraction must be a number in (0, 1], got '$mem_fraction'"

env_vars=()
if [[ -n $gpus ]]; then
  [[ $gpus =~ ^[1-9][0-9]*$ ]] ||
    die_usage "--gpus must be a positive integer, got '$gpus'"
  if [[ -n ${CUDA_VISIBLE_DEVICES:-} ]]; then
    IFS=, read -r -a visible <<< "$CUDA_VISIBLE_DEVICES"
  else
    visible=()
    for ((i = 0; i < gpus; i++)); do visible+=("$i"); done
  fi
  if ((gpus > ${#visible[@]})); then
    echo "error: --gpus $gpus but CUDA_VISIBLE_DEVICES lists only" \
      "${#visible[@]} GPU(s): $CUDA_VISIBLE_DEVICES" >&2
    exit 2
  fi
  if ((!dry_run)) && command -v nvidia-smi > /dev/null 2>&1; then
    have=$(nvidia-smi --list-gpus | wc -l)
    if ((gpus > have)); then
      echo "error: --gpus $gpus but nvidia-smi lists $have GPU(s)" >&2
      exit 2
    fi
  fi
  devices=$(IFS=,; echo "${visible[*]:0:gpus}")
  env_vars+=("CUDA_VISIBLE_DEVICES=$devices")
fi
env_vars+=("XLA_PYTHON_CLIENT_MEM_FRACTION=$mem_fraction")

python=$(pick_python)
main=$REPO/experiments/main.py
[[ $PWD == "$REPO" ]] && main=experiments/main.py

cmd=(env "${env_vars[@]}" "$python" "$main" "--config=$config"
     "--workdir=$workdir" ${passthrough[@]+"${passthrough[@]}"})
if ((dry_run)); then
  quote "${cmd[@]}"
  exit 0
fi
if ! command -v nvidia-smi > /dev/null 2>&1; then
  echo "warning: nvidia-smi not found; JAX may fall back to the CPU" >&2
fi
# exec: SIGTERM and Ctrl-C reach the run itself, which checkpoints first.
exec "${cmd[@]}"
