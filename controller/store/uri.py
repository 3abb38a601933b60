"""Opens the Store a URI names: s3://bucket/prefix, a directory path or file://path."""

from __future__ import annotations

import os
from urllib.parse import urlparse

from controller.errors import ConfigError
from controller.store.base import Store
from controller.store.local import LocalStore
from controller.store.s3 import S3Store


def open_store(uri: str, *, endpoint_url: str | None = None, region: str | None = None, timeout_s: float = 20.0,
               addressing_style: str = "auto", checksums: str = "when_supported",
               ca_bundle: str | None = None) -> Store:
    """s3://bucket/prefix → S3Store; a path or file://path → LocalStore."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ConfigError(f"store {uri!r}: an S3 URI needs a bucket, e.g. s3://my-bucket/searches")
        path = parsed.path[1:].rstrip("/")  # one slash after the bucket; a trailing one is harmless
        segments = path.split("/") if path else []
        odd = next((s for s in segments if s in ("", ".", "..")), None)
        if odd is not None:
            # S3 keys are plain strings, but some servers collapse '//' or resolve '..' in them: the records
            # written under one spelling would not be found under the other.
            shown = "//" if odd == "" else f"/{odd}/"
            raise ConfigError(f"store {uri!r}: a '{shown}' in the prefix; servers differ on such keys (some collapse "
                              "or resolve them), so write the prefix plainly, e.g. s3://my-bucket/searches")
        return S3Store(parsed.netloc, parsed.path, endpoint_url=endpoint_url, region=region, timeout_s=timeout_s,
                       addressing_style=addressing_style, checksums=checksums, ca_bundle=ca_bundle)
    if parsed.scheme == "file":
        return LocalStore(parsed.path)
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):
        return LocalStore(uri)
    raise ConfigError(f"store {uri!r}: unsupported scheme {parsed.scheme!r}; use s3://bucket/prefix, a path or file://path")
