#!/usr/bin/env bash
# Builds the pinned Kubernetes binaries from source into a cache outside the repository, only those missing:
# the control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler), the node (kubelet,
# kube-proxy, and gpuplugin: our device plugin, scripts/k8s/gpuplugin) and kubectl (the same version as the
# cluster, inside the client skew policy). Prints the cache folder on stdout.
# KUBE_BIN_DIR overrides the cache folder. The first build on 2 cores takes a while (docs/development.md).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
version="v1.34.4"
etcd_version="v3.6.4"   # the etcd server k8s.io/kubernetes $version itself requires (scripts/k8s/go.sum)
bin="${KUBE_BIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/cifar-hpo/kube-$version-etcd-$etcd_version}"
declare -A pkg=(
  [kube-apiserver]=k8s.io/kubernetes/cmd/kube-apiserver
  [kube-controller-manager]=k8s.io/kubernetes/cmd/kube-controller-manager
  [kube-scheduler]=k8s.io/kubernetes/cmd/kube-scheduler
  [kubelet]=k8s.io/kubernetes/cmd/kubelet
  [kube-proxy]=k8s.io/kubernetes/cmd/kube-proxy
  [kubectl]=k8s.io/kubernetes/cmd/kubectl
  [gpuplugin]=./gpuplugin
)
gpuplugin_hash="$(sha256sum "$here/k8s/gpuplugin/main.go" | cut -c1-12)"  # ours changes; theirs are pinned
missing=()
for b in "${!pkg[@]}"; do [[ -x "$bin/$b" ]] || missing+=("$b"); done
[[ -f "$bin/gpuplugin.$gpuplugin_hash" ]] || { [[ " ${missing[*]} " == *" gpuplugin "* ]] || missing+=(gpuplugin); }
[[ -x "$bin/etcd" ]] || missing+=(etcd)
if [[ ${#missing[@]} == 0 ]]; then echo "$bin"; exit 0; fi

command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"  # where the project's machines have it
command -v go >/dev/null || { echo "build-kube: Go is needed (Go >= 1.24; /usr/local/go/bin on the dev machines)" >&2; exit 2; }
export GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0 GOFLAGS="-trimpath -mod=readonly"
mkdir -p "$bin"
tmp="$(mktemp -d "$bin/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
start=$SECONDS
minor="${version#v1.}"; minor="${minor%%.*}"
cd "$here/k8s"
echo "build-kube: building ${missing[*]} ($version, etcd $etcd_version) into $bin (one-off)" >&2
targets=()
for b in "${missing[@]}"; do [[ $b == etcd ]] || targets+=("${pkg[$b]}"); done
if [[ ${#targets[@]} -gt 0 ]]; then
  # Linking takes ~2 GiB each: two packages at a time keeps a 2-core, small-memory machine out of swap.
  go build -p "${KUBE_BUILD_JOBS:-2}" -ldflags "-s -w \
    -X k8s.io/component-base/version.gitVersion=$version -X k8s.io/component-base/version.gitMajor=1 \
    -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean" \
    -o "$tmp/" "${targets[@]}" >&2
fi
[[ " ${missing[*]} " == *" etcd "* ]] && go build -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3 >&2
for b in "${missing[@]}"; do mv -f "$tmp/$b" "$bin/$b"; done
rm -f "$bin"/gpuplugin.* && touch "$bin/gpuplugin.$gpuplugin_hash"
echo "build-kube: built in $((SECONDS - start)) s" >&2
echo "$bin"
