"""The Store contract as classes a backend's tests inherit: TrialStoreContract for what a trial may do with its own
keys (every store, a trial's grant store included), StoreContract for the whole store the controller uses. A subclass
provides a `store` fixture; tests/store/test_store.py runs them on every backend of this project."""

from __future__ import annotations

import threading

import pytest

from controller.errors import RecordError
from controller.store.base import create_json, get_json, put_json

# The keys the contract's tests touch: a store that allows only named keys (a trial's grant) is made for these.
KEYS = ("nope/x.json", "a/b.json", "t/proposal.json", "race.json", "r.json", "bad.json", "broken.json", "c.json")


class TrialStoreContract:
    """get, put, create and exists: what a trial program does with its records."""

    def test_missing_key_is_none(self, store):
        assert store.get("nope/x.json") is None
        assert not store.exists("nope/x.json")

    def test_put_get_overwrite(self, store):
        store.put("a/b.json", b"1")
        store.put("a/b.json", b"2")
        assert store.get("a/b.json") == b"2"
        assert store.exists("a/b.json")

    def test_create_is_create_only(self, store):
        assert store.create("t/proposal.json", b"first")
        assert not store.create("t/proposal.json", b"second")
        assert store.get("t/proposal.json") == b"first"

    def test_concurrent_creates_have_one_winner(self, store):
        wins = []

        def go(i):
            wins.append(store.create("race.json", str(i).encode()))

        threads = [threading.Thread(target=go, args=(i,)) for i in range(8)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        assert wins.count(True) == 1
        assert int(store.get("race.json")) in range(8)

    def test_json_helpers_refuse_nan_and_report_the_key(self, store):
        put_json(store, "r.json", {"a": 1})
        assert get_json(store, "r.json") == {"a": 1}
        with pytest.raises(ValueError):
            put_json(store, "bad.json", {"a": float("nan")})
        store.put("broken.json", b'{"a": NaN}')
        with pytest.raises(RecordError, match="broken.json"):
            get_json(store, "broken.json")
        assert create_json(store, "c.json", [1]) and not create_json(store, "c.json", [2])


class StoreContract(TrialStoreContract):
    """The whole Store: also list, child and check, which the controller needs."""

    def test_list_prefix_start_after_and_child(self, store):
        for k in ("trials/000001/a", "trials/000002/a", "trials/000002/b", "other/x"):
            store.put(k, b"x")
        assert store.list("trials/") == ["trials/000001/a", "trials/000002/a", "trials/000002/b"]
        assert store.list("trials/", start_after="trials/000001/~") == ["trials/000002/a", "trials/000002/b"]
        child = store.child("trials/000002")
        assert child.list() == ["a", "b"]
        assert child.get("a") == b"x"
        assert child.uri.endswith("trials/000002")

    def test_check_accepts_a_usable_store(self, store):
        store.check()

    def test_a_record_over_its_bound_is_refused_unread_and_so_is_one_nested_too_deep(self, store):
        """What a record's writer (a trial) chooses cannot size the reader's memory or recursion (issue 34)."""
        store.put("big.json", b"[" + b"1," * 5000 + b"1]")
        assert len(store.get("big.json", 100)) == 101  # the limit, and one byte to tell it was over
        with pytest.raises(RecordError, match="big.json: over 100 bytes"):
            get_json(store, "big.json", 100)
        assert len(get_json(store, "big.json")) == 5001
        store.put("empty.json", b"")
        assert store.get("empty.json", 10) == b""
        for depth in (40, 100_000):
            store.put("deep.json", b"[" * depth + b"]" * depth)
            with pytest.raises(RecordError, match="deep.json: nested deeper than 32 levels"):
                get_json(store, "deep.json")

    def test_a_value_streams_in_chunks_with_its_size(self, store):
        from controller.store.base import CHUNK

        data = bytes(range(256)) * (CHUNK // 256 * 2 + 3)
        store.put("model.keras", data)
        size, chunks = store.stream("model.keras")
        parts = list(chunks)
        assert size == len(data) and b"".join(parts) == data and max(map(len, parts)) <= CHUNK and len(parts) >= 3
        assert store.stream("missing") is None
