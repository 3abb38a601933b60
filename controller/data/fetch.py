"""Reading a dataset archive from where a search names it, as the policy allows (controller/settings/policy.py).

http(s): the host is resolved once, every address it has is checked (no loopback, link-local — the cloud metadata
address —, private or reserved address unless the policy allows them), and the connection goes to the checked
address (TLS still verifies the host's name), so a second DNS answer cannot swap it. Redirects are followed by hand,
each one checked the same way. Every source is read in chunks and stops at policy.maxDataBytes.
"""

from __future__ import annotations

import http.client
import logging
import os
import socket
import ssl
import stat
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urljoin, urlsplit

from controller.errors import ConfigError, TemporaryError
from controller.settings.policy import PolicyError, PolicySettings, address_refusal
from controller.store.base import Store
from controller.store.uri import open_store

log = logging.getLogger(__name__)

CHUNK = 1 << 20
MAX_REDIRECTS = 5


def fetch(source: str, policy: PolicySettings, field: str, timeout: float = 60.0,
          open_s3: Callable[[str], Store] = open_store) -> bytes:
    """The bytes at an http(s) URL, an s3:// URI (opened by open_s3: the search store's endpoint and credentials)
    or a path. Temporary trouble raises TemporaryError; what the policy refuses, PolicyError naming `field`."""
    if source.startswith(("http://", "https://")):
        return _http(source, policy, field, timeout)
    if source.startswith("s3://"):
        parent, _, name = source.rpartition("/")
        data = open_s3(parent).get(name, policy.max_data_bytes)  # never more than the cap read
        if data is None:
            raise ConfigError(f"{field}: no object at {source}")
        _cap(len(data), policy, field, source)
        return data
    return _file(Path(source).expanduser(), policy, field)


def _file(path: Path, policy: PolicySettings, field: str) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError as e:
        raise ConfigError(f"{field}: no file at {path}") from e
    except OSError as e:
        raise TemporaryError(f"{path}: {e}") from e
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):  # /dev/zero, a FIFO: no end, or no size
            raise PolicyError(f"{field}: {path} is not a regular file")
        return _read_capped(f, policy, field, str(path))


def _read_capped(reader: BinaryIO | http.client.HTTPResponse, policy: PolicySettings, field: str,
                 source: str) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = reader.read(CHUNK)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        _cap(total, policy, field, source)
        chunks.append(chunk)


def _cap(size: int, policy: PolicySettings, field: str, source: str) -> None:
    if size > policy.max_data_bytes:
        raise PolicyError(f"{field}: {source} is over {policy.max_data_bytes} bytes (policy.maxDataBytes); "
                          "the read was stopped there")


class _Pinned(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedTLS(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self.address = address

    def connect(self) -> None:
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def _http(url: str, policy: PolicySettings, field: str, timeout: float) -> bytes:
    for _ in range(MAX_REDIRECTS + 1):
        parts = urlsplit(url)
        scheme, host = parts.scheme, parts.hostname or ""
        if scheme not in policy.data_schemes or scheme not in ("http", "https"):
            raise PolicyError(f"{field}: {url}: {scheme} is not allowed (policy.dataSchemes: "
                              f"{', '.join(policy.data_schemes)})")
        if policy.data_hosts and host not in policy.data_hosts:
            raise PolicyError(f"{field}: {url}: host {host!r} is not in policy.dataHosts")
        port = parts.port or (443 if scheme == "https" else 80)
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as e:
            raise TemporaryError(f"{url}: cannot resolve {host} ({e})") from e
        addresses = [str(info[4][0]) for info in infos]
        refusal = address_refusal(policy, host, addresses)
        if refusal:
            raise PolicyError(f"{field}: {url}: {refusal}")
        conn = (_PinnedTLS if scheme == "https" else _Pinned)(host, port, addresses[0], timeout)
        try:
            conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else "") or "/",
                         headers={"User-Agent": "cifar-hpo"})
            resp = conn.getresponse()
            if resp.status in (301, 302, 303, 307, 308) and resp.getheader("Location"):
                url = urljoin(url, resp.getheader("Location") or "")
                log.info("dataset: redirected to %s", url)
                continue
            if resp.status >= 500 or resp.status == 429:
                raise TemporaryError(f"{url}: HTTP {resp.status}")
            if resp.status != 200:
                raise ConfigError(f"{field}: {url}: HTTP {resp.status} {resp.reason}")
            length = resp.getheader("Content-Length")
            if length and length.isdigit():
                _cap(int(length), policy, field, url)
            return _read_capped(resp, policy, field, url)
        except (OSError, http.client.HTTPException) as e:
            raise TemporaryError(f"{url}: {e}") from e
        finally:
            conn.close()
    raise ConfigError(f"{field}: {url}: more than {MAX_REDIRECTS} redirects")
