#!/usr/bin/env bash
# Runs one search over several hosts (or several processes of this machine):
# every process runs the same binary, jax.distributed connects them, and the
# device mesh spans all processes' devices. With
# --config.per_device_children=True every device of every host trains its
# own child at once and runs a synchronous controller replica; process 0
# writes WORKDIR (with the checkpoints every process resumes from), process
# i > 0 writes WORKDIR/process_i. Installs nothing.
#
# Usage:
#   one command per host, the same CONFIG, WORKDIR and FLAGS everywhere:
#   launch/multi_host.sh --coordinator HOST:PORT --num-processes N
#                        --process-id I [--init-timeout S] [--dry-run]
#                        CONFIG WORKDIR [FLAGS...]
# or, to try it on this machine with fake CPU devices:
#   launch/multi_host.sh --local N [--devices-per-process D] [--port P]
#                        [--init-timeout S] [--dry-run] CONFIG WORKDIR [FLAGS...]
#
# Arguments:
#   CONFIG     config file with an optional variant:
#              experiments/configs/nasnet_cifar.py:cpu
#   WORKDIR    the run directory, a path every host sees (a shared file
#              system or a mounted bucket).
#   FLAGS...   passed to experiments/main.py unchanged (--name=value).
#
# Options:
#   --coordinator HOST:PORT  process 0's host and a free port on it; every
#                            process must reach it (JAX_COORDINATOR_ADDRESS).
#   --num-processes N        processes in the job (JAX_NUM_PROCESSES).
#   --process-id I           this process, 0..N-1 (JAX_PROCESS_ID).
#   --init-timeout S         seconds to wait for the others (default 120;
#                            NAS_JAX_INIT_TIMEOUT). An unreachable
#                            coordinator stops the run with an error naming
#                            the address, not a hang.
#   --local N                start N processes here (CPU, gloo collectives),
#                            coordinator 127.0.0.1:PORT; waits for all.
#   --devices-per-process D  fake CPU devices per local process (default 4).
#   --port P                 the local coordinator port (default 8476).
#   --dry-run                print the command(s), then exit 0.
#   -h, --help               print this text.
#
# Resuming: run the same command(s) again; every process resumes from
# process 0's checkpoint in WORKDIR, so all continue from the same round.
#
# Example (two hosts, eight GPUs each, one child per GPU, 16 per round):
#   host0$ launch/multi_host.sh --coordinator host0:8476 --num-processes 2 \
#     --process-id 0 experiments/configs/nasrl_cifar.py:paper /shared/nasrl
#   host1$ launch/multi_host.sh --coordinator host0:8476 --num-processes 2 \
#     --process-id 1 experiments/configs/nasrl_cifar.py:paper /shared/nasrl
set -euo pipefail

SCRIPT=${BASH_SOURCE[0]}
# shellcheck source=launch/lib/common.sh
. "$(dirname "$SCRIPT")/lib/common.sh"

dry_run=0
coordinator="" num="" pid="" timeout="" local_n="" per_proc=4 port=8476
positional=()
passthrough=()
need() { (($1 >= 2)) || die_usage "$2 needs a value"; }
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --dry-run) dry_run=1 ;;
    --coordinator) need $# "$1"; coordinator=$2; shift ;;
    --num-processes) need $# "$1"; num=$2; shift ;;
    --process-id) need $# "$1"; pid=$2; shift ;;
    --init-timeout) need $# "$1"; timeout=$2; shift ;;
    --local) need $# "$1"; local_n=$2; shift ;;
    --devices-per-process) need $# "$1"; per_proc=$2; shift ;;
    --port) need $# "$1"; port=$2; shift ;;
    --) shift; passthrough+=("$@"); break ;;
    *) collect_arg "$1" ;;
  esac
  shift
done
((${#positional[@]} == 2)) || die_usage "CONFIG and WORKDIR are required"
config=${positional[0]}
workdir=${positional[1]}
int() { [[ $2 =~ ^[0-9]+$ ]] || die_usage "$1 must be an integer, got '$2'"; }
[[ -z $timeout ]] || int --init-timeout "$timeout"

python=$(pick_python)
main=$REPO/experiments/main.py
[[ $PWD == "$REPO" ]] && main=experiments/main.py
run_cmd() {  # process id, number of processes, coordinator, extra env...
  local cmd=(env "JAX_COORDINATOR_ADDRESS=$3" "JAX_NUM_PROCESSES=$2"
             "JAX_PROCESS_ID=$1")
  [[ -z $timeout ]] || cmd+=("NAS_JAX_INIT_TIMEOUT=$timeout")
  cmd+=("${@:4}" "$python" "$main" "--config=$config" "--workdir=$workdir"
        ${passthrough[@]+"${passthrough[@]}"})
  CMD=("${cmd[@]}")
}

if [[ -n $local_n ]]; then
  int --local "$local_n"; int --devices-per-process "$per_proc"
  int --port "$port"
  ((local_n >= 1)) || die_usage "--local must be >= 1"
  pids=()
  for ((i = 0; i < local_n; i++)); do
    run_cmd "$i" "$local_n" "127.0.0.1:$port" JAX_PLATFORMS=cpu \
      "XLA_FLAGS=--xla_force_host_platform_device_count=$per_proc"
    if ((dry_run)); then quote "${CMD[@]}"; continue; fi
    "${CMD[@]}" &
    pids+=($!)
  done
  ((dry_run)) && exit 0
  trap 'kill -TERM "${pids[@]}" 2> /dev/null' TERM INT
  status=0
  for p in "${pids[@]}"; do wait "$p" || status=$?; done
  exit "$status"
fi

[[ -n $coordinator && -n $num && -n $pid ]] ||
  die_usage "give --coordinator, --num-processes and --process-id (or --local N)"
int --num-processes "$num"; int --process-id "$pid"
((pid < num)) || die_usage "--process-id must be < --num-processes ($num)"
run_cmd "$pid" "$num" "$coordinator"
if ((dry_run)); then
  quote "${CMD[@]}"
  exit 0
fi
# exec: SIGTERM reaches the run itself, which checkpoints first.
exec "${CMD[@]}"
