"""Waiting out temporary failures: one doubling backoff for every retry loop of the controller."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from controller.errors import TemporaryError

log = logging.getLogger(__name__)
T = TypeVar("T")


class Backoff:
    """1 s, 2 s, 4 s … up to `cap` after consecutive failures; a success resets it."""

    def __init__(self, first: float = 1.0, cap: float = 60.0, on_failure: Callable[[], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.first = first
        self.cap = cap
        self.on_failure = on_failure
        self.sleep = sleep
        self.delay = first

    def failed(self, what: str, error: Exception) -> None:
        if self.on_failure:
            self.on_failure()
        log.warning("temporary failure %s: %s; retrying in %.0f s", what, error, self.delay)
        self.sleep(self.delay)
        self.delay = min(self.cap, self.delay * 2)

    def reset(self) -> None:
        self.delay = self.first

    def retrying(self, what: str, fn: Callable[[], T], give_up_after: float | None = None) -> T:
        """fn() until it does not raise TemporaryError (or, with give_up_after, until that many seconds have
        passed: the last error then propagates); anything else propagates at once."""
        started = time.monotonic()
        while True:
            try:
                result = fn()
            except TemporaryError as e:
                if give_up_after is not None and time.monotonic() - started > give_up_after:
                    raise
                self.failed(what, e)
                continue
            self.reset()
            return result
