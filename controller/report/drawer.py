"""Drawing report/ (matplotlib: a second or more per report, all of it holding the GIL).

InlineDrawer draws in the caller's thread: local mode runs one search, which waits for nothing while it draws (the
next trials start before the bookkeeping). BackgroundDrawer is the operator's, shared by every Search: drawn in
the loops' process, reports starved every search loop of the GIL (a minute without a new Job while 20 finished
Searches drew at once) and held memory per Search. It draws one report at a time in one child process, and keeps
only the newest request per search, so the cost is one drawing at a time whatever the number of Searches.
A report is derived from the records: a failure to draw or store it is logged and the next request draws again.
"""

from __future__ import annotations

import copy
import logging
import multiprocessing
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Protocol

from controller.errors import PermanentError, TemporaryError
from controller.ledger.trials import TrialRecord
from controller.report.html import render
from controller.store.base import Store

log = logging.getLogger(__name__)

Renderer = Callable[[list[TrialRecord], str], dict[str, bytes]]
DRAW_ERRORS = (ValueError, RuntimeError, OSError, TemporaryError, PermanentError)


# How long a search's end waits for its final report before telling its end anyway (a report takes seconds; a queue
# of many searches' reports ahead of it, longer).
FINAL_WAIT_SECONDS = 120.0
# How long one report may take to draw (seconds, a few for hundreds of trials): records are written by trials, and a
# drawing that does not end would hold the one drawer every search shares.
DRAW_SECONDS = 600.0


class Drawer(Protocol):
    """Draws a search's report/ from its records, now or later."""

    def draw(self, store: Store, search: str, records: Iterable[TrialRecord], wait: bool = False) -> None:
        """wait: return only once this report (or a newer one of the search) is stored, or FINAL_WAIT_SECONDS
        passed: a search's end is told after its final report."""


def _put(store: Store, search: str, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        store.put(f"report/{name}", data)
    log.debug("search %s: report/ drawn (%d files)", search, len(files))


class InlineDrawer:
    """Draws report/ in the calling thread (local mode: one search)."""

    def __init__(self, renderer: Renderer = render):
        self.renderer = renderer

    def draw(self, store: Store, search: str, records: Iterable[TrialRecord], wait: bool = False) -> None:
        try:
            _put(store, search, self.renderer(list(records), search))
        except DRAW_ERRORS as e:
            log.warning("search %s: could not draw report/: %s", search, e)


class BackgroundDrawer:
    """Draws report/ in one child process for every search of an operator, one at a time, the newest request per
    search; a child that dies is replaced."""

    def __init__(self, renderer: Renderer = render):
        """renderer: a module-level function (it is sent to the child process by name)."""
        self.renderer = renderer
        self._pending: dict[str, tuple[Store, str, list[TrialRecord], int]] = {}
        self._asked = 0
        """Requests numbered in order: a search's report numbered n is stored once _done[its store] >= n."""
        self._done: dict[str, int] = {}
        self._busy = False
        self._closed = False
        self._cond = threading.Condition()
        self._pool: ProcessPoolExecutor | None = None
        self.drawn = 0
        """Reports drawn and stored (tests and benchmarks read it)."""
        self._thread = threading.Thread(target=self._run, name="report-drawer", daemon=True)
        self._thread.start()

    def draw(self, store: Store, search: str, records: Iterable[TrialRecord], wait: bool = False) -> None:
        # A copy of each record: the loop goes on changing its own while this one waits its turn.
        snapshot = [copy.copy(r) for r in records]
        with self._cond:
            self._asked += 1
            number = self._asked
            self._pending[store.uri] = (store, search, snapshot, number)  # replaces an older request of the search
            self._cond.notify_all()
            if wait and not self._cond.wait_for(lambda: self._done.get(store.uri, 0) >= number or self._closed,
                                                FINAL_WAIT_SECONDS):
                log.warning("search %s: report/ not drawn within %.0f s; going on", search, FINAL_WAIT_SECONDS)

    def idle(self, timeout: float | None = None) -> bool:
        """Wait until nothing is pending or being drawn; False if timeout came first."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._busy, timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Draw what is pending (a final report among it) for up to timeout seconds, then stop."""
        self.idle(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._closed)
                if self._closed:
                    return
                uri = next(iter(self._pending))
                store, search, records, number = self._pending.pop(uri)
                self._busy = True
            try:
                _put(store, search, self._render(records, search))
                self.drawn += 1
            except DRAW_ERRORS as e:
                log.warning("search %s: could not draw report/: %s", search, e)
            except Exception:  # records are trials' writing: whatever one search's do, the others' are drawn
                log.exception("search %s: drawing report/ failed; the next request draws again", search)
            finally:
                with self._cond:
                    self._busy = False
                    self._done[uri] = number  # drawn, or failed and logged: either way nobody waits for it longer
                    self._cond.notify_all()

    def _render(self, records: list[TrialRecord], search: str) -> dict[str, bytes]:
        if self._pool is None:
            # spawn, not fork: a fork of a process with threads may copy a lock some thread holds.
            self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        try:
            return self._pool.submit(self.renderer, records, search).result(timeout=DRAW_SECONDS)
        except BrokenProcessPool as e:
            self._pool = None  # the child died (killed for memory?): the next report starts another
            raise RuntimeError(f"the drawing process died: {e}") from e
        except TimeoutError as e:
            pool, self._pool = self._pool, None
            for process in list(getattr(pool, "_processes", {}).values()):  # no public way to stop a running task
                process.kill()
            pool.shutdown(wait=False, cancel_futures=True)
            raise RuntimeError(f"drawing took over {DRAW_SECONDS:.0f} s and was stopped") from e
