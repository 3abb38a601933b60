"""A fault-injecting HTTPS proxy in front of the real kube-apiserver. It terminates TLS with a certificate of the
local cluster's own CA, forwards every request, and on the rules a test sets it answers an error instead, drops
a connection after the request landed, ends a watch, or serves the ERROR event a watch from a compacted
resourceVersion gets (410 Expired). It counts what it served, so a test can compare that with what reached the
controller (its log) and what urllib3 retried on the way."""

from __future__ import annotations

import datetime
import http.client
import http.server
import ipaddress
import json
import re
import ssl
import threading
import urllib.parse
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

GONE = {"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                    "message": "too old resource version", "reason": "Expired", "code": 410}}


@dataclass
class Rule:
    method: str
    path: str
    """A regex on the path (no query)."""
    action: str
    """status:<code> | drop_after_forward | gone (a watch gets the 410 ERROR event) | drop_watch (after 1 event)"""
    count: int
    watch: bool | None = None
    """Only watch requests (True), only others (False), or both (None)."""


class ApiFaultProxy:
    def __init__(self, server: str, pki: Path):
        self.target = urllib.parse.urlsplit(server)
        self.upstream_ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        self.rules: list[Rule] = []
        self.served: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        """'<METHOD> <resource>' and 'WATCH <resource>', e.g. 'GET jobs', 'WATCH jobs', 'POST jobs'."""
        self.forwarded = 0
        self.lock = threading.Lock()
        cert, key = _leaf(pki)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_):
                pass

            def do_GET(self):
                proxy._handle(self)

            do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> ApiFaultProxy:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()

    def add(self, method: str, path: str, action: str, count: int, watch: bool | None = None) -> None:
        with self.lock:
            self.rules.append(Rule(method, path, action, count, watch))

    def _take(self, method: str, path: str, watch: bool) -> Rule | None:
        with self.lock:
            for rule in self.rules:
                if (rule.count > 0 and rule.method == method and re.search(rule.path, path)
                        and rule.watch in (None, watch)):
                    rule.count -= 1
                    return rule
        return None

    def _served(self, action: str) -> None:
        """Counted once the fault has happened (the answer written, the connection cut), not when its rule matched:
        a rule taken by a request that then went otherwise is not a fault served."""
        with self.lock:
            self.served[action] += 1

    def _handle(self, req: http.server.BaseHTTPRequestHandler) -> None:
        url = urllib.parse.urlsplit(req.path)
        watch = "watch=true" in url.query or "watch=1" in url.query
        body = req.rfile.read(int(req.headers.get("Content-Length") or 0))
        resource = [p for p in url.path.split("/") if p][-1] if url.path.strip("/") else ""
        with self.lock:
            self.requests[f"{'WATCH' if watch else req.command} {resource}"] += 1
        rule = self._take(req.command, url.path, watch)
        action = rule.action if rule else None
        if action and action.startswith("status:"):
            code = int(action.split(":")[1])
            payload = json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
                                  "message": "injected by the test proxy"}).encode()
            req.send_response(code)
            req.send_header("Content-Type", "application/json")
            req.send_header("Content-Length", str(len(payload)))
            req.end_headers()
            req.wfile.write(payload)
            self._served(action)
            return
        if action == "gone":
            _chunked_start(req, 200)
            _chunk(req, json.dumps(GONE).encode() + b"\n")
            _chunk(req, b"")
            self._served(action)
            return
        conn = http.client.HTTPSConnection(self.target.hostname, self.target.port, context=self.upstream_ctx,
                                           timeout=None if watch else 60)
        headers = {k: v for k, v in req.headers.items() if k.lower() not in ("host", "connection", "content-length")}
        conn.request(req.command, req.path, body=body or None, headers=headers)
        resp = conn.getresponse()
        with self.lock:
            self.forwarded += 1
        try:
            if action == "drop_after_forward":
                resp.read()
                req.close_connection = True
                req.connection.shutdown(2)  # the request landed; its answer never arrives
                self._served(action)
                return
            if watch and resp.status == 200:
                _chunked_start(req, 200, resp.getheader("Content-Type"))
                events = 0
                while True:
                    line = resp.readline()
                    if not line:
                        break
                    _chunk(req, line)
                    events += 1
                    if action == "drop_watch" and events >= 1:
                        req.close_connection = True
                        req.connection.shutdown(2)
                        self._served(action)
                        return
                _chunk(req, b"")
                if rule is not None and action == "drop_watch":
                    with self.lock:
                        rule.count += 1  # the watch ended with no event to cut after: the next one is dropped
                return
            data = resp.read()
            req.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                    req.send_header(k, v)
            req.send_header("Content-Length", str(len(data)))
            req.end_headers()
            req.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError, OSError):
            req.close_connection = True
        finally:
            conn.close()


def _chunked_start(req, status: int, content_type: str | None = "application/json") -> None:
    req.send_response(status)
    req.send_header("Content-Type", content_type or "application/json")
    req.send_header("Transfer-Encoding", "chunked")
    req.end_headers()


def _chunk(req, data: bytes) -> None:
    req.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
    req.wfile.flush()


def _leaf(pki: Path) -> tuple[Path, Path]:
    """A serving certificate for 127.0.0.1 signed by the cluster's CA, so clients trust the proxy as the server."""
    ca_key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), None)
    ca = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fault-proxy")]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    out = pki.parent / "fault-proxy"
    out.mkdir(exist_ok=True)
    (out / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (out / "tls.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                    serialization.PrivateFormat.TraditionalOpenSSL,
                                                    serialization.NoEncryption()))
    return out / "tls.crt", out / "tls.key"
