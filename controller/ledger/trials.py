"""Trial records ⇄ store, and the search state rebuilt from them (the keys: controller/ledger/layout.py).

Decided records never change, so the checkpoint is a cache that cannot go stale: a resume reads it,
then only the trials it does not cover. Without it (or if it is unreadable) the state is rebuilt by
listing every trial. Nothing here is ever unpickled.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, cast

from controller.errors import PermanentError, RecordError
from controller.ledger.layout import CHECKPOINT_KEY, trial_key, trial_prefix
from controller.ledger.legacy import objective_series
from controller.store.base import Store, create_json, get_json, put_json
from controller.trial.contract import (
    RESULT_SUMMARY,
    SCHEMA_VERSION,
    Origin,
    OutcomeDoc,
    ProposalDoc,
    ResultStatus,
    StopDoc,
    TrialState,
)
from controller.trial.schema import check_record

log = logging.getLogger(__name__)

# An imported trial whose result was never written (the import stopped half-way): it will never run, so
# it is counted as ended, not left pending; running the same import again writes its result.
IMPORT_INCOMPLETE = "import did not finish: run the same import again to complete this trial"


@dataclass
class TrialRecord:
    """One trial as the controller knows it, derived from its records: point, state, objective, curve, reason,
    timing."""
    tid: int
    params: dict[str, Any]
    vals: dict[str, Any]
    seed: int | None
    origin: str
    """'random' or 'tpe' (proposed by this search), or 'import' (warm start)."""
    created_at: float | None = None
    state: TrialState = TrialState.PENDING
    objective: float | None = None
    """Higher is better (validation fine accuracy of the best epoch for the trainer)."""
    reason: str | None = None
    finished_at: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    """A small summary of the result (test accuracy, best epoch, epochs, seconds, ...)."""
    import_key: str | None = None
    """For imported trials: a hash of the source, so a second import skips it."""
    curve: list[float | None] = field(default_factory=list)
    """Validation fine accuracy per epoch (what early stopping compares)."""

    def __post_init__(self) -> None:
        self.state = TrialState(self.state)  # a record built from plain JSON or by hand holds the enum too

    @property
    def finished(self) -> bool:
        return self.state.finished

    @property
    def loss(self) -> float | None:
        """What TPE minimises: -objective; inf for an ended trial with no objective (a failure, or a trial
        stopped before any finite epoch): a region to avoid; None while open."""
        if not self.finished:
            return None
        return math.inf if self.objective is None or self.state is TrialState.FAILED else -self.objective

    def proposal(self) -> ProposalDoc:
        """The proposal this record was built from (it never changes once written)."""
        doc: ProposalDoc = {"schema_version": SCHEMA_VERSION, "tid": self.tid, "params": self.params,
                            "vals": self.vals, "seed": self.seed, "origin": self.origin,
                            "created_at": self.created_at or 0.0}
        if self.import_key:
            doc["import_key"] = self.import_key
        return doc

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> TrialRecord:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def proposal_record(tid: int, params: Mapping[str, Any], vals: Mapping[str, Any], seed: int | None,
                    origin: str, *, import_key: str | None = None, import_source: str | None = None,
                    model_file: str | None = None) -> ProposalDoc:
    """The proposal.json of a trial: its point (params and hyperopt's vals), seed, origin and creation time."""
    doc: ProposalDoc = {"schema_version": SCHEMA_VERSION, "tid": tid, "params": dict(params), "vals": dict(vals),
                        "seed": seed, "origin": origin, "created_at": time.time()}
    if model_file is not None:
        doc["model_file"] = model_file
    if import_key is not None:
        doc["import_key"] = import_key
    if import_source is not None:
        doc["import_source"] = import_source
    return doc


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def curve_of(doc: Any) -> list[float | None]:
    """The per-step objective in a result or progress record: the contract's `objective` series (in records older
    than it, the series that played its part: controller/ledger/legacy.py)."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("history"), Mapping):
        return []
    series = objective_series(doc["history"]) or []
    return [v if _finite(v) else None for v in series] if isinstance(series, list) else []


def judge_result(raw: Any, tid: int) -> tuple[TrialState, float | None, str | None, dict[str, Any]]:
    """A trainer's result.json → (state, objective, reason, metrics). Anything unusable is a
    failure with the reason spelled out, never an exception: one bad trial must not stop a search."""
    failed = TrialState.FAILED
    if not isinstance(raw, Mapping):
        return failed, None, f"result.json is not a JSON object ({type(raw).__name__})", {}
    if raw.get("tid") != tid:
        return failed, None, f"result.json belongs to trial {raw.get('tid')!r}, not {tid}", {}
    statuses = [s.value for s in ResultStatus]
    if raw.get("status") not in statuses:
        return failed, None, f"result.json status {raw.get('status')!r} is not one of {sorted(statuses)}", {}
    status = ResultStatus(raw["status"])
    metrics = {k: raw[k] for k in RESULT_SUMMARY if k in raw}
    if status is ResultStatus.FAIL:
        return failed, None, str(raw.get("error") or "the trainer reported a failure"), metrics
    objective = raw.get("objective")
    if not _finite(objective):
        return failed, None, f"result.json objective is {objective!r}, not a finite number", metrics
    problem = check_record("result", raw)  # the rest of the contract's schema (docs/TRIAL_CONTRACT.md)
    if problem:
        return failed, None, f"result.json: {problem}", metrics
    return status.state, float(cast(float, objective)), None, metrics


class Ledger:
    """Reads and writes one search's records. Stateless but for the store it wraps."""

    def __init__(self, store: Store, read_workers: int = 16):
        self.store = store
        self.read_workers = read_workers

    # -- writes ------------------------------------------------------------------------------------
    def write_proposal(self, record: ProposalDoc) -> bool:
        """False if the trial already had a proposal (a restarted controller re-proposing)."""
        return create_json(self.store, trial_key(record["tid"], "proposal.json"), record)

    def write_result(self, tid: int, record: Mapping[str, Any]) -> bool:
        return create_json(self.store, trial_key(tid, "result.json"), record)

    def write_outcome(self, record: OutcomeDoc) -> bool:
        """False if the trial's end was already decided (by an earlier controller): that decision stands."""
        return create_json(self.store, trial_key(record["tid"], "outcome.json"), record)

    def record_failure(self, rec: TrialRecord, exit_code: int | None, platform_reason: str | None,
                       log_tail: str) -> TrialRecord:
        """A trial ended without a usable result: decide it failed, saying why (its own reason, how it exited,
        its last line of output), and return its record as the store now has it."""
        code = "unknown exit status" if exit_code is None else f"exit code {exit_code}"
        said = f"; {platform_reason}" if platform_reason else ""
        reason = f"{rec.reason or 'it wrote no result.json'} ({code}{said})"
        last_line = log_tail.strip().splitlines()[-1:]
        if last_line:
            reason += f"; last output: {last_line[0][:200]}"
        outcome: OutcomeDoc = {"schema_version": SCHEMA_VERSION, "tid": rec.tid, "state": TrialState.FAILED,
                               "reason": reason, "finished_at": time.time(), "exit_code": exit_code,
                               "log_tail": log_tail}
        if not self.write_outcome(outcome):
            log.info("trial %d: outcome already recorded by an earlier controller", rec.tid)
        return self.read_trial(rec.tid) or rec

    def record_stop(self, rec: TrialRecord, reason: str, curve: list[float | None]) -> TrialRecord:
        """The controller stops a running trial (early stopping): recorded as stopped with its best epoch so far
        before the trial is told, so that the decision survives a crash."""
        finite = [v for v in curve if _finite(v)]
        outcome: OutcomeDoc = {"schema_version": SCHEMA_VERSION, "tid": rec.tid, "state": TrialState.STOPPED,
                               "reason": reason, "finished_at": time.time(), "curve": curve}
        if finite:
            outcome["objective"] = float(max(cast(list[float], finite)))
        if not self.write_outcome(outcome):
            return self.read_trial(rec.tid) or rec
        return _derive(rec.tid, rec.proposal(), None, outcome)

    def seal(self, rec: TrialRecord) -> TrialRecord:
        """A stopped trial has ended: its outcome records whether its own result had arrived, so that a result.json
        created after its end (with its grant's URL, by someone else) is never taken for the trial's."""
        key = trial_key(rec.tid, "outcome.json")
        outcome, result = self._get(key), self._get(trial_key(rec.tid, "result.json"))
        if not isinstance(outcome, dict) or outcome.get("state") != TrialState.STOPPED or "sealed_at" in outcome:
            return rec
        sealed = {**outcome, "sealed_at": time.time(), "result_arrived": isinstance(result, Mapping)}
        if isinstance(result, Mapping) and result.get("status") == ResultStatus.OK:
            # Told to stop, it ran on to its end: the time it spent is flagged where users look (its reason).
            sealed["reason"] = f"{outcome.get('reason')} (it ignored the stop request and ran to its end)"
        put_json(self.store, key, sealed)
        return _derive(rec.tid, rec.proposal(), result, sealed)

    def read_curve(self, tid: int) -> list[float | None]:
        """A running trial's learning curve so far (progress.json); [] if there is none or it is unreadable."""
        try:
            doc = get_json(self.store, trial_key(tid, "progress.json"))
        except RecordError as e:
            log.warning("trial %d: %s; its progress is skipped this time", tid, e)
            return []
        problem = check_record("progress", doc) if doc is not None else None
        if problem:
            log.warning("trial %d: progress.json: %s; its progress is skipped this time", tid, problem)
            return []
        return curve_of(doc)

    def write_stop_request(self, tid: int, reason: str) -> None:
        """Written before the controller stops a trial, so that the trainer can tell this SIGTERM (report a
        'stopped' result) from a node drain or an eviction (exit without a result; the Job retries the pod)."""
        doc: StopDoc = {"schema_version": SCHEMA_VERSION, "tid": tid, "reason": reason, "requested_at": time.time()}
        create_json(self.store, trial_key(tid, "stop.json"), doc)

    def write_checkpoint(self, records: Iterable[TrialRecord], next_tid: int) -> None:
        put_json(self.store, CHECKPOINT_KEY, {
            "schema_version": SCHEMA_VERSION,
            "written_at": time.time(),
            "next_tid": next_tid,
            # An unfinished import can still be completed, so it is not a decided record yet.
            "trials": [r.to_json() for r in records if r.finished and r.reason != IMPORT_INCOMPLETE],
        })

    # -- reads -------------------------------------------------------------------------------------
    def read_end(self, known: TrialRecord) -> TrialRecord:
        """A trial's record once it has ended: its result and outcome read together; the proposal is
        the one already known (it never changes)."""
        proposal = known.proposal()
        with ThreadPoolExecutor(2) as pool:
            result, outcome = pool.map(self._get, (trial_key(known.tid, "result.json"),
                                                   trial_key(known.tid, "outcome.json")))
        return _derive(known.tid, proposal, result, outcome)

    def read_trial(self, tid: int,
                   names: Iterable[str] = ("proposal.json", "result.json", "outcome.json")) -> TrialRecord | None:
        """The trial's record from its keys, or None if it has no proposal. A corrupt proposal makes
        a failed record (the id stays taken); a corrupt result leaves the trial open until the
        controller decides it (outcome.json)."""
        docs = {name: self._get(trial_key(tid, name)) for name in names}
        return self._record(tid, docs)

    def _get(self, key: str) -> Any:
        try:
            return get_json(self.store, key)
        except RecordError as e:
            return e  # judged by _record: which key is corrupt decides what it means

    def _record(self, tid: int, docs: Mapping[str, Any]) -> TrialRecord | None:
        """The trial's record, or None if it has no proposal."""
        proposal = docs.get("proposal.json")
        if proposal is None:
            return None
        return _derive(tid, proposal, docs.get("result.json"), docs.get("outcome.json"))

    def load(self) -> dict[int, TrialRecord]:
        """Every trial's record: the checkpoint's decided trials, then the rest read directly."""
        cp = self._checkpoint()
        if cp is None:
            return self.load_full()
        known: dict[int, TrialRecord] = {r.tid: r for r in cp[0]}
        next_tid = cp[1]
        known.update(self.read_since([t for t in range(next_tid) if t not in known], next_tid - 1))
        return dict(sorted(known.items()))

    def read_since(self, open_tids: list[int], highest: int) -> dict[int, TrialRecord]:
        """The records of trials still open and of every trial newer than `highest`: what can have changed since
        a load() (decided records never change)."""
        newer = self._tids(self.store.list("trials/", start_after=trial_prefix(highest) + "/~"))
        return self._read_many(open_tids + sorted(newer))

    def load_full(self) -> dict[int, TrialRecord]:
        """Rebuild from the listing alone (no checkpoint): reads every trial's records."""
        keys = self.store.list("trials/")
        by_tid: dict[int, set[str]] = {}
        for key in keys:
            parts = key.split("/")
            if len(parts) == 3 and parts[1].isdigit():
                by_tid.setdefault(int(parts[1]), set()).add(parts[2])
        wanted: dict[int, list[str]] = {tid: [n for n in ("proposal.json", "outcome.json", "result.json") if n in names]
                  for tid, names in by_tid.items()}
        return dict(sorted(self._read_many(list(wanted), wanted).items()))

    @staticmethod
    def _tids(keys: Iterable[str]) -> set[int]:
        return {int(k.split("/")[1]) for k in keys if k.count("/") == 2 and k.split("/")[1].isdigit()}

    def _read_many(self, tids: list[int], names: Mapping[int, list[str]] | None = None) -> dict[int, TrialRecord]:
        def one(tid: int) -> tuple[int, TrialRecord | None]:
            if names is None:
                return tid, self.read_trial(tid)
            return tid, self.read_trial(tid, names[tid])

        out = {}
        with ThreadPoolExecutor(self.read_workers) as pool:
            for tid, rec in pool.map(one, tids):
                if rec is not None:
                    out[tid] = rec
        return out

    def _checkpoint(self) -> tuple[list[TrialRecord], int] | None:
        try:
            cp = get_json(self.store, CHECKPOINT_KEY)
            if cp is None:
                return None
            return [TrialRecord.from_json(r) for r in cp["trials"]], int(cp["next_tid"])
        except (PermanentError, KeyError, TypeError, ValueError) as e:
            # Derived data: a bad checkpoint costs a slower resume, never history.
            log.warning("ignoring unreadable %s (%s); rebuilding from the trial records", CHECKPOINT_KEY, e)
            return None


def best_of(records: Iterable[TrialRecord]) -> TrialRecord | None:
    """The finished trial with the highest objective (the lowest id on a tie), or None."""
    scored = [(r.objective, -r.tid, r) for r in records
              if r.state in (TrialState.OK, TrialState.STOPPED) and r.objective is not None]
    return max(scored, key=lambda t: t[:2])[2] if scored else None


def best_record(best: TrialRecord) -> dict[str, Any]:
    """best.json's content for the best trial."""
    return {"schema_version": SCHEMA_VERSION, "updated_at": time.time(), **best.to_json()}


def _derive(tid: int, proposal: Any, result: Any, outcome: Any) -> TrialRecord:
    """The one place a trial's record is derived from its documents; a RecordError stands for a corrupt one."""
    rec = _from_proposal(tid, proposal)
    if rec.finished:
        return rec  # a damaged proposal
    if isinstance(outcome, Mapping):
        _apply_outcome(rec, outcome, result)
    elif isinstance(result, RecordError):
        rec.reason = str(result)  # decided by the controller on collection (outcome.json); open until then
    elif result is not None:
        _apply_result(rec, result)
    elif rec.origin == Origin.IMPORT:
        rec.state, rec.reason = TrialState.FAILED, IMPORT_INCOMPLETE
    return rec


def _from_proposal(tid: int, proposal: Any) -> TrialRecord:
    """A damaged proposal keeps its trial id taken and the damage visible, as a failed trial: history is never
    dropped."""
    if isinstance(proposal, RecordError):
        log.error("trial %d: %s; counted as failed", tid, proposal)
        return _damaged(tid, f"corrupt proposal: {proposal}")
    try:
        return TrialRecord(tid=tid, params=proposal["params"], vals=proposal.get("vals", {}),
                           seed=proposal.get("seed"), origin=proposal.get("origin", Origin.TPE),
                           created_at=proposal.get("created_at"), import_key=proposal.get("import_key"))
    except (KeyError, TypeError, AttributeError) as e:
        log.error("trial %d: proposal.json lacks field %s; counted as failed", tid, e)
        return _damaged(tid, f"corrupt proposal: missing field {e}")


def _damaged(tid: int, reason: str) -> TrialRecord:
    return TrialRecord(tid=tid, params={}, vals={}, seed=None, origin=Origin.UNKNOWN, state=TrialState.FAILED,
                       reason=reason)


def _apply_outcome(rec: TrialRecord, outcome: Mapping[str, Any], result: Any) -> None:
    """The controller's decision (a failure, or an early stop) wins; a usable result still supplies the numbers."""
    try:
        rec.state = TrialState(outcome.get("state", TrialState.FAILED))
    except ValueError:
        rec.state = TrialState.FAILED
    if not rec.state.finished:
        rec.state = TrialState.FAILED  # an outcome is an end: a state that says otherwise is damage
    rec.reason = outcome.get("reason")
    rec.finished_at = outcome.get("finished_at")
    if _finite(outcome.get("objective")):
        rec.objective = float(outcome["objective"])
    rec.curve = list(outcome.get("curve") or [])
    if isinstance(result, Mapping) and rec.state is not TrialState.FAILED and outcome.get("result_arrived", True):
        state, objective, _, metrics = judge_result(result, rec.tid)
        if state is not TrialState.FAILED:
            rec.objective, rec.metrics, rec.curve = objective, metrics, curve_of(result) or rec.curve


def _apply_result(rec: TrialRecord, result: Any) -> None:
    state, objective, reason, metrics = judge_result(result, rec.tid)
    if state is TrialState.FAILED and not (isinstance(result, Mapping) and result.get("status") == ResultStatus.FAIL):
        rec.reason = reason  # an unusable result waits for the controller's outcome.json
        return
    rec.state, rec.objective, rec.reason, rec.metrics = state, objective, reason, metrics
    rec.finished_at = result.get("finished_at")
    rec.curve = curve_of(result)
