"""The HTML/PNG report: for the imported seed results, and for a search with ok, failed and stopped trials."""

import json
import os

import pytest
from support.cli import run_cli
from support.paths import SEED_RESULTS

from controller.ledger.trials import TrialRecord
from controller.report.drawer import BackgroundDrawer
from controller.report.html import render
from controller.report.publish import Publisher, SearchStatus
from controller.store.local import MemoryStore
from controller.trial.contract import SearchState

PNG = b"\x89PNG\r\n\x1a\n"


def _png_size(data):
    assert data[:8] == PNG
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.mark.e2e
def test_report_of_the_imported_seed_results(tmp_path):
    store = str(tmp_path / "runs")
    run_cli("import", "--store", store, str(SEED_RESULTS))
    out = json.loads(run_cli("report", "--store", store, "--out", str(tmp_path / "rep")).stdout)
    assert out["files"] == ["best-so-far.png", "curves.png", "index.html", "params.png"]
    page = (tmp_path / "rep" / "index.html").read_text()
    assert "0.6761" in page and "42 trials: 42 ok" in page
    assert "Nadam" in page  # the best trial's params table
    for name in ("best-so-far.png", "curves.png", "params.png"):
        w, h = _png_size((tmp_path / "rep" / name).read_bytes())
        assert w > 400 and h > 200
    # into the store's report/ when no --out is given
    run_cli("report", "--store", store)
    assert (tmp_path / "runs" / "cifar100" / "report" / "index.html").exists()


@pytest.mark.pure
def test_report_shows_failures_and_stopped_trials():
    recs = [
        TrialRecord(0, {"lr": 0.1, "opt": "adam"}, {}, 1, "tpe", state="ok", objective=0.5, curve=[0.2, 0.4, 0.5]),
        TrialRecord(1, {"lr": 0.3, "opt": "sgd"}, {}, 2, "tpe", state="failed", reason="OOMKilled <exit 137>"),
        TrialRecord(2, {"lr": 0.2, "opt": "adam"}, {}, 3, "tpe", state="stopped", objective=0.3, curve=[0.1, 0.3],
                    reason="early-stopped: median rule"),
    ]
    files = render(recs, "demo")
    page = files["index.html"].decode()
    assert "3 trials: 1 failed, 1 ok, 1 stopped" in page
    assert "OOMKilled &lt;exit 137&gt;" in page  # escaped
    assert "Trial 0: objective <b>0.5000</b>" in page
    assert all(_png_size(files[n])[0] > 300 for n in ("best-so-far.png", "curves.png", "params.png"))


@pytest.mark.e2e
def test_a_search_writes_its_report_to_the_store(tmp_path, fake_trial_config):
    store = tmp_path / "runs"
    run_cli("run", "--config", str(fake_trial_config()), "--local", "--store", str(store), "--max-trials", "3")
    page = (store / "cifar100" / "report" / "index.html").read_text()
    assert "3 trials: 3 ok" in page


def _fails_for_broken(records, search):
    """A renderer that fails for some searches, as odd records can make it (sent to the drawing process by name,
    so module-level)."""
    if search == "broken":
        raise ValueError("cannot draw this one")
    if search == "odd":
        raise TypeError("'<' not supported between instances of 'str' and 'float'")
    if search == "endless":
        import time

        time.sleep(3600)
    if search == "dies":
        os._exit(1)  # the drawing process dies (killed for memory, say)
    return {**render(records, search), "pid": str(os.getpid()).encode()}


@pytest.mark.e2e
def test_the_operators_drawer_draws_in_another_process_and_keeps_the_newest_request():
    """The operator's reports: drawn by a child process (the loops' process keeps its GIL), one at a time, only the
    newest request per search, and a report that fails to draw is logged while the others are still drawn."""
    root = MemoryStore()
    drawer = BackgroundDrawer(_fails_for_broken)
    try:
        recs = [TrialRecord(t, {"lr": 0.1 * (t + 1)}, {}, t, "tpe", state="ok", objective=0.1 * t, curve=[0.1 * t])
                for t in range(3)]
        drawer.draw(root.child("broken"), "broken", recs)
        for n in range(1, 4):  # three requests for one search, queued behind the broken one
            drawer.draw(root.child("a"), "a", recs[:n])
        assert drawer.idle(timeout=300)
        page = root.child("a").get("report/index.html").decode()
        assert "3 trials: 3 ok" in page  # the newest of its requests
        assert drawer.drawn <= 2  # the first request of "a" at most, and the newest: never all three
        assert not root.child("broken").list("report/")
        assert int(root.child("a").get("report/pid")) != os.getpid()
    finally:
        drawer.close()


@pytest.mark.e2e
def test_no_search_s_records_stop_the_drawer_that_every_search_shares(monkeypatch):
    """A renderer error of any type (the review's schema-valid result.json ended the drawer's thread: no report of
    any search was drawn again) and a drawing that never ends: each costs its own search's report only."""
    from controller.report import drawer as drawer_module

    monkeypatch.setattr(drawer_module, "DRAW_SECONDS", 20.0)
    root = MemoryStore()
    drawer = BackgroundDrawer(_fails_for_broken)
    try:
        recs = [TrialRecord(t, {"lr": 0.1 * (t + 1)}, {}, t, "tpe", state="ok", objective=0.1 * t) for t in range(2)]
        drawer.draw(root.child("odd"), "odd", recs)
        drawer.draw(root.child("endless"), "endless", recs)
        drawer.draw(root.child("a"), "a", recs, wait=True)
        assert "2 trials: 2 ok" in root.child("a").get("report/index.html").decode()
        assert not root.child("odd").list("report/") and not root.child("endless").list("report/")
        drawer.draw(root.child("b"), "b", recs, wait=True)  # and again: the drawer and a new child still serve
        assert root.child("b").get("report/index.html") is not None
    finally:
        drawer.close()


@pytest.mark.e2e
def test_a_drawing_process_that_died_is_replaced():
    """Third audit: with the line that drops a dead pool removed, no report of any search was ever drawn again."""
    root = MemoryStore()
    drawer = BackgroundDrawer(_fails_for_broken)
    try:
        recs = [TrialRecord(t, {"lr": 0.1 * (t + 1)}, {}, t, "tpe", state="ok", objective=0.1 * t) for t in range(2)]
        drawer.draw(root.child("a"), "a", recs, wait=True)
        first = int(root.child("a").get("report/pid"))
        drawer.draw(root.child("dies"), "dies", recs, wait=True)
        drawer.draw(root.child("b"), "b", recs, wait=True)
        assert "2 trials: 2 ok" in root.child("b").get("report/index.html").decode()
        assert int(root.child("b").get("report/pid")) != first  # drawn by the process that replaced it
    finally:
        drawer.close()


@pytest.mark.e2e
def test_a_request_draws_the_records_as_they_were_when_it_was_made():
    """The loop goes on changing its records while a request waits its turn: the report is of the request's."""
    root = MemoryStore()
    drawer = BackgroundDrawer(_slow)
    try:
        recs = [TrialRecord(0, {"x": 0}, {}, 0, "tpe", state="ok", objective=0.1)]
        drawer.draw(root.child("ahead"), "ahead", recs)  # a second's drawing ahead of the next request
        drawer.draw(root.child("s"), "s", recs)
        recs.append(TrialRecord(1, {"x": 1}, {}, 1, "tpe", state="ok", objective=0.2))
        assert drawer.idle(timeout=300)
        assert root.child("s").get("report/index.html") == b"1 trials of s"
    finally:
        drawer.close()


def _slow(records, search):
    """A renderer that takes a second (module-level: the drawing process gets it by name)."""
    import time

    time.sleep(1.0)
    return {"index.html": f"{len(records)} trials of {search}".encode()}


@pytest.mark.e2e
def test_a_searchs_final_report_is_stored_before_its_end_is_told():
    """The end of a search waits for its final report (Publisher.finished draws with wait=True, then tells the
    SearchFinished Event): once the Event exists the bucket is whole. Other reports are drawn behind the loop's back."""
    root = MemoryStore()
    drawer = BackgroundDrawer(_slow)
    try:
        recs = [TrialRecord(t, {"x": t}, {}, t, "tpe", state="ok", objective=0.1 * t) for t in range(2)]
        drawer.draw(root.child("late"), "late", recs)  # a periodic report: not waited for
        assert root.child("late").get("report/index.html") is None
        drawer.draw(root.child("other"), "other", recs[:1])  # another search's report, queued first
        told = []

        class Notifier:
            def event(self, reason, message, warning=False, once=None):
                told.append((reason, root.child("ended").get("report/index.html")))

            def status(self, status_doc):
                pass

        publisher = Publisher(root.child("ended"), "ended", notifier=Notifier(), drawer=drawer)
        status = SearchStatus(SearchState.SUCCEEDED, "budget spent", {"ok": 2}, budget=2, finished=2)
        publisher.finished(status, recs)
        assert told == [("SearchFinished", b"2 trials of ended")]  # the report was there when the end was told
    finally:
        drawer.close()


@pytest.mark.e2e
def test_the_report_names_the_programs_objective_and_spreads_a_conditional_space():
    """Third audit: a model that is not CIFAR got axes saying "validation fine accuracy", and its conditional
    parameters drawn as one group per whole option."""
    from controller.report.html import objective_label

    recs = [TrialRecord(t, {"booster": {"type": "dart", "rate_drop": 0.1 * t} if t % 2 else {"type": "gbdt"}},
                        {}, t, "tpe", state="ok", objective=-0.5 + 0.01 * t,
                        metrics={"objective_name": "negated log-loss"}) for t in range(8)]
    assert objective_label(recs) == "objective (negated log-loss)"
    assert objective_label([TrialRecord(0, {}, {}, 0, "tpe", state="ok", objective=0.1)]) == "objective"
    files = render(recs, "lgbm")
    assert _png_size(files["params.png"])[0] >= 800 and b"fine accuracy" not in files["index.html"]
