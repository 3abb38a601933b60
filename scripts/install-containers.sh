#!/usr/bin/env bash
# Installs what the images and the local cluster's node need, from Debian's packages, when any is missing:
# podman and buildah (build, no daemon), runc (the only runtime that works on a cgroup v1 hybrid layout),
# containerd (the kubelet's CRI), CNI plugins, debootstrap (a local base image where no registry is reachable),
# iptables (kube-proxy, CNI masquerade). Needs root, like the node itself.
set -euo pipefail
need=(podman buildah runc containerd ctr debootstrap iptables unshare nsenter)
missing=0
for c in "${need[@]}"; do command -v "$c" >/dev/null || missing=1; done
[[ -x /usr/lib/cni/bridge ]] || missing=1
[[ $missing == 0 ]] && exit 0
[[ $(id -u) == 0 ]] || { echo "install-containers: root is needed to install ${need[*]}" >&2; exit 2; }
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends podman buildah runc containerd debootstrap \
  containernetworking-plugins iptables uidmap fuse-overlayfs conmon util-linux >/dev/null
