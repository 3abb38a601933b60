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
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from controller.data.fetch import fetch
from controller.data.sandbox import SandboxLimits, archive_to_npz_isolated
from controller.errors import ConfigError, PermanentError, TemporaryError
from controller.settings.config import Settings, with_overrides
from controller.settings.dataspec import parse_data_spec
from controller.settings.policy import LOCAL, PolicySettings, check_data
from controller.store.base import Store, bucket_of, create_json, get_json
from controller.store.uri import open_store

log = logging.getLogger(__name__)

CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
CIFAR100_SHA256 = "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7"  # Keras' published hash
FIELD = "trial.data (--data)"
# One staging at a time in a process: the operator stages for every Search it starts, and several unstaged Searches
# after a restart would otherwise hold several copies in memory at once (its limit is 2 GiB).
_ONE_AT_A_TIME = threading.Lock()


@dataclass(frozen=True)
class Staged:
    """A dataset staged in the store: where trials read it and the checksums they check."""
    uri: str
    """Where trials read the arrays: <store root>/datasets/<sha256>.npz."""
    sha256: str
    """The archive's."""
    arrays_sha256: str
    """The staged arrays' (what trials check)."""
    fetched: bool
    """False when an earlier search had staged it already (the origin was not read)."""

    def settings(self, settings: Settings) -> Settings:
        """The search's settings with trials reading the staged arrays, checked against their checksum."""
        return with_overrides(settings, trial__data=self.uri, trial__data_sha256=self.arrays_sha256)


def stage(data: str | None, sha256: str | None, root: Store, policy: PolicySettings = LOCAL,
          fetcher: Callable[[str], bytes] | None = None, attempts: int = 3, backoff: float = 1.0,
          field: str = FIELD) -> Staged | None:
    """Stage the dataset named by `data` in `root` (None: generated or already staged data, nothing to do), if
    `policy` allows that source (local mode: LOCAL; the operator: its own). Errors name `field`."""
    spec = check_data(policy, data, sha256, bucket_of(root), field)
    if spec.kind in ("synthetic", "npz", "none"):
        return None
    source = CIFAR100_URL if spec.kind == "cifar100" else spec.spec
    expected = (sha256 or (CIFAR100_SHA256 if spec.kind == "cifar100" else None) or "").lower() or None
    if expected and root.exists(_key(expected)):
        log.info("dataset %s: already staged at %s", source, _uri(root, expected))
        return Staged(_uri(root, expected), expected, _arrays_digest(root, expected), fetched=False)
    # s3:// sources through the store's own client (endpoint, region, credentials), not the environment's.
    open_s3 = getattr(root, "sibling", None) or open_store
    with _ONE_AT_A_TIME:  # an archive, its batches and its arrays at once: ~1 GB for CIFAR-100
        archive = _fetch_verified(source, expected,
                                  fetcher or (lambda s: fetch(s, policy, field, open_s3=open_s3)), attempts, backoff,
                                  field, reveal=policy == LOCAL)
        digest = expected or hashlib.sha256(archive).hexdigest()
        if not expected:
            log.warning("dataset %s: no trial.dataSha256 given; staged as sha256 %s (pass it to pin the data)",
                        source, digest)
        if not root.exists(_key(digest)):
            try:
                arrays = archive_to_npz_isolated(archive, source, SandboxLimits(policy.staging_memory_bytes,
                                                                                 policy.staging_seconds))
            except PermanentError as e:
                raise ConfigError(f"{field}: {e}") from e
            del archive
            if root.create(_key(digest), arrays):
                log.info("dataset %s: staged %.0f MB of arrays at %s", source, len(arrays) / 1e6,
                         _uri(root, digest))
                create_json(root, _digest_key(digest), {"sha256": hashlib.sha256(arrays).hexdigest()})
    return Staged(_uri(root, digest), digest, _arrays_digest(root, digest), fetched=True)


def _arrays_digest(root: Store, digest: str) -> str:
    """The staged arrays' own SHA-256, which every trial checks when it loads them: kept beside them when they are
    staged; computed once from the arrays for a copy staged before it was kept."""
    doc = get_json(root, _digest_key(digest))
    if isinstance(doc, dict) and isinstance(doc.get("sha256"), str):
        return str(doc["sha256"])
    arrays = root.get(_key(digest))
    if arrays is None:
        raise TemporaryError(f"dataset {_uri(root, digest)}: gone while it was being staged; staging again")
    value = hashlib.sha256(arrays).hexdigest()
    create_json(root, _digest_key(digest), {"sha256": value})
    return value


def _fetch_verified(source: str, expected: str | None, fetcher: Callable[[str], bytes], attempts: int,
                    backoff: float, field: str, reveal: bool) -> bytes:
    """Fetch with retries: a network error or a checksum mismatch (a truncated or corrupted download) is tried
    again; what still fails ends the run, naming the source. reveal: whether a mismatch names the bytes' own hash
    and size (local mode: the user's own file; never to a Search's author, who may have named another's object)."""
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
            problem = (f"sha256 {got} of {len(data)} bytes differs from the expected {expected}" if reveal
                       else f"its sha256 differs from the expected {expected}")
        log.warning("dataset %s: %s (attempt %d of %d)", source, problem, attempt, attempts)
        if attempt < attempts:
            time.sleep(backoff * attempt)
    raise ConfigError(f"{field}: {source} {problem}; fix the source or its dataSha256")


def _key(digest: str) -> str:
    return f"datasets/{digest}.npz"


def _digest_key(digest: str) -> str:
    return f"datasets/{digest}.npz.sha256.json"


def _uri(root: Store, digest: str) -> str:
    return f"{root.uri.rstrip('/')}/{_key(digest)}"


def staged_settings(settings: Settings, root: Store) -> Settings:
    """The dataset fetched and checked once, kept in the store; trials get the staged copy as their --data."""
    staged = stage(settings.trial.dataset, settings.trial.data_sha256, root)
    return settings if staged is None else staged.settings(settings)


def check_source_exists(settings: Settings) -> None:
    """What can be refused before anything is written: a local file that is not there, or staged arrays (.npz,
    which staging does not read) missing from their bucket. A source that staging fetches (cifar100, a URL, an
    s3:// archive) is checked by that fetch, once."""
    if settings.trial.data is None:
        return
    spec = parse_data_spec(settings.trial.data, FIELD)
    if spec.kind in ("path", "npz") and not spec.spec.startswith("s3://"):
        if not Path(spec.spec).expanduser().is_file():
            raise ConfigError(f"{FIELD}: no file at {spec.spec}; give the path of "
                              "cifar-100-python.tar.gz, or cifar100 / synthetic[:N]")
    elif spec.kind == "npz":
        parent, _, name = spec.spec.rpartition("/")
        if not open_store(parent, **settings.store.options()).exists(name):
            raise ConfigError(f"{FIELD}: no staged arrays at {spec.spec}; give the archive instead "
                              "and the controller stages it")
