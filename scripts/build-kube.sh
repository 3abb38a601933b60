#!/usr/bin/env bash
# Builds the pinned control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler) from source
# into a cache outside the repository, only when a binary is missing. Prints the cache folder on stdout.
# KUBE_BIN_DIR overrides the cache folder. The first build on 2 cores takes a while (README: "Real cluster").
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
version="v1.34.4"
etcd_version="v3.6.4"   # the etcd server k8s.io/kubernetes $version itself requires (scripts/k8s/go.sum)
bin="${KUBE_BIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/cifar-hpo/kube-$version-etcd-$etcd_version}"
wanted=(etcd kube-apiserver kube-controller-manager kube-scheduler)
missing=0
for b in "${wanted[@]}"; do [[ -x "$bin/$b" ]] || missing=1; done
if [[ $missing == 0 ]]; then echo "$bin"; exit 0; fi

command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"  # where the project's machines have it
command -v go >/dev/null || { echo "build-kube: Go is needed (Go >= 1.24; /usr/local/go/bin on the dev machines)" >&2; exit 2; }
export GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0 GOFLAGS="-trimpath -mod=readonly"
mkdir -p "$bin"
tmp="$(mktemp -d "$bin/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
start=$SECONDS
minor="${version#v1.}"; minor="${minor%%.*}"
cd "$here/k8s"
echo "build-kube: building Kubernetes $version and etcd $etcd_version into $bin (one-off)" >&2
# Linking takes ~2 GiB each: one package at a time keeps a 2-core, small-memory machine out of swap.
go build -p "${KUBE_BUILD_JOBS:-2}" -ldflags "-s -w \
  -X k8s.io/component-base/version.gitVersion=$version -X k8s.io/component-base/version.gitMajor=1 \
  -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean" \
  -o "$tmp/" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler >&2
go build -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3 >&2
for b in "${wanted[@]}"; do mv -f "$tmp/$b" "$bin/$b"; done
echo "build-kube: built in $((SECONDS - start)) s" >&2
echo "$bin"
