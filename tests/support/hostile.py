"""Inputs that attack the readers: every archive or pickle that ever crashed one (tests/data/pickle-crashers.json)."""

from __future__ import annotations

import base64
import json

from support.paths import ROOT

CRASHERS_FILE = ROOT / "tests" / "data" / "pickle-crashers.json"


def crasher_names() -> list[str]:
    """The names of every recorded crasher, sorted."""
    return sorted(json.loads(CRASHERS_FILE.read_text())["crashers"])


def crasher(name: str) -> bytes:
    """One hostile input's bytes."""
    return base64.b64decode(json.loads(CRASHERS_FILE.read_text())["crashers"][name])
