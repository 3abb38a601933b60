#!/usr/bin/env bash
# Builds the project's images with podman (no daemon) and exports each as an OCI archive, cached by the hash of
# its inputs: a rebuild happens only when a Dockerfile or what it copies changed. Prints one line per image,
# `<reference> <archive>`, on stdout (the local cluster imports these into containerd).
#   controller  Dockerfile.controller, unmodified
#   trainer     Dockerfile.trainer, unmodified, with TF_PACKAGE=tensorflow-cpu (TRAINER_TF_PACKAGE overrides)
#   objective   tests/images/Dockerfile.objective: the stand-in trial program on the controller image
#   pause       tests/images/Dockerfile.pause: the pod sandbox, compiled from Kubernetes' pause.c
# Where `python:3.11-slim` cannot be pulled (no registry here), a local stand-in is made under that exact name:
# Debian bookworm (debootstrap) with its Python 3.11. A machine that can pull uses the real one.
# IMAGES_CACHE overrides the cache folder; IMAGES="controller objective" builds a subset.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${IMAGES_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cifar-hpo/images}"
wanted=(${IMAGES:-controller trainer objective digits pause})
tf_package="${TRAINER_TF_PACKAGE:-tensorflow-cpu==2.21.0}"
k8s_version="v1.34.4"
mkdir -p "$cache/archives"
# One build at a time per cache: a second run waits, then finds the archives made (and nothing pruned under it).
exec 9>"$cache/.lock"
flock 9
log() { echo "build-images: $*" >&2; }

"$root/scripts/install-containers.sh" >&2

# runc (crun refuses this machine's cgroup v1 hybrid layout); rlimits no higher than the hard limits
# (root here has no CAP_SYS_RESOURCE to raise them).
cat >"$cache/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
[engine]
runtime = "runc"
EOF
export CONTAINERS_CONF="$cache/containers.conf"
podman=(podman --root "$cache/storage" --runroot "$cache/run" --storage-driver overlay)
build=("${podman[@]}" build --pull=never --layers)
# HTTPS from a RUN step: some networks re-sign TLS with a CA only the host trusts. Mounted for the build only,
# never a layer of the image.
ca=/etc/ssl/certs/ca-certificates.crt
[[ -f $ca ]] && build+=(-v "$ca:$ca:ro")

inputs_hash() {  # the content of the given files and folders (caches and bytecode left out)
  (cd "$root" && find "$@" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | LC_ALL=C sort -z \
    | xargs -0 sha256sum) | sha256sum | cut -c1-16
}

ensure_base() {
  local ref=docker.io/library/python:3.11-slim
  "${podman[@]}" image exists "$ref" && return
  if timeout 120 "${podman[@]}" pull -q "$ref" >/dev/null 2>&1; then log "pulled $ref"; return; fi
  log "no registry: making a stand-in for $ref (Debian bookworm + its Python 3.11)"
  local t mirror
  t="$(mktemp -d "$cache/.base.XXXXXX")"
  mirror="$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
  debootstrap --variant=minbase bookworm "$t/rootfs" "${mirror:-http://deb.debian.org/debian}" >"$t/log" 2>&1 \
    || { tail -20 "$t/log" >&2; exit 1; }
  unshare -m sh -c "mount -t proc proc '$t/rootfs/proc' && chroot '$t/rootfs' sh -c \
    'apt-get install -y -q --no-install-recommends python3 python3-pip python-is-python3 >/dev/null'"
  chroot "$t/rootfs" sh -c 'rm -f /usr/lib/python3.11/EXTERNALLY-MANAGED; apt-get clean; rm -rf /var/lib/apt/lists/*'
  tar -C "$t/rootfs" -c . | "${podman[@]}" import -q --change 'CMD ["python3"]' - "$ref" >/dev/null
  rm -rf "$t"
}

# save REF ARCHIVE: the OCI archive the cluster imports (written whole, then renamed: never half a file)
save() {
  "${podman[@]}" save -q --format oci-archive -o "$2.part" "$1" && mv -f "$2.part" "$2"
}

image() {  # image NAME TAG: prints the reference, building and saving it unless its archive exists
  local name=$1 tag=$2 ref="localhost/cifar-hpo-$1:$2"
  local archive="$cache/archives/$name-$tag.tar"
  if [[ ! -f $archive ]]; then
    local start=$SECONDS
    shift 2
    log "building $ref"
    "${build[@]}" -q -t "$ref" "$@" >/dev/null
    save "$ref" "$archive"
    log "$ref built and saved in $((SECONDS - start)) s"
    # Older builds of this image: their archives and tags go (their layers stay while the new one shares them).
    find "$cache/archives" -name "$name-*.tar" ! -name "$name-$tag.tar" -delete
    "${podman[@]}" images --format '{{.Repository}}:{{.Tag}}' "localhost/cifar-hpo-$name" | grep -vx "$ref" \
      | xargs -r "${podman[@]}" rmi -f >/dev/null 2>&1 || true
    # What those builds left untagged (their own steps' layers) goes too: the store otherwise grows by a build's
    # worth per commit (199 images, 7.5 GB, before this). The layers under a current image are its parents, kept.
    "${podman[@]}" image prune -f >/dev/null 2>&1 || true
  fi
  echo "$ref $archive"
}

py_inputs=(pyproject.toml README.md controller trainer .dockerignore)
controller_tag="$(inputs_hash Dockerfile.controller "${py_inputs[@]}")"
for name in "${wanted[@]}"; do
  case $name in
    controller)
      ensure_base
      image controller "$controller_tag" -f "$root/Dockerfile.controller" "$root" ;;
    trainer)
      ensure_base
      tag="$(inputs_hash Dockerfile.trainer "${py_inputs[@]}")-$(echo "$tf_package" | sha256sum | cut -c1-6)"
      image trainer "$tag" -f "$root/Dockerfile.trainer" --build-arg "TF_PACKAGE=$tf_package" "$root" ;;
    objective)
      ensure_base
      # on the controller image, whose build this names (its archive, and its tag in this one's): the same tag as
      # the controller line above, hashed once, so that a file edited meanwhile cannot make this run build (and
      # prune) a second controller image under the first one's feet
      read -r ctrl_ref ctrl_archive < <(image controller "$controller_tag" -f "$root/Dockerfile.controller" "$root")
      "${podman[@]}" image exists "$ctrl_ref" || "${podman[@]}" load -q -i "$ctrl_archive" >/dev/null
      tag="$(inputs_hash tests/images/Dockerfile.objective tests/objective.py)-${ctrl_ref##*:}"
      image objective "${tag:0:40}" -f "$root/tests/images/Dockerfile.objective" \
        --build-arg "CONTROLLER_IMAGE=$ctrl_ref" "$root" ;;
    digits)  # examples/digits: the second trainer (scikit-learn) on slim Python and the base install alone
      ensure_base
      image digits "$(inputs_hash examples/digits/Dockerfile examples/digits/trainer.py "${py_inputs[@]}")" \
        -f "$root/examples/digits/Dockerfile" "$root" ;;
    pause)
      command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"
      src="$(cd "$root/scripts/k8s" && GOTOOLCHAIN=local GOWORK=off go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c"
      tag="$(sha256sum "$src" | cut -c1-16)"
      archive="$cache/archives/pause-$tag.tar"
      if [[ ! -f $archive ]]; then
        t="$(mktemp -d)"
        gcc -Os -static -o "$t/pause" "$src" -DVERSION="$k8s_version" && strip "$t/pause"
        "${build[@]}" -q -t "registry.k8s.io/pause:3.10.1" -f "$root/tests/images/Dockerfile.pause" "$t" >/dev/null
        save registry.k8s.io/pause:3.10.1 "$archive"
        rm -rf "$t"
      fi
      echo "registry.k8s.io/pause:3.10.1 $archive" ;;
    *) log "unknown image '$name' (controller, trainer, objective, digits, pause)"; exit 2 ;;
  esac
done
