"""The search loop: rebuild state, reconcile with the launcher, propose, launch, collect, repeat.

Crash safety comes from the order of writes, not from the loop's memory: a proposal is written
(create-only) before its trial is launched, a trial's end is decided once (result.json, or the
controller's outcome.json) and the launcher can tell a running trial from one that never started.
Killed at any point and restarted, the loop finds every trial in one of those states and carries on:
no trial is lost, none runs twice, and the budget counts each exactly once.

The loop orchestrates only: the Suggester proposes, the Ledger records (and alone decides what a trial's
documents mean), the Launcher runs trials, the Publisher tells the world.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from controller.backoff import Backoff
from controller.errors import ConfigError, TemporaryError
from controller.launch.protocol import Launcher, TrialExit, TrialLaunch
from controller.ledger.attempts import interruptions, record_attempt
from controller.ledger.layout import trial_prefix
from controller.ledger.trials import Ledger, TrialRecord, best_of, best_record, proposal_record
from controller.report.publish import Publisher, SearchStatus
from controller.search.space import Space
from controller.search.stopping import decide
from controller.search.suggest import Observation, Suggester
from controller.settings.config import Settings
from controller.store.base import Store, create_json, get_json
from controller.trial.checkpoint import pointer_step
from controller.trial.contract import (
    ATTEMPT_ENV,
    RESUME_STEP_ENV,
    SCHEMA_VERSION,
    SEARCH_ORIGINS,
    SearchState,
    TrialState,
)

log = logging.getLogger(__name__)


def open_search(store: Store, settings: Settings, space: Space) -> dict[str, Any]:
    """Write search.json once; on resume refuse another space or seed (the history would not fit)."""
    record = {"schema_version": SCHEMA_VERSION, "name": settings.search.name, "created_at": time.time(),
              "seed": settings.search.seed, "space": space.spec, "settings": settings.to_json()}
    if create_json(store, "search.json", record):
        return record
    existing = get_json(store, "search.json")
    if not isinstance(existing, dict):
        raise ConfigError(f"search {settings.search.name!r} in {store.uri}: search.json is not a JSON object; "
                          "restore it, or start a new search with another search.name / --search")
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
    """The search loop: rebuild the state from the store, reconcile with the launcher, propose, launch, collect and
    stop trials until the budget is spent."""

    def __init__(self, settings: Settings, store: Store, launcher: Launcher, *, publisher: Publisher | None = None,
                 wait_seconds: float = 5.0, backoff: Backoff | None = None):
        self.settings = settings
        self.space = settings.space()
        self.store = store
        self.ledger = Ledger(store)
        self.launcher = launcher
        self.publisher = publisher or Publisher(store, settings.search.name,
                                                report_seconds=settings.controller.report_seconds)
        self.suggester = Suggester(self.space, settings.search.seed, settings.tpe)
        self.backoff = backoff or Backoff(on_failure=self.publisher.error)
        self.trial_env = settings.trial_env()
        self.wait_seconds = wait_seconds
        self.records: dict[int, TrialRecord] = {}
        self.stop_reason: tuple[SearchState, str] | None = None
        self._asked_to_stop: set[int] = set()
        """Trials this search's end asked to stop: one that then ends without a result was stopped, not failed."""
        self.waiting: dict[int, str] = {}
        self.interruptions: dict[int, int] = {}
        """Trials interrupted from outside, and how often (each one resumed from its checkpoint)."""
        self._decided_since_checkpoint = 0
        self._next_stop_check = 0.0
        self.halted = False
        """Set by halt(): run() returns at its next step without ending the search."""

    # -- views ---------------------------------------------------------------------------------------
    @property
    def next_tid(self) -> int:
        return max(self.records, default=-1) + 1

    def _ours(self) -> list[TrialRecord]:
        """The search's own trials (imported ones do not count toward its budget)."""
        return [r for r in self.records.values() if r.origin in SEARCH_ORIGINS]

    def finished_count(self) -> int:
        return sum(1 for r in self._ours() if r.finished)

    def failed_count(self) -> int:
        return sum(1 for r in self._ours() if r.state is TrialState.FAILED)

    def open_count(self) -> int:
        return sum(1 for r in self.records.values() if not r.finished)

    def counts(self) -> dict[str, int]:
        out = {s.value: 0 for s in TrialState}
        for r in self.records.values():
            out[r.state] += 1
        return out

    def best(self) -> TrialRecord | None:
        return best_of(self.records.values())

    def _last_failure(self) -> str:
        last = max((r for r in self.records.values() if r.state is TrialState.FAILED), key=lambda r: r.tid)
        return f"last: trial {last.tid}: {last.reason}"

    def status(self) -> SearchStatus:
        state, reason = self.stop_reason or (SearchState.RUNNING, None)
        done = self.finished_count()
        if state is SearchState.RUNNING and done >= self.settings.search.max_trials and not self.open_count():
            state, reason = SearchState.SUCCEEDED, f"{done} trials finished"
            if done and self.failed_count() == done:
                state, reason = SearchState.FAILED, f"every trial failed ({done}); {self._last_failure()}"
        best = self.best()
        waiting = {t: why for t, why in self.waiting.items() if t in self.records and not self.records[t].finished}
        return SearchStatus(state, reason, self.counts(), self.settings.search.max_trials, done,
                            best_record(best) if best else None, waiting=waiting, interruptions=self.interruptions)

    # -- the loop ------------------------------------------------------------------------------------
    def halt(self) -> None:
        """Stop orchestrating (the operator: the Search was deleted, or its spec changed): run() returns at its
        next step; running trials go on, and a later loop on the same store adopts them."""
        self.halted = True

    def run(self) -> SearchStatus:
        self._start()
        while not self.halted:
            try:
                if not self._step():
                    break
                self.backoff.reset()
            except TemporaryError as e:
                # Every step is idempotent (create-only records, named Jobs), so retrying is safe.
                self.backoff.failed("in the search loop", e)
        if self.halted:
            return self.status()
        return self.backoff.retrying("recording the search's end", self._finish)

    def _finish(self) -> SearchStatus:
        self.ledger.write_checkpoint(self.records.values(), self.next_tid)
        status = self.status()
        self.publisher.finished(status, self.records.values())
        return status

    def _start(self) -> None:
        self.backoff.retrying("opening the search", lambda: open_search(self.store, self.settings, self.space))
        self.records = self.backoff.retrying("reading the trial records", self.ledger.load)
        if self.launcher.relaunches:
            self.interruptions = self.backoff.retrying("reading the trials' attempts",
                                                       lambda: interruptions(self.store.list("trials/")))
        log.info("search %s: %d trials on record (%d finished in budget, %d open)", self.settings.search.name,
                 len(self.records), self.finished_count(), self.open_count())
        self._reconcile([t for t, r in self.records.items() if not r.finished])
        self._check_stop()
        # What a restarted controller found is shown at once, not at the next trial's end.
        self.backoff.retrying("publishing the status", lambda: self.publisher.status(self.status()))

    def _step(self) -> bool:
        """Fill free slots, heal lost trials, wait for ends and record them; False once nothing runs."""
        if self.stop_reason is None:
            self._fill()
        running = self.launcher.running()
        lost = [t for t, r in self.records.items() if not r.finished and t not in running]
        if lost and self.stop_reason is None:
            self._reconcile(lost)
        if not self.launcher.running():
            return False
        ended = self.launcher.wait(self._wait_seconds())
        if not ended:
            self._refresh_waiting()
        decided = [d for d in (self._collect(e) for e in ended) if d is not None]
        self._check_stop()
        if decided and self.stop_reason is None:
            self._fill()  # the next trials start before the bookkeeping below
        for e, rec, previous_best in decided:
            self._record_end(e, rec, previous_best)
        self._early_stop()
        return True

    def _wait_seconds(self) -> float:
        if self.settings.early_stopping.rule != "none":
            return min(self.wait_seconds, self.settings.early_stopping.check_seconds)
        return self.wait_seconds

    def _reconcile(self, open_tids: list[int]) -> None:
        """Adopt what still runs (or ended unreported); launch what never started."""
        alive = self.launcher.adopt(open_tids)
        for tid in open_tids:
            if tid in alive:
                self.records[tid].state = TrialState.RUNNING
            else:
                log.info("trial %d: proposed but not running; launching it", tid)
                self._launch(tid)

    def _fill(self) -> None:
        s = self.settings.search
        free = s.parallelism - len(self.launcher.running())
        left = s.max_trials - self.finished_count() - sum(1 for r in self._ours() if not r.finished)
        n = min(free, left)
        if n <= 0:
            return
        t0 = time.perf_counter()
        observed = [Observation(r.tid, r.vals, r.loss) for r in self.records.values() if r.vals]
        proposals = self.suggester.propose(observed, list(range(self.next_tid, self.next_tid + n)))
        seconds = time.perf_counter() - t0
        log.info("proposed %d trial(s) in %.3f s", n, seconds)
        self.publisher.proposed(seconds)
        for p in proposals:
            record = proposal_record(p.tid, p.params, p.vals, p.seed, p.method,
                                     model_file=self.settings.trial.model_file)
            if not self.ledger.write_proposal(record):
                # Another writer took this id: re-read the state rather than guess.
                log.warning("trial %d: a proposal already exists; reloading the ledger", p.tid)
                self.records = self.ledger.load()
                return
            self.records[p.tid] = TrialRecord(p.tid, p.params, p.vals, p.seed, p.method, record["created_at"])
            self._launch(p.tid)
            self.publisher.event("TrialCreated", f"trial {p.tid} ({p.method}): {_short(p.params)}")
        self.publisher.progress(self.status())

    def _launch(self, tid: int, attempt: int = 1, resume_step: int | None = None) -> None:
        rec = self.records[tid]
        argv = self.settings.trial.argv(self.store.child(trial_prefix(tid)).uri)
        env = dict(self.trial_env)
        if attempt > 1:
            env[ATTEMPT_ENV] = str(attempt)
            if resume_step is not None:
                env[RESUME_STEP_ENV] = str(resume_step)
        t0 = time.perf_counter()
        self.launcher.launch(TrialLaunch(tid, argv, env, rec.params, attempt))
        self.publisher.launched(time.perf_counter() - t0)
        rec.state = TrialState.RUNNING

    def _collect(self, ended: TrialExit) -> tuple[TrialExit, TrialRecord, TrialRecord | None] | None:
        """Decide how the trial ended (its result, or a failure with the reason) and record it."""
        tid = ended.tid
        known = self.records.get(tid)
        rec = self.ledger.read_end(known) if known and known.vals else (self.ledger.read_trial(tid) or known)
        if rec is None:
            # Only a trial this search proposed can end in it: a stray one is let go, not guessed at.
            log.warning("trial %d: the launcher reported its end, but it has no proposal; ignoring it", tid)
            self.launcher.release(tid)
            return None
        if not rec.finished and self._resume(ended):
            return None
        if not rec.finished and tid in self._asked_to_stop and self.stop_reason is not None:
            why = ended.reason or f"exit code {ended.exit_code}"
            rec = self.ledger.record_stop(rec, f"search {self.stop_reason[0]}: asked to stop; ended without a "
                                               f"result ({why})", self.ledger.read_curve(tid))
        elif not rec.finished:
            failure = ended.reason
            if self.launcher.relaunches and ended.interrupted:
                failure = (f"interrupted {ended.attempt} times, the bound (search.maxAttempts="
                       f"{self.settings.search.max_attempts}); the last: {ended.reason or ended.exit_code}")
            rec = self.ledger.record_failure(rec, ended.exit_code, failure, ended.log_tail)
        elif rec.state is TrialState.STOPPED:
            rec = self.ledger.seal(rec)
            if "ignored the stop request" in (rec.reason or ""):
                log.warning("trial %d: %s", tid, rec.reason)
                self.publisher.event("TrialIgnoredStop", f"trial {tid}: {rec.reason}", warning=True)
        elif rec.state is not TrialState.FAILED and ended.exit_code not in (0, None):
            log.warning("trial %d: wrote a valid result but exited with %s", tid, ended.exit_code)
        previous_best = self.best()
        self.records[tid] = rec
        return ended, rec, previous_best

    def _resume(self, ended: TrialExit) -> bool:
        """A trial interrupted from outside (not asked to stop) with attempts left: the attempt is recorded, once,
        and the next one started, to resume after its last checkpoint (True). False: its end is decided as any."""
        tid, k = ended.tid, ended.attempt
        if not (self.launcher.relaunches and ended.interrupted) or tid in self._asked_to_stop:
            return False
        if k >= self.settings.search.max_attempts:
            return False
        step = pointer_step(self.store.child(trial_prefix(tid)))
        why = ended.reason or f"exit code {ended.exit_code}"
        if record_attempt(self.store, tid, k, ended.exit_code, why, step):
            self.interruptions[tid] = self.interruptions.get(tid, 0) + 1
            resumes = "from the beginning" if step is None else f"after step {step}"
            log.warning("trial %d: attempt %d interrupted (%s); attempt %d resumes %s", tid, k, why, k + 1, resumes)
            self.publisher.event("TrialInterrupted", f"trial {tid}: attempt {k} interrupted ({why}); attempt "
                                                     f"{k + 1} resumes {resumes}", warning=True)
            self.publisher.status(self.status())
        self._launch(tid, k + 1, step)
        return True

    def _record_end(self, ended: TrialExit, rec: TrialRecord, previous_best: TrialRecord | None) -> None:
        """Publish the trial's end (log, Events, best, status); then the launcher may forget it."""
        self.publisher.trial_ended(rec, ended.log)
        best = self.best()
        if best is not None and best.tid == rec.tid and (previous_best is None or best.tid != previous_best.tid):
            self.publisher.new_best(best)
        self._decided_since_checkpoint += 1
        if self._decided_since_checkpoint >= self.settings.controller.checkpoint_every:
            self.ledger.write_checkpoint(self.records.values(), self.next_tid)
            self._decided_since_checkpoint = 0
        self.publisher.status(self.status())
        self.launcher.release(rec.tid)
        self.publisher.report(self.records.values())

    def _refresh_waiting(self) -> None:
        """A quiet spell: say which launched trials wait for the platform, and why (status.json, an Event)."""
        waiting = self.launcher.waiting()
        if waiting == self.waiting:
            return
        for tid in sorted(set(waiting) - set(self.waiting)):
            log.info("trial %d: %s", tid, waiting[tid])
            self.publisher.event("TrialWaiting", f"trial {tid}: {waiting[tid]}")
        self.waiting = waiting
        self.publisher.status(self.status())

    def _early_stop(self) -> None:
        """Read running trials' progress and stop the ones the rule gives up on. The decision is recorded
        (outcome.json, state stopped, best so far) before the trial is told, so it survives a crash."""
        rules = self.settings.early_stopping
        if rules.rule == "none" or self.stop_reason is not None or time.monotonic() < self._next_stop_check:
            return
        self._next_stop_check = time.monotonic() + rules.check_seconds
        running = sorted(t for t in self.launcher.running() if t in self.records and not self.records[t].finished)
        curves = {t: self.ledger.read_curve(t) for t in running}
        ended = [r.curve for r in self.records.values() if r.finished and r.curve]
        for tid, curve in curves.items():
            reason = decide(rules, curve, ended, [c for t, c in curves.items() if t != tid])
            if reason is None:
                continue
            self.records[tid] = self.ledger.record_stop(self.records[tid], f"early-stopped: {reason}", curve)
            log.info("trial %d: early-stopped at epoch %d (%s)", tid, len(curve), reason)
            self.publisher.event("TrialEarlyStopped", f"trial {tid} stopped at epoch {len(curve)}: {reason}")
            self.ledger.write_stop_request(tid, f"early-stopped: {reason}")
            self.launcher.cancel(tid)

    def _check_stop(self) -> None:
        if self.stop_reason is not None:
            return
        s = self.settings.search
        failed = self.failed_count()
        best = self.best()
        if failed >= s.max_failed_trials:
            self.stop_reason = (SearchState.FAILED, f"{failed} trials failed (search.maxFailedTrials="
                                                    f"{s.max_failed_trials}); {self._last_failure()}")
        elif s.goal is not None and best is not None and best.objective is not None and best.objective >= s.goal:
            self.stop_reason = (SearchState.GOAL_REACHED,
                                f"trial {best.tid} reached {best.objective:.4f} >= goal {s.goal}")
        if self.stop_reason is not None:
            log.warning("search %s: stopping: %s", s.name, self.stop_reason[1])
            for tid in sorted(self.launcher.running()):
                self.ledger.write_stop_request(tid, f"search {self.stop_reason[0]}")
                self._asked_to_stop.add(tid)
                self.launcher.cancel(tid)


def _short(params: Mapping[str, Any], n: int = 6) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in list(params.items())[:n])
