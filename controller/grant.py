"""A trial's access to the store: presigned URLs for its own keys, and nothing else.

A trial runs code that whoever wrote its Search chose, so on a cluster it never gets the bucket's keys. The
controller signs, per trial, the few requests the trial contract needs (read proposal.json, see whether stop.json
exists, write progress.json and model.keras, create result.json once, read the staged dataset) and hands them to the
trial as one environment variable. The store itself refuses anything else: another key is not signed, a changed
URL fails its signature, and an unsigned request is anonymous. What a signature allows is fixed when it is made:
result.json's URL carries `If-None-Match: *`, so a trial cannot replace a result either.

Signatures last as long as the trial may (its Job's activeDeadlineSeconds, at most 7 days: SigV4's limit). Signed
with temporary credentials (workload identity), they end with those credentials: SECURITY.md says what to do.
"""

from __future__ import annotations

import json
import os
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

from controller.backoff import Backoff
from controller.config import Settings
from controller.errors import ConfigError, TemporaryError
from controller.ledger import trial_prefix
from controller.policy import MAX_DEADLINE_SECONDS
from controller.storage import open_store
from controller.store import Store

GRANT_ENV = "CIFAR_HPO_TRIAL_GRANT"
T = TypeVar("T")
SLACK_SECONDS = 600
# The trial contract's keys and what a trial may do with each.
TRIAL_KEYS = {"proposal.json": ("GET",), "stop.json": ("HEAD",), "progress.json": ("PUT",),
              "model.keras": ("PUT",), "result.json": ("CREATE",)}


class Signer(Protocol):
    uri: str

    def presign(self, method: str, key: str, expires_s: int) -> str:
        """A URL allowing one method (GET, HEAD, PUT, CREATE: a PUT with If-None-Match: *) on one key."""


def make_grant(trial: Signer, data: tuple[Signer, str] | None, expires_s: int) -> dict[str, Any]:
    """The grant of one trial: its folder's store, and the staged dataset (its store and key) if any."""
    urls = {key: {m: trial.presign(m, key, expires_s) for m in methods} for key, methods in TRIAL_KEYS.items()}
    grant: dict[str, Any] = {"version": 1, "trial": trial.uri, "expires_at": int(time.time()) + expires_s,
                             "urls": urls}
    if data is not None:
        root, key = data
        grant["data"] = {"uri": f"{root.uri.rstrip('/')}/{key}", "GET": root.presign("GET", key, expires_s)}
    return grant


def trial_grants(settings: Settings, trials: Store, root: Store) -> Callable[[int], dict[str, str]] | None:
    """tid → the environment that gives a trial its grant; None where trials get no grant: kube.trialAccess is
    credentials, or the store cannot sign (a directory store, which the trial sees as the same folder)."""
    if settings.kube.trial_access != "presigned" or not (hasattr(trials, "presign") and hasattr(root, "presign")):
        return None
    expires = min(MAX_DEADLINE_SECONDS, settings.kube.active_deadline_seconds + SLACK_SECONDS)
    root_prefix = root.uri.rstrip("/") + "/"
    data_uri = settings.trial.data
    data_key = data_uri[len(root_prefix):] if data_uri and data_uri.startswith(root_prefix) else None

    def env(tid: int) -> dict[str, str]:
        trial: Any = trials.child(trial_prefix(tid))
        data = (root, data_key) if data_key else None
        return {GRANT_ENV: json.dumps(make_grant(trial, data, expires), separators=(",", ":"))}  # type: ignore[arg-type]

    return env


class GrantStore:
    """The Store a trial gets from its grant: the signed requests, nothing more."""

    def __init__(self, uri: str, urls: Mapping[str, Mapping[str, str]], timeout_s: float = 60.0):
        self.uri = uri
        self.urls = urls
        self.timeout_s = timeout_s

    def _url(self, key: str, method: str) -> str:
        url = (self.urls.get(key) or {}).get(method)
        if not url:
            raise ConfigError(f"{self.uri}/{key}: the trial's grant does not allow {method} (a trial may read "
                              "proposal.json, write progress.json, model.keras and result.json; nothing else)")
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

    def get(self, key: str) -> bytes | None:
        status, body = self._send(key, "GET")
        return None if status == 404 else body

    def put(self, key: str, data: bytes) -> None:
        self._send(key, "PUT", data)

    def create(self, key: str, data: bytes) -> bool:
        status, _ = self._send(key, "CREATE", data)
        return status != 412

    def exists(self, key: str) -> bool:
        status, _ = self._send(key, "HEAD")
        return status != 404

    def list(self, prefix: str = "", start_after: str = "") -> list[str]:
        raise ConfigError(f"{self.uri}: a trial's grant cannot list keys")

    def child(self, name: str) -> Store:
        raise ConfigError(f"{self.uri}: a trial's grant reaches its own folder only, not {name}/")

    def check(self) -> None:
        return None


# A store outage at a trial's start or end must not cost the trial (its hours of training, at the end): the
# contract's one-off records are retried this long, with backoff, before the trial gives up (exit 1: a retry).
PATIENCE_SECONDS = 900.0


def patiently(what: str, fn: Callable[[], T]) -> T:
    """fn() retried on TemporaryError for PATIENCE_SECONDS (reading proposal.json, writing result.json)."""
    return Backoff(cap=30.0).retrying(what, fn, give_up_after=PATIENCE_SECONDS)


def open_trial(uri: str) -> tuple[Store, Callable[[str], Store] | None]:
    """The trial contract's entry: the trial's store (from its grant when it has one, else the URI with the
    environment's credentials) and, with a grant, the opener that reads its dataset."""
    raw = os.environ.get(GRANT_ENV)
    if not raw:
        return open_store(uri), None
    try:
        grant = json.loads(raw)
        store = GrantStore(str(grant["trial"]), grant["urls"])
        data = grant.get("data")
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{GRANT_ENV}: not a trial grant ({e})") from e

    def data_opener(parent: str) -> Store:
        if not data or not str(data.get("uri", "")).startswith(parent.rstrip("/") + "/"):
            raise ConfigError(f"{parent}: the trial's grant reads only its staged dataset")
        name = str(data["uri"])[len(parent.rstrip("/")) + 1:]
        return GrantStore(parent, {name: {"GET": str(data["GET"])}})

    return store, data_opener
