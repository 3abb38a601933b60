"""The trial contract's checkpoint clause (controller/trial/checkpoint.py): committed atomically, the older one
removed, a torn one never resumed from, and a resumed trial's history has each step once."""

import json

import pytest

from controller.ledger.trials import proposal_record
from controller.store.base import dumps, get_json
from controller.store.local import MemoryStore
from controller.trial import Trial
from controller.trial.checkpoint import commit, latest, pointer_step

pytestmark = pytest.mark.pure


def _store():
    return MemoryStore().child("s/trials/000003")


def test_a_commit_is_resumed_from_with_its_history_up_to_its_step():
    store = _store()
    assert latest(store) is None and pointer_step(store) is None
    history = {"objective": [0.1, 0.2, 0.3], "loss": [3.0, 2.0, 1.0]}
    commit(store, 2, b"after step 2", history)  # the history may run ahead of the checkpoint: cut to its step
    got = latest(store)
    assert (got.step, got.state, got.history) == (2, b"after step 2", {"objective": [0.1, 0.2], "loss": [3.0, 2.0]})
    assert pointer_step(store) == 2


def test_commits_alternate_slots_so_the_older_state_is_removed():
    store = _store()
    for step in range(1, 5):
        commit(store, step, b"state %d" % step, {"objective": [0.0] * step})
    slots = {k: store.get(k) for k in ("checkpoint/slot-a", "checkpoint/slot-b")}
    assert sorted(slots.values()) == [b"state 3", b"state 4"]  # two kept: the last and the one before
    assert sorted(k for k in store.list("checkpoint/")) == ["checkpoint/latest.json", "checkpoint/slot-a",
                                                              "checkpoint/slot-b"]
    assert latest(store).state == b"state 4"


@pytest.mark.parametrize("damage, resumed", [
    ("current slot torn", 3),           # the write of step 4's state was cut: step 3 is whole
    ("current slot missing", 3),
    ("both slots torn", None),
    ("pointer torn", None),             # no trustworthy pointer: start over rather than guess
    ("pointer names another key", None),
])
def test_a_torn_checkpoint_is_never_resumed_from(damage, resumed):
    store = _store()
    for step in (3, 4):
        commit(store, step, b"state %d" % step, {"objective": [0.5] * step})
    current = get_json(store, "checkpoint/latest.json")["slot"]
    other = "checkpoint/slot-a" if current == "checkpoint/slot-b" else "checkpoint/slot-b"
    if damage == "current slot torn":
        store.put(current, b"state")
    elif damage == "current slot missing":
        del store.data[store._key(current)]
    elif damage == "both slots torn":
        store.put(current, b"xxxxxxx")
        store.put(other, b"yyyyyyy")
    elif damage == "pointer torn":
        store.put("checkpoint/latest.json", b'{"slot": "checkpoint/sl')
    else:
        pointer = get_json(store, "checkpoint/latest.json")
        store.put("checkpoint/latest.json", dumps({**pointer, "slot": "result.json", "previous": None}))
    got = latest(store)
    assert (got.step if got else None) == resumed
    if got:
        assert got.state == b"state 3" and got.history == {"objective": [0.5, 0.5, 0.5]}


def test_a_resumed_trial_reports_each_step_once_and_its_total_is_unchanged(monkeypatch):
    root = MemoryStore()
    store = root.child("s").child("trials/000005")
    store.put("proposal.json", dumps(proposal_record(5, {"x": 1}, {}, 9, "tpe")))
    first = Trial(store, get_json(store, "proposal.json"))
    assert first.attempt == 1 and first.restore() is None
    for step in (1, 2, 3):
        first.report(step, objective=step / 10)
        first.checkpoint(step, json.dumps({"w": step}).encode())
    first.report(4, objective=0.4)  # step 4 ran, then the process was killed before its checkpoint
    monkeypatch.setenv("CIFAR_HPO_ATTEMPT", "2")
    second = Trial(store, get_json(store, "proposal.json"))
    restored = second.restore()
    assert second.attempt == 2 and restored.step == 3 and json.loads(restored.state) == {"w": 3}
    for step in range(restored.step + 1, 6):
        second.report(step, objective=step / 10)
    assert second.finish() == 0
    result = get_json(store, "result.json")
    assert result["history"]["objective"] == [0.1, 0.2, 0.3, 0.4, 0.5] and result["epochs_run"] == 5
