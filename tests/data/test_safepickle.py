"""The two readers of untrusted pickles (the CIFAR-100 archive, results.pkl) return plain data or refuse: no code
runs, no memory is touched that the file did not hold, no allocation beyond the file's size. The files under
tests/data/pickle-crashers.json holds every input that ever crashed one of them (the forged-dtype archive of the
security review; what benchmarks/fuzz_unpickle.py found), base64-encoded so that no pickle file is committed: each is
written to a temporary file and read in a subprocess, which must exit 2 with a message."""

from __future__ import annotations

import io
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from support.cli import run_cli
from support.hostile import archive_of, cpu_pickle, crasher, crasher_names, memo_pickle, shared_tuple_pickle
from support.paths import ROOT

from controller.data.safepickle import NUMPY_AND_BUILTINS, restricted_loads
from controller.errors import ConfigError

CRASHERS = crasher_names()


def _loads(data: bytes):
    return restricted_loads(data, NUMPY_AND_BUILTINS, "test data")


@pytest.mark.pure
@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
@pytest.mark.parametrize("dtype", ["u1", ">i4", "<f8", "f2", "?"])
def test_plain_numeric_arrays_and_scalars_come_back_equal(protocol, dtype):
    a = (np.arange(24) % 7).astype(dtype).reshape(2, 3, 4)
    doc = {b"data": a, "fortran": np.asfortranarray(a), "scalar": a.reshape(-1)[5], "list": [1, 2.5, "x"],
           "set": {1, 2}}
    got = _loads(pickle.dumps(doc, protocol=protocol))
    assert got[b"data"].dtype == a.dtype and np.array_equal(got[b"data"], a)
    assert np.array_equal(got["fortran"], a)
    assert got["scalar"] == a.reshape(-1)[5].item() and got["list"] == [1, 2.5, "x"] and got["set"] == {1, 2}


@pytest.mark.pure
@pytest.mark.parametrize("value, refused", [
    (np.array([object()], dtype=object), "dtype 'O8'"),
    (np.zeros(2, dtype=[("a", "u1"), ("b", "f4")]), "dtype 'V5'"),
    (np.array(["ab"]), "dtype 'U2'"),
    (np.datetime64("2026-01-01"), "numpy.datetime64|dtype 'M8'"),
])
def test_object_structured_string_and_datetime_dtypes_are_refused(value, refused):
    with pytest.raises(ConfigError, match=refused):
        _loads(pickle.dumps({"x": value}, protocol=2))


@pytest.mark.pure
def test_an_array_whose_shape_does_not_match_its_bytes_is_refused():
    good = pickle.dumps(np.arange(6, dtype="u1"), protocol=2)
    forged = good.replace(b"K\x06\x85", b"K\x07\x85")  # shape (6,) → (7,): one byte more than the data holds
    assert forged != good
    with pytest.raises(ConfigError, match="does not match its 6 bytes"):
        _loads(forged)


@pytest.mark.pure
def test_the_forged_dtype_archive_is_refused_in_process():
    from controller.data.cifar import load_archive

    with pytest.raises(ConfigError, match=r"refusing to unpickle dtype 'V8'"):
        load_archive(crasher("forged-dtype.tar.gz"), "evil")


@pytest.mark.pure
def test_an_archive_that_is_not_the_layout_is_refused_before_it_is_read():
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo("cifar-100-python/train")
        info.size = 0
        for i in range(70):
            info.name = f"junk/{i}"
            tar.addfile(info, io.BytesIO(b""))
    from controller.data.cifar import load_archive

    with pytest.raises(ConfigError, match="more than 64 members"):
        load_archive(out.getvalue(), "many")


def _read_in_a_subprocess(name: str, tmp_path: Path):
    """What a user or the operator does with such a file: stage it as a search's data, or import it."""
    path = tmp_path / name
    path.write_bytes(crasher(name))
    if path.name.startswith("results-"):
        return run_cli("import", "--store", str(tmp_path / "runs"), str(path), check=False)
    archive = path
    if path.suffix == ".pkl":  # a bare batch: packed as the archive's two members
        archive = tmp_path / "cifar-100-python.tar"
        with tarfile.open(archive, "w") as tar:
            for name in ("train", "test"):
                tar.add(path, arcname=f"cifar-100-python/{name}")
    return run_cli("run", "--local", "--store", str(tmp_path / "runs"), "--data", str(archive), "--max-trials", "1",
                   check=False)


@pytest.mark.e2e
@pytest.mark.parametrize("name", CRASHERS)
def test_every_input_that_ever_crashed_a_reader_exits_2_with_a_message(name, tmp_path):
    p = _read_in_a_subprocess(name, tmp_path)
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    assert "not a readable pickle" in p.stderr or "refusing to unpickle" in p.stderr, p.stderr[-2000:]
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("trials/*/proposal.json"))


# -- inputs that cost the reader time or memory out of proportion to their size (issue 34: findings 1 and 2) --


def _refusal_in_a_child(data: bytes) -> str:
    """The reader's refusal of data, read in a child process: an input that would hang the reader fails the test
    (after 120 s, a bound that only catches a hang) instead of hanging the run."""
    code = ("import sys\nfrom controller.data.safepickle import NUMPY_AND_BUILTINS, restricted_loads\n"
            "from controller.errors import ConfigError\n"
            "try:\n    restricted_loads(sys.stdin.buffer.read(), NUMPY_AND_BUILTINS, 'test data')\n"
            "except ConfigError as e:\n    print(e)\n    sys.exit(2)\n")
    p = subprocess.run([sys.executable, "-c", code], input=data, capture_output=True, timeout=120, cwd=ROOT)
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    return p.stdout.decode()


@pytest.mark.e2e
def test_a_self_sharing_dict_key_is_refused_before_it_is_hashed():
    """186 bytes whose dict key has 2^60 paths: hashing it would hold the GIL for ever."""
    assert "a dict key or set member of more than 256 parts" in _refusal_in_a_child(shared_tuple_pickle(60))


@pytest.mark.e2e
@pytest.mark.parametrize("build", [
    lambda t: b"\x80\x02c__builtin__\nset\n" + t + b"\x85\x85R.",  # set((shared,))
    lambda t: b"\x80\x02(" + t + b"\x91.",  # FROZENSET
    lambda t: b"\x80\x02}(" + t + b"Nu.",  # SETITEMS
    lambda t: b"\x80\x02(" + t + b"Nd.",  # DICT
])
def test_every_way_a_pickle_hashes_a_value_checks_it_first(build):
    shared = shared_tuple_pickle(60)[3:-3]  # the tuple's own opcodes
    assert "more than 256 parts" in _refusal_in_a_child(build(shared))


@pytest.mark.e2e
def test_the_codec_call_refuses_a_self_sharing_argument_without_converting_it():
    assert "_codecs.encode with" in _refusal_in_a_child(shared_tuple_pickle(60, as_key=False))


@pytest.mark.pure
def test_a_pickle_that_memoizes_without_end_is_refused():
    """25 kB of MEMOIZE took 2.6 GiB in the reader; past the cap it is refused, whatever the machine's memory."""
    from controller.data.safepickle import MAX_MEMO

    assert _loads(memo_pickle(1000)) is None
    with pytest.raises(ConfigError, match=f"memoizes more than {MAX_MEMO} objects"):
        _loads(memo_pickle(MAX_MEMO + 1))


@pytest.mark.pure
def test_a_long_tar_header_is_refused_before_it_is_read():
    from controller.data.cifar import MAX_HEADER_BYTES, load_archive

    archive = archive_of({"train": b"", "test": b""}, long_name=MAX_HEADER_BYTES + 1)
    with pytest.raises(ConfigError, match="a tar header record of"):
        load_archive(archive, "long")


@pytest.mark.pure
def test_an_archive_is_read_only_up_to_its_expanded_cap(monkeypatch):
    from controller.data import cifar

    monkeypatch.setattr(cifar, "MAX_EXPANDED_BYTES", 2**20)
    archive = archive_of({"padding": b"\0" * (2 * 2**20), "train": b"", "test": b""})
    assert len(archive) < 2**14
    with pytest.raises(ConfigError, match=r"expands to more than 1048576 bytes"):
        cifar.load_archive(archive, "bomb")


@pytest.mark.e2e
def test_the_child_that_reads_an_archive_is_stopped_at_its_cpu_limit():
    """What no cap inside the reader catches (here 50 MB of valid opcodes: ~20 s of one core) is stopped by the
    child's own CPU limit: the Search's failure, with the reason."""
    from controller.data.sandbox import SandboxLimits, archive_to_npz_isolated

    archive = archive_of({"train": cpu_pickle(25_000_000), "test": cpu_pickle(1)})
    with pytest.raises(ConfigError, match=r"cpu-burner: reading the archive used more than 1 s of CPU"):
        archive_to_npz_isolated(archive, "cpu-burner", SandboxLimits(2**31, 1))


@pytest.mark.e2e
def test_the_child_that_reads_an_archive_is_stopped_at_its_memory_limit():
    """20 MB of EMPTY_LIST opcodes make 1.3 GB of lists on the unpickler's stack: the child's address-space limit
    stops it, and the message names the policy setting."""
    from controller.data.sandbox import SandboxLimits, archive_to_npz_isolated

    archive = archive_of({"train": b"\x80\x02" + b"]" * 20_000_000 + b".", "test": cpu_pickle(1)})
    with pytest.raises(ConfigError, match=r"lists: reading the archive needed more than 536870912 bytes of memory "
                                          r"and was stopped \(policy.stagingMemoryBytes\)"):
        archive_to_npz_isolated(archive, "lists", SandboxLimits(512 * 2**20, 60))


@pytest.mark.e2e
def test_the_child_converts_a_real_archive_and_refuses_a_bad_one_with_the_readers_message(tmp_path):
    from controller.data.cifar import archive_to_npz, load_npz, synthetic, write_archive
    from controller.data.sandbox import SandboxLimits, archive_to_npz_isolated

    ds = synthetic(300)
    write_archive(tmp_path / "c.tar.gz", ds.train, ds.test)
    archive = (tmp_path / "c.tar.gz").read_bytes()
    limits = SandboxLimits(2**31, 60)
    got = archive_to_npz_isolated(archive, "ok", limits)
    assert got == archive_to_npz(archive, "ok")
    assert np.array_equal(load_npz(got, "ok").train.x, ds.train.x)
    with pytest.raises(ConfigError, match=r"refusing to unpickle dtype 'V8'"):
        archive_to_npz_isolated(crasher("forged-dtype.tar.gz"), "evil", limits)
