"""The trial contract's checkpoint clause (version 2, docs/TRIAL_CONTRACT.md): a trial saves its state after a step
and, started again after a preemption or a kill, resumes from the last one it committed.

Object stores have no multi-object commit, so a checkpoint is two writes: the state into the slot the pointer does
not name (checkpoint/slot-a or slot-b, overwritten in turn: the older state is removed by that), then the pointer
(checkpoint/latest.json: the slot, the step, the state's SHA-256 and size, the history up to that step, and the
previous checkpoint's slot, step and hash). A write torn before the pointer leaves the previous checkpoint named; a
state that does not match its pointer's hash is never resumed from (the previous one is, when it is whole). Pure:
no I/O but the trial's store.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from controller.errors import RecordError, TemporaryError
from controller.store.base import TrialStore, get_json, put_json
from controller.trial.contract import CHECKPOINT_POINTER as POINTER
from controller.trial.contract import CHECKPOINT_SLOTS as SLOTS
from controller.trial.contract import SCHEMA_VERSION

log = logging.getLogger(__name__)
MAX_CHECKPOINT_BYTES = 16 * 2**30
"""A state larger than this is refused when read (the reader's memory is bounded by it)."""


@dataclass(frozen=True)
class Restored:
    """The checkpoint a trial resumes from: the step it was taken after, the program's state, and the history up to
    that step (each step once)."""

    step: int
    state: bytes
    history: dict[str, list[float | None]]


def _entry(pointer: Mapping[str, Any]) -> tuple[str, int, str, int] | None:
    """(slot, step, sha256, size) of a pointer entry, or None when it is not one."""
    slot, step, digest, size = (pointer.get(k) for k in ("slot", "step", "sha256", "size"))
    if slot not in SLOTS or not isinstance(step, int) or isinstance(step, bool) or step < 0:
        return None
    if not isinstance(digest, str) or not isinstance(size, int) or not 0 <= size <= MAX_CHECKPOINT_BYTES:
        return None
    return slot, step, digest, size


def commit(store: TrialStore, step: int, state: bytes, history: Mapping[str, list[float | None]]) -> None:
    """Writes the state into the free slot, then the pointer to it: the checkpoint exists once the pointer does.
    Raises TemporaryError when the store is out (the caller decides whether training goes on)."""
    try:
        previous = get_json(store, POINTER)
    except RecordError:
        previous = None  # a torn pointer: overwritten below
    current = _entry(previous) if isinstance(previous, Mapping) else None
    slot = SLOTS[1] if current is not None and current[0] == SLOTS[0] else SLOTS[0]
    store.put(slot, state)
    doc: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "slot": slot, "step": step,
                           "sha256": hashlib.sha256(state).hexdigest(), "size": len(state),
                           "history": {k: list(v[:step]) for k, v in history.items()}, "saved_at": time.time()}
    if current is not None:
        doc["previous"] = {"slot": current[0], "step": current[1], "sha256": current[2], "size": current[3]}
    put_json(store, POINTER, doc)


def _read(store: TrialStore, entry: tuple[str, int, str, int]) -> bytes | None:
    slot, step, digest, size = entry
    data = store.get(slot, limit=size)
    if data is None or len(data) != size or hashlib.sha256(data).hexdigest() != digest:
        log.warning("%s/%s: the checkpoint of step %d is missing or torn (its bytes do not match its pointer); "
                    "not resumed from", store.uri, slot, step)
        return None
    return data


def latest(store: TrialStore) -> Restored | None:
    """The last whole checkpoint (the pointer's, else the previous one), or None: nothing committed, or nothing
    whole. A store outage is a TemporaryError (the caller retries; starting over would waste the work)."""
    try:
        pointer = get_json(store, POINTER)
    except RecordError as e:
        log.warning("%s/%s: unreadable (%s); starting from the beginning", store.uri, POINTER, e)
        return None
    if not isinstance(pointer, Mapping):
        return None
    raw = pointer.get("history")
    history: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    for candidate in (pointer, pointer.get("previous")):
        entry = _entry(candidate) if isinstance(candidate, Mapping) else None
        if entry is None:
            continue
        data = _read(store, entry)
        if data is not None:
            step = entry[1]
            kept = {str(k): [v if isinstance(v, int | float) and not isinstance(v, bool) else None
                             for v in values[:step]]
                    for k, values in history.items() if isinstance(values, list)}
            return Restored(step, data, kept)
    return None


def pointer_step(store: TrialStore) -> int | None:
    """The step the pointer names (what the controller tells the next attempt), None without one; never raises
    for a damaged pointer."""
    try:
        pointer = get_json(store, POINTER)
    except (RecordError, TemporaryError):
        return None
    entry = _entry(pointer) if isinstance(pointer, Mapping) else None
    return entry[1] if entry else None
