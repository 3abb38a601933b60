"""A Search's status subresource and its Events: what `kubectl get searches` and `kubectl describe search` show.

SearchStatusWriter is the operator's Notifier for one Search: the loop's status document becomes .status
(state, counts, budget left, best, where the records are, conditions, observedGeneration, start and completion
times), its Events are recorded on the Search. Visibility only: a failure here is logged and the search goes on.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

from controller.errors import PermanentError, TemporaryError
from controller.kube.api import Conflict, KubeClient
from controller.settings.resource import API_VERSION, KIND
from controller.trial.contract import SearchState, model_file_problem

log = logging.getLogger(__name__)

STATES = {SearchState.RUNNING: "Running", SearchState.SUCCEEDED: "Succeeded",
          SearchState.GOAL_REACHED: "GoalReached", SearchState.FAILED: "Failed"}
KEY_PARAMS = 8  # how many of the best point's parameters .status.best shows (the bucket has them all)


def now() -> str:
    """The current time as the API server writes timestamps (RFC 3339, UTC, seconds)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class SearchStatusWriter:
    """Writes one Search's status subresource (state, counts, best, conditions) and its Events."""

    def __init__(self, kube: KubeClient, obj: dict[str, Any], records_uri: str):
        meta = obj["metadata"]
        self.kube = kube
        self.name: str = meta["name"]
        self.ref = {"apiVersion": API_VERSION, "kind": KIND, "name": self.name, "uid": meta["uid"],
                    "namespace": kube.ns}
        self.generation = int(meta.get("generation") or 0)
        self.records_uri = records_uri
        old = obj.get("status") or {}
        self.start_time: str = old.get("startTime") or now()
        # When the search ended, kept across an operator's restart (which tells the end again); None while it runs.
        self.completion_time: str | None = old.get("completionTime")
        self.conditions: dict[str, dict[str, Any]] = {c["type"]: c for c in old.get("conditions") or []
                                                      if isinstance(c, dict) and "type" in c}
        # The search's loop writes the status, the operator's watch the SpecAccepted condition: one at a time, and
        # every patch carries all conditions (a merge patch replaces the list).
        self._lock = threading.Lock()

    # -- Notifier --------------------------------------------------------------------------------------------
    def event(self, reason: str, message: str, warning: bool = False, once: str | None = None) -> None:
        body = {"apiVersion": "v1", "kind": "Event",
                "metadata": {"name": f"{self.name}.{once or format(time.time_ns(), 'x')}", "namespace": self.kube.ns},
                "involvedObject": self.ref, "reason": reason, "message": message[:1000],
                "type": "Warning" if warning else "Normal", "firstTimestamp": now(), "lastTimestamp": now(),
                "count": 1, "source": {"component": "cifar-hpo-operator"}}
        try:
            self.kube.create_event(body)
        except Conflict:
            log.info("Event %s on Search %s: recorded before", reason, self.name)
        except (PermanentError, TemporaryError) as e:
            log.warning("could not record Event %s on Search %s: %s", reason, self.name, e)

    def status(self, doc: dict[str, Any]) -> None:
        with self._lock:
            self._status(doc)

    def _status(self, doc: dict[str, Any]) -> None:
        state = SearchState(doc["state"])
        self._state_conditions(state, doc.get("reason") or "")
        best = doc.get("best")
        body: dict[str, Any] = {
            "state": STATES[state], "reason": doc.get("reason") or "", "counts": doc["counts"],
            "finished": doc["finished"], "budgetLeft": doc["budget_left"], "records": self.records_uri,
            "waiting": {str(k): v for k, v in (doc.get("waiting") or {}).items()},
            "waitingFor": waiting_summary(doc.get("waiting") or {}),
            "startTime": self.start_time, "completionTime": self._completion(state),
        }
        if best:
            body["best"] = {"trial": best["tid"], "objective": round(best["objective"], 4),  # the bucket has it exact
                            "params": dict(list((best.get("params") or {}).items())[:KEY_PARAMS])}
            model = (best.get("metrics") or {}).get("model_file")
            if isinstance(model, str) and not model_file_problem(model):  # the trial saved one, under this name
                body["bestModel"] = f"{self.records_uri}/trials/{best['tid']:06d}/{model}"
        self._patch(body)

    def _completion(self, state: SearchState) -> str | None:
        if state is SearchState.RUNNING:
            self.completion_time = None  # a raised budget runs it again
        else:
            self.completion_time = self.completion_time or now()
        return self.completion_time

    # -- conditions ------------------------------------------------------------------------------------------
    def condition(self, kind: str, true: bool, reason: str, message: str = "") -> None:
        """Set one condition and write the conditions (e.g. SpecAccepted=False when a fixed field changed)."""
        with self._lock:
            self._set(kind, true, reason, message)
            self._patch({})

    def store_problem(self, problem: str | None) -> None:
        """StoreReady, and while the store fails the WAITING column says why: a missing bucket or a refused
        Secret shows on the Search (`kubectl get searches`), not only in the operator's log."""
        with self._lock:
            old = self.conditions.get("StoreReady") or {}
            if problem is None and old.get("status") in (None, "True"):
                return
            self._set("StoreReady", problem is None, "StoreUnavailable" if problem else "StoreReachable",
                      problem or "")
            self._patch({"waitingFor": f"store: {problem[:200]}" if problem else ""})

    def _state_conditions(self, state: SearchState, message: str) -> None:
        terminal = state is not SearchState.RUNNING
        self._set("Running", not terminal, STATES[state], "" if terminal else message)
        self._set("Succeeded", state in (SearchState.SUCCEEDED, SearchState.GOAL_REACHED), STATES[state],
                  message if terminal else "")
        self._set("GoalReached", state is SearchState.GOAL_REACHED, STATES[state],
                  message if state is SearchState.GOAL_REACHED else "")
        self._set("Failed", state is SearchState.FAILED, STATES[state], message if state is SearchState.FAILED else "")

    def _set(self, kind: str, true: bool, reason: str, message: str) -> None:
        status = "True" if true else "False"
        old = self.conditions.get(kind) or {}
        since = old.get("lastTransitionTime") if old.get("status") == status else None
        self.conditions[kind] = {"type": kind, "status": status, "reason": reason, "message": message[:1000],
                                 "observedGeneration": self.generation, "lastTransitionTime": since or now()}

    def _patch(self, fields: dict[str, Any]) -> None:
        body = {"status": {**fields, "conditions": list(self.conditions.values()),
                           "observedGeneration": self.generation}}
        try:
            self.kube.patch_search_status(self.name, body)
        except (PermanentError, TemporaryError) as e:
            log.warning("could not update the status of Search %s: %s", self.name, e)


def waiting_summary(waiting: dict[Any, str]) -> str:
    """`kubectl get searches`' WAITING column: how many trials wait and the kubelet's or scheduler's short
    reasons ('1 trial: ImagePullBackOff'); empty when none waits."""
    if not waiting:
        return ""
    reasons = sorted({why.split(":", 1)[0] for why in waiting.values()})
    return f"{len(waiting)} trial{'s' if len(waiting) > 1 else ''}: {', '.join(reasons)}"
