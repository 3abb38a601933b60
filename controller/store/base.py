"""Where a search keeps its records: the store interfaces and the JSON helpers every caller shares.

A trial needs only TrialStore (its own keys: get, put, create, exists); the controller needs the whole Store (also
list, child and check). Implementations: controller/store/local.py (a directory, memory), s3.py, grant.py (a trial's
presigned URLs); controller/store/uri.py opens one from a URI.

Keys are '/'-separated and relative to the store's root. Values are bytes; callers store JSON only
(nothing read back is ever unpickled). `create` is the create-only put that makes "written once"
records safe against a restarted or duplicated writer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Protocol

from controller.errors import RecordError


class TrialStore(Protocol):
    """What a trial may do with its own keys, and all a trial program's side needs."""

    uri: str

    def get(self, key: str, limit: int | None = None) -> bytes | None:
        """The value, or None if there is no such key. limit: at most limit + 1 bytes are read (the caller
        refuses a value longer than limit), so that what a record's writer chose cannot size the reader's memory."""

    def put(self, key: str, data: bytes) -> None:
        """Write (or overwrite) atomically: readers see the old or the new value, never a mix."""

    def create(self, key: str, data: bytes) -> bool:
        """Write only if the key does not exist yet; False if it did (nothing is changed then)."""

    def exists(self, key: str) -> bool: ...


class Store(TrialStore, Protocol):
    """A whole store: the controller also lists records, opens a search's folder and checks the store at start."""

    def list(self, prefix: str = "", start_after: str = "") -> list[str]:
        """All keys under prefix that sort after start_after, sorted."""

    def child(self, name: str) -> Store:
        """The same store rooted at name/ (a search inside a bucket prefix)."""

    def check(self) -> None:
        """Raise ConfigError if the store does not exist or is not writable."""

    def stream(self, key: str) -> tuple[int, Iterator[bytes]] | None:
        """(size, its bytes in chunks of at most CHUNK), or None if there is no such key: a large value (a model)
        passed on without being held whole."""


class Signer(Protocol):
    """A store that can hand out presigned URLs (S3): what a trial's grant is made of."""

    uri: str

    def presign(self, method: str, key: str, expires_s: int) -> str: ...


CHUNK = 1 << 20


def bucket_of(store: TrialStore) -> str | None:
    """The S3 bucket a store lives in; None for a directory store."""
    return store.uri[len("s3://"):].partition("/")[0] if store.uri.startswith("s3://") else None


# -- JSON helpers shared by every caller ---------------------------------------------------------


# A record is small (a long trial's progress.json: ~100 kB; a checkpoint of 10,000 trials: ~10 MB); the operator reads
# every search's, so a writer's bytes must not size its memory.
MAX_RECORD_BYTES = 32 * 2**20
MAX_RECORD_DEPTH = 32


def dumps(record: Any) -> bytes:
    # allow_nan=False: NaN/inf are not JSON, and a record other tools cannot parse is a lost record.
    """A record as JSON bytes; NaN and infinity refused (a record other tools cannot parse is a lost record)."""
    return json.dumps(record, indent=1, allow_nan=False).encode()


def loads(data: bytes, key: str) -> Any:
    """A record from JSON bytes; a RecordError naming the key for anything that is not strict JSON, or nested
    deeper than MAX_RECORD_DEPTH (every reader after this one may recurse)."""
    try:
        record = json.loads(data, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as e:
        raise RecordError(f"{key}: not valid JSON ({e})") from e
    except RecursionError as e:
        raise RecordError(f"{key}: nested deeper than {MAX_RECORD_DEPTH} levels") from e
    todo = [(record, 1)]
    while todo:
        value, depth = todo.pop()
        if depth > MAX_RECORD_DEPTH:
            raise RecordError(f"{key}: nested deeper than {MAX_RECORD_DEPTH} levels")
        if isinstance(value, (dict, list)):
            todo.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))
    return record


def _reject_constant(name: str) -> float:
    raise ValueError(f"non-standard JSON constant {name}")


def get_json(store: TrialStore, key: str, limit: int | None = None) -> Any | None:
    """The record at key, or None when there is none; a RecordError for one over `limit` bytes (default:
    MAX_RECORD_BYTES)."""
    limit = MAX_RECORD_BYTES if limit is None else limit
    data = store.get(key, limit)
    if data is not None and len(data) > limit:
        raise RecordError(f"{key}: over {limit} bytes; not read")
    return None if data is None else loads(data, key)


def put_json(store: TrialStore, key: str, record: Any) -> None:
    """Writes (or overwrites) the record at key."""
    store.put(key, dumps(record))


def create_json(store: TrialStore, key: str, record: Any) -> bool:
    """Writes the record only if the key does not exist; False if it did."""
    return store.create(key, dumps(record))
