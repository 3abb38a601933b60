"""The design's size and reading rules, checked: no function in controller/ or trainer/ over 50 lines and no module over
400 (either that long has a second concern to give away), and a docstring on every module and on every public class
and function a reader lands on. An exception needs its reason here."""

from __future__ import annotations

import ast

import pytest
from support.paths import ROOT

pytestmark = pytest.mark.pure

LIMIT = 50
MODULE_LIMIT = 400
EXCEPTIONS: dict[str, str] = {}


def _modules():
    return sorted([*ROOT.glob("controller/**/*.py"), *ROOT.glob("trainer/*.py")])


def _functions():
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                yield f"{path.relative_to(ROOT)}:{node.name}", node.end_lineno - node.lineno + 1


def test_no_function_is_longer_than_the_limit():
    long = {name: n for name, n in _functions() if n > LIMIT and name not in EXCEPTIONS}
    assert not long, f"over {LIMIT} lines: {long}"


def test_the_check_sees_the_code():
    found = dict(_functions())
    assert "controller/loop.py:run" in found and "controller/kube/jobs.py:build_job" in found


def test_no_module_is_longer_than_the_limit():
    long = {str(p.relative_to(ROOT)): n for p in _modules() if (n := len(p.read_text().splitlines())) > MODULE_LIMIT}
    assert not long, f"over {MODULE_LIMIT} lines: {long}"


def test_every_module_and_public_class_and_function_says_what_it_is():
    missing = []
    for path in _modules():
        tree = ast.parse(path.read_text())
        name = str(path.relative_to(ROOT))
        if not ast.get_docstring(tree) and path.name != "__main__.py" or path.name == "__init__.py" and not tree.body:
            missing.append(name)
        missing += [f"{name}:{node.name}" for node in tree.body
                    if isinstance(node, ast.FunctionDef | ast.ClassDef) and not node.name.startswith("_")
                    and not ast.get_docstring(node)]
    assert not missing, f"no docstring: {missing}"
