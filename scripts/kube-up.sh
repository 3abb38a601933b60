#!/usr/bin/env bash
# A local Kubernetes cluster with no Docker: etcd, kube-apiserver, kube-controller-manager and kube-scheduler
# built from source (the first run builds them: scripts/build-kube.sh), one Node with 2 nvidia.com/gpu and a
# process kubelet that runs Pods as local processes of this checkout's venv. Prints `ready`, then stays in the
# foreground until Ctrl-C or SIGTERM and stops everything it started.
#   export KUBECONFIG=$PWD/.kube-local/kubeconfig     # admin
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh --test >&2
./scripts/build-kube.sh >/dev/null
export PYTHONPATH="$PWD/scripts${PYTHONPATH:+:$PYTHONPATH}"
exec .venv/bin/python -m localkube up --dir "${KUBE_LOCAL_DIR:-.kube-local}" "$@"
