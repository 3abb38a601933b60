"""The records trials and the controller exchange through the store, typed once for both sides.

The trainer writes progress.json and result.json; the controller writes proposal.json, outcome.json and
stop.json (controller/ledger/trials.py has the layout). Field names shared by writer and reader are spelled here
only, so a rename cannot leave one side behind. Pure: no I/O.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any, NotRequired, TypedDict

SCHEMA_VERSION = 1

class TrialState(StrEnum):
    """Where a trial stands. A StrEnum, so records and status documents keep their plain strings."""

    PENDING = "pending"
    RUNNING = "running"
    OK = "ok"
    STOPPED = "stopped"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (TrialState.OK, TrialState.STOPPED, TrialState.FAILED)


class SearchState(StrEnum):
    """A search's state, as status.json and the Search's status say it."""
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    GOAL_REACHED = "goal_reached"
    FAILED = "failed"


class ResultStatus(StrEnum):
    """result.json's status, as the trainer writes it ('fail' is the seed project's spelling)."""

    OK = "ok"
    STOPPED = "stopped"
    FAIL = "fail"

    @property
    def state(self) -> TrialState:
        return TrialState.FAILED if self is ResultStatus.FAIL else TrialState(self.value)


class Origin(StrEnum):
    """Where a trial's point came from."""
    RANDOM = "random"
    TPE = "tpe"
    IMPORT = "import"
    UNKNOWN = "unknown"
    """A proposal too damaged to say."""


# Trials of the search itself (not imported): the budget counts these.
SEARCH_ORIGINS = (Origin.RANDOM, Origin.TPE, Origin.UNKNOWN)


class ProposalDoc(TypedDict):
    """proposal.json: written once by the controller before the trial starts."""
    schema_version: int
    tid: int
    params: dict[str, Any]
    vals: dict[str, Any]
    seed: int | None
    origin: str
    created_at: float
    model_file: NotRequired[str]
    """Where the trial's model goes in its folder (trial.modelFile); absent: model.keras."""
    import_key: NotRequired[str]
    """An imported trial's source hash: a second import skips it."""
    import_source: NotRequired[str]


class ProgressDoc(TypedDict, total=False):
    """Overwritten by the trainer after each epoch."""

    schema_version: int
    tid: int
    updated_at: float
    epoch: int
    history: dict[str, list[float | None]]
    best_epoch: int | None
    best_objective: float | None
    images_per_second: float
    epoch_seconds: float


class ResultDoc(TypedDict, total=False):
    """Written once by the trainer (or by an import); only status and tid are always there."""

    schema_version: int
    tid: int
    status: str
    finished_at: float
    objective: float | None
    error: str
    stop_reason: str | None
    history: dict[str, list[float | None]]
    params: dict[str, Any]
    objective_name: str
    val_fine_accuracy: float | None
    val_fine_loss: float | None
    val_coarse_accuracy: float | None
    val_coarse_loss: float | None
    test_fine_accuracy: float | None
    test_fine_loss: float | None
    test_coarse_accuracy: float | None
    test_coarse_loss: float | None
    best_epoch: int | None
    epochs_run: int
    params_count: int
    train_seconds: float
    images_per_second: float | None
    data: str
    device: str
    precision: str
    xla: bool
    versions: dict[str, str]
    non_finite_values: int
    startup: dict[str, float]


# The part of a result the controller keeps in its trial record (status, report, best.json).
RESULT_SUMMARY = ("objective_name", "model_file", "test_fine_accuracy", "val_fine_accuracy", "best_epoch", "epochs_run",
                  "train_seconds", "images_per_second", "non_finite_values", "startup")


class OutcomeDoc(TypedDict):
    """The controller's decision on a trial that ended without a usable result, or that it stopped."""

    schema_version: int
    tid: int
    state: str
    reason: str
    finished_at: float
    exit_code: NotRequired[int | None]
    log_tail: NotRequired[str]
    objective: NotRequired[float]
    curve: NotRequired[list[float | None]]
    sealed_at: NotRequired[float]
    """A stopped trial's end, when the controller saw it: after it, result.json is no longer the trial's to write."""
    result_arrived: NotRequired[bool]
    """Whether the trial's own result.json had arrived by sealed_at (false: one created later is ignored)."""


class StopDoc(TypedDict):
    """stop.json: written once by the controller before it stops a running trial."""
    schema_version: int
    tid: int
    reason: str
    requested_at: float


# The trainer's exit codes the controller acts on (trainer/__main__.py documents all of them).
EXIT_BAD_INPUT = 3
"""Bad parameters or data spec: the same input fails again, so the Job is failed at once, not retried."""
EXIT_INTERRUPTED = 143
"""SIGTERM without a stop.json (node drain, eviction): no result, so that the Job runs the trial again."""

# The trial contract's environment: how many GPUs the trial's Job requested (the trainer fails at once when it sees
# fewer).
EXPECT_GPUS_ENV = "CIFAR_HPO_EXPECT_GPUS"
# When the trial's Job will be ended by its activeDeadlineSeconds (seconds since the epoch): the trainer stops
# training DEADLINE_MARGIN_S before it, so that the trial ends with its best epoch evaluated and saved.
DEADLINE_ENV = "CIFAR_HPO_DEADLINE_AT"
DEADLINE_MARGIN_S = 300.0

GRANT_ENV = "CIFAR_HPO_TRIAL_GRANT"
# The trial contract's keys and what a trial may do with each; the model's key is the search's trial.modelFile.
CHECKPOINT_POINTER = "checkpoint/latest.json"
CHECKPOINT_SLOTS = ("checkpoint/slot-a", "checkpoint/slot-b")
"""The checkpoint clause's keys (controller/trial/checkpoint.py): two slots written in turn, and the pointer."""
TRIAL_KEYS = {"proposal.json": ("GET",), "stop.json": ("HEAD",), "progress.json": ("PUT",),
              "result.json": ("CREATE",), **dict.fromkeys((CHECKPOINT_POINTER, *CHECKPOINT_SLOTS), ("GET", "PUT"))}
ATTEMPT_ENV = "CIFAR_HPO_ATTEMPT"
"""Which attempt of its trial a process is (1, 2, ...): 2 on is a trial started again after a preemption or a kill
that was not the controller's, told to resume (t.restore())."""
RESUME_STEP_ENV = "CIFAR_HPO_RESUME_STEP"
"""The step of the checkpoint the controller saw committed when it started this attempt (absent: none)."""
MODEL_FILE = "model.keras"
"""The model's name in the trial's folder unless the search names another (trial.modelFile)."""
MODEL_FILE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
RESERVED_FILES = frozenset({*TRIAL_KEYS, "outcome.json", "trial.log"})
"""What a model file may not be called: the records of the trial's folder."""


def model_file_problem(name: Any) -> str | None:
    """Why a model file name is not one (None when it is): a plain name in the trial's folder, with its extension."""
    if not isinstance(name, str) or not MODEL_FILE_PATTERN.fullmatch(name):
        return (f"{name!r} must be a file name of letters, digits, '.', '_' and '-' (at most 100, no folder), "
                "e.g. model.txt")
    if name in RESERVED_FILES:
        return f"{name!r} is one of the trial's records ({', '.join(sorted(RESERVED_FILES))}); name the model otherwise"
    return None


def trial_keys(model_file: str = MODEL_FILE) -> dict[str, tuple[str, ...]]:
    """The keys of one trial's grant: the contract's records and its model file."""
    return {**TRIAL_KEYS, model_file: ("PUT",)}
EXIT_OK = 0
EXIT_RETRY = 1
"""A failure a retry may not repeat (a store outage past PATIENCE_SECONDS): the Job retries, up to its backoffLimit."""
