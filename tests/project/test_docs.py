"""The docs a newcomer reads say only what exists: every command they show is accepted by its parser, every file they
name is in the checkout, every link leads somewhere, and the chart's README is what its values.yaml generates."""

from __future__ import annotations

import argparse
import re
import shlex

import pytest
from support.paths import ROOT

pytestmark = pytest.mark.pure

PAGES = sorted([ROOT / "README.md", ROOT / "SECURITY.md", ROOT / "charts" / "README.md",
                *(ROOT / "docs").glob("*.md")])
TOP = ("controller", "trainer", "charts", "scripts", "tests", "examples", "docs", "benchmarks", "reliability")
# A repository path in backticks or a link: one of the top folders (or a top-level file) and no placeholder.
PATH = re.compile(r"(?<![\w./<-])((?:" + "|".join(TOP) + r")/[\w./-]*[\w/])")
COMMAND = re.compile(r"python -m (controller|trainer)\b([^\n`]*)")


def _pages_ids():
    return [str(p.relative_to(ROOT)) for p in PAGES]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings}


def _flags(rest: str) -> list[str]:
    """The --flags written after a command, up to a comment or the next shell command."""
    rest = re.split(r"\s#|\s\|\s|&&|;|\)", rest)[0].replace("\\", " ")
    try:
        words = shlex.split(rest)
    except ValueError:
        words = rest.split()
    return [w.split("=")[0] for w in words if w.startswith("--")]


def test_every_page_exists_and_the_readme_is_the_front_page():
    readme = (ROOT / "README.md").read_text()
    assert readme.count("\n") <= 260, "the README is the front page: about 200 lines, the rest in docs/"
    for page in ("quickstart", "cluster", "operations", "TRIAL_CONTRACT", "architecture", "development"):
        assert (ROOT / "docs" / f"{page}.md").exists(), page
        assert f"docs/{page}.md" in readme, f"the README links docs/{page}.md"


@pytest.mark.parametrize("page", PAGES, ids=_pages_ids())
def test_every_controller_and_trainer_command_shown_is_accepted(page):
    from controller.cli import build_parser
    from trainer.__main__ import _parser as trainer_parser

    commands = _subparsers(build_parser())
    top = _options(build_parser())
    trainer = _options(trainer_parser())
    for m in COMMAND.finditer(page.read_text()):
        program, rest = m.group(1), m.group(2)
        words = rest.split()
        if program == "trainer":
            unknown = [f for f in _flags(rest) if f not in trainer]
            assert not unknown, f"{page.name}: `python -m trainer{rest}`: no such flag {unknown}"
            continue
        while words and words[0].startswith("-"):
            words.pop(0)  # -v before the command
        if not words or not re.fullmatch(r"[a-z]+", words[0]):
            continue  # prose: "python -m controller's ..." or a placeholder
        assert words[0] in commands, f"{page.name}: `python -m controller {words[0]}`: no such command"
        accepted = _options(commands[words[0]]) | top
        unknown = [f for f in _flags(rest) if f not in accepted]
        assert not unknown, f"{page.name}: `python -m controller{rest}`: no such flag {unknown}"


@pytest.mark.parametrize("page", PAGES, ids=_pages_ids())
def test_every_file_and_link_named_exists(page):
    text = page.read_text()
    missing = []
    for m in PATH.finditer(text):
        path = m.group(1).rstrip("./")
        if "<" in path or "*" in path or "…" in path:
            continue
        if not (ROOT / path).exists():
            missing.append(path)
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if "://" in target:
            continue
        if not (page.parent / target).exists():
            missing.append(target)
    assert not missing, f"{page.relative_to(ROOT)} names what is not in the checkout: {sorted(set(missing))}"


def test_the_charts_readme_is_what_its_values_generate():
    import chart_readme

    assert (ROOT / "charts" / "README.md").read_text() == chart_readme.render(), \
        "charts/README.md is stale: run scripts/chart_readme.py"


def test_every_chart_value_is_documented():
    import chart_readme

    values = chart_readme.documented()
    undocumented = [key for key in chart_readme.leaves() if not any(
        key == d or key.startswith(d + ".") for d in values)]
    assert not undocumented, f"values.yaml keys without a `# --` comment: {undocumented}"


def test_the_chart_states_the_kubernetes_versions_it_supports():
    import yaml

    chart = yaml.safe_load((ROOT / "charts" / "Chart.yaml").read_text())
    assert chart["kubeVersion"] == ">=1.29.0-0"  # podFailurePolicy's onPodConditions rules (charts/README.md)


def test_every_test_security_md_names_exists():
    """SECURITY.md backs each promise with a test: `file.py::test_name` (`::...` and `_...` abbreviate a name), each
    of which must be a test in that file under tests/ (or in a contract it runs, tests/support/), or the promise has
    lost its test."""
    text = (ROOT / "SECURITY.md").read_text()
    named = re.findall(r"`(\w+/test_\w+\.py)((?:::[\w*]+)+)?(`|::\.\.\.)", text)
    contracts = "".join(p.read_text() for p in (ROOT / "tests" / "support").glob("*_contract.py"))
    sources = "".join((ROOT / "tests" / path).read_text() for path, _, _ in named) + contracts
    wanted = [n for _, names, _ in named for n in (names or "").split("::") if n and n != "*"]
    wanted += re.findall(r"`::(test_\w+?)_?(?:\.\.\.)?`", text)
    missing = [n for n in wanted if f"def {n.rstrip('_')}" not in sources]
    assert len(named) >= 20 and len(wanted) >= 30 and not missing, missing
