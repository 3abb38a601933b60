"""CIFAR-100's formats, numpy only (the controller stages data without TensorFlow; the trainer reads it): the
standard python archive, the staged .npz arrays, and generated CIFAR-shaped data for tests and trials here.

Images stay uint8 (N, 32, 32, 3) until the model's first layer; labels are int32 class indices.
The archive's pickles are read with an allowlist unpickler: they hold numpy arrays and lists, nothing else.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from controller.data.safepickle import NUMPY_AND_BUILTINS, restricted_loads
from controller.errors import ConfigError

N_FINE, N_COARSE = 100, 20


@dataclass(frozen=True)
class Split:
    """One split of CIFAR-100: images (N, 32, 32, 3) uint8 with their fine (0-99) and coarse (0-19) labels."""
    x: np.ndarray
    fine: np.ndarray
    coarse: np.ndarray

    def __len__(self) -> int:
        return len(self.x)

    def take(self, idx: np.ndarray) -> Split:
        return Split(self.x[idx], self.fine[idx], self.coarse[idx])


@dataclass(frozen=True)
class Dataset:
    """The training and test splits, and where they came from (shown in the trial's records)."""
    train: Split
    test: Split
    source: str


def check_split(split: Split, where: str) -> Split:
    """The split itself if it is CIFAR-shaped: uint8 (N, 32, 32, 3) images and labels in range."""
    if split.x.shape[1:] != (32, 32, 3) or split.x.dtype != np.uint8:
        raise ConfigError(f"{where}: images must be uint8 (N, 32, 32, 3), got {split.x.dtype} {split.x.shape}")
    if not (len(split.x) == len(split.fine) == len(split.coarse)):
        raise ConfigError(f"{where}: image and label counts differ")
    if split.fine.min(initial=0) < 0 or split.fine.max(initial=0) >= N_FINE or split.coarse.max(initial=0) >= N_COARSE:
        raise ConfigError(f"{where}: labels out of range (fine 0..99, coarse 0..19)")
    return split


# -- the standard python archive ------------------------------------------------------------------


# The real archive has five members and a 155 MB train batch; anything far beyond is not it (and a small gzip can
# expand to gigabytes: the sizes are checked before a member is read).
MAX_MEMBERS = 64
MAX_BATCH_BYTES = 512 * 2**20
# tarfile reads a GNU long name or a pax header whole, before any member is seen; and the compressed size says
# nothing of the expanded one. Both are capped as the bytes are read.
MAX_HEADER_BYTES = 64 * 2**10
MAX_EXPANDED_BYTES = 2**30


class _Capped(io.RawIOBase):
    """A decompressed stream that stops at MAX_EXPANDED_BYTES."""

    def __init__(self, inner: io.BufferedIOBase | io.BytesIO, where: str):
        self.inner, self.where, self.total = inner, where, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.inner.read(len(buffer))
        self.total += len(data)
        if self.total > MAX_EXPANDED_BYTES:
            raise ConfigError(f"{self.where}: the archive expands to more than {MAX_EXPANDED_BYTES} bytes; "
                              "the real cifar-100-python.tar.gz expands to ~180 MB")
        buffer[:len(data)] = data
        return len(data)


class _Header(tarfile.TarInfo):
    """A member header whose long name or pax record is read only when it is small."""

    def _proc_gnulong(self, tarfile: tarfile.TarFile) -> tarfile.TarInfo:
        self._small_header()
        return super()._proc_gnulong(tarfile)  # type: ignore[misc,no-any-return]

    def _proc_pax(self, tarfile: tarfile.TarFile) -> tarfile.TarInfo:
        self._small_header()
        return super()._proc_pax(tarfile)  # type: ignore[misc,no-any-return]

    def _small_header(self) -> None:
        if self.size > MAX_HEADER_BYTES:
            raise ConfigError(f"a tar header record of {self.size} bytes (a long name or pax header; at most "
                              f"{MAX_HEADER_BYTES}): not the cifar-100-python.tar.gz layout")


def _decompressed(data: bytes, where: str) -> _Capped:
    raw = io.BytesIO(data)
    if data[:2] == b"\x1f\x8b":
        return _Capped(gzip.GzipFile(fileobj=raw), where)
    if data[:3] == b"BZh":
        return _Capped(bz2.BZ2File(raw), where)
    if data[:6] == b"\xfd7zXZ\x00":
        return _Capped(lzma.LZMAFile(raw), where)
    return _Capped(raw, where)


def _archive_members(tar: tarfile.TarFile, names: tuple[str, ...], where: str) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for count, member in enumerate(tar, 1):
        if count > MAX_MEMBERS:
            raise ConfigError(f"{where}: more than {MAX_MEMBERS} members; not the cifar-100-python.tar.gz layout")
        name = Path(member.name).name
        if name not in names or name in found or not member.isfile():
            continue
        if member.size > MAX_BATCH_BYTES:
            raise ConfigError(f"{where}: '{name}' is {member.size} bytes, over the {MAX_BATCH_BYTES} a CIFAR-100 "
                              "batch can be")
        reader = tar.extractfile(member)
        if reader is None:
            raise ConfigError(f"{where}: '{name}' in the archive is not a regular file")
        found[name] = reader.read()
        if len(found) == len(names):
            return found
    missing = next(n for n in names if n not in found)
    raise ConfigError(f"{where}: no '{missing}' in the archive; expected the cifar-100-python.tar.gz layout")


def _archive_split(raw: bytes, name: str, where: str) -> Split:
    d = restricted_loads(raw, NUMPY_AND_BUILTINS, "a CIFAR-100 batch holds only numpy arrays and lists")
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: '{name}' holds a {type(d).__name__}, not a CIFAR-100 batch (a mapping)")
    d = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in d.items()}
    # The format's own types only: an array of images and flat lists of ints. Nested lists are refused before numpy
    # sees them: a pickle can share one list into a structure of exponential size.
    data, labels = d.get("data"), [d.get("fine_labels"), d.get("coarse_labels")]
    if not isinstance(data, np.ndarray) or not all(
            isinstance(v, list) and all(type(i) is int for i in v) for v in labels):
        raise ConfigError(f"{where}: '{name}' is not a CIFAR-100 batch (data: an array of images; fine_labels, "
                          "coarse_labels: lists of integers)")
    try:
        x = data.astype(np.uint8, casting="same_kind").reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        fine = np.asarray(labels[0], dtype=np.int32)
        coarse = np.asarray(labels[1], dtype=np.int32)
    except (ValueError, TypeError, OverflowError) as e:
        raise ConfigError(f"{where}: '{name}' is not a CIFAR-100 batch: {e}") from e
    return check_split(Split(np.ascontiguousarray(x), fine, coarse), f"{where}:{name}")


def load_archive(data: bytes, where: str) -> Dataset:
    """The standard cifar-100-python.tar.gz read (its pickles through the restricted unpickler) and checked; a
    ConfigError naming `where` otherwise."""
    try:
        with tarfile.open(fileobj=_decompressed(data, where), mode="r|", tarinfo=_Header) as tar:
            raw = _archive_members(tar, ("train", "test"), where)
    except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError, ValueError) as e:
        raise ConfigError(f"{where}: not a readable tar archive ({type(e).__name__}: {e})") from e
    return Dataset(_archive_split(raw["train"], "train", where), _archive_split(raw["test"], "test", where), where)


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
    """The staged arrays (an .npz, read with allow_pickle=False) and checked; a ConfigError naming `where` otherwise."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            a = {k: z[k] for k in NPZ_FIELDS}
    except (OSError, ValueError, KeyError, EOFError) as e:
        raise ConfigError(f"{where}: not the staged arrays ({e})") from e
    return Dataset(check_split(Split(a["x_train"], a["fine_train"], a["coarse_train"]), f"{where} train"),
                   check_split(Split(a["x_test"], a["fine_test"], a["coarse_test"]), f"{where} test"), where)
