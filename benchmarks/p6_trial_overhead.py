"""P6: per-trial fixed overhead — trainer process start → first training step done, on generated data
(synthetic:5000: 4,000 train / 1,000 val images), as the trainer reports it (and from outside: Popen →
its log line). On a CPU the first step's own compute is large for big models, so the second step's
duration is measured too and subtracted: what remains is the fixed cost (interpreter, TensorFlow
import, data, model build, tracing). Median of RUNS runs, the seed's best point and a small point."""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, best_seed_point, machine

RUNS = 3
BEST = best_seed_point()
SMALL = {**BEST, "nb_conv_pool_layers": 2, "residual": None, "conv_hiddn_units_mult": 0.6, "fc_units_1_mult": 0.6,
         "first_conv": None, "pooling_type": "max"}
LINE = re.compile(r"(first|second) training step done \(([\d.]+) s after the trainer started\)")


def once(params: dict) -> tuple[float, float, float]:
    """(outside: Popen → first step, reported first step, reported second step)."""
    with tempfile.TemporaryDirectory() as d:
        Path(d, "proposal.json").write_text(json.dumps({"schema_version": 1, "tid": 0, "params": params}))
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "trainer", "--trial", d, "--data", "synthetic:5000",
                                 "--epochs", "1"], cwd=ROOT, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        outside = first = None
        for line in proc.stderr:
            m = LINE.search(line)
            if m and m.group(1) == "first":
                outside, first = time.monotonic() - t0, float(m.group(2))
            elif m:
                proc.send_signal(signal.SIGTERM)
                proc.communicate()
                return outside, first, float(m.group(2))
        raise RuntimeError(f"the trainer ended without a first step (exit {proc.wait()})")


def main() -> None:
    print(f"P6 trial overhead, process start → first training step — {machine()}")
    print("overhead = first step done − one steady step (the second step's duration): the fixed cost")
    print(f"{'point':<20} {'start→1st step s':>17} {'(outside) s':>12} {'steady step s':>14} {'overhead s':>11}")
    for name, params in (("seed's best (7.06 M)", BEST), ("small (2 blocks)", SMALL)):
        runs = [once(params) for _ in range(RUNS)]
        first = statistics.median(r[1] for r in runs)
        step = statistics.median(r[2] - r[1] for r in runs)
        print(f"{name:<20} {first:>17.2f} {statistics.median(r[0] for r in runs):>12.2f} {step:>14.2f} "
              f"{statistics.median(r[1] - (r[2] - r[1]) for r in runs):>11.2f}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
