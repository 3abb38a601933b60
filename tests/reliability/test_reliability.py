"""Faults injected for real in local mode and on S3, and the figures RELIABILITY.md quotes: each test records
what it tried and what was lost (record_figure, only once its assertions passed). The Kubernetes faults are in
tests/kube/test_cluster_faults.py."""

import json
import os
import random
import shutil
import signal
import subprocess
import threading
import time

import boto3
import pytest
from support.cli import run_cli
from support.faultproxy import FaultProxy
from support.figures import local_starts, record_figure, search_figure
from support.paths import PY, ROOT, SEED_RESULTS
from support.realkube import wait_for

pytestmark = pytest.mark.e2e


def _trials(store):
    return json.loads(run_cli("status", "--store", store, "--json").stdout)["trials"]


def _assert_nothing_lost(trials, n, starts):
    assert [t["tid"] for t in trials] == list(range(n)), trials
    assert all(t["state"] in ("ok", "failed", "stopped") for t in trials), trials
    assert len({json.dumps(t["params"], sort_keys=True) for t in trials}) == n, trials  # no proposal twice
    assert starts == dict.fromkeys(range(n), 1), starts  # each program started once (tests/startlog.sh)


def _await_line(proc, text):
    """Wait until the process logs a line containing `text` (fails if it exits first); keep draining its stderr."""
    seen, said = threading.Event(), {"it": False}

    def read():
        for line in proc.stderr:
            if text in line:
                said["it"] = True
                seen.set()
        seen.set()  # it exited

    threading.Thread(target=read, daemon=True).start()
    seen.wait()
    assert said["it"], f"the controller exited ({proc.wait()}) before it logged {text!r}"


def _finished_in(search) -> int:
    status = search / "status.json"
    try:
        return json.loads(status.read_text()).get("finished", 0) if status.exists() else 0
    except ValueError:
        return 0  # read while being replaced


def test_controller_sigkilled_20_times_in_local_mode(tmp_path, fake_trial_config):
    """20 SIGKILLs spread through a 32-trial search. The test decides how far the search may get before each
    kill (FAKE_TRIAL_GATE: trial t may end once gate/t exists), so the search cannot finish early on a fast
    machine nor lag the kills on a slow one; within that, each kill lands at a random moment."""
    store, startlog, gate, n, kills = str(tmp_path / "runs"), tmp_path / "startlog", tmp_path / "gate", 32, 20
    gate.mkdir()
    search = tmp_path / "runs" / "cifar100"
    env = {**os.environ, "FAKE_TRIAL_SLEEP": "0.1", "FAKE_TRIAL_STARTLOG": str(startlog), "FAKE_TRIAL_GATE": str(gate)}
    args = [PY, "-m", "controller", "run", "--config", str(fake_trial_config()), "--local", "--store", store,
            "--max-trials", str(n), "--parallelism", "3", "--epochs", "4", "--seed", "8"]
    rng = random.Random(20)
    proposed_at_kill, collected_at_kill, ended_while_down = [], [], []

    def held() -> list[int]:
        """Trials whose program started and has not ended (its supervisor wrote no exit.json)."""
        return sorted(t for t in local_starts(startlog) if not (search / ".local" / f"{t:06d}" / "exit.json").exists())
    for k in range(kills):
        opened = (k * (n - 4)) // kills  # trials 0..opened-1 may end before kill k; never all n
        for tid in range(opened):
            (gate / str(tid)).touch()
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        _await_line(proc, "trials on record")  # timed from there: the imports before it hold no state
        collected = max(0, opened - 3)
        wait_for(f"{collected} trials collected before kill {k}", lambda n=collected: _finished_in(search) >= n,
                 proc=proc)
        wait_for(f"a trial running before kill {k}", lambda: bool(held()), proc=proc)
        time.sleep(rng.uniform(0.0, 0.5))
        assert proc.poll() is None, "the search ended although the gate held trials back"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proposed_at_kill.append(len(list((search / "trials").glob("*/proposal.json"))))
        collected_at_kill.append(_finished_in(search))
        # A trial ends while no controller runs: the next one must hear of it (adopt), never run it again.
        tid = held()[0]
        (gate / str(tid)).touch()
        wait_for(f"trial {tid} to end while the controller is down",
                 lambda t=tid: (search / ".local" / f"{t:06d}" / "exit.json").exists())
        ended_while_down.append(tid)
    (gate / "all").touch()
    final = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr[-2000:]
    trials, starts = _trials(store), local_starts(startlog)
    assert len(proposed_at_kill) == kills
    # The kills land all through the search, not only at its start or its end.
    assert len(set(collected_at_kill)) >= 5 and collected_at_kill[-1] >= n // 2, collected_at_kill
    assert [t["state"] for t in trials] == ["ok"] * n, trials  # no fault was planted: every trial must end ok
    _assert_nothing_lost(trials, n, starts)
    record_figure("controller SIGKILL, local mode", search_figure(
        trials, n, starts, kills=kills, proposals_at_each_kill=proposed_at_kill,
        collected_at_each_kill=collected_at_kill, ended_while_down=ended_while_down))


def test_s3_bursts_slowness_timeouts_and_a_restart(tmp_path, s3_endpoint, bucket, fake_trial_config):
    """Five fault phases against moto's server, each kept on until it has met its traffic. Trials wait at a gate,
    and the next one is let through only when the store has gone quiet, so the search cannot end before every phase
    is done, on any machine; a phase that never meets its traffic fails the test."""
    startlog, gate, n = tmp_path / "startlog", tmp_path / "gate", 8
    gate.mkdir()
    with FaultProxy(s3_endpoint) as proxy:
        cfg = fake_trial_config(f"store: {{endpointUrl: '{proxy.url}', timeoutSeconds: 2}}\n")
        env = {**os.environ, "FAKE_TRIAL_SLEEP": "0.3", "FAKE_TRIAL_STARTLOG": str(startlog),
               "FAKE_TRIAL_GATE": str(gate), "AWS_ENDPOINT_URL_S3": proxy.url}
        proc = subprocess.Popen([PY, "-m", "controller", "run", "--config", str(cfg), "--local", "--store",
                                 f"s3://{bucket}/searches", "--max-trials", str(n), "--parallelism", "2",
                                 "--epochs", "4"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        f = proxy.faults
        f.hang_seconds = 5
        opened = {"next": 0}

        def until(kind, count, at_least=0.0):
            """Keep the fault on until it met `count` requests (and `at_least` s passed); when the store is quiet
            (every running trial at its gate), one more trial may end. False if the search ended first."""
            start, last = time.monotonic(), -1
            while f.counts.get(kind, 0) < count or time.monotonic() - start < at_least:
                if proc.poll() is not None:
                    return False
                seen = sum(f.counts.values())
                if seen == last and opened["next"] < n:
                    (gate / str(opened["next"])).touch()
                    opened["next"] += 1
                last = seen
                time.sleep(0.5)
            return True

        lasted, met = {}, {}

        def inject():
            met["up"] = until("forward", 3)  # the controller is up and talking to the store
            for name, action, kind, count, at_least in [
                    ("errors", lambda: f.errors.extend([503, 503, 503, 500, 500]), "error", 5, 0),
                    ("slow", lambda: setattr(f, "delay", 0.4), "forward", f.counts.get("forward", 0) + 6, 1.0),
                    ("down", lambda: setattr(f, "down", True), "down", 3, 3.0),  # a restart: at least 3 s
                    ("hang", lambda: setattr(f, "hang", 2), "hang", 2, 0),
                    ("errors again", lambda: f.errors.extend([503] * 3), "error", 8, 0)]:
                began = time.monotonic()
                with f.lock:
                    action()
                met[name] = until(kind, count, at_least=at_least)
                with f.lock:
                    f.delay, f.down = 0.0, False
                lasted[name] = round(time.monotonic() - began, 1)
            (gate / "all").touch()

        t = threading.Thread(target=inject)
        t.start()
        out, err = proc.communicate(timeout=600)
        t.join()
    assert proc.returncode == 0, err[-3000:]
    assert met == dict.fromkeys(["up", "errors", "slow", "down", "hang", "errors again"], True), (met, f.counts)
    # Every planted error and hang was served, and no other.
    assert f.counts.get("error") == 8 and f.counts.get("hang") == 2 and f.counts.get("down", 0) >= 3, f.counts
    trials, starts = _trials(f"s3://{bucket}/searches"), local_starts(startlog)
    s3 = boto3.client("s3")
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    torn = []
    for key in keys:
        if key.endswith(".json"):
            try:
                json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
            except ValueError:
                torn.append(key)
    assert torn == [] and [t["state"] for t in trials] == ["ok"] * n, (torn, trials)
    _assert_nothing_lost(trials, n, starts)
    record_figure("S3 faults (500/503 bursts, slow, hung, restart)", search_figure(
        trials, n, starts, injected=dict(f.counts), seconds=lasted, records_checked=len(keys), torn_records=torn))


BAD_INPUTS = [
    ("unknown config key", "search:\n  maxTrails: 3\n", [], "search.maxTrails: unknown key; did you mean 'maxTrials'"),
    ("wrong type", "search:\n  parallelism: two\n", [], "search.parallelism: expected an integer"),
    ("out of range", "tpe:\n  gamma: 1.5\n", [], "tpe.gamma: 1.5 must be in (0, 1)"),
    ("invalid space", "search:\n  space:\n    lr: {dist: uniform, low: 1, high: 0}\n", [],
     "search.space.lr: low (1.0) must be < high (0.0)"),
    ("another space for an existing search", "search:\n  space:\n    lr: {dist: uniform, low: 0, high: 1}\n", [],
     "was started with another search space"),
    ("another seed for an existing search", "", ["--seed", "99"], "search.seed: 99 differs"),
    ("store that is a file", "", ["--store", "FILE"], "cannot create or write this directory"),
    ("bucket that does not exist", "", ["--store", "s3://no-such-bucket-x1/p"], "does not exist or is not accessible"),
    ("unknown store scheme", "", ["--store", "gs://b/p"], "unsupported scheme 'gs'"),
]


@pytest.fixture(scope="module")
def finished_search(tmp_path_factory):
    """One small finished search, copied for each bad-input case."""
    d = tmp_path_factory.mktemp("search")
    cfg = d / "c.yaml"
    cfg.write_text(f"trial:\n  command: [{PY}, {ROOT / 'tests' / 'objective.py'}]\n  data: 'synthetic:200'\n"
                   "local:\n  pollSeconds: 0.05\n")
    run_cli("run", "--config", str(cfg), "--local", "--store", str(d / "runs"), "--max-trials", "2")
    return d / "runs"


def _everything(store, file_in_the_way):
    """What a bad command could have touched: the search's folder, the file in the way, and every object of every
    bucket on the S3 server (a refused bucket must not have been created either). (count, digest)."""
    import hashlib

    h, n = hashlib.sha256(), 0
    for p in sorted(store.rglob("*")):
        if p.is_file() and ".local" not in p.parts:
            h.update(str(p.relative_to(store)).encode() + b"\0" + p.read_bytes())
            n += 1
    h.update(b"FILE\0" + file_in_the_way.read_bytes())
    n += 1
    s3 = boto3.client("s3")
    for b in sorted(x["Name"] for x in s3.list_buckets()["Buckets"]):
        h.update(b"bucket\0" + b.encode())
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=b):
            for o in page.get("Contents", []):
                h.update(f"{b}/{o['Key']}\0{o['ETag']}".encode())
                n += 1
    return n, h.hexdigest()


@pytest.mark.parametrize("case, extra, flags, message", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_refused_naming_the_field_and_nothing_stored_is_lost(tmp_path, fake_trial_config, s3_endpoint,
                                                                          finished_search, case, extra, flags,
                                                                          message):
    store, file_in_the_way = tmp_path / "runs", tmp_path / "FILE"
    shutil.copytree(finished_search, store)
    file_in_the_way.write_text("in the way")
    count, before = _everything(store, file_in_the_way)
    flags = [str(file_in_the_way) if f == "FILE" else f for f in flags]
    if "--store" not in flags:
        flags = ["--store", str(store), *flags]
    p = run_cli("run", "--config", str(fake_trial_config(extra)), "--local", *flags, check=False)
    _, after = _everything(store, file_in_the_way)
    said = p.stderr.strip().splitlines()[-1].replace(str(tmp_path), "<tmp>") if p.stderr.strip() else ""
    assert p.returncode == 2, p.stderr
    assert message in p.stderr, p.stderr
    assert before == after
    record_figure(f"bad input: {case}", {"case": case, "exit": p.returncode, "message": said,
                                         "compared": "search folder, the file in the way, every S3 bucket",
                                         "files_compared": count, "digest_before": before, "digest_after": after})


def test_corrupted_records_are_reported_and_skipped_never_resetting_history(tmp_path):
    store = tmp_path / "runs"
    run_cli("import", "--store", str(store), str(SEED_RESULTS))
    trials_dir = store / "cifar100" / "trials"
    (trials_dir / "000003" / "proposal.json").write_text("{ torn")
    (trials_dir / "000004" / "result.json").write_text('{"tid": 4, "status": "ok", "objective": NaN}')
    (store / "cifar100" / "ledger" / "checkpoint.json").write_text("garbage")
    p = run_cli("status", "--store", str(store), "--json")
    trials = json.loads(p.stdout)["trials"]
    states = {t["tid"]: (t["state"], t["reason"]) for t in trials}
    assert len(trials) == 42
    assert states[3][0] == "failed" and "corrupt proposal" in states[3][1]
    assert states[4][0] == "pending" and "not valid JSON" in states[4][1]
    assert sum(s == "ok" for s, _ in states.values()) == 40
    record_figure("corrupted records", {"trials_before": 42, "trials_after": len(trials),
                                        "corrupt_proposal": states[3], "corrupt_result": states[4]})
