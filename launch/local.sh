#!/usr/bin/env bash
# Runs N processes of `python -m jaxssl.main --multihost` on this machine as one multi-host job, started the
# way Slurm starts one task per device: each gets the SLURM_* variables that jax.distributed.initialize()
# detects (jax/_src/clusters/slurm_cluster.py) and DEVICES_PER_PROCESS fake CPU devices. For trying the
# multi-host paths (sharding, per-process data, checkpoints, preemption) without a cluster.
#
#   launch/local.sh N [--] --config configs/fmnist_rotation.py:quick --workdir runs/mh [--config.x=y ...]
#   DEVICES_PER_PROCESS=4 launch/local.sh 2 ...     # 2 processes x 4 CPU devices (default 2 each)
#
# Process 0's output shows here; every process's output is appended to WORKDIR/process_<i>.log (a local
# workdir). SIGTERM or Ctrl-C is passed to every process as SIGTERM, like a preemption of all hosts. Exits with
# process 0's status, or where that is 0 with the first non-zero one of the others (in process order).
# Where jax sees GPUs, process i takes GPU i as under Slurm; JAX_PLATFORMS=cpu keeps to the CPU devices.
set -euo pipefail
if [ $# -lt 2 ] || ! [[ $1 =~ ^[1-9][0-9]*$ ]]; then
  sed -n '2,13p' "$0"; exit 2
fi
n=$1; shift
[ "$1" = -- ] && shift
root=$(cd "$(dirname "$0")/.." && pwd)
py=python3
[ -x "$root/.venv/bin/python" ] && py=$root/.venv/bin/python

# The workdir, for the logs.
workdir='' prev=''
for arg in "$@"; do
  case $arg in --workdir=*) workdir=${arg#--workdir=} ;; esac
  [ "$prev" = --workdir ] && workdir=$arg
  prev=$arg
done
if [ -z "$workdir" ] || [[ $workdir == *://* ]]; then
  echo "launch/local.sh: needs --workdir DIR, a local directory" >&2; exit 2
fi
mkdir -p "$workdir"

# A free port for process 0's coordinator (the Slurm detection would derive one from SLURM_JOB_ID).
port=$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export JAX_COORDINATOR_ADDRESS=127.0.0.1:$port SLURM_JOB_ID=$port SLURM_STEP_NODELIST=localhost
export SLURM_NTASKS=$n SLURM_STEP_NUM_NODES=1 PYTHONUNBUFFERED=1
export XLA_FLAGS="${XLA_FLAGS:+$XLA_FLAGS }--xla_force_host_platform_device_count=${DEVICES_PER_PROCESS:-2}"

pids=()
# Background processes of a script ignore SIGINT, so Ctrl-C reaches them only through this.
trap 'echo "launch/local.sh: sending SIGTERM to all $n processes" >&2; kill -TERM "${pids[@]}" 2>/dev/null || true' INT TERM
for ((i = 0; i < n; i++)); do
  log=$workdir/process_$i.log
  [ "$i" = 0 ] && offset=$(( $(stat -c %s "$log" 2>/dev/null || echo 0) + 1 ))
  echo "=== launch/local.sh $(date -u +%FT%TZ): process $i of $n, coordinator $JAX_COORDINATOR_ADDRESS ===" >> "$log"
  SLURM_PROCID=$i SLURM_LOCALID=$i "$py" -m jaxssl.main --multihost "$@" >> "$log" 2>&1 &
  pids+=($!)
done
# Process 0's part of its log, from this launch's header on, until it exits.
tail -c "+$offset" -f --pid="${pids[0]}" "$workdir/process_0.log" &
tail_pid=$!

status=0
for i in "${!pids[@]}"; do
  # A trapped signal interrupts `wait`; wait again until the process is gone, then take its status.
  while kill -0 "${pids[$i]}" 2>/dev/null; do wait "${pids[$i]}" || true; done
  rc=0; wait "${pids[$i]}" || rc=$?
  [ "$rc" = 0 ] || echo "launch/local.sh: process $i exited with $rc (log: $workdir/process_$i.log)" >&2
  [ "$status" != 0 ] || status=$rc
done
wait "$tail_pid" || true
exit "$status"
