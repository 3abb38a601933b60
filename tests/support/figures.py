"""The figures a test keeps for RELIABILITY.md (scripts/reliability_md.py renders them): recorded only after the
test's assertions passed, one folder per test run."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

from support.paths import ROOT

FIGURES_DIR = ROOT / ".reliability" / "runs"
# One id per test run, set by the first process (pytest-xdist's workers inherit it): figures of one run stay
# together, and the page generator takes a run only if its record says the whole suite passed.
RUN_ID = os.environ.setdefault("CIFAR_HPO_TEST_RUN", f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}")


def record_figure(name: str, figure: dict) -> None:
    """Keep a figure for RELIABILITY.md. Call it after the test's assertions: a failing test records nothing."""
    out = FIGURES_DIR / RUN_ID / "figures"
    out.mkdir(parents=True, exist_ok=True)
    slug = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
    test = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0]
    (out / f"{slug}.json").write_text(json.dumps({"name": name, "test": test, "recorded_at": time.time(),
                                                  "figure": figure}, indent=1, sort_keys=True))


def search_figure(trials: list[dict], budget: int, starts: dict[int, int], planted: tuple[int, ...] = (),
                  jobs: dict | None = None, **more) -> dict:
    """A search's raw counts for RELIABILITY.md, whose generator computes what was lost from them: each trial's
    state, the failures planted on purpose, how often each trial's program started (counted outside the program)
    and, on a cluster, the Jobs created (JobRecorder.figure())."""
    return {"budget": budget, "states": {str(t["tid"]): t["state"] for t in trials}, "planted": sorted(planted),
            "starts": {str(t): n for t, n in sorted(starts.items())}, "jobs": jobs, **more}


def local_starts(startlog: Path) -> dict[int, int]:
    """Trial program starts in local mode, from tests/startlog.sh's lines (each names the trial's folder)."""
    import re
    from collections import Counter

    lines = startlog.read_text().splitlines() if startlog.exists() else []
    return dict(Counter(int(m.group(1)) for line in lines if (m := re.search(r"trials/(\d{6})\b", line))))


