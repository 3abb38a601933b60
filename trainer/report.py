"""The trainer's records in its trial's folder: the trial library's (controller/trial.py), one implementation of the
trial side for every trial program, under the name the trainer has always used."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from controller.store.base import TrialStore
from controller.trial import Trial


class Reporter(Trial):
    def __init__(self, store: TrialStore, tid: int, proposal: Mapping[str, Any] | None = None):
        super().__init__(store, proposal or {"tid": tid, "params": {}})

    def model(self, data: bytes) -> None:
        self.save_model(data)
