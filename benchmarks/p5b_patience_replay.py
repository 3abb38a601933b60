"""P5b: what a trainer-level patience would have done to the original project's 42 runs. Each run's per-epoch
validation fine accuracy (examples/seed-results, 100 epochs each) is replayed: with patience P the run stops
after P epochs without a new best, and keeps the best it reached by then."""

from __future__ import annotations

import json
import math

from common import SEED_RESULTS, machine


def replay(curve: list[float], patience: int) -> tuple[int, float]:
    """(epochs run, best accuracy reached) with early stopping after `patience` epochs without improvement."""
    best, since = -math.inf, 0
    for epoch, acc in enumerate(curve, 1):
        if acc > best:
            best, since = acc, 0
        else:
            since += 1
        if since >= patience:
            return epoch, best
    return len(curve), best


def main() -> None:
    runs = []
    for f in sorted(SEED_RESULTS.glob("*.json")):
        d = json.loads(f.read_text())
        curve = [v if isinstance(v, (int, float)) and math.isfinite(v) else -math.inf
                 for v in d["history"]["val_fine_outputs_acc"]]
        runs.append((f.name, curve))
    print(f"P5b patience replay on the original 42 runs ({len(runs[0][1])} epochs each) — {machine()}")
    print(f"{'patience':>8} {'runs cut':>9} {'best lowered':>13} {'epochs saved':>13} {'mean loss':>10} "
          f"{'worst loss':>11}  original best run")
    full_best = {name: max(c) for name, c in runs}
    top = max(full_best, key=full_best.get)
    for patience in (10, 20, 30):
        cut = lowered = saved = 0
        losses, worst = [], ("", 0.0, 0.0)
        for name, curve in runs:
            epochs, best = replay(curve, patience)
            cut += epochs < len(curve)
            saved += len(curve) - epochs
            loss = full_best[name] - best
            lowered += loss > 0
            losses.append(loss)
            if loss > worst[2]:
                worst = (name, best, loss)
            if name == top:
                top_txt = f"{full_best[name]:.4f} → {best:.4f} (stopped at epoch {epochs})"
        print(f"{patience:>8} {cut:>6}/42 {lowered:>10}/42 {saved:>7} of {42 * len(runs[0][1])} "
              f"{sum(losses) / len(losses):>10.4f} {worst[2]:>11.4f}  {top_txt}")
        print(f"{'':>8} worst: {worst[0]} {full_best[worst[0]]:.4f} → {worst[1]:.4f}")


if __name__ == "__main__":
    main()
