"""The repository stands alone: a fresh clone has everything its tests, benchmarks and README use."""

import subprocess

import pytest
from conftest import ROOT, SEED_RESULTS

pytestmark = pytest.mark.pure


def test_nothing_in_the_repository_reads_outside_it():
    """No path to the development machine's shared folder beside the checkout: a clone does not have it."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    needle = "../" + "shared"  # split so that this file does not match itself
    hits = []
    for name in files:
        path = ROOT / name
        if path.suffix in (".json", ".png", ".keras", ".sum") or not path.is_file():
            continue
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if needle in line or "parent / \"shared\"" in line:
                hits.append(f"{name}:{n}: {line.strip()[:100]}")
    assert not hits, "\n".join(hits)


def test_the_original_results_and_their_licence_are_in_the_repository():
    assert len(list(SEED_RESULTS.glob("*.txt.json"))) == 42
    licence = (SEED_RESULTS / "LICENSE").read_text()
    assert "MIT License" in licence and "Copyright (c) 2017 Vooban Inc." in licence
