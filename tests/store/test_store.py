"""The Store contract, run against every backend (a directory, and S3 over HTTP via moto's server)."""

import threading

import pytest

from controller.errors import ConfigError, RecordError
from controller.store.base import create_json, get_json, put_json
from controller.store.local import LocalStore
from controller.store.uri import open_store

pytestmark = pytest.mark.contract


def test_missing_key_is_none(store):
    assert store.get("nope/x.json") is None
    assert not store.exists("nope/x.json")


def test_put_get_overwrite(store):
    store.put("a/b.json", b"1")
    store.put("a/b.json", b"2")
    assert store.get("a/b.json") == b"2"
    assert store.exists("a/b.json")


def test_create_is_create_only(store):
    assert store.create("t/proposal.json", b"first")
    assert not store.create("t/proposal.json", b"second")
    assert store.get("t/proposal.json") == b"first"


def test_concurrent_creates_have_one_winner(store):
    wins = []

    def go(i):
        wins.append(store.create("race.json", str(i).encode()))

    threads = [threading.Thread(target=go, args=(i,)) for i in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert wins.count(True) == 1
    assert int(store.get("race.json")) in range(8)


def test_list_prefix_start_after_and_child(store):
    for k in ("trials/000001/a", "trials/000002/a", "trials/000002/b", "other/x"):
        store.put(k, b"x")
    assert store.list("trials/") == ["trials/000001/a", "trials/000002/a", "trials/000002/b"]
    assert store.list("trials/", start_after="trials/000001/~") == ["trials/000002/a", "trials/000002/b"]
    child = store.child("trials/000002")
    assert child.list() == ["a", "b"]
    assert child.get("a") == b"x"
    assert child.uri.endswith("trials/000002")


def test_json_helpers_refuse_nan_and_report_the_key(store):
    put_json(store, "r.json", {"a": 1})
    assert get_json(store, "r.json") == {"a": 1}
    with pytest.raises(ValueError):
        put_json(store, "bad.json", {"a": float("nan")})
    store.put("broken.json", b'{"a": NaN}')
    with pytest.raises(RecordError, match="broken.json"):
        get_json(store, "broken.json")
    assert create_json(store, "c.json", [1]) and not create_json(store, "c.json", [2])


def test_check_accepts_a_usable_store(store):
    store.check()


def test_missing_bucket_is_a_clear_config_error(s3_endpoint):
    with pytest.raises(ConfigError, match=r"bucket 'no-such-bucket-here' does not exist"):
        open_store("s3://no-such-bucket-here/x").check()


def test_a_file_in_the_way_is_a_clear_config_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="cannot create or write this directory"):
        LocalStore(tmp_path / "file" / "store").check()


def test_uri_selection(tmp_path):
    assert isinstance(open_store(str(tmp_path)), LocalStore)
    assert isinstance(open_store(f"file://{tmp_path}"), LocalStore)
    with pytest.raises(ConfigError, match="unsupported scheme 'gs'"):
        open_store("gs://b/x")
    with pytest.raises(ConfigError, match="needs a bucket"):
        open_store("s3:///x")

