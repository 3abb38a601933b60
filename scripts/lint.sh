#!/usr/bin/env bash
# The design rules, checked: ruff (style, imports, bugbear), mypy --strict (types), import-linter (the pure core
# imports no kubernetes/boto3/tensorflow, even lazily; layers point down). Part of scripts/test.sh.
set -uo pipefail
cd "$(dirname "$0")/.."
rc=0
.venv/bin/ruff check controller trainer tests benchmarks scripts examples || rc=1
.venv/bin/mypy || rc=1
.venv/bin/lint-imports --no-cache >/dev/null || { .venv/bin/lint-imports --no-cache | tail -30; rc=1; }
[ $rc -eq 0 ] && echo "lint: ruff, mypy --strict and import contracts clean"
exit $rc
