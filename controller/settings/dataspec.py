"""The trainer's data spec, parsed in one place so that the controller can refuse a bad one before the
first trial instead of failing every trial with it. Pure: no I/O.

  cifar100            Keras' download (https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz)
  synthetic[:N]       N generated training images (default 5000, at least 100)
  none                no dataset: the trial program brings its own (nothing fetched, staged or passed)
  https://host/path   the standard cifar-100-python.tar.gz at a URL (http:// too)
  s3://bucket/key     the same archive in a bucket
  PATH                the same archive on a local disk (or in the trial's container)
  ….npz               arrays staged by the controller (controller/data/staging.py), a path or an s3:// URI
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.errors import ConfigError

SYNTHETIC_DEFAULT = 5000
SYNTHETIC_MIN = 100


@dataclass(frozen=True)
class DataSpec:
    """A parsed data spec: its kind and the text it came from."""
    kind: str
    """cifar100 | synthetic | http | s3 | path | npz | none"""
    spec: str
    size: int | None = None
    """Training images, for synthetic."""


def parse_data_spec(spec: str, field: str = "--data") -> DataSpec:
    """The data spec's kind (cifar100, synthetic[:N], an https URL, s3://, a path, staged .npz, none), or a
    ConfigError naming the field."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"{field}: must name a dataset: cifar100, synthetic[:N], s3://bucket/key or a path")
    if spec == "cifar100":
        return DataSpec("cifar100", spec)
    if spec == "none":  # a trial program that brings its own data (examples/digits): nothing to fetch or stage
        return DataSpec("none", spec)
    if spec == "synthetic" or spec.startswith("synthetic:"):
        _, _, n = spec.partition(":")
        try:
            size = int(n) if n else SYNTHETIC_DEFAULT
        except ValueError as e:
            raise ConfigError(f"{field}: {spec!r}: synthetic takes a number of images, e.g. synthetic:2048") from e
        if size < SYNTHETIC_MIN:
            raise ConfigError(f"{field}: {spec!r}: synthetic needs at least {SYNTHETIC_MIN} images")
        return DataSpec("synthetic", spec, size)
    if spec.startswith(("http://", "https://")):
        if not spec.split("://", 1)[1].partition("/")[0]:
            raise ConfigError(f"{field}: {spec!r}: expected https://host/path/cifar-100-python.tar.gz")
        return DataSpec("http", spec)
    if spec.startswith("s3://"):
        bucket, _, key = spec[len("s3://"):].partition("/")
        if not bucket or not key or key.endswith("/"):
            raise ConfigError(f"{field}: {spec!r}: expected s3://bucket/path/cifar-100-python.tar.gz")
        return DataSpec("npz" if key.endswith(".npz") else "s3", spec)
    if "://" in spec:
        raise ConfigError(f"{field}: {spec!r}: only http(s):// and s3:// URIs are read; else give a local path")
    return DataSpec("npz" if spec.endswith(".npz") else "path", spec)
