"""The dashboard's HTTP server: one read-only page (static files shipped in this package) and a JSON API over
SearchViews, with Server-Sent Events that tell open pages when a search changed.

Read-only by construction: only GET and HEAD are served; the store is only read (Store.get/list/stream). A trial's
log is served as text/plain with nosniff, and the page puts it in a <pre> as text; no settings or secrets are ever
sent (a search's document carries its trials, space and counts, never search.json's settings). Every response
carries a Content-Security-Policy that allows nothing from elsewhere.

What reaches it is not trusted either: a request whose Host is a name it was not given (a web page's DNS rebinding
through a loopback port or `kubectl port-forward`) is refused; connections time out when idle, at most
MAX_CONNECTIONS are served at once (event streams end after STREAM_SECONDS: the page reconnects), and files are
streamed from the store, never held whole.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import mimetypes
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from controller.dashboard.data import SearchView
from controller.ledger.layout import trial_key
from controller.report.summary import search_names
from controller.store.base import Store
from controller.trial.contract import MODEL_FILE

log = logging.getLogger(__name__)

STATIC = resources.files("controller.dashboard") / "static"
HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; "
                                      "base-uri 'none'; frame-ancestors 'none'",
           "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")
TRIAL_FILES = {"log": ("trial.log", "text/plain; charset=utf-8"),
               "result": ("result.json", "application/json"),
               "progress": ("progress.json", "application/json"),
               "model": (MODEL_FILE, "application/octet-stream")}  # or the name the trial's result gives
LOG_TAIL_BYTES = 64 * 1024
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
IDLE_SECONDS = 30.0
MAX_CONNECTIONS = 32
STREAM_SECONDS = 600.0


def host_allowed(header: str | None, names: Iterable[str]) -> bool:
    """Whether a request's Host header names this server: an address (no name to rebind), a loopback name, or one
    of the names it was given (--allow-host, controller.dashboardHosts). No Host at all (HTTP/1.0) passes."""
    if not header:
        return True
    host = header.strip().lower()
    host = host[1:].partition("]")[0] if host.startswith("[") else host.rpartition(":")[0] if ":" in host else host
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return host.rstrip(".") in LOOPBACK_NAMES or host.rstrip(".") in {n.lower() for n in names}


class Dashboard:
    """The searches of one store, each refreshed only while some page watches it (an API call or an open event
    stream in the last `watch_seconds`), at most once per `refresh_seconds`."""

    def __init__(self, root: Store, refresh_seconds: float = 2.0, watch_seconds: float = 15.0,
                 names_seconds: float = 30.0, clock: Callable[[], float] = time.monotonic,
                 hosts: Iterable[str] = ()):
        self.root = root
        self.hosts = tuple(hosts)
        self.refresh_seconds, self.watch_seconds, self.names_seconds = refresh_seconds, watch_seconds, names_seconds
        self.clock = clock
        self.views: dict[str, SearchView] = {}
        self.watched: dict[str, float] = {}
        self._names: tuple[float, list[str]] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._refresher, name="dashboard-refresh", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def names(self) -> list[str]:
        with self._lock:
            if self._names is None or self.clock() - self._names[0] > self.names_seconds:
                self._names = (self.clock(), search_names(self.root))
            return self._names[1]

    def view(self, name: str) -> SearchView | None:
        """The search's view, kept watched; None for a name that is not a search of this store."""
        if not NAME.match(name) or (name not in self.views and name not in self.names()):
            return None
        with self._lock:
            if name not in self.views:
                self.views[name] = SearchView(self.root.child(name), name, self.refresh_seconds, self.clock)
            self.watched[name] = self.clock()
            view = self.views[name]
        view.refresh()
        return view

    def _refresher(self) -> None:
        """Keeps watched searches fresh, so an event stream hears of a change without any page asking."""
        while not self._stop.wait(self.refresh_seconds / 2):
            now = self.clock()
            with self._lock:
                due = [self.views[n] for n, t in self.watched.items() if now - t < self.watch_seconds]
            for view in due:
                try:
                    view.refresh()
                except Exception:  # one search's records must not stop the refresh of the others
                    log.exception("dashboard: refreshing %s failed", view.name)

    def index(self) -> list[dict[str, Any]]:
        out = []
        for name in self.names():
            try:
                view = self.view(name)
                if view is not None:
                    out.append(view.summary())
            except Exception as e:  # that search shows as unreadable; the others as they are
                log.exception("dashboard: %s cannot be shown", name)
                out.append({"name": name, "state": "unreadable", "error": f"{type(e).__name__}"})
        return out


class Handler(BaseHTTPRequestHandler):
    """One request: the page's static files, the JSON API and the event stream; GET and HEAD only."""
    dashboard: Dashboard
    server_version = "cifar-hpo-dashboard"

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(IDLE_SECONDS)  # a connection that sends or reads nothing this long is closed

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_HEAD(self) -> None:
        self.do_GET(head=True)

    def do_GET(self, head: bool = False) -> None:
        self.head = head
        if not host_allowed(self.headers.get("Host"), self.dashboard.hosts):
            return self._send(421, "text/plain; charset=utf-8", b"unknown Host; start the dashboard with "
                              b"--allow-host NAME (controller.dashboardHosts) to serve it under that name\n")
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.split("/") if p]
        try:
            self._route(parts, parse_qs(url.query))
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True
        except Exception as e:  # one request's failure must not take the server down
            log.exception("dashboard: %s failed", self.path)
            self._send(500, "text/plain; charset=utf-8", f"internal error: {type(e).__name__}".encode())

    def _refuse(self) -> None:
        self._send(405, "text/plain; charset=utf-8", b"read-only: GET and HEAD only\n", {"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse

    def _route(self, parts: list[str], query: dict[str, list[str]]) -> None:
        d = self.dashboard
        if not parts:
            return self._static("index.html")
        if parts[0] == "static" and len(parts) == 2:
            return self._static(parts[1])
        if parts[:2] == ["api", "searches"] and len(parts) == 2:
            return self._json(d.index())
        if parts[:2] == ["api", "events"] and len(parts) == 2:
            return self._events(query.get("search", [""])[0])
        if parts[:2] == ["api", "search"] and len(parts) >= 3:
            view = d.view(parts[2])
            if view is None:
                return self._send(404, "text/plain; charset=utf-8", b"no such search\n")
            if len(parts) == 3:
                return self._json(view.document())
            if len(parts) == 6 and parts[3] == "trial" and parts[4].isdigit() and parts[5] in TRIAL_FILES:
                return self._trial_file(view, int(parts[4]), parts[5])
        self._send(404, "text/plain; charset=utf-8", b"not found\n")

    def _static(self, name: str) -> None:
        if not re.fullmatch(r"[a-z0-9_-]+\.(html|js|css|svg)", name):
            return self._send(404, "text/plain; charset=utf-8", b"not found\n")
        f = STATIC / name
        if not f.is_file():
            return self._send(404, "text/plain; charset=utf-8", b"not found\n")
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        self._send(200, f"{kind}; charset=utf-8" if kind.startswith("text/") or name.endswith(".js") else kind,
                   f.read_bytes())

    def _trial_file(self, view: SearchView, tid: int, what: str) -> None:
        name, kind = TRIAL_FILES[what]
        if what == "model":
            name = view.model_file(tid)
        found = view.store.stream(trial_key(tid, name))
        if found is None:
            return self._send(404, "text/plain; charset=utf-8", f"trial {tid} has no {name} (yet)\n".encode())
        size, chunks = found
        if what == "log":  # the tail only, kept as it streams by
            data = _tail(chunks, LOG_TAIL_BYTES)
            return self._send(200, kind, data if size <= LOG_TAIL_BYTES
                              else b"[... earlier lines left out ...]\n" + data)
        extra = {}
        if what == "model":
            extra["Content-Disposition"] = f'attachment; filename="{view.name}-trial-{tid}-{name}"'
        self._head(200, kind, size, extra)
        if not self.head:
            for chunk in chunks:
                self.wfile.write(chunk)

    def _json(self, doc: Any) -> None:
        self._send(200, "application/json", json.dumps(doc, allow_nan=False, default=str).encode())

    def _send(self, code: int, kind: str, body: bytes, extra: dict[str, str] | None = None) -> None:
        self._head(code, kind, len(body), extra)
        if not getattr(self, "head", False):
            self.wfile.write(body)

    def _head(self, code: int, kind: str, size: int, extra: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for k, v in {**HEADERS, "Content-Type": kind, "Content-Length": str(size), **(extra or {})}.items():
            self.send_header(k, v)
        self.end_headers()

    def _events(self, name: str) -> None:
        """Server-Sent Events: the search's version whenever it changes (and a comment every 15 s to keep proxies
        from closing the stream). The page fetches the search again on each."""
        view = self.dashboard.view(name)
        if view is None:
            return self._send(404, "text/plain; charset=utf-8", b"no such search\n")
        self.send_response(200)
        for k, v in {**HEADERS, "Content-Type": "text/event-stream"}.items():
            self.send_header(k, v)
        self.end_headers()
        sent, beat = -1, time.monotonic()
        ends = beat + STREAM_SECONDS  # the page's EventSource reconnects: no stream holds a connection for ever
        while not self.dashboard._stop.is_set() and time.monotonic() < ends:
            self.dashboard.view(name)  # keeps it watched (and refreshed) while the stream is open
            if view.version != sent:
                sent = view.version
                self.wfile.write(f"data: {json.dumps({'version': sent})}\n\n".encode())
                self.wfile.flush()
            elif time.monotonic() - beat > 15:
                self.wfile.write(b": keep-alive\n\n")
                self.wfile.flush()
                beat = time.monotonic()
            time.sleep(0.5)


def _tail(chunks: Iterator[bytes], size: int) -> bytes:
    kept = b""
    for chunk in chunks:
        kept = (kept + chunk)[-size:]
    return kept


class DashboardServer(ThreadingHTTPServer):
    """The HTTP server of one Dashboard: a thread per connection, at most MAX_CONNECTIONS at once (the next ones are
    closed at once), and a shutdown that ends the refresher and the event streams."""
    daemon_threads = True
    dashboard: Dashboard
    _slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            log.warning("dashboard: %d connections open; refusing %s", MAX_CONNECTIONS, client_address[0])
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def shutdown(self) -> None:
        """Stops the refresher and every open event stream too, then the server."""
        self.dashboard.stop()
        super().shutdown()
        self.server_close()


def serve(root: Store, host: str = "127.0.0.1", port: int = 8080, refresh_seconds: float = 2.0,
          allow_hosts: Iterable[str] = ()) -> DashboardServer:
    """Starts the dashboard (daemon threads) and returns its server; server.server_address says where.
    allow_hosts: the names (besides loopback ones and addresses) it may be reached by."""
    dashboard = Dashboard(root, refresh_seconds=refresh_seconds, hosts=allow_hosts)
    handler = type("BoundHandler", (Handler,), {"dashboard": dashboard})
    server_class = type("BoundServer", (DashboardServer,), {"_slots": threading.BoundedSemaphore(MAX_CONNECTIONS)})
    server: DashboardServer = server_class((host, port), handler)
    server.dashboard = dashboard
    dashboard.start()
    threading.Thread(target=server.serve_forever, name="dashboard-http", daemon=True).start()
    log.info("dashboard on http://%s:%d/ for %s", *server.server_address[:2], root.uri)
    return server
