"""A fault-injecting HTTP proxy for tests: put it in front of moto's S3 server and make it answer
500/503 bursts, respond slowly, hang past the client's timeout, or refuse connections (a restarting
server). Bounded: it only ever talks to the one upstream on 127.0.0.1 it was given."""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlparse


@dataclass
class Faults:
    errors: list[int] = field(default_factory=list)
    """Statuses to answer, one per request, before forwarding again."""
    delay: float = 0.0
    """Seconds added before every forwarded request."""
    hang: int = 0
    """This many requests get no answer for `hang_seconds` (a timeout on the client's side)."""
    hang_seconds: float = 30.0
    down: bool = False
    """Close every connection at once (the server is restarting)."""
    conditional: str = "honour"
    """What the store does with If-None-Match: honour it (moto does), ignore it (the header is dropped), or refuse
    it (501 NotImplemented), as S3-compatible servers variously do."""
    counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()

    def take(self) -> tuple[str, Any]:
        with self.lock:
            if self.down:
                kind, value = "down", None
            elif self.errors:
                kind, value = "error", self.errors.pop(0)
            elif self.hang > 0:
                self.hang -= 1
                kind, value = "hang", self.hang_seconds
            else:
                kind, value = "forward", self.delay
            self.counts[kind] = self.counts.get(kind, 0) + 1
            return kind, value


class FaultProxy:
    def __init__(self, upstream: str):
        self.upstream = urlparse(upstream)
        from support.net import host_ip

        local = ("127.0.0.1", "localhost", host_ip())  # this machine's own addresses
        assert self.upstream.hostname in local, "the proxy only fronts a local server"
        self.faults = Faults()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                kind, value = proxy.faults.take()
                if kind == "down":
                    self.close_connection = True
                    self.connection.close()
                    return
                conditional = self.headers.get("If-None-Match") is not None
                if conditional and proxy.faults.conditional == "refuse":
                    kind, value = "error", 501
                if kind == "error":
                    code = {503: b"SlowDown", 501: b"NotImplemented"}.get(value, b"InternalError")
                    data = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>injected'
                            b'</Message></Error>' % code)
                    self.send_response(value)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                time.sleep(value)
                conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=60)
                dropped = ("connection", "if-none-match") if proxy.faults.conditional == "ignore" else ("connection",)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in dropped}
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
