"""SearchLoop in-process: a MemoryStore and a ScriptedLauncher, no process, no server (pytest -m pure).

Budgets, stop rules, early stopping and crash/restart, each in milliseconds; the end-to-end files
(test_local_search.py, test_cluster*.py) show the same through the real CLI, processes and cluster.
"""

from __future__ import annotations

import json
import math
import re

import pytest
from support.scripted import Plan, ScriptedLauncher

from controller.backoff import Backoff
from controller.errors import TemporaryError
from controller.ledger.layout import trial_key
from controller.ledger.trials import Ledger
from controller.loop import SearchLoop
from controller.report.drawer import InlineDrawer
from controller.report.publish import Publisher, SearchStatus
from controller.settings.config import settings_from_mapping
from controller.store.base import get_json
from controller.store.local import MemoryStore

pytestmark = pytest.mark.pure

FAST_TPE = {"nStartupJobs": 3, "nEICandidates": 4}


def _settings(search: dict | None = None, **sections: dict):
    return settings_from_mapping({"search": {"maxTrials": 6, "parallelism": 2, "seed": 3, **(search or {})},
                                  "tpe": FAST_TPE, "controller": {"reportSeconds": 3600}, **sections}).validate()


def _no_drawing(records, search) -> dict[str, bytes]:
    return {}  # report/ is matplotlib's (seconds a call): test_report.py covers it


def _loop(settings, root: MemoryStore, launcher: ScriptedLauncher, backoff: Backoff | None = None,
          **publish) -> SearchLoop:
    store = root.child(settings.search.name)
    publisher = Publisher(store, settings.search.name, drawer=InlineDrawer(_no_drawing), **publish)
    return SearchLoop(settings, store, launcher, publisher=publisher, wait_seconds=0.0,
                      backoff=backoff or Backoff(sleep=lambda s: None))


def _states(root: MemoryStore, search: str = "cifar100") -> dict[int, str]:
    return {t: r.state for t, r in Ledger(root.child(search)).load().items()}


def test_the_budget_is_run_exactly_with_parallelism_honoured():
    root = MemoryStore()
    seen_running: list[int] = []
    launcher = ScriptedLauncher(root, lambda tid, p: Plan(curve=[0.1, 0.2 + tid / 100]))
    loop = _loop(_settings(), root, launcher)
    original_wait = launcher.wait
    launcher.wait = lambda t: (seen_running.append(len(launcher.platform.live)), original_wait(t))[1]  # type: ignore
    status = loop.run()
    assert status.state == "succeeded" and status.finished == 6 and status.budget_left == 0
    assert _states(root) == dict.fromkeys(range(6), "ok")
    assert launcher.starts == dict.fromkeys(range(6), 1)  # none ran twice
    assert max(seen_running) == 2  # parallelism
    best = get_json(root.child("cifar100"), "best.json")
    assert best["tid"] == 5 and best["objective"] == pytest.approx(0.25)


def test_max_failed_trials_stops_the_search_and_says_which_trial_failed_last():
    root = MemoryStore()
    launcher = ScriptedLauncher(root, lambda tid, p: Plan(result=False, exit_code=1))
    status = _loop(_settings({"maxFailedTrials": 3, "parallelism": 1}), root, launcher).run()
    assert status.state == "failed"
    assert status.reason.startswith("3 trials failed (search.maxFailedTrials=3); "
                                    "last: trial 2: it wrote no result.json")
    assert "exit code 1" in status.reason
    assert sorted(launcher.starts) == [0, 1, 2]


def test_the_goal_ends_the_search_and_stops_what_still_runs():
    root = MemoryStore()
    # trial 0 reaches the goal at once; trial 1 would run 5 epochs.
    launcher = ScriptedLauncher(root, lambda tid, p: Plan(curve=[0.9]) if tid == 0 else Plan(curve=[0.1] * 5))
    status = _loop(_settings({"goal": 0.8}), root, launcher).run()
    assert status.state == "goal_reached" and "trial 0 reached 0.9000 >= goal 0.8" in status.reason
    states = _states(root)
    assert states[0] == "ok" and states[1] == "stopped"  # it had a stop.json, so it reported 'stopped'
    assert get_json(root.child("cifar100"), trial_key(1, "stop.json"))["reason"] == "search goal_reached"


def test_asha_stops_the_laggard_and_records_the_decision_before_telling_it():
    root = MemoryStore()
    good = [0.5, 0.6, 0.7, 0.8]
    curves = {0: good, 1: good, 2: good, 3: [0.1, 0.1, 0.1, 0.1]}
    launcher = ScriptedLauncher(root, lambda tid, p: Plan(curve=curves.get(tid, good)))
    rules = {"rule": "asha", "graceEpochs": 1, "minTrials": 3, "eta": 2, "checkSeconds": 0.01}
    status = _loop(_settings({"maxTrials": 4, "parallelism": 4}, earlyStopping=rules), root, launcher).run()
    rec = Ledger(root.child("cifar100")).read_trial(3)
    assert rec.state == "stopped" and rec.reason.startswith("early-stopped: asha rule")
    assert rec.objective == pytest.approx(0.1)  # its best so far
    outcome = get_json(root.child("cifar100"), trial_key(3, "outcome.json"))
    assert outcome["state"] == "stopped"
    assert status.finished == 4 and _states(root)[0] == "ok"


def test_a_diverged_trial_is_stopped_by_asha_and_recorded_without_an_objective():
    """Fails before the fix: a peer with no finite epoch made ASHA's cut NaN (nothing was ever stopped), and a
    stopped trial's best of -inf could not be written (JSON has no -Infinity)."""
    root = MemoryStore()
    curves = {0: [None, None, None], 1: [None, None, None], 2: [0.9, 0.9, 0.9]}
    launcher = ScriptedLauncher(root, lambda tid, p: Plan(curve=curves[tid]))
    rules = {"rule": "asha", "graceEpochs": 1, "minTrials": 3, "eta": 3, "checkSeconds": 0.01}
    _loop(_settings({"maxTrials": 3, "parallelism": 3}, earlyStopping=rules), root, launcher).run()
    recs = Ledger(root.child("cifar100")).load()
    assert recs[0].state == "stopped" and recs[0].objective is None and recs[0].loss == math.inf
    assert recs[2].state == "ok"
    json.loads(root.get("cifar100/" + trial_key(0, "outcome.json")), parse_constant=pytest.fail)


def test_a_launcher_reporting_a_trial_without_a_proposal_is_ignored_not_a_crash():
    """Fails before the fix: _collect used the None record of an unknown trial (AttributeError)."""
    root = MemoryStore()
    launcher = ScriptedLauncher(root)
    from controller.launch.protocol import TrialExit

    launcher.platform.ended[99] = TrialExit(99, 0)  # a stray Job of this search's labels, with no proposal.json
    status = _loop(_settings({"maxTrials": 2}), root, launcher).run()
    assert status.state == "succeeded" and sorted(_states(root)) == [0, 1]
    assert 99 in launcher.platform.released


@pytest.mark.parametrize("crash_after_waits", [1, 2, 3, 5])
def test_a_crash_anywhere_loses_nothing_and_runs_nothing_twice(crash_after_waits):
    """A controller dropped after its n-th wait, and a new one on a new launcher (as a restarted process has): the
    new loop must adopt what runs or ended unreported, never launch it again. Counted twice: the platform's starts,
    and every launch() call (a relaunch of a running trial that a Job's AlreadyExists would hide)."""
    root = MemoryStore()
    first = ScriptedLauncher(root, lambda tid, p: Plan(curve=[0.2, 0.3, 0.4 + tid / 100]))
    settings = _settings({"maxTrials": 5})

    class Crash(BaseException):
        pass

    original_wait = first.wait

    def crashing_wait(timeout: float):
        if first.waits == crash_after_waits:
            raise Crash()
        return original_wait(timeout)

    first.wait = crashing_wait  # type: ignore[method-assign]
    with pytest.raises(Crash):
        _loop(settings, root, first).run()
    assert first.platform.live or first.platform.ended  # the crash left trials running or ended unreported
    second = first.restarted()
    status = _loop(settings, root, second).run()  # the restarted controller, same store and platform
    assert status.state == "succeeded" and status.finished == 5
    assert _states(root) == dict.fromkeys(range(5), "ok")
    assert second.starts == dict.fromkeys(range(5), 1)
    calls = {t: first.calls.get(t, 0) + second.calls.get(t, 0) for t in range(5)}
    assert calls == dict.fromkeys(range(5), 1), (first.calls, second.calls)


def test_a_store_outage_mid_search_is_waited_out():
    root = MemoryStore()
    launcher = ScriptedLauncher(root)
    failures = {"left": 3}
    original_put = MemoryStore.put

    def flaky_put(self, key, data):
        if key.endswith("status.json") and failures["left"]:
            failures["left"] -= 1
            raise TemporaryError("503 SlowDown")
        original_put(self, key, data)

    waited: list[float] = []
    MemoryStore.put = flaky_put  # type: ignore[method-assign]
    try:
        status = _loop(_settings({"maxTrials": 3}), root, launcher, backoff=Backoff(sleep=waited.append)).run()
    finally:
        MemoryStore.put = original_put  # type: ignore[method-assign]
    assert status.state == "succeeded" and launcher.starts == {0: 1, 1: 1, 2: 1}
    assert waited == [1.0, 2.0, 4.0]  # one backoff, doubling


def test_waiting_trials_are_published_with_the_platform_reason():
    root = MemoryStore()
    no_gpu = "waiting for a node: Insufficient nvidia.com/gpu"
    launcher = ScriptedLauncher(root, lambda tid, p: Plan(wait_reason=no_gpu))
    events: list[tuple[str, str]] = []
    statuses: list[SearchStatus] = []

    class Notes:
        def event(self, reason: str, message: str, warning: bool = False, once: str | None = None) -> None:
            events.append((reason, message))

        def status(self, doc: dict) -> None:
            pass

    loop = _loop(_settings({"maxTrials": 1, "parallelism": 1}), root, launcher, notifier=Notes(),
                 on_change=statuses.append)
    original_wait = launcher.wait

    def wait_then_free(timeout: float):
        if launcher.waits == 3:
            launcher.start(0)
        return original_wait(timeout)

    launcher.wait = wait_then_free  # type: ignore[method-assign]
    assert loop.run().state == "succeeded"
    assert ("TrialWaiting", "trial 0: waiting for a node: Insufficient nvidia.com/gpu") in events
    assert any(s.waiting == {0: "waiting for a node: Insufficient nvidia.com/gpu"} for s in statuses)
    assert [r for r, _ in events][-1] == "SearchFinished"


def test_an_ended_search_resumed_tells_its_end_under_the_same_event_name():
    """An operator's restart runs a loop for each ended Search too, which tells its end again: under the same Event
    name, which Kubernetes records once (kubectl describe showed a SearchFinished per restart). A raised budget's
    later end has a name of its own."""
    root = MemoryStore()
    ends: list[str | None] = []

    class Notes:
        def event(self, reason: str, message: str, warning: bool = False, once: str | None = None) -> None:
            if reason == "SearchFinished":
                ends.append(once)

        def status(self, doc: dict) -> None:
            pass

    launcher = ScriptedLauncher(root)
    _loop(_settings({"maxTrials": 2}), root, launcher, notifier=Notes()).run()
    _loop(_settings({"maxTrials": 2}), root, launcher.restarted(), notifier=Notes()).run()
    _loop(_settings({"maxTrials": 3}), root, launcher.restarted(), notifier=Notes()).run()
    assert len(ends) == 3 and ends[0] == ends[1] != ends[2], ends
    assert all(e and re.fullmatch(r"[a-z0-9-]{1,40}", e) for e in ends), ends  # a valid part of an object name


def test_resume_with_a_raised_budget_extends_the_same_search():
    root = MemoryStore()
    launcher = ScriptedLauncher(root)
    _loop(_settings({"maxTrials": 2}), root, launcher).run()
    status = _loop(_settings({"maxTrials": 4}), root, launcher.restarted()).run()
    assert status.finished == 4 and launcher.starts == dict.fromkeys(range(4), 1)


def test_a_result_created_after_a_stopped_trials_end_is_not_taken_for_its_own():
    """The review: with a stopped trial's grant, a result.json created after its end (objective 0.99) became the
    search's best. Sealed when its end is seen, the outcome says whether the trial's own result had arrived."""
    from controller.store.base import dumps

    root = MemoryStore()
    good = [0.5, 0.6, 0.7, 0.8]
    curves = {0: good, 1: good, 2: good, 3: [0.1, 0.1, 0.1, 0.1]}
    launcher = ScriptedLauncher(root, lambda tid, p: Plan(curve=curves.get(tid, good), result=tid != 3))
    rules = {"rule": "asha", "graceEpochs": 1, "minTrials": 3, "eta": 2, "checkSeconds": 0.01}
    _loop(_settings({"maxTrials": 4, "parallelism": 4}, earlyStopping=rules), root, launcher).run()
    store = root.child("cifar100")
    outcome = get_json(store, trial_key(3, "outcome.json"))
    assert outcome["state"] == "stopped" and outcome["result_arrived"] is False and outcome["sealed_at"]
    assert store.create(trial_key(3, "result.json"), dumps({"schema_version": 1, "tid": 3, "status": "ok",
                                                             "objective": 0.99, "finished_at": 1.0}))
    recs = Ledger(store).load_full()
    assert recs[3].state == "stopped" and recs[3].objective == pytest.approx(0.1)
    assert max(recs.values(), key=lambda r: r.objective or 0).tid != 3


def test_a_trial_that_ignores_its_stop_request_is_flagged_where_users_look():
    """Third audit: a trainer that ignores stop requests ran to its end unflagged. Its record says so (the reason
    the status table and the dashboard show), and a Warning Event tells it once."""
    root = MemoryStore()
    good = [0.5, 0.6, 0.7, 0.8]
    curves = {0: good, 1: good, 2: good, 3: [0.1, 0.1, 0.1, 0.1]}
    launcher = ScriptedLauncher(root, lambda tid, p: Plan(curve=curves.get(tid, good), ignores_stop=tid == 3))
    rules = {"rule": "asha", "graceEpochs": 1, "minTrials": 3, "eta": 2, "checkSeconds": 0.01}
    events = []

    class Notifier:
        def event(self, reason, message, warning=False, once=None):
            events.append((reason, message, warning))

        def status(self, status_doc):
            pass

    settings = _settings({"maxTrials": 4, "parallelism": 4}, earlyStopping=rules)
    _loop(settings, root, launcher, notifier=Notifier()).run()
    rec = Ledger(root.child("cifar100")).read_trial(3)
    assert rec.state == "stopped" and "it ignored the stop request and ran to its end" in rec.reason
    assert [e for e in events if e[0] == "TrialIgnoredStop"] == [
        ("TrialIgnoredStop", f"trial 3: {rec.reason}", True)]
