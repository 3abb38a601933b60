"""The trial side of the trial contract (docs/TRIAL_CONTRACT.md): what a trial program calls, whatever it trains.

    from controller import trial

    t = trial.start()                       # --trial URI from the command line; reads proposal.json
    model = build(**t.params)               # the point to train, as the search space decodes it
    for epoch in range(1, epochs + 1):
        score = train_one_epoch(model)
        t.report(epoch, objective=score, loss=loss)   # progress.json: what early stopping reads
        if t.should_stop():                 # stop.json written by the controller, or a SIGTERM
            break
    t.save_model(model_bytes)               # optional: model.keras (the contract's name, whatever the format)
    sys.exit(t.finish())                    # result.json, once; the exit code the controller expects

Higher is better: the objective is maximised. A trial's store is its grant's (presigned URLs, on a cluster) or the
URI with the environment's credentials (local mode); both are Stores, with the same once-only rules. Importing this
module imports no TensorFlow, Kubernetes client or boto3 (boto3 only when the trial's store is S3 without a grant).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import numbers
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from controller.backoff import Backoff
from controller.errors import ConfigError, TemporaryError
from controller.store.base import TrialStore, create_json, get_json, put_json
from controller.store.grant import GrantStore
from controller.store.uri import open_store
from controller.trial.checkpoint import Restored, commit, latest
from controller.trial.contract import (
    ATTEMPT_ENV,
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_RETRY,
    GRANT_ENV,
    MODEL_FILE,
    SCHEMA_VERSION,
    ResultStatus,
)
from controller.trial.finite import finite_json, finite_or_none
from controller.trial.schema import check_record

log = logging.getLogger(__name__)
T = TypeVar("T")



# A store outage at a trial's start or end must not cost the trial (its hours of training, at the end): the
# contract's one-off records are retried this long, with backoff, before the trial gives up (exit 1: a retry).
PATIENCE_SECONDS = 900.0


def patiently(what: str, fn: Callable[[], T]) -> T:
    """fn() retried on TemporaryError for PATIENCE_SECONDS (reading proposal.json, writing result.json)."""
    return Backoff(cap=30.0).retrying(what, fn, give_up_after=PATIENCE_SECONDS)


def open_trial(uri: str) -> tuple[TrialStore, Callable[[str], TrialStore] | None]:
    """The trial contract's entry: the trial's store (from its grant when it has one, else the URI with the
    environment's credentials) and, with a grant, the opener that reads its dataset."""
    raw = os.environ.get(GRANT_ENV)
    if not raw:
        return open_store(uri), None
    try:
        grant = json.loads(raw)
        store = GrantStore(str(grant["trial"]), grant["urls"])
        data = grant.get("data")
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{GRANT_ENV}: not a trial grant ({e})") from e

    def data_opener(parent: str) -> TrialStore:
        if not data or not str(data.get("uri", "")).startswith(parent.rstrip("/") + "/"):
            raise ConfigError(f"{parent}: the trial's grant reads only its staged dataset")
        name = str(data["uri"])[len(parent.rstrip("/")) + 1:]
        return GrantStore(parent, {name: {"GET": str(data["GET"])}})

    return store, data_opener


class Trial:
    """One trial's side of the contract: its point, its progress, its stop requests, its one result."""

    def __init__(self, store: TrialStore, proposal: Mapping[str, Any],
                 data_opener: Callable[[str], TrialStore] | None = None):
        self.store, self.proposal, self.data_opener = store, proposal, data_opener
        self.tid: int = int(proposal["tid"])
        self.history: dict[str, list[float | None]] = {}
        self.interrupted = threading.Event()
        """Set by a SIGTERM (with handle_sigterm): a program whose step is long watches it inside the step."""
        self._stop_requested = False
        self._model_saved = False

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.proposal["params"])

    @property
    def model_file(self) -> str:
        """The name the model is saved under in the trial's folder (the search's trial.modelFile)."""
        return str(self.proposal.get("model_file") or MODEL_FILE)

    @property
    def attempt(self) -> int:
        """Which attempt of this trial the process is: 1, or more once it was preempted (or killed) before."""
        try:
            return max(1, int(os.environ.get(ATTEMPT_ENV, "1")))
        except ValueError:
            return 1

    @property
    def seed(self) -> int:
        return int(self.proposal.get("seed") or 0)

    @property
    def sigterm(self) -> bool:
        """Whether the platform sent SIGTERM (a drain, an eviction, the controller's delete of the Job)."""
        return self.interrupted.is_set()

    @sigterm.setter
    def sigterm(self, value: bool) -> None:
        if value:
            self.interrupted.set()
        else:
            self.interrupted.clear()

    def handle_sigterm(self) -> None:
        """A SIGTERM sets should_stop() (the program ends its step, then finishes) instead of killing it."""

        def handler(signum: int, _frame: Any) -> None:
            log.info("trial %d: signal %d: stopping after the current step", self.tid, signum)
            self.interrupted.set()

        signal.signal(signal.SIGTERM, handler)

    # -- progress ------------------------------------------------------------------------------------------
    def report(self, step: int, objective: float | None = None, **metrics: float | None) -> None:
        """After each step (an epoch): appends objective and metrics to the history and writes progress.json.
        A non-finite value (a diverged step) is kept as null; anything but a number or None is refused here, naming
        it, rather than at the end of the training in finish()."""
        values = {"objective": objective, **metrics}
        for name, value in values.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
                raise ConfigError(f"report(step={step}): {name} must be a number or None, got "
                                  f"{type(value).__name__} {str(value)[:40]!r}")
        for name, value in values.items():
            self.history.setdefault(name, []).append(value)
        self.progress({"epoch": step, "history": self.history})

    def progress(self, snapshot: Mapping[str, Any]) -> None:
        """progress.json from a snapshot the program keeps itself (epoch, history of series, ...): overwritten each
        step; advisory, so a store outage is logged and training goes on. The snapshot's history becomes the
        trial's: finish() reports it (its objective series gives the best and the steps run)."""
        if isinstance(snapshot.get("history"), Mapping):
            self.history = {name: list(values) for name, values in snapshot["history"].items()}
        doc = finite_or_none({"schema_version": SCHEMA_VERSION, "tid": self.tid, "updated_at": time.time(),
                              **snapshot})
        try:
            put_json(self.store, "progress.json", doc)
        except TemporaryError as e:
            log.warning("trial %d: progress.json not written (%s); training goes on", self.tid, e)

    # -- checkpoints (the contract's version 2) ------------------------------------------------------------------
    def checkpoint(self, step: int, state: bytes) -> None:
        """After a step: the program's whole state (weights, optimizer, RNG, whatever it needs to go on as if never
        stopped), committed atomically with the history up to that step; the older checkpoint is removed. Advisory:
        a store outage is logged and training goes on (the next step's checkpoint replaces it)."""
        try:
            commit(self.store, step, state, self.history)
        except TemporaryError as e:
            log.warning("trial %d: checkpoint of step %d not written (%s); training goes on", self.tid, step, e)

    def restore(self) -> Restored | None:
        """The last whole checkpoint, or None (a first attempt, nothing committed, or nothing whole): resume after
        its step. The trial's history becomes the checkpoint's, so each step is reported once across attempts."""
        restored = patiently("reading the checkpoint", lambda: latest(self.store))
        if restored is not None:
            self.history = {name: list(values) for name, values in restored.history.items()}
            log.info("trial %d: attempt %d resumes after step %d", self.tid, self.attempt, restored.step)
        return restored

    def should_stop(self) -> bool:
        """True once the controller asked this trial to stop (stop.json: early stopping, the search's end) or the
        platform sent SIGTERM (a drain, an eviction: finish() then leaves no result, so the trial runs again)."""
        if not self._stop_requested:
            try:
                self._stop_requested = self.store.exists("stop.json")
            except TemporaryError as e:
                log.warning("trial %d: could not look for stop.json (%s); going on", self.tid, e)
        return self._stop_requested or self.sigterm

    # -- the end ---------------------------------------------------------------------------------------------
    def save_model(self, data: bytes) -> None:
        """The trained model, whatever its format, under the search's model file name (t.model_file)."""
        name = self.model_file
        patiently(f"writing {name}", lambda: self.store.put(name, data))
        self._model_saved = True

    def result(self, record: Mapping[str, Any]) -> bool:
        """result.json, written once (create-only: never overwritten; False if one exists). Non-finite values are
        stored as null and counted. The record is checked against the contract's schema first."""
        doc, non_finite = finite_json(dict(record))
        if non_finite:
            doc["non_finite_values"] = non_finite
        body = {"schema_version": SCHEMA_VERSION, "tid": self.tid, "finished_at": time.time(),
                **({"model_file": self.model_file} if self._model_saved else {}), **doc}
        problem = check_record("result", body)
        if problem:
            raise ConfigError(f"result.json: {problem}")
        done = patiently("writing result.json", lambda: create_json(self.store, "result.json", body))
        if not done:
            log.warning("trial %d: result.json already exists; keeping the first one", self.tid)
        return done

    def finish(self, objective: float | None = None, *, model: bytes | None = None, **fields: Any) -> int:
        """Writes the model (when given) and the result and returns the exit code: 'ok', or 'stopped' when the
        controller asked; objective defaults to the best reported. A SIGTERM nobody asked for writes nothing and
        returns 143 (the trial runs again)."""
        if self.sigterm and not self._requested():
            log.warning("trial %d: SIGTERM without a stop request: no result, exit 143 (the trial runs again)",
                        self.tid)
            return EXIT_INTERRUPTED
        if model is not None:
            self.save_model(model)
        reported = [v for v in self.history.get("objective", []) if v is not None and math.isfinite(v)]
        if objective is None and reported:
            objective = max(reported)
        if objective is None:
            return self.fail("no step reported an objective", retry=False)
        status = ResultStatus.STOPPED if self._requested() else ResultStatus.OK
        record = {"status": status, "objective": objective, "history": self.history,
                  "epochs_run": len(self.history.get("objective", [])), "params": self.params, **fields}
        self.result(record)
        return EXIT_OK

    def fail(self, error: str, retry: bool = False) -> int:
        """A failure: bad parameters or data (the same input fails again: a 'fail' result, exit 3, no retry), or,
        with retry, one that may pass another time (no result, exit 1: the Job retries)."""
        if retry:
            log.error("trial %d: %s (exit 1: a retry may succeed)", self.tid, error)
            return EXIT_RETRY
        log.error("trial %d: %s", self.tid, error)
        self.result({"status": ResultStatus.FAIL, "error": error, "params": self.params})
        return EXIT_BAD_INPUT

    def _requested(self) -> bool:
        self.should_stop()
        return self._stop_requested


def start(argv: Sequence[str] | None = None, handle_sigterm: bool = True) -> Trial:
    """The trial named by --trial URI (the rest of argv is the program's), its proposal read and checked."""
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--trial", required=True, help="the trial's folder in the store (the controller passes it)")
    args, _ = ap.parse_known_args(argv)
    store, data_opener = open_trial(args.trial)
    proposal = patiently("reading proposal.json", lambda: get_json(store, "proposal.json"))
    if proposal is None:
        raise ConfigError(f"{store.uri}: no proposal.json; is --trial the trial's folder?")
    problem = check_record("proposal", proposal)
    if problem:
        raise ConfigError(f"{store.uri}/proposal.json: {problem}")
    t = Trial(store, proposal, data_opener)
    if handle_sigterm:
        t.handle_sigterm()
    return t
