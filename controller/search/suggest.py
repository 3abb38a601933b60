"""The TPE step as a plain function: observations in, proposals out. No I/O.

Two things here are deliberate (Katib #1329 shows what happens otherwise):
- every proposal has its own seed, derived from the search seed and its trial id, so a batch never
  repeats one random stream and a resumed search proposes exactly what it would have proposed;
- trials still running are shown to TPE (see SuggestSettings.pending), and proposals made in one call
  are added as pending before the next one is drawn.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

import numpy as np

from controller.limits import MAX_EI_CANDIDATES, MAX_TRIALS, limit
from controller.search.space import Space

log = logging.getLogger(__name__)

PendingStrategy = Literal["hyperopt", "liar_mean", "ignore"]
PENDING_STRATEGIES: tuple[str, ...] = ("hyperopt", "liar_mean", "ignore")


@dataclass(frozen=True)
class SuggestSettings:
    """The TPE step's settings (the tpe section)."""
    n_startup_jobs: int = field(default=20, metadata=limit(minimum=0, maximum=MAX_TRIALS))
    """Random proposals before TPE starts; imported (warm-start) trials count toward it."""
    n_ei_candidates: int = field(default=24, metadata=limit(minimum=1, maximum=MAX_EI_CANDIDATES))
    """Candidates TPE draws from l(x) per proposal, keeping the best by expected improvement."""
    gamma: float = field(default=0.25, metadata=limit(exclusive_minimum=0, exclusive_maximum=1))
    """Fraction (× sqrt(n)) of the observations that TPE calls good."""
    prior_weight: float = field(default=1.0, metadata=limit(exclusive_minimum=0, maximum=1000))
    """Weight of the prior in TPE's Parzen estimators."""
    pending: str = field(default="hyperopt", metadata=limit(enum=PENDING_STRATEGIES))
    """How running trials enter TPE: 'hyperopt' (as infinitely bad, hyperopt's own treatment of
    docs without a loss), 'liar_mean' (constant liar: the mean observed loss) or 'ignore'."""


@dataclass(frozen=True)
class Observation:
    """What TPE needs of one trial. loss is None while the trial runs; inf for a failed trial."""

    tid: int
    vals: Mapping[str, Any]
    loss: float | None


@dataclass(frozen=True)
class Proposal:
    """A proposed point: its trial id, decoded params, hyperopt's vals, the seed it was drawn with and its origin."""
    tid: int
    params: dict[str, Any]
    vals: dict[str, Any]
    seed: int
    method: str
    """'random' during the start-up phase, else 'tpe'."""
    extra: dict[str, Any] = field(default_factory=dict)


def derive_seed(search_seed: int, tid: int) -> int:
    """A distinct, reproducible 31-bit seed per (search, trial)."""
    return int(np.random.SeedSequence([search_seed, tid]).generate_state(1)[0] & 0x7FFFFFFF)


@lru_cache(maxsize=8)
def _domain(space: Space) -> Any:
    from hyperopt.base import Domain

    return Domain(lambda _: 0.0, space.hyperopt)


def _doc(tid: int, vals: Mapping[str, Any], loss: float | None, labels: Sequence[str]) -> dict[str, Any]:
    # The minimal shape hyperopt's tpe/rand suggest read: misc idxs/vals per label and result.loss.
    idxs = {k: ([tid] if k in vals else []) for k in labels}
    vv = {k: ([vals[k]] if k in vals else []) for k in labels}
    result: dict[str, Any] = {"status": "new"} if loss is None else {"status": "ok", "loss": loss}
    return {
        "state": 2 if loss is not None else 1,
        "tid": tid,
        "spec": None,
        "result": result,
        "misc": {"tid": tid, "cmd": None, "workdir": None, "idxs": idxs, "vals": vv},
        "exp_key": None,
        "owner": None,
        "version": 0,
        "book_time": None,
        "refresh_time": None,
    }


def _observation_docs(observed: Sequence[Observation], labels: Sequence[str], pending: str,
                      cache: dict[int, tuple[float | None, dict[str, Any]]] | None = None) -> list[dict[str, Any]]:
    finite = [o.loss for o in observed if o.loss is not None and math.isfinite(o.loss)]
    lie = statistics.fmean(finite) if (pending == "liar_mean" and finite) else None
    cache = {} if cache is None else cache
    docs = []
    for o in observed:
        loss = o.loss
        if loss is None:
            if pending == "ignore":
                continue
            loss = lie
        loss = None if loss is None else float(loss)
        hit = cache.get(o.tid)
        # A trial's point never changes and its loss changes once: (tid, loss) identifies its doc.
        if hit is None or hit[0] != loss:
            hit = (loss, _doc(o.tid, o.vals, loss, labels))
            cache[o.tid] = hit
        docs.append(hit[1])
    return docs


def _trials_from_docs(docs: list[dict[str, Any]]) -> Any:
    from hyperopt import Trials

    trials = Trials()
    trials._insert_trial_docs(docs)  # skips per-doc validation: these docs are built right above
    trials.refresh()
    return trials


def hyperopt_trials(space: Space, observed: Sequence[Observation], pending: str = "hyperopt",
                    cache: dict[int, tuple[float | None, dict[str, Any]]] | None = None) -> Any:
    """A hyperopt Trials holding the observations. `cache` (a dict the caller keeps between calls)
    saves rebuilding the documents of trials that did not change."""
    return _trials_from_docs(_observation_docs(observed, list(_domain(space).params), pending, cache))


def suggest(
    space: Space,
    observed: Sequence[Observation],
    new_tids: Sequence[int],
    search_seed: int,
    settings: SuggestSettings = SuggestSettings(),
    cache: dict[int, tuple[float | None, dict[str, Any]]] | None = None,
) -> list[Proposal]:
    """Propose one point per new trial id, each seeded by derive_seed(search_seed, tid). Pass the
    same `cache` dict on every call of a search to skip rebuilding unchanged history."""
    from hyperopt import tpe

    if settings.pending not in PENDING_STRATEGIES:
        raise ValueError(f"pending must be one of {PENDING_STRATEGIES}, got {settings.pending!r}")
    domain = _domain(space)
    observed = list(observed)
    proposals = []
    for tid in new_tids:
        seed = derive_seed(search_seed, tid)
        trials = hyperopt_trials(space, observed, settings.pending, cache)
        method = "random" if len(trials.trials) < settings.n_startup_jobs else "tpe"
        (doc,) = tpe.suggest(
            [tid],
            domain,
            trials,
            seed,
            prior_weight=settings.prior_weight,
            n_startup_jobs=settings.n_startup_jobs,
            n_EI_candidates=settings.n_ei_candidates,
            gamma=settings.gamma,
            verbose=False,
        )
        vals = {k: _plain(v[0]) for k, v in doc["misc"]["vals"].items() if v}
        proposals.append(Proposal(tid, space.decode(vals), vals, seed, method))
        observed.append(Observation(tid, vals, None))
    return proposals


def _plain(v: Any) -> Any:
    """numpy scalars → Python numbers, so records are plain JSON."""
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    return v


class Suggester:
    """The TPE step of one search. It owns the cache of hyperopt documents, so each proposal rebuilds only the
    history that changed since the last one."""

    def __init__(self, space: Space, search_seed: int, settings: SuggestSettings = SuggestSettings()):
        self.space = space
        self.search_seed = search_seed
        self.settings = settings
        self._cache: dict[int, tuple[float | None, dict[str, Any]]] = {}

    def propose(self, observed: Sequence[Observation], new_tids: Sequence[int]) -> list[Proposal]:
        return suggest(self.space, observed, new_tids, self.search_seed, self.settings, self._cache)
