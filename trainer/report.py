"""The trainer's records in its trial's folder of the store (the layout is controller.ledger's)."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from controller.store import Store, create_json, put_json

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1


def _finite_or_none(v: Any) -> Any:
    """NaN/inf (a diverged epoch) are not JSON: written as null."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _finite_or_none(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_finite_or_none(x) for x in v]
    return v


class Reporter:
    def __init__(self, store: Store, tid: int):
        self.store = store
        self.tid = tid

    def progress(self, snapshot: dict[str, Any]) -> None:
        """Overwritten every epoch: what the controller's early stopping and `status` read."""
        put_json(self.store, "progress.json", _finite_or_none(
            {"schema_version": SCHEMA_VERSION, "tid": self.tid, "updated_at": time.time(), **snapshot}))

    def result(self, record: dict[str, Any]) -> bool:
        """Written once; False if a result already exists (it is never overwritten)."""
        done = create_json(self.store, "result.json", _finite_or_none(
            {"schema_version": SCHEMA_VERSION, "tid": self.tid, "finished_at": time.time(), **record}))
        if not done:
            log.warning("trial %d: result.json already exists; keeping the first one", self.tid)
        return done

    def model(self, data: bytes) -> None:
        self.store.put("model.keras", data)
