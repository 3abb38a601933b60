#!/usr/bin/env bash
# S2: mutmut over the pure core (stopping, space, suggest, ledger), each mutant run against the pure and contract
# tests of those modules and of the loop that uses them (the ledger's contract tests on the in-memory and folder
# stores: the S3 servers are left out, as each mutant would start them). Runs in a scratch copy of the working tree
# (mutmut writes a mutants/ folder there); prints the counts and the score (killed / (killed + survived)), and the
# surviving mutants' names.
#   benchmarks/mutmut_core.sh [module ...]      # default: the four modules of the pure core
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
.venv/bin/python -c "import mutmut" 2>/dev/null || .venv/bin/pip install -q -e ".[mutation]"
modules=("${@:-search/stopping search/space search/suggest ledger/trials}")
paths=$(printf '"controller/%s.py", ' ${modules[*]})
work="$(mktemp -d "${TMPDIR:-/tmp}/mutmut.XXXXXX")"
trap 'rm -rf "$work"' EXIT
git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$work"
ln -s "$root/.venv" "$work/.venv"
cat >>"$work/pyproject.toml" <<TOML

[tool.mutmut]
source_paths = [${paths%, }]
pytest_add_cli_args_test_selection = ["tests/search/test_stopping.py", "tests/search/test_space.py", "tests/search/test_suggest.py",
                                      "tests/ledger/test_ledger.py", "tests/loop/test_loop.py"]
also_copy = ["controller/", "scripts/", "examples/", "charts/", "tests/"]
pytest_add_cli_args = ["-m", "pure or contract", "-k", "not s3 and not versitygw", "-p", "no:xdist", "-p", "no:cacheprovider"]
TOML
cd "$work"
echo "S2 mutmut $(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("mutmut"))') over ${modules[*]}" \
  "— $(uname -n): $(nproc) cores, $(.venv/bin/python -V 2>&1), $(date -u +%F)"
.venv/bin/mutmut run --max-children "$(nproc)" >/dev/null 2>mutmut.err || { tail -30 mutmut.err; exit 1; }
.venv/bin/mutmut results --all true >results.txt 2>/dev/null || true
.venv/bin/python - <<'PY'
import collections, re
lines = [l.strip() for l in open("results.txt") if ":" in l]
status = collections.Counter(l.rsplit(":", 1)[1].strip() for l in lines)
killed, survived = status.get("killed", 0), status.get("survived", 0)
print("status counts:", dict(sorted(status.items())))
print(f"score: {killed} killed of {killed + survived} decided = {killed / max(1, killed + survived):.1%}")
by_module = collections.defaultdict(collections.Counter)
for l in lines:
    name, state = l.rsplit(":", 1)
    by_module[name.split(".x")[0]][state.strip()] += 1
for module, c in sorted(by_module.items()):
    k, s = c.get("killed", 0), c.get("survived", 0)
    print(f"  {module}: {k} killed of {k + s} decided = {k / max(1, k + s):.1%} ({dict(sorted(c.items()))})")
for l in lines:
    if l.endswith(": survived"):
        print("  survived:", l.rsplit(":", 1)[0])
PY
