"""The Store in a local directory (local mode, tests) and in memory (what higher layers test against)."""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from controller.errors import ConfigError, PermanentError, TemporaryError
from controller.store.base import CHUNK

_UMASK = os.umask(0)
os.umask(_UMASK)


# -- local directory -------------------------------------------------------------------------------


class LocalStore:
    """A Store in a local directory: atomic writes by rename, create-only by link."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).expanduser().absolute()
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        if key.startswith("/") or ".." in key.split("/"):
            raise PermanentError(f"invalid store key {key!r}")
        return self.root / key

    def get(self, key: str, limit: int | None = None) -> bytes | None:
        try:
            with self._path(key).open("rb") as f:
                return f.read() if limit is None else f.read(limit + 1)
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

    def stream(self, key: str) -> tuple[int, Iterator[bytes]] | None:
        try:
            f = self._path(key).open("rb")
        except FileNotFoundError:
            return None
        except OSError as e:
            raise TemporaryError(f"reading {self._path(key)}: {e}") from e

        def chunks() -> Iterator[bytes]:
            with f:
                while chunk := f.read(CHUNK):
                    yield chunk
        return os.fstat(f.fileno()).st_size, chunks()

    def child(self, name: str) -> LocalStore:
        return LocalStore(self._path(name))

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=self.root, prefix=".probe.", delete=True)
            probe.close()
        except OSError as e:
            raise ConfigError(f"store {self.uri}: cannot create or write this directory ({e}); "
                              "pass a writable --store") from e


# -- memory --------------------------------------------------------------------------------------------


class MemoryStore:
    """A Store in a dict: what higher layers test against (optuna's InMemoryStorage plays the same part).
    Children share their parent's dict, as a bucket's prefixes do; writes are atomic under one lock."""

    def __init__(self, uri: str = "memory://", data: dict[str, bytes] | None = None):
        self.uri = uri.rstrip("/")
        self._prefix = self.uri.removeprefix("memory://").strip("/")
        self._prefix += "/" if self._prefix else ""
        self.data: dict[str, bytes] = {} if data is None else data
        self._lock = threading.Lock()

    def _key(self, key: str) -> str:
        if key.startswith("/") or ".." in key.split("/"):
            raise PermanentError(f"invalid store key {key!r}")
        return self._prefix + key

    def get(self, key: str, limit: int | None = None) -> bytes | None:
        data = self.data.get(self._key(key))
        return data if data is None or limit is None else data[:limit + 1]

    def put(self, key: str, data: bytes) -> None:
        with self._lock:
            self.data[self._key(key)] = bytes(data)

    def create(self, key: str, data: bytes) -> bool:
        with self._lock:
            if self._key(key) in self.data:
                return False
            self.data[self._key(key)] = bytes(data)
            return True

    def exists(self, key: str) -> bool:
        return self._key(key) in self.data

    def list(self, prefix: str = "", start_after: str = "") -> list[str]:
        n = len(self._prefix)
        return sorted(k[n:] for k in list(self.data) if k.startswith(self._prefix + prefix) and k[n:] > start_after)

    def child(self, name: str) -> MemoryStore:
        return MemoryStore(f"{self.uri}/{name.strip('/')}", self.data)

    def stream(self, key: str) -> tuple[int, Iterator[bytes]] | None:
        data = self.data.get(self._key(key))
        return None if data is None else (len(data), iter([data[i:i + CHUNK] for i in range(0, len(data), CHUNK)]))

    def check(self) -> None:
        return None
