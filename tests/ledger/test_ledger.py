import math

import pytest

from controller.ledger.layout import CHECKPOINT_KEY, trial_key
from controller.ledger.trials import Ledger, best_of, curve_of, judge_result, proposal_record
from controller.store.base import dumps

pytestmark = pytest.mark.contract


@pytest.mark.parametrize("raw, state, reason", [
    ({"tid": 3, "status": "ok", "objective": 0.5}, "ok", None),
    ({"tid": 3, "status": "stopped", "objective": 0.4}, "stopped", None),
    ({"tid": 3, "status": "fail", "error": "OOM in conv2"}, "failed", "OOM in conv2"),
    ({"tid": 4, "status": "ok", "objective": 0.5}, "failed", "belongs to trial 4, not 3"),
    ({"tid": 3, "status": "done", "objective": 0.5}, "failed", "status 'done' is not one of"),
    ({"tid": 3, "status": "ok", "objective": math.nan}, "failed", "objective is nan, not a finite number"),
    ({"tid": 3, "status": "ok", "objective": math.inf}, "failed", "objective is inf"),
    ({"tid": 3, "status": "ok"}, "failed", "objective is None"),
    ({"tid": 3, "status": "ok", "objective": True}, "failed", "objective is True"),
    ([1, 2], "failed", "not a JSON object"),
])
def test_judge_result(raw, state, reason):
    got_state, objective, got_reason, _ = judge_result(raw, 3)
    assert got_state == state
    if reason is None:
        assert got_reason is None and objective == raw["objective"]
    else:
        assert reason in got_reason


def _fill(ledger, n):
    for tid in range(n):
        ledger.write_proposal(proposal_record(tid, {"x": tid}, {"x": tid}, tid, "random"))
        if tid % 3 != 2:
            ledger.write_result(tid, {"schema_version": 1, "tid": tid, "status": "ok", "objective": tid / 100})


def test_load_with_and_without_checkpoint_agree(store):
    ledger = Ledger(store)
    _fill(ledger, 12)
    full = ledger.load_full()
    assert len(full) == 12 and sum(r.finished for r in full.values()) == 8
    ledger.write_checkpoint(full.values(), 12)
    # after the checkpoint: open trials finish, new ones appear
    ledger.write_result(2, {"schema_version": 1, "tid": 2, "status": "ok", "objective": 0.9})
    ledger.write_proposal(proposal_record(12, {"x": 12}, {"x": 12}, 12, "tpe"))
    fast = ledger.load()
    assert {t: (r.state, r.objective) for t, r in fast.items()} == \
        {t: (r.state, r.objective) for t, r in ledger.load_full().items()}
    assert fast[2].state == "ok" and fast[12].state == "pending"
    assert best_of(fast.values()).tid == 2


def test_corrupt_checkpoint_falls_back_to_the_records(store):
    ledger = Ledger(store)
    _fill(ledger, 5)
    store.put(CHECKPOINT_KEY, b"{not json")
    assert len(ledger.load()) == 5


def test_corrupt_records_are_reported_never_dropped(store):
    ledger = Ledger(store)
    _fill(ledger, 3)
    store.put(trial_key(1, "proposal.json"), b"\x00garbage")
    store.put(trial_key(2, "result.json"), b'{"tid": 2, "status": "ok", "objective": NaN}')
    records = ledger.load()
    assert len(records) == 3
    assert records[1].state == "failed" and "corrupt proposal" in records[1].reason
    assert records[2].state == "pending" and "not valid JSON" in records[2].reason  # the controller decides it


def test_outcome_overrides_an_unusable_result(store):
    ledger = Ledger(store)
    _fill(ledger, 1)
    store.put(trial_key(0, "result.json"), dumps({"tid": 0, "status": "ok", "objective": None}))
    assert ledger.read_trial(0).state == "pending"
    rec = ledger.record_failure(ledger.read_trial(0), 1, "OOMKilled", "line 1\nlast words\n")
    assert rec.state == "failed" and rec.loss == math.inf
    assert rec.reason == ("result.json objective is None, not a finite number (exit code 1; OOMKilled); "
                          "last output: last words")
    again = ledger.record_failure(ledger.read_trial(0), 0, None, "")  # a second controller: the first decision stands
    assert again.reason == rec.reason


def test_the_objective_curve_is_the_contracts_series_and_an_older_records_cifar_series():
    """A record of today carries `objective`; one written before it had that series (the seed's, the CIFAR trainer's
    before it ran on the trial library) is read through its validation fine accuracy; `objective` wins when both are
    there, and nothing else is taken for a curve."""
    assert curve_of({"history": {"objective": [0.1, float("nan"), 0.3]}}) == [0.1, None, 0.3]
    assert curve_of({"history": {"val_fine_outputs_acc": [0.2, 0.4]}}) == [0.2, 0.4]
    assert curve_of({"history": {"objective": [0.5], "val_fine_outputs_acc": [0.9]}}) == [0.5]
    assert curve_of({"history": {"val_coarse_outputs_acc": [0.9], "loss": [1.0]}}) == []
    assert curve_of({"history": "nope"}) == [] and curve_of(None) == []
