#!/usr/bin/env bash
# Sets up everything the tests need, then runs the whole suite. CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh --test
./scripts/install-tools.sh
./scripts/build-kube.sh >/dev/null  # the Kubernetes binaries, built from source once (docs/development.md)
lint=0
./scripts/lint.sh || lint=$?

# One local cluster for the whole run, shared by the pytest-xdist workers (each test has its namespace).
state="$(mktemp -d "${TMPDIR:-/tmp}/cifar-hpo-kube.XXXXXX")"
# The images our Dockerfiles build (cached by their inputs): the cluster's node runs them.
./scripts/build-images.sh >"$state/images.txt"
PYTHONPATH="$PWD/scripts" .venv/bin/python -m localkube up --dir "$state/cluster" --images "$state/images.txt" \
  >"$state/up.out" 2>"$state/up.log" &
up=$!
stop_cluster() { kill "$up" 2>/dev/null && wait "$up" 2>/dev/null; rm -rf "$state"; }
trap stop_cluster EXIT
until grep -qx ready "$state/up.out" 2>/dev/null; do
  if ! kill -0 "$up" 2>/dev/null; then echo "the local control plane did not start:" >&2; tail -50 "$state/up.log" >&2; exit 1; fi
  sleep 0.5
done
export CIFAR_HPO_KUBE_DIR="$state/cluster"
# The node's images and caches fill a disk over many runs: the free space, in the log of every run.
echo "disk: $(df -h --output=avail "${XDG_CACHE_HOME:-$HOME/.cache}" | tail -1 | tr -d ' ') free for the caches," \
  "$(df -h --output=avail "${TMPDIR:-/tmp}" | tail -1 | tr -d ' ') for ${TMPDIR:-/tmp}" >&2

# Two workers, a test file each at a time: most tests wait on subprocesses and timers, not the CPU, and a
# file's tests share their servers. TEST_WORKERS=0 runs them in this one process.
set +e
.venv/bin/python -m pytest -n "${TEST_WORKERS:-2}" --dist loadfile --durations=12 "$@"
rc=$?
set -e
[ $lint -ne 0 ] && echo "scripts/lint.sh failed (see above)" >&2
exit $(( rc != 0 ? rc : lint ))
