"""The design's size rule, checked: no function in controller/ or trainer/ over 50 lines (a function that long has
a second concern to give away). An exception needs its reason here."""

from __future__ import annotations

import ast

import pytest
from support.paths import ROOT

pytestmark = pytest.mark.pure

LIMIT = 50
EXCEPTIONS: dict[str, str] = {}


def _functions():
    for path in sorted([*ROOT.glob("controller/**/*.py"), *ROOT.glob("trainer/*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                yield f"{path.relative_to(ROOT)}:{node.name}", node.end_lineno - node.lineno + 1


def test_no_function_is_longer_than_the_limit():
    long = {name: n for name, n in _functions() if n > LIMIT and name not in EXCEPTIONS}
    assert not long, f"over {LIMIT} lines: {long}"


def test_the_check_sees_the_code():
    found = dict(_functions())
    assert "controller/loop.py:run" in found and "controller/kube/jobs.py:build_job" in found
