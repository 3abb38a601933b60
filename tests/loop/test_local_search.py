"""End to end in local mode: the real CLI, real trial processes (tests/objective.py), both stores."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
from support.cli import run_cli
from support.figures import local_starts
from support.paths import PY, ROOT
from support.realkube import wait_for

pytestmark = pytest.mark.e2e


def _status(store_uri):
    return json.loads(run_cli("status", "--store", store_uri, "--json").stdout)


def _assert_exact_budget(doc, n):
    trials = doc["trials"]
    assert [t["tid"] for t in trials] == list(range(n))
    assert all(t["state"] in ("ok", "failed", "stopped") for t in trials)
    params = {json.dumps(t["params"], sort_keys=True) for t in trials}
    assert len(params) == n


def test_local_search_runs_the_budget_and_reports_status(tmp_path, fake_trial_config):
    store = str(tmp_path / "runs")
    out = run_cli("run", "--config", str(fake_trial_config()), "--local", "--store", store, "--max-trials", "4",
                  "--parallelism", "2", "--seed", "1")
    final = json.loads(out.stdout)
    assert final["state"] == "succeeded" and final["finished"] == 4 and final["budget_left"] == 0
    doc = _status(store)
    _assert_exact_budget(doc, 4)
    assert {t["state"] for t in doc["trials"]} == {"ok"}
    best = max(doc["trials"], key=lambda t: t["objective"])
    assert doc["best"]["tid"] == best["tid"] and doc["best"]["objective"] == best["objective"]
    assert set(doc["trials"][0]) >= {"tid", "state", "objective", "params"}
    # trial logs are kept next to the records
    assert "objective" in (tmp_path / "runs" / "cifar100" / "trials" / "000000" / "trial.log").read_text()
    table = run_cli("status", "--store", store).stdout
    assert "lr_rate_mult" in table and "best: trial" in table
    # a mistyped --search is an error naming the store's searches, not an empty search and exit 0 (third audit);
    # --config reaches the store as the search did (its endpoint, CA bundle), for status, best and report alike
    typo = run_cli("status", "--store", store, "--search", "cifar10", check=False)
    assert typo.returncode == 2 and "no search 'cifar10'" in typo.stderr and "its searches: cifar100" in typo.stderr
    for command in ("status", "best", "report"):
        run_cli(command, "--store", store, "--search", "cifar100", "--config", str(fake_trial_config()))
    # rerunning a finished search does nothing more
    again = json.loads(run_cli("run", "--config", str(fake_trial_config()), "--local", "--store", store,
                               "--max-trials", "4", "--parallelism", "2", "--seed", "1").stdout)
    assert again["finished"] == 4 and len(_status(store)["trials"]) == 4


def test_raising_the_budget_resumes_the_same_search(tmp_path, fake_trial_config):
    store = str(tmp_path / "runs")
    cfg = str(fake_trial_config())
    run_cli("run", "--config", cfg, "--local", "--store", store, "--max-trials", "2", "--seed", "4")
    run_cli("run", "--config", cfg, "--local", "--store", store, "--max-trials", "5", "--seed", "4")
    _assert_exact_budget(_status(store), 5)


def test_another_space_or_seed_is_refused_and_nothing_is_lost(tmp_path, fake_trial_config):
    store = str(tmp_path / "runs")
    run_cli("run", "--config", str(fake_trial_config()), "--local", "--store", store, "--max-trials", "2")
    before = _status(store)
    other = fake_trial_config("search:\n  space:\n    x: {dist: uniform, low: 0, high: 1}\n")
    p = run_cli("run", "--config", str(other), "--local", "--store", store, check=False)
    assert p.returncode == 2 and "another search space" in p.stderr and "--search" in p.stderr
    p = run_cli("run", "--config", str(fake_trial_config()), "--local", "--store", store, "--seed", "9", check=False)
    assert p.returncode == 2 and "search.seed: 9 differs" in p.stderr
    assert _status(store)["trials"] == before["trials"]


FAULTS = {
    "exit1": "exit code 1",
    "no_result": "wrote no result.json (exit code 0)",
    "malformed": "not valid JSON",
    "nan": "not valid JSON",
    "inf": "not valid JSON",
    "wrong_tid": "belongs to trial",
    "kill9": "killed by SIGKILL",
}


def test_bad_trials_fail_with_their_reason_and_the_search_goes_on(tmp_path, fake_trial_config):
    faults = {str(i): f for i, f in enumerate(FAULTS)}
    ffile = tmp_path / "faults.json"
    ffile.write_text(json.dumps(faults))
    store = str(tmp_path / "runs")
    n = len(FAULTS) + 2
    p = run_cli("run", "--config", str(fake_trial_config()), "--local", "--store", store, "--max-trials", str(n),
                "--parallelism", "3", "--max-failed", "20", env={"FAKE_TRIAL_FAULTS": str(ffile)})
    assert json.loads(p.stdout)["state"] == "succeeded"
    doc = _status(store)
    _assert_exact_budget(doc, n)
    for tid, fault in faults.items():
        t = doc["trials"][int(tid)]
        assert t["state"] == "failed", (fault, t)
        assert FAULTS[fault] in t["reason"], (fault, t["reason"])
    assert [t["state"] for t in doc["trials"][len(FAULTS):]] == ["ok", "ok"]
    outcome = json.loads((tmp_path / "runs/cifar100/trials/000000/outcome.json").read_text())
    assert "failing on purpose" in outcome["log_tail"] and outcome["exit_code"] == 1


def test_max_failed_trials_stops_the_search_marked_failed(tmp_path, fake_trial_config):
    ffile = tmp_path / "faults.json"
    ffile.write_text(json.dumps({str(i): "exit1" for i in range(10)}))
    store = str(tmp_path / "runs")
    p = run_cli("run", "--config", str(fake_trial_config()), "--local", "--store", store, "--max-trials", "10",
                "--max-failed", "2", env={"FAKE_TRIAL_FAULTS": str(ffile)}, check=False)
    assert p.returncode == 3
    final = json.loads(p.stdout)
    assert final["state"] == "failed" and "search.maxFailedTrials=2" in final["reason"]
    assert "failing on purpose" in final["reason"]
    assert _status(store)["state"] == "failed" and len(_status(store)["trials"]) == 2


def test_goal_stops_early_and_stops_running_trials(tmp_path, fake_trial_config):
    """Trial 0 reaches the goal once trials 1 and 2 have each finished an epoch (a gate the test opens then), so
    they are stopped mid-way with a best-so-far, whatever the machine's speed."""
    store = str(tmp_path / "runs")
    cfg = fake_trial_config("search:\n  goal: 0.05\n")
    ffile, gate = tmp_path / "faults.json", tmp_path / "gate"
    ffile.write_text(json.dumps({"1": "slow_after_1", "2": "slow_after_1"}))
    gate.mkdir()
    env = {**os.environ, "FAKE_TRIAL_SLEEP": "0.2", "FAKE_TRIAL_FAULTS": str(ffile), "FAKE_TRIAL_GATE": str(gate)}
    proc = subprocess.Popen([PY, "-m", "controller", "run", "--config", str(cfg), "--local", "--store", store,
                             "--max-trials", "20", "--parallelism", "3"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    trials = tmp_path / "runs" / "cifar100" / "trials"
    wait_for("trials 1 and 2 to finish an epoch",
             lambda: all((trials / f"{t:06d}" / "progress.json").exists() for t in (1, 2)), proc=proc)
    (gate / "0").touch()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    final = json.loads(out)
    assert final["state"] == "goal_reached"
    doc = _status(store)
    assert len(doc["trials"]) < 20
    assert [t["state"] for t in doc["trials"]] == ["ok", "stopped", "stopped"]  # SIGTERM, then they reported


def test_a_trial_that_ignores_sigterm_is_killed_after_its_grace(tmp_path, fake_trial_config):
    """Local mode as a pod's grace period: the search reaches its goal, asks trial 1 (which ignores SIGTERM and
    would never end) to stop, and kills it local.graceSeconds later; the search ends, the trial stopped, the kill
    said in its reason. Before, the search waited on it for ever."""
    store = str(tmp_path / "runs")
    cfg = fake_trial_config("search:\n  goal: 0.05\nlocal:\n  graceSeconds: 1\n")
    ffile, gate = tmp_path / "faults.json", tmp_path / "gate"
    ffile.write_text(json.dumps({"1": "deaf"}))
    gate.mkdir()
    env = {**os.environ, "FAKE_TRIAL_FAULTS": str(ffile), "FAKE_TRIAL_GATE": str(gate)}
    proc = subprocess.Popen([PY, "-m", "controller", "run", "--config", str(cfg), "--local", "--store", store,
                             "--max-trials", "4", "--parallelism", "2"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    trials = tmp_path / "runs" / "cifar100" / "trials"
    wait_for("trial 1 to report its epoch", lambda: (trials / "000001" / "progress.json").exists(), proc=proc)
    (gate / "0").touch()  # trial 0 ends and reaches the goal: trial 1 is asked to stop
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
        subprocess.run(["pkill", "-KILL", "-f", "--", f"--trial {trials}/000001"])  # were the kill missing
    assert proc.returncode == 0 and json.loads(out)["state"] == "goal_reached", err[-2000:]
    deaf = _status(store)["trials"][1]
    assert deaf["state"] == "stopped", json.dumps(deaf)[:3000]
    assert "killed by SIGKILL: still running 1 s after SIGTERM (local.graceSeconds)" in deaf["reason"], deaf


def _kill_loop(args, env, rng, kills, gate, startlog):
    """Start the controller and SIGKILL it at a random moment after trial 2k has started, `kills` times; then let it
    finish. The gate holds trials 2k on, so no machine is fast enough for the search to end before a kill."""
    gate.mkdir()
    for k in range(kills):
        for tid in range(2 * k):
            (gate / str(tid)).touch()
        proc = subprocess.Popen([PY, "-m", "controller", *args], cwd=ROOT, env={**os.environ, **env},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(f"trial {2 * k} to start", lambda k=k: 2 * k in local_starts(startlog), proc=proc)
        time.sleep(rng.uniform(0.0, 0.5))
        assert proc.poll() is None, "the search ended although the gate held trials back"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    (gate / "all").touch()
    return run_cli(*args, env=env)


def _assert_ran_once(startlog, n):
    assert local_starts(startlog) == dict.fromkeys(range(n), 1)  # counted by tests/startlog.sh, outside the program


@pytest.mark.parametrize("point", ["proposal:1", "launch:3", "collect:2", "outcome:1"])
def test_sigkill_at_each_critical_point(tmp_path, fake_trial_config, point):
    store = str(tmp_path / "runs")
    startlog = tmp_path / "startlog"
    ffile = tmp_path / "faults.json"
    ffile.write_text(json.dumps({"1": "exit1"}))  # so that 'outcome' is reached
    env = {"FAKE_TRIAL_STARTLOG": str(startlog), "FAKE_TRIAL_FAULTS": str(ffile), "FAKE_TRIAL_SLEEP": "0.1"}
    args = ["--config", str(fake_trial_config()), "--local", "--store", store, "--max-trials", "6",
            "--parallelism", "2", "--seed", "3"]
    crashed = subprocess.run([PY, str(ROOT / "tests" / "crashy_controller.py"), "run", *args], cwd=ROOT,
                             env={**os.environ, **env, "CRASH_AT": point}, capture_output=True, timeout=120)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr.decode()[-2000:]
    final = json.loads(run_cli("run", *args, env=env).stdout)
    assert final["finished"] == 6
    doc = _status(store)
    _assert_exact_budget(doc, 6)
    assert doc["trials"][1]["state"] == "failed"
    _assert_ran_once(startlog, 6)


def test_s3_store_killed_and_rerun(bucket, fake_trial_config, tmp_path):
    store = f"s3://{bucket}/searches"
    startlog, gate = tmp_path / "startlog", tmp_path / "gate"
    env = {"FAKE_TRIAL_SLEEP": "0.2", "FAKE_TRIAL_STARTLOG": str(startlog), "FAKE_TRIAL_GATE": str(gate)}
    args = ["run", "--config", str(fake_trial_config()), "--local", "--store", store, "--max-trials", "6",
            "--parallelism", "2", "--seed", "5"]
    final = _kill_loop(args, env, random.Random(5), kills=3, gate=gate, startlog=startlog)
    assert json.loads(final.stdout)["finished"] == 6
    doc = _status(store)
    _assert_exact_budget(doc, 6)
    _assert_ran_once(startlog, 6)
    out = tmp_path / "best"
    got = json.loads(run_cli("best", "--store", store, "--download", str(out)).stdout)
    assert got["tid"] == doc["best"]["tid"]
    assert {"params.json", "result.json", "model.keras", "proposal.json", "trial.log"} <= set(got["files"])
    assert json.loads((out / "params.json").read_text()) == doc["best"]["params"]


def test_a_bad_data_spec_is_refused_before_the_first_trial(tmp_path):
    store = tmp_path / "runs"
    for data, says in (("synthetic:abc", "synthetic takes a number of images"),
                       (str(tmp_path / "missing.tar.gz"), "no file at"), ("ftp://x/y.tgz", "only http(s):// and s3://")):
        p = run_cli("run", "--local", "--store", str(store), "--max-trials", "2", "--data", data, check=False)
        assert p.returncode == 2 and "trial.data (--data)" in p.stderr and says in p.stderr, p.stderr
    assert not store.exists()  # refused before anything was written


def test_a_search_whose_every_trial_failed_has_not_succeeded(tmp_path, fake_trial_config):
    faults = tmp_path / "faults.json"
    faults.write_text(json.dumps({"0": "exit1", "1": "exit1"}))
    p = run_cli("run", "--config", str(fake_trial_config()), "--local", "--store", str(tmp_path / "runs"),
                "--max-trials", "2", "--max-failed", "5", check=False, env={"FAKE_TRIAL_FAULTS": str(faults)})
    assert p.returncode == 3, p.stderr
    final = json.loads(p.stdout)
    assert final["state"] == "failed" and "every trial failed (2)" in final["reason"]


def test_a_search_manifest_runs_in_local_mode(tmp_path):
    """The file `kubectl apply` takes runs here too: its name is the search's folder, its trial its program."""
    import yaml

    manifest = tmp_path / "search.yaml"
    manifest.write_text(yaml.safe_dump({
        "apiVersion": "cifar-hpo.io/v1alpha1", "kind": "Search", "metadata": {"name": "from-manifest"},
        "spec": {"search": {"maxTrials": 3, "parallelism": 2, "seed": 2},
                 "trial": {"command": [PY, str(ROOT / "tests" / "objective.py")], "data": "synthetic:200",
                           "gpuCount": 1, "image": "ignored-here"}}}))
    store = str(tmp_path / "runs")
    final = json.loads(run_cli("run", "--local", "--config", str(manifest), "--store", store).stdout)
    assert final["state"] == "succeeded" and final["finished"] == 3
    assert [t["state"] for t in _status(store)["trials"]] == ["ok"] * 3
    assert (tmp_path / "runs" / "from-manifest" / "search.json").exists()


def test_download_stays_inside_its_folder_whatever_keys_the_bucket_holds(bucket, fake_trial_config, tmp_path):
    """Whoever can write the bucket can plant keys under the best trial's folder; `best --download DIR` writes
    only plain relative names inside DIR and names what it refused."""
    import boto3

    store = f"s3://{bucket}/searches"
    run_cli("run", "--config", str(fake_trial_config()), "--local", "--store", store, "--max-trials", "1")
    tid = _status(store)["best"]["tid"]
    folder = f"searches/cifar100/trials/{tid:06d}"
    planted = [f"{folder}/../../../../escaped-up", f"{folder}//{tmp_path}/escaped-abs", f"{folder}/./dot",
               f"{folder}/sub/../../escaped-side"]
    s3 = boto3.client("s3")
    for key in planted:
        s3.put_object(Bucket=bucket, Key=key, Body=b"planted")
    out = tmp_path / "work" / "best"
    p = run_cli("best", "--store", store, "--download", str(out))
    got = json.loads(p.stdout)
    assert sorted(got["refused"]) == sorted(k[len("searches/cifar100/"):] for k in planted)
    assert "would be written outside" in p.stderr
    written = {str(f.relative_to(tmp_path)) for f in tmp_path.rglob("*") if f.is_file() and "escaped" in f.name}
    assert written == set() and not (out / "dot").exists()
    assert {"params.json", "result.json", "proposal.json"} <= set(got["files"])


@pytest.mark.parametrize("conditional, says", [
    ("ignore", "ignores conditional writes"),
    ("refuse", "does not implement this request (NotImplemented, HTTP 501)"),
])
def test_a_store_without_conditional_writes_is_refused_at_start_naming_it(bucket, s3_endpoint, tmp_path, conditional,
                                                                          says):
    """Once-only records need If-None-Match: a store that drops it (it would let a second writer replace a result)
    or answers 501 for it ends the run at start, exit 2, with the store named; nothing is written, no retry loop."""
    from support.cli import run_cli
    from support.faultproxy import FaultProxy

    with FaultProxy(s3_endpoint) as proxy:
        proxy.faults.conditional = conditional
        p = run_cli("run", "--local", "--store", f"s3://{bucket}/runs", "--max-trials", "1", "--data", "synthetic:200",
                    env={"AWS_ENDPOINT_URL_S3": proxy.url}, check=False, timeout=120)
    assert p.returncode == 2 and says in p.stderr and f"s3://{bucket}/runs" in p.stderr, p.stderr[-2000:]
    import boto3

    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert not [k for k in keys if "/trials/" in k or k.endswith("search.json")], keys


def test_a_whole_search_on_versitygw(versitygw, fake_trial_config, tmp_path):
    """The second real S3 server end to end: its start-up probe passes (it honours If-None-Match), 4 trials run,
    their records are there and the status reads them back."""
    bucket = versitygw.bucket()
    store = f"s3://{bucket}/searches"
    env = {"AWS_ENDPOINT_URL_S3": versitygw.endpoint, "AWS_ACCESS_KEY_ID": versitygw.keys["aws_access_key_id"],
           "AWS_SECRET_ACCESS_KEY": versitygw.keys["aws_secret_access_key"]}
    final = json.loads(run_cli("run", "--config", str(fake_trial_config()), "--local", "--store", store,
                               "--max-trials", "4", "--parallelism", "2", env=env).stdout)
    assert final["finished"] == 4
    doc = json.loads(run_cli("status", "--store", store, "--json", env=env).stdout)
    assert [t["state"] for t in doc["trials"]] == ["ok"] * 4 and doc["best"] is not None
    keys = [o["Key"] for o in versitygw.client().list_objects_v2(Bucket=bucket)["Contents"]]
    assert not [k for k in keys if ".cifar-hpo-probe" in k]  # the probe leaves nothing behind
    assert sum(k.endswith("/result.json") for k in keys) == 4


def test_the_command_line_loads_no_kubernetes_client_until_a_cluster_command_runs():
    """Local mode, status, best, report, import and the dashboard start without the kubernetes client (seconds of
    imports, and a package a laptop need not have working); only `operator` and `run` without --local load it."""
    code = ("import sys; import controller.cli; from controller.cli import build_parser; build_parser(); "
            "print('kubernetes' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr


def test_a_trial_that_prints_without_end_costs_its_store_16_mib_once(tmp_path, fake_trial_config):
    """Third audit: a trial's output had no size limit and was stored twice (50 MB became 96 MB). Its last 16 MiB
    are kept, once: in the store; the working folder's copy goes once the store has it."""
    from controller.launch.protocol import MAX_LOG_BYTES

    ffile = tmp_path / "faults.json"
    ffile.write_text(json.dumps({"0": "noisy"}))
    store = tmp_path / "runs"
    run_cli("run", "--config", str(fake_trial_config()), "--local", "--store", str(store), "--max-trials", "2",
            env={"FAKE_TRIAL_FAULTS": str(ffile)})
    kept = (store / "cifar100" / "trials" / "000000" / "trial.log").read_bytes()
    assert MAX_LOG_BYTES < len(kept) < MAX_LOG_BYTES + 200 and b"the last line" in kept[-200:]
    assert kept.startswith(b"[... the first ") and b"bytes of this trial's output left out ...]" in kept[:200]
    copies = [p for p in store.rglob("trial.log") if p.stat().st_size > 2**20]
    assert copies == [store / "cifar100" / "trials" / "000000" / "trial.log"], copies


def test_a_trial_killed_from_outside_resumes_from_its_checkpoint_and_is_not_a_failure(tmp_path):
    """A laptop's `kill -9` of a trial process (not the controller's doing): local mode records the interrupted
    attempt, starts the next one told to resume, and the trial ends ok with each epoch once; the search says how
    often its trials were interrupted, and none counts as failed."""
    store, epochs = tmp_path / "runs", 60
    proc = subprocess.Popen([PY, "-m", "controller", "run", "--local", "--config",
                             str(ROOT / "examples" / "digits" / "config.yaml"), "--store", str(store), "--max-trials",
                             "1", "--epochs", str(epochs)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    trial = store / "digits" / "trials" / "000000"
    pointer = trial / "checkpoint" / "latest.json"
    wait_for("trial 0's checkpoint after epoch 3", lambda: pointer.exists() and json.loads(
        pointer.read_text() or "{}").get("step", 0) >= 3, proc=proc)
    os.kill(int((store / "digits" / ".local" / "000000" / "child.pid").read_text()), signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    attempt = json.loads((trial / "attempts" / "001.json").read_text())
    assert attempt["attempt"] == 1 and "killed by SIGKILL" in attempt["why"] and attempt["resume_step"] >= 3
    assert not (trial / "attempts" / "002.json").exists()
    assert f"attempt 2 resumes after step {attempt['resume_step']}" in err
    result = json.loads((trial / "result.json").read_text())
    assert result["status"] == "ok" and len(result["history"]["objective"]) == result["epochs_run"] == epochs
    log = (trial / "trial.log").read_text()
    assert f"attempt 2 resumes after step {attempt['resume_step']}" in log  # the trainer said where it went on
    status = json.loads((store / "digits" / "status.json").read_text())
    assert status["interruptions"] == {"0": 1} and status["counts"].get("failed", 0) == 0
    table = run_cli("status", "--store", str(store)).stdout  # where a user looks
    assert "1 interruptions (preempted or killed from outside), each resumed" in table
    assert "interrupted 1x, resumed" in table.splitlines()[-1]


def test_a_trial_interrupted_more_than_its_bound_fails_saying_so(tmp_path, fake_trial_config):
    """search.maxAttempts bounds endless interruptions: the fake trial SIGKILLs itself at its end every attempt."""
    ffile, startlog = tmp_path / "faults.json", tmp_path / "startlog"
    ffile.write_text(json.dumps({"0": "kill9"}))
    store = tmp_path / "runs"
    run_cli("run", "--config", str(fake_trial_config("search:\n  maxAttempts: 3\n")), "--local", "--store", str(store),
            "--max-trials", "2", env={"FAKE_TRIAL_FAULTS": str(ffile), "FAKE_TRIAL_STARTLOG": str(startlog)})
    t0 = _status(str(store))["trials"][0]
    assert t0["state"] == "failed", t0
    assert "interrupted 3 times, the bound (search.maxAttempts=3); the last: killed by SIGKILL" in t0["reason"], t0
    attempts = sorted(p.name for p in (store / "cifar100" / "trials" / "000000" / "attempts").iterdir())
    assert attempts == ["001.json", "002.json"]  # the third ended the trial
    assert local_starts(startlog)[0] == 3


def test_a_controller_killed_between_an_interrupted_attempt_and_the_next_starts_exactly_one_next(
        tmp_path, fake_trial_config):
    """Killed right after recording attempt 1's interruption, before starting attempt 2: the restarted controller
    finds the record, records nothing twice, and starts attempt 2 once."""
    ffile, startlog, store = tmp_path / "faults.json", tmp_path / "startlog", tmp_path / "runs"
    ffile.write_text(json.dumps({"0": "kill9_first"}))
    env = {"FAKE_TRIAL_STARTLOG": str(startlog), "FAKE_TRIAL_FAULTS": str(ffile)}
    args = ["run", "--config", str(fake_trial_config()), "--local", "--store", str(store), "--max-trials", "1"]
    crashed = subprocess.run([PY, str(ROOT / "tests" / "crashy_controller.py"), *args], cwd=ROOT,
                             env={**os.environ, **env, "CRASH_AT": "attempt:1"}, capture_output=True, timeout=120)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr.decode()[-2000:]
    trial = store / "cifar100" / "trials" / "000000"
    assert sorted(p.name for p in (trial / "attempts").iterdir()) == ["001.json"] and local_starts(startlog) == {0: 1}
    assert json.loads(run_cli(*args, env=env).stdout)["finished"] == 1
    assert sorted(p.name for p in (trial / "attempts").iterdir()) == ["001.json"]
    assert local_starts(startlog) == {0: 2}  # attempt 1, then attempt 2 once
    t0 = _status(str(store))["trials"][0]
    assert t0["state"] == "ok", t0
    assert json.loads((store / "cifar100" / "status.json").read_text())["interruptions"] == {"0": 1}
