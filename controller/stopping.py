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

from dataclasses import dataclass
from typing import Sequence

import numpy as np

RULES = ("none", "median", "asha")


@dataclass(frozen=True)
class StoppingSettings:
    rule: str = "none"
    """none, median or asha."""
    start_epoch: int = 20
    """median: no decision before this epoch."""
    min_trials: int = 5
    """Values needed at an epoch (median) or rung (asha) before anything is stopped there."""
    grace_epochs: int = 10
    """asha: the first rung."""
    eta: float = 3.0
    """asha: keep the top 1/eta at each rung; rungs are grace·eta^i."""
    margin: float = 0.0
    """Stop only if below the cut by more than this (accuracy points, e.g. 0.01): less aggressive."""
    check_seconds: float = 30.0
    """How often the controller reads running trials' progress.json."""

    def validate(self) -> None:
        from controller.errors import ConfigError

        if self.rule not in RULES:
            raise ConfigError(f"earlyStopping.rule: {self.rule!r} must be one of {', '.join(RULES)}")
        for key, value, low in (("startEpoch", self.start_epoch, 1), ("minTrials", self.min_trials, 1),
                                ("graceEpochs", self.grace_epochs, 1)):
            if value < low:
                raise ConfigError(f"earlyStopping.{key}: {value} must be >= {low}")
        if self.eta <= 1:
            raise ConfigError(f"earlyStopping.eta: {self.eta} must be > 1")
        if not 0 <= self.margin < 1:
            raise ConfigError(f"earlyStopping.margin: {self.margin} must be in [0, 1)")
        if self.check_seconds <= 0:
            raise ConfigError(f"earlyStopping.checkSeconds: {self.check_seconds} must be > 0")


def best_so_far(curve: Sequence[float | None]) -> np.ndarray:
    """Running maximum; a diverged epoch (NaN/inf/None) counts as nothing gained."""
    c = np.array(curve, dtype=float)  # None → nan
    c[~np.isfinite(c)] = -np.inf
    return np.maximum.accumulate(c) if len(c) else c


def rungs(settings: StoppingSettings, max_epoch: int) -> list[int]:
    out, r = [], float(settings.grace_epochs)
    while round(r) <= max_epoch:
        if not out or round(r) > out[-1]:
            out.append(int(round(r)))
        r *= settings.eta
    return out


def decide(settings: StoppingSettings, curve: Sequence[float], ended: Sequence[Sequence[float]],
           running: Sequence[Sequence[float]] = (), max_epoch: int = 10**6) -> str | None:
    """The reason to stop this trial now (at epoch len(curve)), or None to let it run."""
    k = len(curve)
    if settings.rule == "none" or k == 0:
        return None
    mine = best_so_far(curve)[-1]
    if settings.rule == "median":
        if k < settings.start_epoch:
            return None
        peers = [best_so_far(c)[k - 1] for c in ended if len(c) >= k]
        if len(peers) < settings.min_trials:
            return None
        cut = float(np.median(peers))
        if mine < cut - settings.margin:
            return f"median rule: best {mine:.4f} at epoch {k} < median {cut:.4f} of {len(peers)} trials"
        return None
    if settings.rule == "asha":
        if k not in rungs(settings, max_epoch):
            return None
        peers = [best_so_far(c)[k - 1] for c in list(ended) + list(running) if len(c) >= k] + [mine]
        if len(peers) < settings.min_trials:
            return None
        cut = float(np.quantile(peers, 1 - 1 / settings.eta))
        if mine < cut - settings.margin:
            return (f"asha rule: best {mine:.4f} at rung epoch {k} is outside the top 1/{settings.eta:g} "
                    f"(cut {cut:.4f}) of {len(peers)} trials")
        return None
    raise ValueError(f"unknown stopping rule {settings.rule!r}; use one of {RULES}")
