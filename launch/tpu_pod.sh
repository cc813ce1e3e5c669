#!/usr/bin/env bash
# Runs a jaxssl config on every worker of a Cloud TPU VM pod slice (one process per host).
#
#   launch/tpu_pod.sh TPU_NAME ZONE configs/fmnist_rotation.py gs://BUCKET/runs/rotation [--config.x=y ...]
#
# Each host installs jaxssl with its tpu and gcs extras (pyproject.toml) from this checkout's git remote
# (JAXSSL_REPO, default: origin's URL) at this checkout's commit (JAXSSL_REF, default: HEAD), then all
# hosts start together; `--multihost` makes each call jax.distributed.initialize(), which finds the
# coordinator and its process index from the TPU metadata. The workdir must be shared storage (gs://...),
# since orbax writes one checkpoint from all hosts. Rerunning the same command resumes from it.
set -euo pipefail
if [ $# -lt 4 ]; then
  sed -n '2,10p' "$0"; exit 2
fi
tpu=$1 zone=$2 config=$3 workdir=$4; shift 4
repo=${JAXSSL_REPO:-$(git config --get remote.origin.url)}
ref=${JAXSSL_REF:-$(git rev-parse HEAD)}
gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command "
  set -e
  [ -d jaxssl ] || git clone -q '$repo' jaxssl
  cd jaxssl && git fetch -q && git checkout -q '$ref'
  python3 -m venv .venv && .venv/bin/pip install -q -e '.[tpu,gcs]'
  .venv/bin/python -m jaxssl.main --multihost --config '$config' --workdir '$workdir' $*
"
