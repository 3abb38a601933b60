"""The dataset, staged once per store instead of downloaded by every trial.

When a search starts, the standard cifar-100-python.tar.gz named by the settings is fetched once from its origin
(`cifar100`: Keras' URL; an http(s) URL; a path; an s3:// URI), its SHA-256 checked (the published one for
`cifar100`, else `trial.dataSha256` when given), converted to uint8 arrays (an .npz: no pickle for a trial to
read) and kept in the store at datasets/<sha256 of the archive>.npz, create-once, so that several searches in one
store share it. Trials get that URI as their --data. A source that cannot be read, or keeps failing its checksum,
stops `run` before its first trial (ConfigError: exit 2) instead of failing every trial.
"""

from __future__ import annotations

import hashlib
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from controller.cifar import archive_to_npz
from controller.dataspec import parse_data_spec
from controller.errors import ConfigError, PermanentError, TemporaryError
from controller.storage import open_store
from controller.store import Store

log = logging.getLogger(__name__)

CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
CIFAR100_SHA256 = "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7"  # Keras' published hash
FIELD = "trial.data (--data)"


@dataclass(frozen=True)
class Staged:
    uri: str
    """Where trials read the arrays: <store root>/datasets/<sha256>.npz."""
    sha256: str
    fetched: bool
    """False when an earlier search had staged it already (the origin was not read)."""


def fetch(source: str, timeout: float = 60.0) -> bytes:
    """The bytes at an http(s) URL, an s3:// URI or a path. Temporary trouble raises TemporaryError."""
    if source.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(source, timeout=timeout) as resp:
                body: bytes = resp.read()
                return body
        except (urllib.error.URLError, OSError) as e:
            raise TemporaryError(f"{source}: {getattr(e, 'reason', e)}") from e
    if source.startswith("s3://"):
        parent, _, name = source.rpartition("/")
        stored = open_store(parent).get(name)
        if stored is None:
            raise ConfigError(f"{FIELD}: no object at {source}")
        return stored
    try:
        return Path(source).expanduser().read_bytes()
    except FileNotFoundError as e:
        raise ConfigError(f"{FIELD}: no file at {source}") from e
    except OSError as e:
        raise TemporaryError(f"{source}: {e}") from e


def stage(data: str | None, sha256: str | None, root: Store, fetcher: Callable[[str], bytes] = fetch,
          attempts: int = 3, backoff: float = 1.0) -> Staged | None:
    """Stage the dataset named by `data` in `root` (None: generated or already staged data, nothing to do)."""
    spec = parse_data_spec(data or "cifar100", FIELD)
    if spec.kind in ("synthetic", "npz"):
        return None
    source = CIFAR100_URL if spec.kind == "cifar100" else spec.spec
    expected = (sha256 or (CIFAR100_SHA256 if spec.kind == "cifar100" else None) or "").lower() or None
    if expected and root.exists(_key(expected)):
        log.info("dataset %s: already staged at %s", source, _uri(root, expected))
        return Staged(_uri(root, expected), expected, fetched=False)
    archive = _fetch_verified(source, expected, fetcher, attempts, backoff)
    digest = expected or hashlib.sha256(archive).hexdigest()
    if not expected:
        log.warning("dataset %s: no trial.dataSha256 given; staged as sha256 %s (pass it to pin the data)", source,
                    digest)
    if not root.exists(_key(digest)):
        try:
            arrays = archive_to_npz(archive, source)
        except PermanentError as e:
            raise ConfigError(f"{FIELD}: {e}") from e
        if root.create(_key(digest), arrays):
            log.info("dataset %s: staged %.0f MB of arrays at %s", source, len(arrays) / 1e6, _uri(root, digest))
    return Staged(_uri(root, digest), digest, fetched=True)


def _fetch_verified(source: str, expected: str | None, fetcher: Callable[[str], bytes], attempts: int,
                    backoff: float) -> bytes:
    """Fetch with retries: a network error or a checksum mismatch (a truncated or corrupted download) is tried
    again; what still fails ends the run, naming the source."""
    problem = ""
    for attempt in range(1, attempts + 1):
        try:
            data = fetcher(source)
        except TemporaryError as e:
            problem = f"cannot be read ({e})"
        else:
            got = hashlib.sha256(data).hexdigest()
            if expected is None or got == expected:
                return data
            problem = f"sha256 {got} of {len(data)} bytes differs from the expected {expected}"
        log.warning("dataset %s: %s (attempt %d of %d)", source, problem, attempt, attempts)
        if attempt < attempts:
            time.sleep(backoff * attempt)
    raise ConfigError(f"{FIELD}: {source} {problem}; fix the source or trial.dataSha256 (--data-sha256)")


def _key(digest: str) -> str:
    return f"datasets/{digest}.npz"


def _uri(root: Store, digest: str) -> str:
    return f"{root.uri.rstrip('/')}/{_key(digest)}"
