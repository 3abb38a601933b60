"""The dashboard (controller/dashboard): what it computes, what it reads from the store and how often, what its
server will and will not serve, and the page itself in a real browser (Debian's headless Chromium, driven through
its chromedriver by Selenium) following a running local search."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from support.figures import RUN_ID
from support.paths import PY, ROOT
from support.realkube import wait_for

from controller.dashboard.data import SearchView, cut_epoch, importance, kinds
from controller.dashboard.server import serve
from controller.ledger.trials import TrialRecord, proposal_record
from controller.store.base import dumps
from controller.store.local import LocalStore, MemoryStore
from controller.trial.contract import TrialState

SHOTS = ROOT / ".reliability" / "runs" / RUN_ID / "screenshots"


def _rec(tid, state="ok", objective=0.5, reason=None, **params):
    return TrialRecord(tid, params, {}, None, "tpe", created_at=100.0 + tid, state=TrialState(state),
                       objective=objective, finished_at=110.0 + tid, reason=reason)


@pytest.mark.pure
def test_importance_names_the_parameter_that_decides_the_objective():
    import random

    rng = random.Random(1)
    trials = []
    for t in range(60):
        a, b, c = rng.uniform(0, 1), rng.uniform(0, 1), rng.choice(["x", "y"])
        trials.append(_rec(t, objective=a + rng.gauss(0, 0.02), a=a, b=b, c=c))
    got = importance(trials, kinds(trials))
    assert kinds(trials) == {"a": "number", "b": "number", "c": "choice"}
    assert got["a"] > 0.8 and got["b"] < 0.2 and got["c"] < 0.1, got
    assert importance(trials[:7], kinds(trials)) == {}  # too few to say


@pytest.mark.pure
def test_a_conditional_space_shows_its_chosen_option_and_that_options_own_parameters():
    """Third audit (a LightGBM space: gbdt or dart, dart with its own rate): conditional parameters showed as
    [object Object] everywhere, dart's own parameter never appeared, and importance did not group by the option."""
    import random

    from controller.dashboard.data import flat_params, trial_json

    rng = random.Random(2)
    trials = []
    for t in range(60):
        dart = rng.random() < 0.5
        booster = {"type": "dart", "rate_drop": rng.uniform(0, 0.5)} if dart else {"type": "gbdt"}
        trials.append(_rec(t, objective=(0.9 if dart else 0.5) + rng.gauss(0, 0.02), booster=booster,
                           lr=rng.uniform(0, 1), layers=[2, 3]))
    assert kinds(trials) == {"booster.type": "choice", "booster.rate_drop": "number", "lr": "number",
                             "layers": "choice"}
    got = importance(trials, kinds(trials))
    assert got["booster.type"] > 0.8 and got["lr"] < 0.2, got
    shown = trial_json(trials[0], None)["params"]
    assert all(not isinstance(v, (dict, list)) for v in shown.values()) and shown["layers"] == "[2,3]"
    assert flat_params({"head": {"kind": "big", "width": {"n": 3}}}) == {"head.kind": "big", "head.width.n": 3}


@pytest.mark.pure
def test_an_early_stopping_cut_is_read_from_its_reason():
    r = _rec(3, "stopped", reason="early-stopped: median rule: best 0.41 at epoch 4 < median 0.5 of 3 trials")
    assert cut_epoch(r) == 4
    r2 = _rec(4, "stopped", reason="early-stopped: asha rule: best 0.1 at rung epoch 2 is outside the top 1/3")
    assert cut_epoch(r2) == 2
    assert cut_epoch(_rec(5, "stopped", reason="search goal_reached")) is None  # stopped, not cut by a rule


@pytest.mark.pure
def test_failures_group_by_reason_and_time_left_and_start_up_phases_are_computed():
    from controller.dashboard.data import eta_seconds, failures, trial_json

    trials = [_rec(0, "failed", None, reason="exit 1: OOMKilled in pod cifar100-t0"),
              _rec(1, "failed", None, reason="exit 1: OOMKilled in pod cifar100-t1"),
              _rec(2, "failed", None, reason="did not start within startTimeoutSeconds (600 s)"), _rec(3)]
    assert failures(trials) == [{"reason": "exit N: OOMKilled in pod cifarN-tN", "count": 2, "tids": [0, 1]},
                                {"reason": "did not start within startTimeoutSeconds (N s)", "count": 1, "tids": [2]}]
    # Every trial took 10 s; 5 left, 2 at a time, nothing running: 3 rounds of 10 s.
    assert eta_seconds(trials, left=5, parallelism=2, now=1000.0) == 30.0
    running = TrialRecord(9, {}, {}, None, "tpe", created_at=996.0)  # 4 s into its 10
    assert eta_seconds([*trials, running], left=5, parallelism=2, now=1000.0) == 6.0 + 2 * 10.0
    r = _rec(4)
    r.metrics["startup"] = {"imports_s": 1.9, "data_s": 0.5, "first_step_s": float("nan")}
    assert trial_json(r, None)["startup"] == {"imports_s": 1.9, "data_s": 0.5, "first_step_s": None}


class CountingStore(MemoryStore):
    """A MemoryStore that counts the requests a real store would get."""

    def __init__(self, uri="memory://", data=None, counts=None):
        super().__init__(uri, data)
        self.counts = counts if counts is not None else {"get": 0, "list": 0, "exists": 0}

    def get(self, key, limit=None):
        self.counts["get"] += 1
        return super().get(key, limit)

    def list(self, prefix="", start_after=""):
        self.counts["list"] += 1
        return super().list(prefix, start_after)

    def exists(self, key):
        self.counts["exists"] += 1
        return super().exists(key)

    def child(self, name):
        return CountingStore(f"{self.uri.rstrip('/')}/{name}", self.data, self.counts)


def _seed(store, n_done: int, n_open: int) -> None:
    store.put("search.json", dumps({"schema_version": 1, "name": "s", "space": {},
                                    "settings": {"search": {"maxTrials": n_done + n_open + 10, "parallelism": 2}}}))
    for tid in range(n_done + n_open):
        store.put(f"trials/{tid:06d}/proposal.json", dumps(proposal_record(tid, {"x": tid / 10}, {}, 1, "tpe")))
        if tid < n_done:
            store.put(f"trials/{tid:06d}/result.json", dumps({"schema_version": 1, "tid": tid, "status": "ok",
                                                              "objective": tid / 1000}))


@pytest.mark.pure
def test_a_refresh_reads_what_can_change_and_no_decided_record_again():
    store = CountingStore()
    _seed(store, 300, 2)
    view = SearchView(store, "s", refresh_seconds=0)
    view.refresh()
    assert len(view.document()["trials"]) == 302
    store.counts.update(get=0, list=0, exists=0)
    view.refresh(force=True)
    # One LIST (keys after the highest trial); per open trial its result, outcome and progress; status.json.
    assert store.counts["list"] == 1 and store.counts["get"] == 2 * 3 + 1, store.counts
    version = view.version
    store.put("trials/000301/progress.json", dumps({"epoch": 1, "history": {"val_fine_outputs_acc": [0.2]}}))
    store.put("trials/000302/proposal.json", dumps(proposal_record(302, {"x": 3.0}, {}, 1, "tpe")))
    view.refresh(force=True)
    doc = view.document()
    assert view.version > version and len(doc["trials"]) == 303
    # no search running (no status.json): only a trial that reported is running
    assert {t["tid"]: t["state"] for t in doc["trials"][-3:]} == {300: "pending", 301: "running", 302: "pending"}
    # a running search: its open trials run, started or not (third audit: one showed pending until its first
    # report), except one the platform holds, pending with the reason
    store.put("status.json", dumps({"updated_at": 2.0, "state": "running",
                                    "waiting": {"302": "no node has a free nvidia.com/gpu"}}))
    view.refresh(force=True)
    trials = {t["tid"]: t for t in view.document()["trials"][-3:]}
    assert {t: v["state"] for t, v in trials.items()} == {300: "running", 301: "running", 302: "pending"}
    assert trials[302]["reason"] == "no node has a free nvidia.com/gpu"
    assert doc["trials"][301]["curve"] == [0.2]


def _get(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def _tree_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


@pytest.fixture
def finished_store(tmp_path, fake_trial_config):
    """A finished local search of 6 trials, one of whose logs carries markup and whose search.json carries a
    'secret' in its settings (neither must reach a page as anything but text, and the secret not at all)."""
    store = tmp_path / "runs"
    subprocess.run([PY, "-m", "controller", "run", "--config", str(fake_trial_config()), "--local", "--store",
                    str(store), "--max-trials", "6", "--parallelism", "2", "--epochs", "3"], cwd=ROOT, check=True,
                   capture_output=True, env={**os.environ, "FAKE_TRIAL_SLEEP": "0.02"})
    (store / "cifar100" / "trials" / "000002" / "trial.log").write_text(
        'trial 2 says <img src=x onerror="document.title=\'owned\'"><b>bold</b>\n')
    doc = json.loads((store / "cifar100" / "search.json").read_text())
    doc["settings"]["store"]["endpointUrl"] = "https://user:hunter2-secret@example.invalid"
    (store / "cifar100" / "search.json").write_text(json.dumps(doc))
    return store


@pytest.mark.contract
def test_the_server_only_reads_and_never_serves_a_secret(finished_store):
    server = serve(LocalStore(finished_store), port=0)
    base = "http://{}:{}".format(*server.server_address[:2])
    try:
        before = _tree_digest(finished_store)
        bodies = []
        for path in ("/", "/static/app.js", "/api/searches", "/api/search/cifar100",
                     "/api/search/cifar100/trial/2/log", "/api/search/cifar100/trial/2/result",
                     "/api/search/cifar100/trial/2/model"):
            code, headers, body = _get(base + path)
            assert code == 200, (path, code, body[:200])
            # pinned whole: a loosened policy (an inline script, another origin) fails here
            assert headers["Content-Security-Policy"] == ("default-src 'self'; img-src 'self' data:; "
                                                         "object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
            assert headers["X-Content-Type-Options"] == "nosniff"
            bodies.append(body)
        code, headers, body = _get(base + "/api/search/cifar100/trial/2/log")
        assert headers["Content-Type"].startswith("text/plain") and b"<img src=x" in body  # text, as it is
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            assert _get(base + "/api/search/cifar100", method)[0] == 405
        # the static file-name check alone stands between these and the package's own files (..%2f is one part)
        for path in ("/static/..%2fserver.py", "/static/..%2f__init__.py"):
            code, _, body = _get(base + path)
            assert code == 404 and b"import" not in body, (path, body[:100])
        for path in ("/static/../../pyproject.toml", "/api/search/..%2f..%2fetc/trial/1/log",
                     "/api/search/cifar100/trial/1/..%2f..%2fsearch.json", "/api/search/nosuch", "/static/x.py"):
            assert _get(base + path)[0] == 404, path
        assert _tree_digest(finished_store) == before  # nothing served changed the store
        secrets = [b"hunter2-secret", os.environ["AWS_SECRET_ACCESS_KEY"].encode()]
        assert not [s for s in secrets for b in bodies if s in b]
        assert b'"settings"' not in bodies[3]  # the search's settings are never sent
    finally:
        server.shutdown()


# ---- the page in a real browser ------------------------------------------------------------------------------
@pytest.fixture
def browser(_chromium):
    _chromium.get("about:blank")
    _chromium.get_log("browser")  # what an earlier test's page logged is not this test's
    return _chromium


@pytest.fixture(scope="module")
def _chromium():
    from support.browser import chromium

    d = chromium()
    yield d
    d.quit()


def _until(d, what, predicate):
    """Wait for something the page does (an event, never a fixed time); the timeout only catches a hang."""
    wait_for(what, lambda: predicate(d), timeout=120)


def _cells(d, column: str) -> list[str]:
    """One column of the trials table, read in one script (the page may redraw the table at any moment)."""
    return d.execute_script("""
        const heads = [...document.querySelectorAll('#trials thead th')].map((th) => th.dataset.key);
        const i = heads.indexOf(arguments[0]);
        return [...document.querySelectorAll('#trials tbody tr')].map((tr) => tr.children[i].textContent);
    """, column)


def _text(d, element_id: str) -> str:
    return d.execute_script("return document.getElementById(arguments[0]).textContent", element_id)


def _attr(d, element_id: str, name: str) -> str:
    return d.execute_script("return document.getElementById(arguments[0]).getAttribute(arguments[1])", element_id,
                            name)


def _click_header(d, column: str) -> None:
    d.execute_script("[...document.querySelectorAll('#trials thead th')]"
                     ".find((th) => th.dataset.key === arguments[0]).click()", column)


def _shot(d, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    d.save_screenshot(str(SHOTS / f"{name}.png"))


def _severe(d) -> list[str]:
    return [e["message"] for e in d.get_log("browser") if e["level"] == "SEVERE"]


@pytest.mark.e2e
def test_the_page_follows_a_running_search_live_and_its_tools_work(browser, tmp_path, fake_trial_config):
    d = browser
    gate, store = tmp_path / "gate", tmp_path / "runs"
    gate.mkdir()
    proc = subprocess.Popen([PY, "-m", "controller", "run", "--config", str(fake_trial_config()), "--local",
                             "--store", str(store), "--max-trials", "6", "--parallelism", "2", "--epochs", "3"],
                            cwd=ROOT, env={**os.environ, "FAKE_TRIAL_SLEEP": "0.05", "FAKE_TRIAL_GATE": str(gate)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    trials = store / "cifar100" / "trials"
    wait_for("two trials to report an epoch", lambda: all((trials / f"{t:06d}" / "progress.json").exists()
                                                          for t in (0, 1)), proc=proc)
    server = serve(LocalStore(store), port=0, refresh_seconds=0.5)
    base = "http://{}:{}/".format(*server.server_address[:2])
    try:
        d.get(base)
        _until(d, "the page to draw the search", lambda d: d.find_elements("css selector", "#trials tbody tr"))
        assert "running" in _text(d, "card-state")
        assert sorted(_cells(d, "tid")) == ["0", "1"]
        d.execute_script("window.sameDocument = true")  # gone if the page reloads
        (gate / "0").touch()  # trial 0 may end now: the page must show it without a reload
        _until(d, "trial 0 to show as ok", lambda d: dict(zip(_cells(d, "tid"), _cells(d, "state"))).get("0") == "ok")
        assert d.execute_script("return window.sameDocument") is True
        _shot(d, "running")
        (gate / "all").touch()
        _until(d, "the search to show as succeeded", lambda d: "succeeded" in _text(d, "card-state"))
        assert proc.wait(120) == 0
        _until(d, "all six trials in the table", lambda d: len(_cells(d, "tid")) == 6)
        assert d.execute_script("return window.sameDocument") is True
        doc = json.loads(_get(base + "api/search/cifar100")[2])
        version = d.execute_script("return document.body.dataset.version")
        assert version == str(doc["version"])  # the page shows the document compared below
        scored = [t for t in doc["trials"] if t["objective"] is not None]
        assert _attr(d, "plot-trials", "data-points") == str(len(scored)) == "6"
        assert _attr(d, "plot-curves", "data-points") == "6"
        assert _attr(d, "plot-parallel", "data-points") == "6"
        assert len(d.find_elements("css selector", "#param-plots canvas")) == len(doc["params"])
        # Sort: objective, descending on the second click.
        _click_header(d, "objective")
        _click_header(d, "objective")
        values = [float(v) for v in _cells(d, "objective")]
        assert values == sorted(values, reverse=True) and len(values) == 6
        # Filter: one trial by id, then by state.
        box = d.find_element("id", "filter")
        box.send_keys("tid:3")
        assert _cells(d, "tid") == ["3"] and "1 of 6" in _text(d, "shown")
        box.clear()
        box.send_keys("state:ok")
        assert set(_cells(d, "state")) == {"ok"} and len(_cells(d, "state")) == 6
        box.clear()
        box.send_keys(" ")  # an input event: all rows back
        _shot(d, "trials-table")
        # A trial's log, shown as text.
        d.execute_script("document.querySelector(\"#trials tbody tr[data-tid='1'] td\").click()")
        _until(d, "trial 1's log", lambda d: "trial 1" in _text(d, "detail-log"))
        _shot(d, "trial-detail")
        assert not _severe(d), _severe(d)
    finally:
        d.get("about:blank")  # the page's event stream would retry the closed server and log errors
        server.shutdown()
        (gate / "all").touch()  # no trial is left waiting at its gate if the test failed half-way
        if proc.poll() is None:
            proc.kill()


@pytest.mark.e2e
def test_a_log_with_markup_is_shown_as_text(browser, finished_store):
    d = browser
    server = serve(LocalStore(finished_store), port=0)
    try:
        d.get("http://{}:{}/".format(*server.server_address[:2]))
        _until(d, "the table", lambda d: d.find_elements("css selector", "#trials tbody tr[data-tid='2']"))
        d.execute_script("document.querySelector(\"#trials tbody tr[data-tid='2'] td\").click()")
        _until(d, "trial 2's log", lambda d: "trial 2 says" in _text(d, "detail-log"))
        pre = d.find_element("id", "detail-log")
        assert '<img src=x onerror="document.title=\'owned\'"><b>bold</b>' in pre.text
        assert pre.find_elements("css selector", "*") == [] and "owned" not in d.title
        assert "hunter2" not in d.page_source
        _shot(d, "finished")
        assert not _severe(d), _severe(d)
    finally:
        d.get("about:blank")
        server.shutdown()


@pytest.mark.contract
def test_the_cli_serves_a_store_until_sigterm_and_names_a_bad_flag(finished_store):
    import signal

    proc = subprocess.Popen([PY, "-m", "controller", "dashboard", "--store", str(finished_store), "--port", "0"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # "dashboard: http://127.0.0.1:PORT/ (read-only; ...)"
        assert line.startswith("dashboard: http://127.0.0.1:"), (line, proc.stderr.read() if proc.poll() else "")
        url = line.split()[1]
        (listed,) = json.loads(_get(url + "api/searches")[2])
        assert listed["name"] == "cifar100" and listed["state"] == "succeeded"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        port = int(url.rsplit(":", 1)[1].strip("/"))
    finally:
        if proc.poll() is None:
            proc.kill()
    bad = subprocess.run([PY, "-m", "controller", "dashboard", "--store", str(finished_store), "--refresh-seconds",
                          "0"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "--refresh-seconds: 0.0 must be in (0, 3600]" in bad.stderr
    import socket

    with socket.socket() as taken:  # the port in use (by a listener: SO_REUSEADDR only passes its TIME_WAITs)
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", port))
        taken.listen()
        busy = subprocess.run([PY, "-m", "controller", "dashboard", "--store", str(finished_store), "--port",
                               str(port)], cwd=ROOT, capture_output=True, text=True)
    assert busy.returncode == 2 and "--host/--port: cannot listen on" in busy.stderr, busy.stderr


# -- issue 34: whoever reaches the port, and whatever a trial wrote, costs the dashboard little --


def _raw(port: int, request: bytes) -> bytes:
    """What the server answers to a raw request (the whole answer, until it closes)."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(request)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


@pytest.mark.e2e
def test_a_request_naming_a_host_the_dashboard_was_not_given_is_refused(finished_store):
    """DNS rebinding: a web page at evil.example, its name re-pointed at 127.0.0.1, reads the dashboard through the
    user's loopback port or `kubectl port-forward`: its requests say Host: evil.example."""
    server = serve(LocalStore(finished_store), port=0, allow_hosts=["dash.example"])
    port = server.server_address[1]
    try:
        def status(host: str) -> int:
            answer = _raw(port, f"GET /api/searches HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            return int(answer.split(b" ", 2)[1])

        assert status("evil.example") == 421 and status("evil.example:8080") == 421
        assert status("localhost.evil.example") == 421
        for host in ("localhost:8080", "127.0.0.1", "[::1]:8080", "dash.example", "DASH.example:443", "10.1.2.3"):
            assert status(host) == 200, host
    finally:
        server.shutdown()


@pytest.mark.e2e
def test_idle_connections_time_out_and_connections_beyond_the_cap_are_closed(finished_store, monkeypatch):
    import socket

    from controller.dashboard import server as server_module

    monkeypatch.setattr(server_module, "IDLE_SECONDS", 1.0)
    monkeypatch.setattr(server_module, "MAX_CONNECTIONS", 2)
    server = serve(LocalStore(finished_store), port=0)
    port = server.server_address[1]
    try:
        idle = [socket.create_connection(("127.0.0.1", port), timeout=60) for _ in range(2)]
        # both slots held by connections that send nothing: the next one is closed unanswered...
        wait_for("a third connection to be refused", lambda: _raw(port, b"GET / HTTP/1.0\r\n\r\n") == b"",
                 timeout=60)
        for s in idle:  # ...until the idle ones time out (their recv ends: the server closed them)
            assert s.recv(100) == b""
            s.close()
        wait_for("a connection to be served again",
                 lambda: _raw(port, b"GET /api/searches HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 200"), timeout=60)
    finally:
        server.shutdown()


class _NoWholeModel(MemoryStore):
    def get(self, key, limit=None):
        assert not key.endswith("model.keras"), "a model was read whole"
        return super().get(key, limit)

    def child(self, name):
        return _NoWholeModel(f"{self.uri}/{name.strip('/')}", self.data)


@pytest.mark.e2e
def test_files_are_streamed_from_the_store_not_held_whole():
    root = _NoWholeModel()
    store = root.child("s")
    _seed(store, 1, 0)
    model = os.urandom(3 * 2**20 + 5)
    store.put("trials/000000/model.keras", model)
    store.put("trials/000000/trial.log", b"first line\n" + b"x" * 200_000 + b"\nlast line\n")
    server = serve(root, port=0)
    base = "http://{}:{}".format(*server.server_address[:2])
    try:
        code, headers, body = _get(base + "/api/search/s/trial/0/model")
        assert code == 200 and body == model and headers["Content-Length"] == str(len(model))
        code, _, body = _get(base + "/api/search/s/trial/0/log")
        assert code == 200 and body.endswith(b"last line\n") and b"first line" not in body and len(body) < 70_000
    finally:
        server.shutdown()


@pytest.mark.e2e
def test_a_model_downloads_under_the_name_its_trial_saved_it_as():
    """A LightGBM trial saves model.txt (trial.modelFile); its result says so, and the download keeps the name. A
    trial whose result names something that is not a file name in its folder gets model.keras, never that path."""
    root = MemoryStore()
    store = root.child("s")
    _seed(store, 2, 0)
    for tid, name in ((0, "model.txt"), (1, "../../other/trials/000000/result.json")):
        store.put(f"trials/{tid:06d}/result.json", dumps({"schema_version": 1, "tid": tid, "status": "ok",
                                                          "objective": 0.5, "model_file": name}))
    store.put("trials/000000/model.txt", b"tree 0\n")
    store.put("trials/000001/model.keras", b"keras bytes")
    server = serve(root, port=0)
    base = "http://{}:{}".format(*server.server_address[:2])
    try:
        code, headers, body = _get(base + "/api/search/s/trial/0/model")
        assert code == 200 and body == b"tree 0\n", (code, body)
        assert headers["Content-Disposition"] == 'attachment; filename="s-trial-0-model.txt"'
        code, headers, body = _get(base + "/api/search/s/trial/1/model")
        assert code == 200 and body == b"keras bytes", (code, body)
    finally:
        server.shutdown()


@pytest.mark.e2e
def test_a_trials_unreadable_progress_shows_for_that_trial_only():
    """A 20 kB progress.json nested 10,000 deep answered /api/searches with 500 and ended the refresher's thread."""
    root = MemoryStore()
    store = root.child("s")
    _seed(store, 2, 2)
    store.put("trials/000002/progress.json", b"[" * 10_000 + b"]" * 10_000)
    store.put("trials/000003/progress.json", dumps({"epoch": 1, "history": {"objective": [0.3]}}))
    server = serve(root, port=0, refresh_seconds=0.1)
    base = "http://{}:{}".format(*server.server_address[:2])
    try:
        code, _, body = _get(base + "/api/searches")
        assert code == 200 and json.loads(body)[0]["name"] == "s"
        trials = {t["tid"]: t for t in json.loads(_get(base + "/api/search/s")[2])["trials"]}
        assert "nested deeper than 32 levels" in trials[2]["unreadable"] and trials[2]["curve"] == []
        assert trials[3]["curve"] == [0.3] and trials[3]["unreadable"] is None and trials[1]["objective"] == 0.001
        assert server.dashboard._thread.is_alive()
    finally:
        server.shutdown()
