"""Where a search keeps its records: a local directory or an S3 bucket, chosen by URI.

Keys are '/'-separated and relative to the store's root. Values are bytes; callers store JSON only
(nothing read back is ever unpickled). `create` is the create-only put that makes "written once"
records safe against a restarted or duplicated writer.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Protocol
from urllib.parse import urlparse

from controller.errors import ConfigError, PermanentError, RecordError, TemporaryError

log = logging.getLogger(__name__)

_UMASK = os.umask(0)
os.umask(_UMASK)


class Store(Protocol):
    uri: str

    def get(self, key: str) -> bytes | None:
        """The value, or None if there is no such key."""

    def put(self, key: str, data: bytes) -> None:
        """Write (or overwrite) atomically: readers see the old or the new value, never a mix."""

    def create(self, key: str, data: bytes) -> bool:
        """Write only if the key does not exist yet; False if it did (nothing is changed then)."""

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str = "", start_after: str = "") -> list[str]:
        """All keys under prefix that sort after start_after, sorted."""

    def child(self, name: str) -> "Store":
        """The same store rooted at name/ (a search inside a bucket prefix)."""

    def check(self) -> None:
        """Raise ConfigError if the store does not exist or is not writable."""


# -- JSON helpers shared by every caller ---------------------------------------------------------


def dumps(record: Any) -> bytes:
    # allow_nan=False: NaN/inf are not JSON, and a record other tools cannot parse is a lost record.
    return json.dumps(record, indent=1, allow_nan=False).encode()


def loads(data: bytes, key: str) -> Any:
    try:
        return json.loads(data, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as e:
        raise RecordError(f"{key}: not valid JSON ({e})") from e


def _reject_constant(name: str) -> float:
    raise ValueError(f"non-standard JSON constant {name}")


def get_json(store: Store, key: str) -> Any | None:
    data = store.get(key)
    return None if data is None else loads(data, key)


def put_json(store: Store, key: str, record: Any) -> None:
    store.put(key, dumps(record))


def create_json(store: Store, key: str, record: Any) -> bool:
    return store.create(key, dumps(record))


# -- local directory -------------------------------------------------------------------------------


class LocalStore:
    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).expanduser().absolute()
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        if key.startswith("/") or ".." in key.split("/"):
            raise PermanentError(f"invalid store key {key!r}")
        return self.root / key

    def get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise TemporaryError(f"reading {self._path(key)}: {e}") from e

    def _temp(self, path: Path, data: bytes) -> str:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; records are as readable as any file
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return tmp

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            tmp = self._temp(path, data)
            os.replace(tmp, path)
        except OSError as e:
            raise TemporaryError(f"writing {path}: {e}") from e

    def create(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        try:
            tmp = self._temp(path, data)
            try:
                # link() fails if the target exists: an atomic create-only rename.
                os.link(tmp, path)
                return True
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
        except OSError as e:
            raise TemporaryError(f"writing {path}: {e}") from e

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def list(self, prefix: str = "", start_after: str = "") -> list[str]:
        base = self.root
        keys = []
        for dirpath, _, files in os.walk(base):
            rel = os.path.relpath(dirpath, base)
            for name in files:
                if name.startswith("."):
                    continue  # temp files of an interrupted write
                key = name if rel == "." else f"{rel}/{name}".replace(os.sep, "/")
                if key.startswith(prefix) and key > start_after:
                    keys.append(key)
        return sorted(keys)

    def child(self, name: str) -> "LocalStore":
        return LocalStore(self._path(name))

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=self.root, prefix=".probe.", delete=True)
            probe.close()
        except OSError as e:
            raise ConfigError(f"store {self.uri}: cannot create or write this directory ({e}); pass a writable --store") from e


# -- S3 (AWS, MinIO, any S3-compatible server) ----------------------------------------------------------


class S3Store:
    """endpoint_url: None uses boto3's own resolution, which honours AWS_ENDPOINT_URL_S3 and
    AWS_ENDPOINT_URL. Retries (with backoff, on throttling and 5xx) are botocore's 'standard' mode."""

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None, region: str | None = None,
                 max_attempts: int = 8, timeout_s: float = 20.0, client: Any = None):
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.uri = f"s3://{bucket}/{self.prefix}".rstrip("/")
        if client is None:
            import boto3
            from botocore.config import Config

            config = Config(
                retries={"mode": "standard", "max_attempts": max_attempts},
                connect_timeout=timeout_s,
                read_timeout=timeout_s,
                max_pool_connections=32,
            )
            client = boto3.session.Session().client("s3", endpoint_url=endpoint_url, region_name=region, config=config)
        self.client = client

    def _error(self, e: Exception, what: str) -> Exception:
        from botocore.exceptions import ClientError

        if isinstance(e, ClientError):
            code = e.response.get("Error", {}).get("Code", "")
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code in ("NoSuchBucket", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled"):
                return ConfigError(f"{what} in {self.uri}: {code}; check the bucket name and credentials")
            if status >= 500 or code in ("SlowDown", "RequestTimeout", "Throttling"):
                return TemporaryError(f"{what} in {self.uri}: {code} (HTTP {status})")
            return PermanentError(f"{what} in {self.uri}: {code} (HTTP {status})")
        return TemporaryError(f"{what} in {self.uri}: {e}")

    def get(self, key: str) -> bytes | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)["Body"].read()
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise self._error(e, f"get {key}") from e
        except BotoCoreError as e:
            raise self._error(e, f"get {key}") from e

    def put(self, key: str, data: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=data)
        except (BotoCoreError, ClientError) as e:
            raise self._error(e, f"put {key}") from e

    def create(self, key: str, data: bytes) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=data, IfNoneMatch="*")
            return True
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code")
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "PreconditionFailed" or status == 412:
                return False
            if code == "ConditionalRequestConflict" or status == 409:
                # A concurrent create of the same key: retry decides who won.
                raise TemporaryError(f"create {key} in {self.uri}: concurrent write, retry") from e
            raise self._error(e, f"create {key}") from e
        except BotoCoreError as e:
            raise self._error(e, f"create {key}") from e

    def exists(self, key: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self.prefix + key)
            return True
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self._error(e, f"head {key}") from e
        except BotoCoreError as e:
            raise self._error(e, f"head {key}") from e

    def _pages(self, prefix: str, start_after: str) -> Iterator[dict]:
        paginator = self.client.get_paginator("list_objects_v2")
        extra = {"StartAfter": self.prefix + start_after} if start_after else {}
        yield from paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix, **extra)

    def list(self, prefix: str = "", start_after: str = "") -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        n = len(self.prefix)
        try:
            pages = self._pages(prefix, start_after)
            return sorted(obj["Key"][n:] for page in pages for obj in page.get("Contents", []))
        except (BotoCoreError, ClientError) as e:
            raise self._error(e, f"list {prefix}") from e

    def child(self, name: str) -> "S3Store":
        return S3Store(self.bucket, self.prefix + name, client=self.client)

    def check(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as e:
            raise ConfigError(
                f"store {self.uri}: bucket {self.bucket!r} does not exist or is not accessible "
                f"({e.response.get('Error', {}).get('Code')}); create it or fix --store / the credentials"
            ) from e
        except BotoCoreError as e:
            raise ConfigError(f"store {self.uri}: cannot reach the S3 endpoint ({e}); check AWS_ENDPOINT_URL_S3") from e


def open_store(uri: str, *, endpoint_url: str | None = None, region: str | None = None,
               timeout_s: float = 20.0) -> Store:
    """s3://bucket/prefix → S3Store; a path or file://path → LocalStore."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ConfigError(f"store {uri!r}: an S3 URI needs a bucket, e.g. s3://my-bucket/searches")
        return S3Store(parsed.netloc, parsed.path, endpoint_url=endpoint_url, region=region, timeout_s=timeout_s)
    if parsed.scheme == "file":
        return LocalStore(parsed.path)
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):
        return LocalStore(uri)
    raise ConfigError(f"store {uri!r}: unsupported scheme {parsed.scheme!r}; use s3://bucket/prefix, a path or file://path")

