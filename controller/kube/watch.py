"""One list-then-watch loop for any kind (trial Jobs, Searches), on its own thread.

It lists, hands every item over as MODIFIED, then watches from the listing's resourceVersion until the stream
ends, an ERROR arrives (410 Gone once history was compacted) or the resync period is up, and starts again: a
missed event is healed by the next listing. The stream is read here, not through kubernetes.watch.Watch, whose
raw mode drops ERROR events (KeyError 'raw_object' in client 37.0.1); holding the response lets close() cut a
read that would otherwise wait for the next event.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from controller.errors import PermanentError, TemporaryError
from controller.kube.api import API_ERRORS

log = logging.getLogger(__name__)


class Watcher:
    """A list-then-watch loop on its own thread: every event to on_event, listed again after resync_seconds or an
    expired version."""

    def __init__(self, what: str, list_fn: Callable[[], dict[str, Any]], watch_fn: Callable[[str | None, int], Any],
                 on_event: Callable[[str, dict[str, Any]], None], resync_seconds: float):
        self.what = what
        self.list_fn = list_fn
        self.watch_fn = watch_fn
        self.on_event = on_event
        self.resync_seconds = resync_seconds
        self.errors: list[int] = []
        """Codes of the ERROR events received (410: history compacted)."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._resp: Any = None
        self._lock = threading.Lock()

    @property
    def streaming(self) -> bool:
        """A watch stream is open now."""
        return self._resp is not None

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start watching, or restart a thread that died; a no-op while one runs or after close()."""
        if self._stop.is_set() or self.alive():
            return
        self._thread = threading.Thread(target=self._loop, name=f"{self.what}-watch", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop, and wait for the thread: a daemon thread still inside an HTTP read or a log write when the
        interpreter shuts down can abort it (SIGABRT)."""
        self._stop.set()
        with self._lock:
            if self._resp is not None:
                self._resp.shutdown()  # unblocks a read waiting for the next event
        if self._thread is not None:
            self._thread.join(timeout=30)
            if self._thread.is_alive():
                log.warning("the %s watch did not stop within 30 s", self.what)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                listing = self.list_fn()
                for item in listing.get("items") or []:
                    self.on_event("MODIFIED", item)
                self._watch_from((listing.get("metadata") or {}).get("resourceVersion"))
            except (TemporaryError, PermanentError, *API_ERRORS, OSError, ValueError) as e:
                if self._stop.is_set():
                    return  # close() cut the stream
                log.info("%s watch ended (%s: %s); re-listing", self.what, type(e).__name__, e)
                self._stop.wait(0.2)

    def _watch_from(self, version: str | None) -> None:
        resp = self.watch_fn(version, max(1, int(self.resync_seconds)))
        with self._lock:
            self._resp = resp
        try:
            if self._stop.is_set():
                return
            buffer = b""
            for chunk in resp.stream(amt=None, decode_content=False):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip() and not self._event(json.loads(line)):
                        return
        finally:
            with self._lock:
                self._resp = None
            resp.release_conn()

    def _event(self, event: Mapping[str, Any]) -> bool:
        """Hand an event over; False ends this watch (an ERROR)."""
        if event.get("type") == "ERROR":
            status = event.get("object") or {}
            self.errors.append(int(status.get("code") or 0))
            log.info("%s watch: ERROR %s (%s); re-listing", self.what, status.get("code"),
                     status.get("message", "no message"))
            return False
        self.on_event(event["type"], event["object"])
        return True
