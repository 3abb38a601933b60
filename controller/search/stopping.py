"""Early stopping rules, pure: learning curves in, a decision out.

A curve is a trial's validation fine accuracy per epoch (epoch k is curve[k-1]); rules compare
best-so-far values, so a noisy epoch does not stop a good trial.

- median: at epoch k >= start_epoch, stop a trial whose best-so-far is below the median best-so-far at
  k of the ended trials (completed or stopped) that reached k, once min_trials of them did.
- asha: rungs at epochs grace, grace·η, grace·η², …; at a rung, stop a trial outside the top 1/η of the
  best-so-far values every trial (running or ended) recorded there, once min_trials did.

Stopped trials count toward the budget and enter TPE with their best-so-far objective: a lower bound of
what they would have reached, which puts them where they belong, among TPE's "bad" points.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from controller import limits
from controller.limits import MAX_EPOCHS, MAX_TRIALS, limit

RULES = ("none", "median", "asha")
Curve = Sequence[float | None]
"""Validation fine accuracy per epoch; None where an epoch diverged (NaN/inf are stored as null)."""


@dataclass(frozen=True)
class StoppingSettings:
    """The earlyStopping section: which rule, from which epoch, against how many peers."""
    rule: str = field(default="none", metadata=limit(enum=RULES))
    """none, median or asha."""
    start_epoch: int = field(default=20, metadata=limit(minimum=1, maximum=MAX_EPOCHS))
    """median: no decision before this epoch."""
    min_trials: int = field(default=5, metadata=limit(minimum=1, maximum=MAX_TRIALS))
    """Values needed at an epoch (median) or rung (asha) before anything is stopped there."""
    grace_epochs: int = field(default=10, metadata=limit(minimum=1, maximum=MAX_EPOCHS))
    """asha: the first rung."""
    eta: float = field(default=3.0, metadata=limit(exclusive_minimum=1, maximum=100))
    """asha: keep the top 1/eta at each rung; rungs are grace·eta^i."""
    margin: float = field(default=0.0, metadata=limit(minimum=0, exclusive_maximum=1))
    """Stop only if below the cut by more than this (accuracy points, e.g. 0.01): less aggressive."""
    check_seconds: float = field(default=30.0, metadata=limit(minimum=0.01, maximum=3600))
    """How often the controller reads running trials' progress.json."""

    def validate(self) -> None:
        limits.check(self, "earlyStopping")


def best_so_far(curve: Curve) -> np.ndarray[tuple[int], np.dtype[np.float64]]:
    """Running maximum; a diverged epoch (NaN/inf/None) counts as nothing gained."""
    c = np.array(curve, dtype=float)  # None → nan
    c[~np.isfinite(c)] = -np.inf
    return np.maximum.accumulate(c) if len(c) else c


def rungs(settings: StoppingSettings, max_epoch: int) -> list[int]:
    """ASHA's rungs up to max_epoch: grace_epochs times eta to the power 0, 1, 2 ..."""
    out: list[int] = []
    r = float(settings.grace_epochs)
    while round(r) <= max_epoch:
        if not out or round(r) > out[-1]:
            out.append(int(round(r)))
        r *= settings.eta
    return out


def _cut(peers: list[float], q: float) -> float:
    """The q-quantile of best-so-far objectives. A peer with no finite epoch yet (-inf) ranks last: it counts as the
    lowest finite value among the peers (interpolating toward -inf gives NaN, and a NaN cut stops nothing; a fixed
    stand-in such as 0 would rank above every negative objective, a negated loss). No finite peer: no cut."""
    values = np.array(peers, dtype=float)
    finite = values[np.isfinite(values)]
    if not len(finite):
        return -math.inf
    return float(np.quantile(np.where(np.isfinite(values), values, finite.min()), q))


def decide(settings: StoppingSettings, curve: Curve, ended: Sequence[Curve], running: Sequence[Curve] = (),
           max_epoch: int = 10**6) -> str | None:
    """The reason to stop this trial now (at epoch len(curve)), or None to let it run."""
    k = len(curve)
    if settings.rule == "none" or k == 0:
        return None
    mine = float(best_so_far(curve)[-1])
    if settings.rule == "median":
        if k < settings.start_epoch:
            return None
        peers = [float(best_so_far(c)[k - 1]) for c in ended if len(c) >= k]
        if len(peers) < settings.min_trials:
            return None
        cut = _cut(peers, 0.5)
        if mine < cut - settings.margin:
            return f"median rule: best {mine:.4f} at epoch {k} < median {cut:.4f} of {len(peers)} trials"
        return None
    if settings.rule == "asha":
        if k not in rungs(settings, max_epoch):
            return None
        peers = [float(best_so_far(c)[k - 1]) for c in [*ended, *running] if len(c) >= k] + [mine]
        if len(peers) < settings.min_trials:
            return None
        cut = _cut(peers, 1 - 1 / settings.eta)
        if mine < cut - settings.margin:
            return (f"asha rule: best {mine:.4f} at rung epoch {k} is outside the top 1/{settings.eta:g} "
                    f"(cut {cut:.4f}) of {len(peers)} trials")
        return None
    raise ValueError(f"unknown stopping rule {settings.rule!r}; use one of {RULES}")
