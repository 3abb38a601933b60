"""CIFAR-100 (fine + coarse labels) from Keras' download, the standard python archive, or generated.

Specs (controller/settings/dataspec.py parses them):
  cifar100                          Keras' download (cached under ~/.keras/datasets)
  PATH, s3://… or http(s)://…/cifar-100-python.tar.gz   the standard archive (train/test pickles)
  ….npz                             the arrays the controller staged once for the search (controller/data/staging.py);
                                    with CIFAR_HPO_DATA_CACHE set, kept in that folder (a node cache) by checksum
  synthetic[:N]                     N generated training images (default 5000) with learnable classes

The formats themselves (archive, staged arrays, generated data) are controller/data/cifar.py's.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from controller.data.cifar import Dataset, Split, check_split, load_archive, load_npz, synthetic
from controller.errors import ConfigError, TemporaryError
from controller.settings.dataspec import SYNTHETIC_DEFAULT, parse_data_spec
from controller.store.base import TrialStore

log = logging.getLogger(__name__)


# -- Keras' download --------------------------------------------------------------------------------


def load_keras() -> Dataset:
    """CIFAR-100 through Keras' own download and cache (fine and coarse labels)."""
    from tensorflow import keras

    try:
        (x, fine), (xt, finet) = keras.datasets.cifar100.load_data(label_mode="fine")
        (_, coarse), (_, coarset) = keras.datasets.cifar100.load_data(label_mode="coarse")
    except Exception as e:
        raise TemporaryError(
            f"data cifar100: the Keras download failed ({e}); without internet use --data PATH or "
            "s3://bucket/cifar-100-python.tar.gz (the standard archive), or --data synthetic"
        ) from e
    train = Split(x, fine.reshape(-1).astype(np.int32), coarse.reshape(-1).astype(np.int32))
    test = Split(xt, finet.reshape(-1).astype(np.int32), coarset.reshape(-1).astype(np.int32))
    return Dataset(check_split(train, "cifar100 train"), check_split(test, "cifar100 test"), "cifar100 (keras)")


def verified(data: bytes, sha256: str | None, uri: str) -> bytes:
    """data, if it has the SHA-256 the controller staged (or the user pinned)."""
    if sha256 and hashlib.sha256(data).hexdigest() != sha256.lower():
        raise ConfigError(f"--data {uri}: sha256 {hashlib.sha256(data).hexdigest()} differs from --data-sha256 "
                          f"{sha256}: the copy was changed or cut short since it was staged; not loaded")
    return data


def cached(uri: str, read: Callable[[], bytes], cache_dir: str | None, sha256: str | None = None) -> bytes:
    """The bytes at uri, through a node-local cache folder when one is given: kept as <name> beside
    <name>.sha256, both written to temporary files and renamed into place, so two trials filling it at once
    each leave a whole, checksum-matching copy; a copy that fails its checksum (or differs from sha256, the one
    the controller staged) is fetched again. What is read is checked against sha256 too."""
    if not cache_dir:
        return verified(read(), sha256, uri)
    folder = Path(cache_dir)
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    path, digest_path = folder / name, folder / f"{name}.sha256"
    try:
        data, want = path.read_bytes(), digest_path.read_text().strip()
        if hashlib.sha256(data).hexdigest() == want and (not sha256 or want == sha256.lower()):
            return data
        log.warning("dataset cache %s: checksum mismatch; fetching it again", path)
    except OSError:
        pass
    data = verified(read(), sha256, uri)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for target, payload in ((path, data), (digest_path, hashlib.sha256(data).hexdigest().encode())):
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.")
            with os.fdopen(fd, "wb") as f:
                f.write(payload)
            os.replace(tmp, target)
    except OSError as e:
        # A hostPath or an NFS/EFS claim owned by root: fsGroup does not reach it. The trial goes on with what it
        # read; every trial reads the store until the folder is made writable.
        log.warning("dataset cache %s not writable by uid %d (%s): not cached; make it writable by that uid "
                    "(chown %d, or chmod 1777, on the node folder or the volume's root; docs/cluster.md)",
                    folder, os.getuid(), e.strerror or e, os.getuid())
    return data


def load(spec: str, store_opener: Callable[[str], TrialStore] | None = None, cache_dir: str | None = None,
         sha256: str | None = None) -> Dataset:
    """Resolve a data spec. store_opener(uri) → a store read from S3 (injected: tests, a trial's grant); cache_dir is
    the node cache for staged arrays (default: $CIFAR_HPO_DATA_CACHE); sha256: what the bytes must hash to."""
    parsed = parse_data_spec(spec)
    if parsed.kind == "cifar100":
        return load_keras()
    if parsed.kind == "synthetic":
        return synthetic(parsed.size or SYNTHETIC_DEFAULT)
    if parsed.kind == "npz":
        def read() -> bytes:
            if not spec.startswith("s3://"):
                return Path(spec).expanduser().read_bytes()
            from controller.store.uri import open_store

            parent, _, name = spec.rpartition("/")
            data = (store_opener or open_store)(parent).get(name)
            if data is None:
                raise ConfigError(f"--data {spec}: no staged arrays there; run the search's controller to stage them")
            return data

        return load_npz(cached(spec, read, cache_dir or os.environ.get("CIFAR_HPO_DATA_CACHE"), sha256), spec)
    if parsed.kind == "http":
        from controller.data.fetch import fetch
        from controller.settings.policy import LOCAL

        return load_archive(verified(fetch(spec, LOCAL, "--data"), sha256, spec), spec)
    if parsed.kind == "s3":
        from controller.store.uri import open_store

        parent, _, name = spec.rpartition("/")
        store = (store_opener or open_store)(parent)
        data = store.get(name)
        if data is None:
            raise ConfigError(f"--data {spec}: no such object; upload cifar-100-python.tar.gz there or fix the URI")
        return load_archive(verified(data, sha256, spec), spec)
    path = Path(spec).expanduser()
    if path.is_file():
        return load_archive(verified(path.read_bytes(), sha256, spec), str(path))
    raise ConfigError(
        f"--data {spec}: not 'cifar100', 'synthetic[:N]', an s3:// URI or an existing file "
        "(the standard cifar-100-python.tar.gz)"
    )


def validation_split(train: Split, size: int, seed: int) -> tuple[Split, Split]:
    """Hold out `size` training images (seeded) for selection; the test set stays untouched."""
    if not 0 < size < len(train):
        raise ConfigError(f"--val-size {size}: must be between 1 and {len(train) - 1} (the training set size - 1)")
    order = np.random.default_rng(seed).permutation(len(train))
    return train.take(np.sort(order[size:])), train.take(np.sort(order[:size]))
