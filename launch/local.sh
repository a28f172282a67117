#!/usr/bin/env bash
# Runs one search on this machine: experiments/main.py with a config and a
# run directory (all local devices: CPU, or every GPU JAX sees).
#
# Usage:
#   launch/local.sh [--dry-run] [-h|--help] CONFIG WORKDIR [FLAGS...]
#
# Arguments:
#   CONFIG     config file, optionally with a variant after a colon, relative
#              to the current directory:
#              experiments/configs/seed003_digits.py:ppo
#   WORKDIR    the run directory (created if absent): config.json,
#              history.jsonl, metrics.jsonl, tensorboard/, checkpoints,
#              best.json, summary.json (see WORKSPACE.md).
#   FLAGS...   passed to experiments/main.py unchanged, e.g.
#              --config.seed=3 --config.num_rounds=20 (write flags as
#              --name=value). Everything after a lone `--` is passed on
#              too, even --dry-run.
#
# Options:
#   --dry-run  print the command instead of running it, then exit 0.
#   -h, --help print this text.
#
# Environment:
#   PYTHON     the interpreter (default: `python`, else `python3`).
#
# Resuming: re-running the same command with the same WORKDIR resumes the
# search from the checkpoint in WORKDIR (a killed or preempted run continues
# where it stopped and, with the same seed, reaches the same result). Runs
# that execute whole under jit (the tabular searches) checkpoint between
# chunks of their jitted loop. Use a new WORKDIR to start over.
#
# Example:
#   launch/local.sh experiments/configs/nasbench201.py:reinforce \
#     runs/nb201_reinforce --config.seed=1
set -euo pipefail

SCRIPT=${BASH_SOURCE[0]}
# shellcheck source=launch/lib/common.sh
. "$(dirname "$SCRIPT")/lib/common.sh"

dry_run=0
positional=()
passthrough=()
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --dry-run) dry_run=1 ;;
    --) shift; passthrough+=("$@"); break ;;
    *) collect_arg "$1" ;;
  esac
  shift
done
((${#positional[@]} == 2)) || die_usage "CONFIG and WORKDIR are required"
config=${positional[0]}
workdir=${positional[1]}

python=$(pick_python)
main=$REPO/experiments/main.py
[[ $PWD == "$REPO" ]] && main=experiments/main.py

cmd=("$python" "$main" "--config=$config" "--workdir=$workdir"
     ${passthrough[@]+"${passthrough[@]}"})
if ((dry_run)); then
  quote "${cmd[@]}"
  exit 0
fi
# exec: signals (SIGTERM on preemption, Ctrl-C) reach the run itself, which
# checkpoints before it exits.
exec "${cmd[@]}"
