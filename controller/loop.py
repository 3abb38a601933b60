"""The search loop: rebuild state, reconcile with the launcher, propose, launch, collect, repeat.

Crash safety comes from the order of writes, not from the loop's memory: a proposal is written
(create-only) before its trial is launched, a trial's end is decided once (result.json, or the
controller's outcome.json) and the launcher can tell a running trial from one that never started.
Killed at any point and restarted, the loop finds every trial in one of those states and carries on:
no trial is lost, none runs twice, and the budget counts each exactly once.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol

from controller.config import Settings
from controller.errors import ConfigError, TemporaryError
from controller.htmlreport import render
from controller.launcher import Launcher, TrialExit
from controller.ledger import (SCHEMA_VERSION, Ledger, TrialRecord, best_of, best_record, curve_of, proposal_record,
                               trial_key, trial_prefix)
from controller.metrics import Metrics
from controller.space import Space
from controller.stopping import best_so_far, decide
from controller.store import Store, create_json, get_json, put_json
from controller.suggest import Observation, suggest

log = logging.getLogger(__name__)

SEARCH_ORIGINS = ("random", "tpe", "unknown")


@dataclass
class SearchStatus:
    state: str
    """running | succeeded | goal_reached | failed"""
    reason: str | None
    counts: dict[str, int]
    budget: int
    finished: int
    best: dict[str, Any] | None = None
    waiting: dict[int, str] = field(default_factory=dict)
    """Launched trials the platform has not started yet, with its reason."""
    updated_at: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "state": self.state, "reason": self.reason, "counts": self.counts,
                "budget": self.budget, "finished": self.finished, "budget_left": max(0, self.budget - self.finished),
                "best": self.best, "waiting": {str(t): why for t, why in sorted(self.waiting.items())},
                "updated_at": self.updated_at}


class Notifier(Protocol):
    """Where a person watching the search sees it happen (Kubernetes Events and a status ConfigMap)."""

    def event(self, reason: str, message: str, warning: bool = False) -> None: ...

    def status(self, status_doc: dict[str, Any]) -> None: ...


class NullNotifier:
    def event(self, reason: str, message: str, warning: bool = False) -> None:
        pass

    def status(self, status_doc: dict[str, Any]) -> None:
        pass


def open_search(store: Store, settings: Settings, space: Space) -> dict[str, Any]:
    """Write search.json once; on resume refuse another space or seed (the history would not fit)."""
    record = {"schema_version": SCHEMA_VERSION, "name": settings.search.name, "created_at": time.time(),
              "seed": settings.search.seed, "space": space.spec, "settings": settings.to_json()}
    if create_json(store, "search.json", record):
        return record
    existing = get_json(store, "search.json")
    old_space = Space.from_spec(existing["space"], "search.json space")
    where = old_space.diff(space)
    if where:
        raise ConfigError(
            f"search {settings.search.name!r} in {store.uri} was started with another search space (they differ "
            f"at {where}); resume it with its own space, or start a new search with another search.name / --search"
        )
    if existing.get("seed") != settings.search.seed:
        raise ConfigError(
            f"search.seed: {settings.search.seed} differs from the seed {existing.get('seed')} this search was "
            "started with; keep it to resume, or start a new search with another --search name"
        )
    return existing


class SearchLoop:
    def __init__(self, settings: Settings, store: Store, launcher: Launcher, *, trial_env: Mapping[str, str] | None = None,
                 on_change: Callable[["SearchLoop"], None] | None = None, wait_seconds: float = 5.0,
                 notifier: Notifier | None = None, metrics: Metrics | None = None):
        self.settings = settings
        self.space = settings.space()
        self.store = store
        self.ledger = Ledger(store)
        self.launcher = launcher
        self.trial_env = dict(trial_env or {})
        self.on_change = on_change or (lambda _loop: None)
        self.notifier = notifier or NullNotifier()
        self.metrics = metrics
        self.wait_seconds = wait_seconds
        self.records: dict[int, TrialRecord] = {}
        self.stop_reason: tuple[str, str] | None = None
        self._decided_since_checkpoint = 0
        self._suggest_cache: dict = {}
        self._next_stop_check = 0.0
        self._next_report = 0.0
        self.waiting: dict[int, str] = {}

    # -- views ---------------------------------------------------------------------------------------
    @property
    def next_tid(self) -> int:
        return max(self.records, default=-1) + 1

    def finished_count(self) -> int:
        return sum(1 for r in self.records.values() if r.finished and r.origin in SEARCH_ORIGINS)

    def failed_count(self) -> int:
        return sum(1 for r in self.records.values() if r.state == "failed" and r.origin in SEARCH_ORIGINS)

    def open_count(self) -> int:
        return sum(1 for r in self.records.values() if not r.finished)

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in ("pending", "running", "ok", "stopped", "failed")}
        for r in self.records.values():
            out[r.state] = out.get(r.state, 0) + 1
        return out

    def best(self) -> TrialRecord | None:
        return best_of(self.records.values())

    def status(self) -> SearchStatus:
        state, reason = self.stop_reason or ("running", None)
        if state == "running" and self.finished_count() >= self.settings.search.max_trials and not self.open_count():
            state, reason = "succeeded", f"{self.finished_count()} trials finished"
            if self.finished_count() and self.failed_count() == self.finished_count():
                last = max((r for r in self.records.values() if r.state == "failed"), key=lambda r: r.tid)
                state, reason = "failed", (f"every trial failed ({self.finished_count()}); "
                                           f"last: trial {last.tid}: {last.reason}")
        best = self.best()
        waiting = {t: why for t, why in self.waiting.items() if t in self.records and not self.records[t].finished}
        return SearchStatus(state, reason, self.counts(), self.settings.search.max_trials, self.finished_count(),
                            best_record(best) if best else None, waiting=waiting)

    # -- the loop ------------------------------------------------------------------------------------
    def run(self) -> SearchStatus:
        self._retrying("opening the search", lambda: open_search(self.store, self.settings, self.space))
        self.records = self._retrying("reading the trial records", self.ledger.load)
        log.info("search %s: %d trials on record (%d finished in budget, %d open)", self.settings.search.name,
                 len(self.records), self.finished_count(), self.open_count())
        self._reconcile([t for t, r in self.records.items() if not r.finished])
        self._check_stop()
        backoff = 1.0
        while True:
            try:
                if self.stop_reason is None:
                    self._fill()
                running = self.launcher.running()
                lost = [t for t, r in self.records.items() if not r.finished and t not in running]
                if lost and self.stop_reason is None:
                    self._reconcile(lost)
                if not self.launcher.running():
                    break
                wait = self.wait_seconds
                if self.settings.early_stopping.rule != "none":
                    wait = min(wait, self.settings.early_stopping.check_seconds)
                ended = self.launcher.wait(wait)
                if not ended:
                    self._refresh_waiting()
                decided = [(e, *self._collect(e)) for e in ended]
                self._check_stop()
                if decided and self.stop_reason is None:
                    self._fill()  # the next trials start before the bookkeeping below
                for e, rec, previous_best in decided:
                    self._publish(e, rec, previous_best)
                self._early_stop()
                backoff = 1.0
            except TemporaryError as e:
                if self.metrics:
                    self.metrics.error()
                # Every step is idempotent (create-only records, named Jobs), so retrying is safe.
                log.warning("temporary failure: %s; retrying in %.0f s", e, backoff)
                time.sleep(backoff)
                backoff = min(60.0, backoff * 2)
        self.ledger.write_checkpoint(self.records.values(), self.next_tid)
        self._write_report()
        status = self.status()
        put_json(self.store, "status.json", status.to_json())
        self.notifier.status(status.to_json())
        self.notifier.event("SearchFailed" if status.state == "failed" else "SearchFinished",
                            f"search {self.settings.search.name}: {status.state} ({status.reason})",
                            warning=status.state == "failed")
        log.info("search %s: %s (%s)", self.settings.search.name, status.state, status.reason)
        return status

    def _retrying(self, what: str, fn: Callable[[], Any]) -> Any:
        """Start-up steps: a store or API hiccup there is waited out, not a crash."""
        backoff = 1.0
        while True:
            try:
                return fn()
            except TemporaryError as e:
                if self.metrics:
                    self.metrics.error()
                log.warning("temporary failure %s: %s; retrying in %.0f s", what, e, backoff)
                time.sleep(backoff)
                backoff = min(60.0, backoff * 2)

    def _reconcile(self, open_tids: list[int]) -> None:
        """Adopt what still runs (or ended unreported); launch what never started."""
        alive = self.launcher.adopt(open_tids)
        for tid in open_tids:
            if tid in alive:
                self.records[tid].state = "running"
            else:
                log.info("trial %d: proposed but not running; launching it", tid)
                self._launch(tid)

    def _observations(self) -> list[Observation]:
        return [Observation(r.tid, r.vals, r.loss) for r in self.records.values() if r.vals]

    def _fill(self) -> None:
        s = self.settings.search
        free = s.parallelism - len(self.launcher.running())
        left = s.max_trials - self.finished_count() - sum(
            1 for r in self.records.values() if not r.finished and r.origin in SEARCH_ORIGINS)
        n = min(free, left)
        if n <= 0:
            return
        t0 = time.perf_counter()
        proposals = suggest(self.space, self._observations(), list(range(self.next_tid, self.next_tid + n)), s.seed,
                            self.settings.tpe, self._suggest_cache)
        seconds = time.perf_counter() - t0
        log.info("proposed %d trial(s) in %.3f s", n, seconds)
        if self.metrics:
            self.metrics.proposed(seconds)
        for p in proposals:
            record = proposal_record(p.tid, p.params, p.vals, p.seed, p.method)
            if not self.ledger.write_proposal(record):
                # Another writer took this id: re-read the state rather than guess.
                log.warning("trial %d: a proposal already exists; reloading the ledger", p.tid)
                self.records = self.ledger.load()
                return
            self.records[p.tid] = TrialRecord(p.tid, p.params, p.vals, p.seed, p.method, record["created_at"])
            self._launch(p.tid)
            self.notifier.event("TrialCreated", f"trial {p.tid} ({p.method}): {_short(p.params)}")
        self._report_metrics()
        self.on_change(self)

    def _launch(self, tid: int) -> None:
        uri = self.store.child(trial_prefix(tid)).uri
        t0 = time.perf_counter()
        self.launcher.launch(tid, self.settings.trial.argv(uri), self.trial_env)
        if self.metrics:
            self.metrics.launched(time.perf_counter() - t0)
        self.records[tid].state = "running"

    def _collect(self, ended: TrialExit) -> tuple[TrialRecord, TrialRecord | None]:
        """Decide how the trial ended (its result, or a failure with the reason) and record it."""
        tid = ended.tid
        known = self.records.get(tid)
        rec = self.ledger.read_end(known) if known and known.vals else (self.ledger.read_trial(tid) or known)
        if not rec.finished:
            why = rec.reason or "it wrote no result.json"
            code = "unknown exit status" if ended.exit_code is None else f"exit code {ended.exit_code}"
            reason = f"{why} ({code}{'; ' + ended.reason if ended.reason else ''})"
            last_line = ended.log_tail.strip().splitlines()[-1:] if ended.log_tail.strip() else []
            if last_line:
                reason += f"; last output: {last_line[0][:200]}"
            if not self.ledger.write_outcome(tid, "failed", reason, exit_code=ended.exit_code, log_tail=ended.log_tail):
                log.info("trial %d: outcome already recorded by an earlier controller", tid)
            rec = self.ledger.read_trial(tid) or rec
        elif rec.state != "failed" and ended.exit_code not in (0, None):
            log.warning("trial %d: wrote a valid result but exited with %s", tid, ended.exit_code)
        previous_best = self.best()
        self.records[tid] = rec
        return rec, previous_best

    def _publish(self, ended: TrialExit, rec: TrialRecord, previous_best: TrialRecord | None) -> None:
        """Logs, best.json, Events, status; then the launcher may forget the trial."""
        tid = rec.tid
        if ended.log is not None:
            self.store.put(trial_key(tid, "trial.log"), ended.log)
        if rec.state == "failed":
            log.warning("trial %d: failed: %s", tid, rec.reason)
            self.notifier.event("TrialFailed", f"trial {tid} failed: {rec.reason}", warning=True)
        else:
            log.info("trial %d: %s, objective %.4f", tid, rec.state, rec.objective)
            self.notifier.event("TrialFinished", f"trial {tid} {rec.state}: objective {rec.objective:.4f}")
        best = self.best()
        if best is not None and best.tid == tid and (previous_best is None or best.tid != previous_best.tid):
            log.info("trial %d: new best objective %.4f", best.tid, best.objective)
            put_json(self.store, "best.json", best_record(best))
            self.notifier.event("NewBest", f"trial {best.tid}: new best objective {best.objective:.4f}")
        self._decided_since_checkpoint += 1
        if self._decided_since_checkpoint >= self.settings.controller.checkpoint_every:
            self.ledger.write_checkpoint(self.records.values(), self.next_tid)
            self._decided_since_checkpoint = 0
        status_doc = self.status().to_json()
        put_json(self.store, "status.json", status_doc)
        self.notifier.status(status_doc)
        self.launcher.release(tid)
        self._report_metrics()
        if time.monotonic() >= self._next_report:
            self._write_report()
        self.on_change(self)

    def _refresh_waiting(self) -> None:
        """A quiet spell: say which launched trials wait for the platform, and why (status.json, an Event)."""
        waiting = self.launcher.waiting()
        if waiting == self.waiting:
            return
        for tid in sorted(set(waiting) - set(self.waiting)):
            log.info("trial %d: %s", tid, waiting[tid])
            self.notifier.event("TrialWaiting", f"trial {tid}: {waiting[tid]}")
        self.waiting = waiting
        status_doc = self.status().to_json()
        put_json(self.store, "status.json", status_doc)
        self.notifier.status(status_doc)

    def _write_report(self) -> None:
        """report/ in the store: derived, so a failure to draw it is logged, never fatal."""
        self._next_report = time.monotonic() + self.settings.controller.report_seconds
        try:
            for name, data in render(self.records.values(), self.settings.search.name).items():
                self.store.put(f"report/{name}", data)
        except (ValueError, RuntimeError, OSError) as e:
            log.warning("could not draw report/: %s", e)

    def _report_metrics(self) -> None:
        if self.metrics:
            best = self.best()
            self.metrics.update(self.counts(), len(self.launcher.running()), best.objective if best else None,
                                max(0, self.settings.search.max_trials - self.finished_count()))

    def _early_stop(self) -> None:
        """Read running trials' progress and stop the ones the rule gives up on. The decision is recorded
        (outcome.json, state stopped, best so far) before the trial is told, so it survives a crash."""
        rules = self.settings.early_stopping
        if rules.rule == "none" or self.stop_reason is not None or time.monotonic() < self._next_stop_check:
            return
        self._next_stop_check = time.monotonic() + rules.check_seconds
        running = sorted(t for t in self.launcher.running() if t in self.records and not self.records[t].finished)
        curves = {t: curve_of(get_json(self.store, trial_key(t, "progress.json"))) for t in running}
        ended = [r.curve for r in self.records.values() if r.finished and r.curve]
        for tid, curve in curves.items():
            reason = decide(rules, curve, ended, [c for t, c in curves.items() if t != tid])
            if reason is None:
                continue
            best = float(best_so_far(curve)[-1])
            self.ledger.write_outcome(tid, "stopped", f"early-stopped: {reason}", objective=best, curve=curve)
            rec = self.records[tid]
            rec.state, rec.objective, rec.reason, rec.curve = "stopped", best, f"early-stopped: {reason}", curve
            log.info("trial %d: early-stopped at epoch %d (%s)", tid, len(curve), reason)
            self.notifier.event("TrialEarlyStopped", f"trial {tid} stopped at epoch {len(curve)}: {reason}")
            self.ledger.write_stop_request(tid, f"early-stopped: {reason}")
            self.launcher.cancel(tid)

    def _check_stop(self) -> None:
        if self.stop_reason is not None:
            return
        s = self.settings.search
        failed = self.failed_count()
        best = self.best()
        if failed >= s.max_failed_trials:
            last = max((r for r in self.records.values() if r.state == "failed"), key=lambda r: r.tid)
            self.stop_reason = ("failed", f"{failed} trials failed (search.maxFailedTrials={s.max_failed_trials}); "
                                          f"last: trial {last.tid}: {last.reason}")
        elif s.goal is not None and best is not None and best.objective >= s.goal:
            self.stop_reason = ("goal_reached", f"trial {best.tid} reached {best.objective:.4f} >= goal {s.goal}")
        if self.stop_reason is not None:
            log.warning("search %s: stopping: %s", s.name, self.stop_reason[1])
            for tid in sorted(self.launcher.running()):
                self.ledger.write_stop_request(tid, f"search {self.stop_reason[0]}")
                self.launcher.cancel(tid)


def _short(params: Mapping[str, Any], n: int = 6) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in list(params.items())[:n])
