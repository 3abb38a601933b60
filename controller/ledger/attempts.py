"""A trial's ended attempts (trials/<tid>/attempts/<k>.json, each written once): why attempt k ended, when, and from
which checkpoint step attempt k+1 starts. The write-once key makes a restarted controller record an interruption, and
start the next attempt, exactly once."""

from __future__ import annotations

import time
from typing import TypedDict

from controller.ledger.layout import trial_key
from controller.store.base import Store, create_json
from controller.trial.contract import SCHEMA_VERSION


class AttemptDoc(TypedDict):
    """How one attempt of a trial ended, and what the next one resumes from."""

    schema_version: int
    tid: int
    attempt: int
    ended_at: float
    exit_code: int | None
    why: str
    resume_step: int | None
    """The step of the checkpoint the next attempt resumes after (None: it starts from the beginning)."""


def attempt_key(tid: int, attempt: int) -> str:
    """Where attempt `attempt` of trial tid is recorded once it ended."""
    return trial_key(tid, f"attempts/{attempt:03d}.json")


def record_attempt(store: Store, tid: int, attempt: int, exit_code: int | None, why: str,
                   resume_step: int | None) -> bool:
    """Attempt `attempt` of trial tid ended, interrupted; False if that was already recorded (nothing changes)."""
    doc: AttemptDoc = {"schema_version": SCHEMA_VERSION, "tid": tid, "attempt": attempt, "ended_at": time.time(),
                       "exit_code": exit_code, "why": why, "resume_step": resume_step}
    return create_json(store, attempt_key(tid, attempt), doc)


def interruptions(keys: list[str]) -> dict[int, int]:
    """From a listing of trials/: how many recorded interruptions each trial has had."""
    counts: dict[int, int] = {}
    for key in keys:
        parts = key.split("/")
        if len(parts) == 4 and parts[0] == "trials" and parts[1].isdigit() and parts[2] == "attempts":
            counts[int(parts[1])] = counts.get(int(parts[1]), 0) + 1
    return counts
