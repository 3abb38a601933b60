"""Inputs that attack the readers: every archive or pickle that ever crashed one (tests/data/pickle-crashers.json)."""

from __future__ import annotations

import base64
import json

from support.paths import ROOT

CRASHERS_FILE = ROOT / "tests" / "data" / "pickle-crashers.json"


def crasher_names() -> list[str]:
    """The names of every recorded crasher, sorted."""
    return sorted(json.loads(CRASHERS_FILE.read_text())["crashers"])


def crasher(name: str) -> bytes:
    """One hostile input's bytes."""
    return base64.b64decode(json.loads(CRASHERS_FILE.read_text())["crashers"][name])


def shared_tuple_pickle(depth: int = 60, as_key: bool = True) -> bytes:
    """A pickle of a tuple that holds itself twice, level by level (DUP, TUPLE2): a few bytes per level, 2^depth
    paths. Used as a dict key, hashing it walks them all in one C call (the review's operator freeze); else it is
    handed to the codec call protocol-2 pickles use, whose str() walks them too."""
    shared = b")" + b"2\x86" * depth  # EMPTY_TUPLE, then (DUP, TUPLE2) per level
    if as_key:
        return b"\x80\x02}" + shared + b"Ns."  # {shared: None}
    return b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00a" + shared + b"\x86R."  # encode('a', shared)


def memo_pickle(entries: int) -> bytes:
    """A pickle that memoizes `entries` objects with one byte each (MEMOIZE: ~85 bytes of memory per byte)."""
    return b"\x80\x04N" + b"\x94" * entries + b"."


def cpu_pickle(ops: int) -> bytes:
    """A valid pickle of `ops` cheap opcodes (push None, pop): all CPU, no memory; not a CIFAR batch."""
    return b"\x80\x02" + b"N0" * ops + b"}."


def archive_of(members: dict[str, bytes], long_name: int = 0) -> bytes:
    """A gzip'd tar of the CIFAR layout's members; long_name: the first one's GNU long-name record this long."""
    import io
    import tarfile

    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz", format=tarfile.GNU_FORMAT) as tar:
        for i, (name, payload) in enumerate(members.items()):
            info = tarfile.TarInfo(("x" * long_name + "/" if i == 0 and long_name else "cifar-100-python/") + name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return out.getvalue()
