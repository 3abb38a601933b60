#!/usr/bin/env bash
# Sets up everything the tests need, then runs the whole suite. CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh --test
./scripts/install-tools.sh
# Two workers, a test file each at a time: most tests wait on subprocesses and timers, not the CPU, and a
# file's tests share their servers. TEST_WORKERS=0 runs them in this one process.
exec .venv/bin/python -m pytest -n "${TEST_WORKERS:-2}" --dist loadfile "$@"
