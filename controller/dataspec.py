"""The trainer's data spec, parsed in one place so that the controller can refuse a bad one before the
first trial instead of failing every trial with it. Pure: no I/O.

  cifar100            Keras' download
  synthetic[:N]       N generated training images (default 5000, at least 100)
  s3://bucket/key     the standard cifar-100-python.tar.gz in a bucket
  PATH                the same archive on a local disk (or in the trial's container)
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.errors import ConfigError

SYNTHETIC_DEFAULT = 5000
SYNTHETIC_MIN = 100


@dataclass(frozen=True)
class DataSpec:
    kind: str
    """cifar100 | synthetic | s3 | path"""
    spec: str
    size: int | None = None
    """Training images, for synthetic."""


def parse_data_spec(spec: str, field: str = "--data") -> DataSpec:
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"{field}: must name a dataset: cifar100, synthetic[:N], s3://bucket/key or a path")
    if spec == "cifar100":
        return DataSpec("cifar100", spec)
    if spec == "synthetic" or spec.startswith("synthetic:"):
        _, _, n = spec.partition(":")
        try:
            size = int(n) if n else SYNTHETIC_DEFAULT
        except ValueError as e:
            raise ConfigError(f"{field}: {spec!r}: synthetic takes a number of images, e.g. synthetic:2048") from e
        if size < SYNTHETIC_MIN:
            raise ConfigError(f"{field}: {spec!r}: synthetic needs at least {SYNTHETIC_MIN} images")
        return DataSpec("synthetic", spec, size)
    if spec.startswith("s3://"):
        bucket, _, key = spec[len("s3://"):].partition("/")
        if not bucket or not key or key.endswith("/"):
            raise ConfigError(f"{field}: {spec!r}: expected s3://bucket/path/cifar-100-python.tar.gz")
        return DataSpec("s3", spec)
    if "://" in spec:
        raise ConfigError(f"{field}: {spec!r}: only s3:// URIs are read; for another location use a local path")
    return DataSpec("path", spec)
