#!/usr/bin/env bash
# Sets up everything the tests need, then runs the whole suite. CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh --test
./scripts/install-tools.sh
exec .venv/bin/python -m pytest "$@"
