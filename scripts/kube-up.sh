#!/usr/bin/env bash
# A local Kubernetes cluster with no Docker: etcd, kube-apiserver, kube-controller-manager and kube-scheduler
# built from source (the first run builds them: scripts/build-kube.sh), and one node: the real kubelet with
# containerd and runc, running the images scripts/build-images.sh builds from our Dockerfiles, with 2 nvidia.com/gpu
# from a device plugin. Prints `ready`, then stays in the foreground until Ctrl-C or SIGTERM and stops everything
# it started, leaving the host as it found it. Needs root.
#   export KUBECONFIG=$PWD/.kube-local/kubeconfig     # admin
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh --test >&2
./scripts/build-kube.sh >/dev/null
dir="${KUBE_LOCAL_DIR:-.kube-local}"
mkdir -p "$dir.images"
./scripts/build-images.sh >"$dir.images/images.txt"
export PYTHONPATH="$PWD/scripts${PYTHONPATH:+:$PYTHONPATH}"
exec .venv/bin/python -m localkube up --dir "$dir" --images "$dir.images/images.txt" "$@"
