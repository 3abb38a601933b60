"""CIFAR-100 (fine + coarse labels) from Keras' download, the standard python archive, or generated.

Specs (controller/dataspec.py parses them):
  cifar100                          Keras' download (cached under ~/.keras/datasets)
  PATH, s3://… or http(s)://…/cifar-100-python.tar.gz   the standard archive (train/test pickles)
  ….npz                             the arrays the controller staged once for the search (controller/dataset.py);
                                    with CIFAR_HPO_DATA_CACHE set, kept in that folder (a node cache) by checksum
  synthetic[:N]                     N generated training images (default 5000) with learnable classes

Images stay uint8 (N, 32, 32, 3) until the model's first layer; labels are int32 class indices.
The archive's pickles are read with an allowlist unpickler: they hold numpy arrays and lists, nothing else.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from controller.dataspec import SYNTHETIC_DEFAULT, parse_data_spec
from controller.errors import ConfigError, TemporaryError
from controller.safepickle import NUMPY_AND_BUILTINS, restricted_loads

log = logging.getLogger(__name__)

N_FINE, N_COARSE = 100, 20


@dataclass(frozen=True)
class Split:
    x: np.ndarray
    fine: np.ndarray
    coarse: np.ndarray

    def __len__(self) -> int:
        return len(self.x)

    def take(self, idx: np.ndarray) -> "Split":
        return Split(self.x[idx], self.fine[idx], self.coarse[idx])


@dataclass(frozen=True)
class Dataset:
    train: Split
    test: Split
    source: str


def _check(split: Split, where: str) -> Split:
    if split.x.shape[1:] != (32, 32, 3) or split.x.dtype != np.uint8:
        raise ConfigError(f"{where}: images must be uint8 (N, 32, 32, 3), got {split.x.dtype} {split.x.shape}")
    if not (len(split.x) == len(split.fine) == len(split.coarse)):
        raise ConfigError(f"{where}: image and label counts differ")
    if split.fine.min(initial=0) < 0 or split.fine.max(initial=0) >= N_FINE or split.coarse.max(initial=0) >= N_COARSE:
        raise ConfigError(f"{where}: labels out of range (fine 0..99, coarse 0..19)")
    return split


# -- the standard python archive ------------------------------------------------------------------


def _archive_split(tar: tarfile.TarFile, name: str, where: str) -> Split:
    member = next((m for m in tar.getmembers() if m.isfile() and Path(m.name).name == name), None)
    if member is None:
        raise ConfigError(f"{where}: no '{name}' in the archive; expected the cifar-100-python.tar.gz layout")
    raw = tar.extractfile(member).read()
    d = restricted_loads(raw, NUMPY_AND_BUILTINS, "a CIFAR-100 batch holds only numpy arrays and lists")
    d = {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}
    try:
        x = np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        fine = np.asarray(d["fine_labels"], dtype=np.int32)
        coarse = np.asarray(d["coarse_labels"], dtype=np.int32)
    except (KeyError, ValueError) as e:
        raise ConfigError(f"{where}: '{name}' lacks data/fine_labels/coarse_labels: {e}") from e
    return _check(Split(np.ascontiguousarray(x), fine, coarse), f"{where}:{name}")


def load_archive(data: bytes, where: str) -> Dataset:
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            return Dataset(_archive_split(tar, "train", where), _archive_split(tar, "test", where), where)
    except tarfile.TarError as e:
        raise ConfigError(f"{where}: not a readable tar archive ({e})") from e


def write_archive(path: str | Path, train: Split, test: Split) -> None:
    """Write a split pair in the standard cifar-100-python.tar.gz format (for tests and mirrors)."""
    import pickle

    with tarfile.open(path, "w:gz") as tar:
        for name, split in (("train", train), ("test", test)):
            payload = pickle.dumps({
                b"data": split.x.transpose(0, 3, 1, 2).reshape(len(split), -1),
                b"fine_labels": [int(v) for v in split.fine],
                b"coarse_labels": [int(v) for v in split.coarse],
            }, protocol=2)
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))


# -- Keras' download --------------------------------------------------------------------------------


def load_keras() -> Dataset:
    from tensorflow import keras

    try:
        (x, fine), (xt, finet) = keras.datasets.cifar100.load_data(label_mode="fine")
        (_, coarse), (_, coarset) = keras.datasets.cifar100.load_data(label_mode="coarse")
    except Exception as e:
        raise TemporaryError(
            f"data cifar100: the Keras download failed ({e}); without internet use --data PATH or "
            "s3://bucket/cifar-100-python.tar.gz (the standard archive), or --data synthetic"
        ) from e
    as_split = lambda a, f, c: Split(a, f.reshape(-1).astype(np.int32), c.reshape(-1).astype(np.int32))  # noqa: E731
    return Dataset(_check(as_split(x, fine, coarse), "cifar100 train"), _check(as_split(xt, finet, coarset), "cifar100 test"),
                   "cifar100 (keras)")


# -- generated ------------------------------------------------------------------------------------------


def synthetic(n_train: int = 5000, seed: int = 0) -> Dataset:
    """Class prototypes (smooth colour patterns) plus noise: a CNN beats chance within an epoch.
    Coarse label = fine // 5, a fixed consistent mapping like CIFAR-100's."""
    rng = np.random.default_rng(seed)
    coarse_proto = rng.normal(0, 1, (N_COARSE, 4, 4, 3))
    fine_proto = np.repeat(coarse_proto, 5, axis=0) + 0.8 * rng.normal(0, 1, (N_FINE, 4, 4, 3))
    # 4x4 patterns upsampled to 32x32: low-frequency structure, like object colour layouts.
    protos = np.kron(fine_proto, np.ones((1, 8, 8, 1)))

    def make(n: int) -> Split:
        fine = rng.integers(0, N_FINE, n).astype(np.int32)
        img = 128 + 40 * protos[fine] + rng.normal(0, 30, (n, 32, 32, 3))
        return Split(np.clip(img, 0, 255).astype(np.uint8), fine, fine // 5)

    return Dataset(make(n_train), make(max(200, n_train // 5)), f"synthetic:{n_train}")


# -- the staged form: plain uint8 arrays, read without unpickling ------------------------------------------

NPZ_FIELDS = ("x_train", "fine_train", "coarse_train", "x_test", "fine_test", "coarse_test")


def archive_to_npz(data: bytes, where: str) -> bytes:
    """The standard archive as an .npz of uint8 images and int32 labels (what a trial reads fast)."""
    ds = load_archive(data, where)
    out = io.BytesIO()
    np.savez(out, x_train=ds.train.x, fine_train=ds.train.fine, coarse_train=ds.train.coarse, x_test=ds.test.x,
             fine_test=ds.test.fine, coarse_test=ds.test.coarse)
    return out.getvalue()


def load_npz(data: bytes, where: str) -> Dataset:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            a = {k: z[k] for k in NPZ_FIELDS}
    except (OSError, ValueError, KeyError, EOFError) as e:
        raise ConfigError(f"{where}: not the staged arrays ({e})") from e
    return Dataset(_check(Split(a["x_train"], a["fine_train"], a["coarse_train"]), f"{where} train"),
                   _check(Split(a["x_test"], a["fine_test"], a["coarse_test"]), f"{where} test"), where)


def cached(uri: str, read: Callable[[], bytes], cache_dir: str | None) -> bytes:
    """The bytes at uri, through a node-local cache folder when one is given: kept as <name> beside
    <name>.sha256, both written to temporary files and renamed into place, so two trials filling it at once
    each leave a whole, checksum-matching copy; a copy that fails its checksum is fetched again."""
    if not cache_dir:
        return read()
    folder = Path(cache_dir)
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    path, digest_path = folder / name, folder / f"{name}.sha256"
    try:
        data, want = path.read_bytes(), digest_path.read_text().strip()
        if hashlib.sha256(data).hexdigest() == want:
            return data
        log.warning("dataset cache %s: checksum mismatch; fetching it again", path)
    except OSError:
        pass
    data = read()
    folder.mkdir(parents=True, exist_ok=True)
    for target, payload in ((path, data), (digest_path, hashlib.sha256(data).hexdigest().encode())):
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.")
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.replace(tmp, target)
    return data


def load(spec: str, store_opener=None, cache_dir: str | None = None) -> Dataset:
    """Resolve a data spec. store_opener(uri) → Store reads from S3 (injected: tests, endpoint); cache_dir is the
    node cache for staged arrays (default: $CIFAR_HPO_DATA_CACHE)."""
    parsed = parse_data_spec(spec)
    if parsed.kind == "cifar100":
        return load_keras()
    if parsed.kind == "synthetic":
        return synthetic(parsed.size or SYNTHETIC_DEFAULT)
    if parsed.kind == "npz":
        def read() -> bytes:
            if not spec.startswith("s3://"):
                return Path(spec).expanduser().read_bytes()
            from controller.store import open_store

            parent, _, name = spec.rpartition("/")
            data = (store_opener or open_store)(parent).get(name)
            if data is None:
                raise ConfigError(f"--data {spec}: no staged arrays there; run the search's controller to stage them")
            return data

        return load_npz(cached(spec, read, cache_dir or os.environ.get("CIFAR_HPO_DATA_CACHE")), spec)
    if parsed.kind == "http":
        from controller.dataset import fetch

        return load_archive(fetch(spec), spec)
    if parsed.kind == "s3":
        from controller.store import open_store

        parent, _, name = spec.rpartition("/")
        store = (store_opener or open_store)(parent)
        data = store.get(name)
        if data is None:
            raise ConfigError(f"--data {spec}: no such object; upload cifar-100-python.tar.gz there or fix the URI")
        return load_archive(data, spec)
    path = Path(spec).expanduser()
    if path.is_file():
        return load_archive(path.read_bytes(), str(path))
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
