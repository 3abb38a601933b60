"""Where the checkout, its interpreter and the seed's results are."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SEED_RESULTS = ROOT / "examples" / "seed-results"
PY = sys.executable
