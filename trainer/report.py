"""The trainer's records in its trial's folder of the store (the layout is controller.ledger's)."""

from __future__ import annotations

import logging
import time
from typing import Any

from controller.errors import TemporaryError
from controller.finite import finite_json, finite_or_none
from controller.grant import patiently
from controller.records import SCHEMA_VERSION, ResultDoc
from controller.store import Store, create_json, put_json

log = logging.getLogger(__name__)


class Reporter:
    def __init__(self, store: Store, tid: int):
        self.store = store
        self.tid = tid

    def progress(self, snapshot: dict[str, Any]) -> None:
        """Overwritten every epoch: what the controller's early stopping and `status` read."""
        # NaN/inf (a diverged epoch) are not JSON: written as null, so every reader can parse the record.
        doc = finite_or_none({"schema_version": SCHEMA_VERSION, "tid": self.tid, "updated_at": time.time(), **snapshot})
        try:
            put_json(self.store, "progress.json", doc)
        except TemporaryError as e:
            # Progress is advisory (the next epoch overwrites it): a store outage must not end the trial.
            log.warning("trial %d: progress.json not written (%s); training goes on", self.tid, e)

    def result(self, record: ResultDoc) -> bool:
        """Written once; False if a result already exists (it is never overwritten)."""
        doc, non_finite = finite_json(record)
        if non_finite:
            doc["non_finite_values"] = non_finite  # stored as null; `status` says how many
        body = {"schema_version": SCHEMA_VERSION, "tid": self.tid, "finished_at": time.time(), **doc}
        done = patiently("writing result.json", lambda: create_json(self.store, "result.json", body))
        if not done:
            log.warning("trial %d: result.json already exists; keeping the first one", self.tid)
        return done

    def model(self, data: bytes) -> None:
        patiently("writing model.keras", lambda: self.store.put("model.keras", data))
