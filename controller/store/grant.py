"""A trial's store made of its grant: presigned URLs, one per key and method, sent with the standard library."""

from __future__ import annotations

import os
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping

from controller.errors import ConfigError, TemporaryError


class GrantStore:
    """The TrialStore a trial gets from its grant: the signed requests, nothing more (it cannot list or reach
    another folder: a TrialStore has no such call)."""

    def __init__(self, uri: str, urls: Mapping[str, Mapping[str, str]], timeout_s: float = 60.0):
        self.uri = uri
        self.urls = urls
        self.timeout_s = timeout_s

    def _url(self, key: str, method: str) -> str:
        url = (self.urls.get(key) or {}).get(method)
        if not url:
            raise ConfigError(f"{self.uri}/{key}: the trial's grant does not allow {method} (a trial may read "
                              "proposal.json, write progress.json, its model file and result.json; nothing else)")
        return url

    def _send(self, key: str, method: str, data: bytes | None = None) -> tuple[int, bytes]:
        wire = "PUT" if method == "CREATE" else method
        headers = {"If-None-Match": "*"} if method == "CREATE" else {}
        if data is not None:  # else urllib sends a form's content type, and a server may read the body as a form
            headers["Content-Type"] = "application/octet-stream"
        req = urllib.request.Request(self._url(key, method), data=data, method=wire, headers=headers)
        # A store behind a private CA: the same bundle boto3 would use.
        context = ssl.create_default_context(cafile=os.environ.get("AWS_CA_BUNDLE") or None)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s, context=context) as resp:
                return int(resp.status), resp.read()
        except urllib.error.HTTPError as e:
            if e.code in (404, 412):
                return e.code, b""
            if e.code >= 500 or e.code == 429:
                raise TemporaryError(f"{wire} {self.uri}/{key}: HTTP {e.code}") from e
            raise ConfigError(f"{wire} {self.uri}/{key}: HTTP {e.code} {e.reason} (the grant expired or was "
                              "refused by the store)") from e
        except (urllib.error.URLError, OSError) as e:
            raise TemporaryError(f"{wire} {self.uri}/{key}: {getattr(e, 'reason', e)}") from e

    def get(self, key: str, limit: int | None = None) -> bytes | None:
        status, body = self._send(key, "GET")
        return None if status == 404 else body if limit is None else body[:limit + 1]

    def put(self, key: str, data: bytes) -> None:
        self._send(key, "PUT", data)

    def create(self, key: str, data: bytes) -> bool:
        status, _ = self._send(key, "CREATE", data)
        return status != 412

    def exists(self, key: str) -> bool:
        status, _ = self._send(key, "HEAD")
        return status != 404
