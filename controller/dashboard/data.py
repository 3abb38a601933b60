"""What the dashboard shows of a search, read through the Store and nothing else.

A SearchView keeps what never changes (decided trial records, search.json) and reads again, at most once per
`refresh_seconds`, only what can: the open trials' result.json, outcome.json and progress.json, the trials newer than
the last one seen, and status.json. So a refresh costs one LIST (of the keys after the highest trial id seen) plus
three GETs per open trial and one for the status, whatever the number of trials, and the server refreshes a search
once for all the pages that watch it.

Parameter importance is the correlation ratio (eta squared) of the objective on each parameter: the share of the
objective's variance that the parameter's groups explain (its choices, or five quantile bins of a number). It is
marginal (one parameter at a time, like a first-order fANOVA term) and needs no model; with fewer than 8 scored
trials it is not computed.
"""

from __future__ import annotations

import logging
import math
import re
import statistics
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from controller.errors import RecordError, TemporaryError
from controller.ledger.layout import trial_key
from controller.ledger.trials import Ledger, TrialRecord, best_of, curve_of
from controller.report.summary import flat_params, live_states
from controller.store.base import Store, get_json
from controller.trial.contract import MODEL_FILE, TrialState, model_file_problem

log = logging.getLogger(__name__)

SCORED = (TrialState.OK, TrialState.STOPPED)
MIN_FOR_IMPORTANCE = 8
BINS = 5
# "early-stopped: median rule: best 0.41 at epoch 3 < ..." / "asha rule: best ... at rung epoch 2 ...": where it cut.
CUT_AT = re.compile(r"at (?:rung )?epoch (\d+)")


def finite(v: Any) -> float | None:
    """The number as a float, or None for NaN, infinity, a bool or anything not a number (JSON has no NaN)."""
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else None


def kinds(trials: Iterable[TrialRecord]) -> dict[str, str]:
    """Each parameter (dotted, flat_params): 'number' if every value seen is a finite number (None: absent, as a
    conditional parameter is), else 'choice' (compared as text)."""
    seen: dict[str, str] = {}
    for r in trials:
        for name, v in flat_params(r.params).items():
            if v is None:
                seen.setdefault(name, "number")
                continue
            kind = "number" if finite(v) is not None else "choice"
            seen[name] = "choice" if seen.get(name, kind) == "choice" or kind == "choice" else "number"
    return seen


def importance(trials: list[TrialRecord], param_kinds: dict[str, str]) -> dict[str, float]:
    """eta^2 of the objective on each parameter (the module's docstring); {} with too few scored trials."""
    scored = [r for r in trials if r.state in SCORED and finite(r.objective) is not None]
    if len(scored) < MIN_FOR_IMPORTANCE:
        return {}
    ys = [float(r.objective) for r in scored]  # type: ignore[arg-type]
    mean = statistics.fmean(ys)
    total = sum((y - mean) ** 2 for y in ys)
    if total == 0:
        return dict.fromkeys(param_kinds, 0.0)
    out = {}
    points = [flat_params(r.params) for r in scored]
    for name, kind in param_kinds.items():
        groups: dict[str, list[float]] = {}
        if kind == "number":
            values = sorted(v for p in points if (v := finite(p.get(name))) is not None)
            edges = [values[len(values) * i // BINS] for i in range(1, BINS)] if values else []
            for p, y in zip(points, ys, strict=True):
                v = finite(p.get(name))  # absent (None): a group of its own
                groups.setdefault("absent" if v is None else str(sum(v >= e for e in edges)), []).append(y)
        else:
            for p, y in zip(points, ys, strict=True):
                groups.setdefault(str(p.get(name)), []).append(y)
        between = sum(len(g) * (statistics.fmean(g) - mean) ** 2 for g in groups.values())
        out[name] = round(between / total, 4)
    return out


def cut_epoch(r: TrialRecord) -> int | None:
    """The epoch an early-stopping rule cut this trial at, from the reason it recorded."""
    if r.state is not TrialState.STOPPED or not r.reason or "early-stopped" not in r.reason:
        return None
    m = CUT_AT.search(r.reason)
    return int(m.group(1)) if m else None


def eta_seconds(trials: list[TrialRecord], left: int, parallelism: int, now: float) -> float | None:
    """Time left: the median trial duration so far, times the rounds the budget left still needs, plus what the
    running trials still need of theirs. None until a trial has finished."""
    durations = sorted(r.finished_at - r.created_at for r in trials
                       if r.finished and r.finished_at and r.created_at and r.finished_at >= r.created_at)
    if not durations:
        return None
    median = durations[len(durations) // 2]
    started = [r.created_at for r in trials if not r.finished and r.created_at]
    rest = max((median - (now - t) for t in started), default=0.0)
    queued = max(0, left - len(started))
    return round(max(0.0, rest) + math.ceil(queued / max(1, parallelism)) * median, 1)


def _curve(r: TrialRecord, progress: dict[str, Any] | None) -> list[float | None]:
    """A trial's objective per step: its record's, or while it runs the latest progress.json's."""
    curve = r.curve or curve_of(progress)
    return [finite(v) for v in curve] if isinstance(curve, list) else []


def trial_json(r: TrialRecord, progress: dict[str, Any] | None) -> dict[str, Any]:
    """One trial as the page shows it: state, objective, params, timing, its curve (the record's, or the latest
    progress.json's) and where a rule cut it."""
    startup = r.metrics.get("startup") if isinstance(r.metrics.get("startup"), dict) else None
    duration = (r.finished_at - r.created_at) if r.finished_at and r.created_at else None
    return {"tid": r.tid, "state": str(r.state), "objective": finite(r.objective), "params": flat_params(r.params),
            "origin": str(r.origin), "reason": r.reason, "created_at": r.created_at, "finished_at": r.finished_at,
            "duration": round(duration, 2) if duration is not None else None, "curve": _curve(r, progress),
            "cut_epoch": cut_epoch(r), "epoch": finite((progress or {}).get("epoch")),
            "unreadable": (progress or {}).get("unreadable"),
            "startup": {k: finite(v) for k, v in startup.items()} if startup else None}


def failures(trials: list[TrialRecord]) -> list[dict[str, Any]]:
    """Failed trials grouped by reason (its first line, numbers and ids blanked so that alike reasons group)."""
    groups: dict[str, list[int]] = {}
    for r in trials:
        if r.state is TrialState.FAILED:
            key = re.sub(r"\d+", "N", (r.reason or "no reason recorded").splitlines()[0])[:200]
            groups.setdefault(key, []).append(r.tid)
    return [{"reason": k, "count": len(v), "tids": v} for k, v in sorted(groups.items(), key=lambda kv: -len(kv[1]))]


class SearchView:
    """One search as the dashboard shows it; refresh() is cheap to call often (see the module's docstring)."""

    def __init__(self, store: Store, name: str, refresh_seconds: float = 2.0,
                 clock: Callable[[], float] = time.monotonic):
        self.store, self.name = store, name
        self.ledger = Ledger(store)
        self.refresh_seconds = refresh_seconds
        self.clock = clock
        self.decided: dict[int, TrialRecord] = {}
        self.open: dict[int, TrialRecord] = {}
        self.progress: dict[int, dict[str, Any]] = {}
        self.search_doc: dict[str, Any] | None = None
        self.status_doc: dict[str, Any] = {}
        self.version = 0
        """Bumped whenever what the page shows changed: pages fetch again only then."""
        self.error: str | None = None
        self._refreshed: float | None = None
        self._lock = threading.Lock()
        self._doc: dict[str, Any] | None = None

    def model_file(self, tid: int) -> str:
        """The name trial tid saved its model under (its result says; model.keras for one that does not)."""
        rec = self.decided.get(tid) or self.open.get(tid)
        name = (rec.metrics or {}).get("model_file") if rec is not None else None
        return name if isinstance(name, str) and not model_file_problem(name) else MODEL_FILE

    def refresh(self, force: bool = False) -> None:
        with self._lock:
            now = self.clock()
            if not force and self._refreshed is not None and now - self._refreshed < self.refresh_seconds:
                return
            self._refreshed = now
            try:
                changed = self._read()
                self.error = None
            except (TemporaryError, RecordError, OSError) as e:
                # The store is down or a record half-written: show what was read before, and say so.
                self.error, changed = f"reading {self.store.uri} failed: {e}", True
                log.warning("dashboard: %s", self.error)
            if changed:
                self.version += 1
                self._doc = None

    def _read(self) -> bool:
        if self.search_doc is None:
            doc = get_json(self.store, "search.json")
            self.search_doc = doc if isinstance(doc, dict) else {}
        if not self.decided and not self.open:
            records = self.ledger.load()  # the checkpoint, then the rest
        else:
            # An open trial's proposal never changes: only its result and outcome are read again.
            records = {t: self.ledger.read_end(r) for t, r in sorted(self.open.items())}
            records.update(self.ledger.read_since([], max([*self.decided, *self.open])))
        before = (len(self.decided), {t: (r.state, r.objective) for t, r in self.open.items()})
        for tid, r in records.items():
            if r.finished:
                self.decided[tid] = r
                self.open.pop(tid, None)
                self.progress.pop(tid, None)
            else:
                self.open[tid] = r
        changed = before != (len(self.decided), {t: (r.state, r.objective) for t, r in self.open.items()})
        for tid in self.open:
            try:
                progress = get_json(self.store, trial_key(tid, "progress.json"))
            except RecordError as e:  # that trial's own writing: it shows as unreadable, the rest as they are
                progress = {"unreadable": str(e)[:300]}
            if isinstance(progress, dict) and progress != self.progress.get(tid):
                self.progress[tid] = progress
                changed = True
        status = get_json(self.store, "status.json")
        if isinstance(status, dict) and status.get("updated_at") != self.status_doc.get("updated_at"):
            self.status_doc, changed = status, True
        live_states(self.open, self.status_doc, lambda tid: tid in self.progress)
        return changed

    def document(self) -> dict[str, Any]:
        """Everything the page draws for this search (built once per version)."""
        with self._lock:
            if self._doc is None:
                self._doc = self._build()
            return self._doc

    def summary(self) -> dict[str, Any]:
        doc = self.document()
        return {k: doc[k] for k in ("name", "state", "budget", "best", "counts", "eta_seconds", "error", "version")}

    def _build(self) -> dict[str, Any]:
        trials = sorted([*self.decided.values(), *self.open.values()], key=lambda r: r.tid)
        settings = (self.search_doc or {}).get("settings") or {}
        search = settings.get("search") or {} if isinstance(settings, dict) else {}
        stopping = settings.get("earlyStopping") or {} if isinstance(settings, dict) else {}
        status = self.status_doc
        waiting = status.get("waiting") or {}
        for tid, why in waiting.items() if isinstance(waiting, dict) else ():
            r = self.open.get(int(tid)) if str(tid).isdigit() else None
            if r is not None and r.state is TrialState.PENDING:
                r.reason = str(why)
        counts: dict[str, int] = {}
        for r in trials:
            counts[str(r.state)] = counts.get(str(r.state), 0) + 1
        total = status.get("budget") if isinstance(status.get("budget"), int) else search.get("maxTrials")
        finished = sum(1 for r in trials if r.finished and str(r.origin) != "import")
        left = max(0, int(total) - finished) if isinstance(total, int) else None
        best = best_of(trials)
        param_kinds = kinds(trials)
        parallelism = search["parallelism"] if isinstance(search.get("parallelism"), int) else 1
        return {
            "name": self.name, "store": self.store.uri, "version": self.version, "error": self.error,
            "state": status.get("state") or ("running" if self.open else ("empty" if not trials else "not started")),
            "reason": status.get("reason"),
            "budget": {"total": total, "finished": finished, "left": left, "parallelism": parallelism},
            "stopping_rule": stopping.get("rule") if isinstance(stopping, dict) else None,
            "counts": counts,
            "best": {"tid": best.tid, "objective": finite(best.objective),
                     "params": flat_params(best.params)} if best else None,
            "eta_seconds": eta_seconds(trials, left, parallelism, time.time()) if left else (0 if left == 0 else None),
            "params": [{"name": n, "kind": k} for n, k in param_kinds.items()],
            "importance": importance(trials, param_kinds),
            "failures": failures(trials),
            "trials": [trial_json(r, self.progress.get(r.tid)) for r in trials],
        }
