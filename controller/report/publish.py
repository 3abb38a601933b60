"""Everything the search shows the outside world goes through one Publisher: status.json and best.json in
the store, Events and the status object on a cluster (a Notifier), Prometheus metrics, the report/ pages,
trial logs, and the progress line. The loop decides; the publisher only tells."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from controller.ledger.layout import trial_key
from controller.ledger.trials import TrialRecord, best_record
from controller.report.drawer import Drawer, InlineDrawer
from controller.report.metrics import Metrics
from controller.settings.config import Settings
from controller.store.base import Store, put_json
from controller.trial.contract import SCHEMA_VERSION, SearchState, TrialState

log = logging.getLogger(__name__)


@dataclass
class SearchStatus:
    """A search's state as the loop publishes it: counts, budget, best, and why launched trials wait."""
    state: SearchState
    reason: str | None
    counts: dict[str, int]
    budget: int
    finished: int
    best: dict[str, Any] | None = None
    waiting: dict[int, str] = field(default_factory=dict)
    """Launched trials the platform has not started yet, with its reason."""
    interruptions: dict[int, int] = field(default_factory=dict)
    """Trials interrupted from outside (preempted, evicted, killed), and how often: each resumed, none failed."""
    updated_at: float = field(default_factory=time.time)

    @property
    def budget_left(self) -> int:
        return max(0, self.budget - self.finished)

    @property
    def exit_code(self) -> int:
        """`run`'s exit code for this end: 0 when the search succeeded or reached its goal, else 3."""
        return 0 if self.state in (SearchState.SUCCEEDED, SearchState.GOAL_REACHED) else 3

    def to_json(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "state": self.state, "reason": self.reason, "counts": self.counts,
                "budget": self.budget, "finished": self.finished, "budget_left": self.budget_left,
                "best": self.best, "waiting": {str(t): why for t, why in sorted(self.waiting.items())},
                "interruptions": {str(t): n for t, n in sorted(self.interruptions.items())},
                "updated_at": self.updated_at}


class Notifier(Protocol):
    """Where a person watching the search sees it happen (Kubernetes Events and a status object)."""

    def event(self, reason: str, message: str, warning: bool = False, once: str | None = None) -> None:
        """once: this Event's name (a DNS label); recorded at most once under it, so that a restarted controller
        telling the same thing again (an ended search's end) adds nothing."""

    def status(self, status_doc: dict[str, Any]) -> None: ...


class NullNotifier:
    """A Notifier that tells no one (local mode)."""

    def event(self, reason: str, message: str, warning: bool = False, once: str | None = None) -> None:
        pass

    def status(self, status_doc: dict[str, Any]) -> None:
        pass


class Publisher:
    """The loop's one way out: status.json, best.json, Events, metrics, report/ and the progress line."""

    def __init__(self, store: Store, search: str, *, notifier: Notifier | None = None, metrics: Metrics | None = None,
                 report_seconds: float = 30.0, on_change: Callable[[SearchStatus], None] | None = None,
                 drawer: Drawer | None = None):
        """report_seconds: report/ is drawn at most this often while the search runs (inf: only at its end)."""
        self.store = store
        self.search = search
        self.notifier = notifier or NullNotifier()
        self.metrics = metrics
        self.report_seconds = report_seconds
        self.on_change = on_change
        self.drawer = drawer or InlineDrawer()
        self._next_report = 0.0

    def event(self, reason: str, message: str, warning: bool = False, once: str | None = None) -> None:
        self.notifier.event(reason, message, warning, once)

    def progress(self, status: SearchStatus) -> None:
        """Cheap and frequent: metrics and the progress line."""
        if self.metrics:
            best = status.best["objective"] if status.best else None
            self.metrics.update(status.counts, status.counts.get(TrialState.RUNNING, 0), best, status.budget_left)
        if self.on_change:
            self.on_change(status)

    def status(self, status: SearchStatus) -> None:
        """status.json and the status object, then what progress() does."""
        doc = status.to_json()
        put_json(self.store, "status.json", doc)
        self.notifier.status(doc)
        self.progress(status)

    def finished(self, status: SearchStatus, records: Iterable[TrialRecord]) -> None:
        self.report(records, force=True)
        self.status(status)
        failed = status.state is SearchState.FAILED
        # Named by the search and its count of finished trials: an operator restarted after the end tells it again
        # (status, report) and the Event stays one; a raised budget's later end is another.
        once = "end-" + hashlib.sha256(f"{self.search}/{status.finished}".encode()).hexdigest()[:16]
        self.event("SearchFailed" if failed else "SearchFinished",
                   f"search {self.search}: {status.state} ({status.reason})", warning=failed, once=once)
        log.info("search %s: %s (%s)", self.search, status.state, status.reason)

    def trial_ended(self, rec: TrialRecord, log_bytes: bytes | None) -> None:
        if log_bytes is not None:
            self.store.put(trial_key(rec.tid, "trial.log"), log_bytes)
        if rec.state is TrialState.FAILED:
            log.warning("trial %d: failed: %s", rec.tid, rec.reason)
            self.event("TrialFailed", f"trial {rec.tid} failed: {rec.reason}", warning=True)
        else:
            said = "no finite epoch" if rec.objective is None else f"objective {rec.objective:.4f}"
            log.info("trial %d: %s, %s", rec.tid, rec.state, said)
            self.event("TrialFinished", f"trial {rec.tid} {rec.state}: {said}")

    def new_best(self, best: TrialRecord) -> None:
        log.info("trial %d: new best objective %.4f", best.tid, best.objective)
        put_json(self.store, "best.json", best_record(best))
        self.event("NewBest", f"trial {best.tid}: new best objective {best.objective:.4f}")

    def report(self, records: Iterable[TrialRecord], force: bool = False) -> None:
        """report/ in the store, at most every report_seconds, and always at the end (force: drawn before the end is
        told, so that the bucket is whole once the SearchFinished Event exists)."""
        if not force and time.monotonic() < self._next_report:
            return
        self._next_report = time.monotonic() + self.report_seconds
        self.drawer.draw(self.store, self.search, records, wait=force)

    def proposed(self, seconds: float) -> None:
        if self.metrics:
            self.metrics.proposed(seconds)

    def launched(self, seconds: float) -> None:
        if self.metrics:
            self.metrics.launched(seconds)

    def error(self) -> None:
        if self.metrics:
            self.metrics.error()


def search_publisher(settings: Settings, store: Store, on_change: Callable[[SearchStatus], None] | None = None,
                     notifier: Notifier | None = None) -> Publisher:
    """The Publisher of one search run by `run` (local or on a cluster), its metrics served when a port is set."""
    metrics = None
    if settings.controller.metrics_port:
        metrics = Metrics(settings.search.name)
        metrics.serve(settings.controller.metrics_port)
    return Publisher(store, settings.search.name, notifier=notifier, metrics=metrics,
                     report_seconds=settings.controller.report_seconds, on_change=on_change)
