"""The chart and the controller on real Kubernetes components (scripts/localkube): the API server decides RBAC and
Pod Security admission, the real Job controller decides retries and failures, the real scheduler binds by GPU
count, the real garbage collector removes what an uninstall leaves. Only the kubelet is ours."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import boto3
import pytest
import yaml

from conftest import PY, ROOT, record_figure, run_cli
from realkube import JobRecorder, wait_for

CREDS = {"AWS_ACCESS_KEY_ID": os.environ["AWS_ACCESS_KEY_ID"], "AWS_SECRET_ACCESS_KEY": os.environ["AWS_SECRET_ACCESS_KEY"]}
TRIAL = ["python", "tests/objective.py"]


def _values(tmp_path: Path, bucket: str, s3: str, trial_env: dict[str, str] | None = None, **sections) -> Path:
    """A values file: moto's S3, quick stand-in trials (tests/objective.py) run by the process kubelet."""
    env = [f"{k}={v}" for k, v in {"FAKE_TRIAL_SLEEP": "0.2", **(trial_env or {})}.items()]
    values = {
        "store": {"bucket": bucket, "endpoint": s3, "accessKeyId": CREDS["AWS_ACCESS_KEY_ID"],
                  "secretAccessKey": CREDS["AWS_SECRET_ACCESS_KEY"]},
        "search": {"maxTrials": 3, "parallelism": 2},
        "trainer": {"command": ["env", *env, *TRIAL], "epochs": 2, "data": "synthetic:300",
                    "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}},
        "controller": {"resyncSeconds": 5, "leaseSeconds": 5},
    }
    for section, overrides in sections.items():
        values.setdefault(section, {}).update(overrides)
    path = tmp_path / f"values-{len(list(tmp_path.glob('values-*')))}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def _status_cm(kube, ns, release="cifar-hpo"):
    from kubernetes.client.exceptions import ApiException

    try:
        return kube.core.read_namespaced_config_map(f"{release}-status", ns).data or {}
    except ApiException:
        return {}


def _store_keys(bucket):
    s3 = boto3.client("s3")
    return {o["Key"]: o["ETag"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])}


def _finished(store_uri, search):
    p = run_cli("status", "--store", store_uri, "--search", search, "--json", check=False)
    return json.loads(p.stdout) if p.returncode == 0 else {"trials": [], "state": None}


def test_helm_install_runs_a_search_upgrade_extends_it_a_second_search_shares_no_job_uninstall_collects(
        kube, kube_ns, bucket, s3_endpoint, tmp_path):
    ns, store = kube_ns, f"s3://{bucket}/searches"
    runlog = tmp_path / "runlog"
    values = _values(tmp_path, bucket, s3_endpoint, {"FAKE_TRIAL_RUNLOG": str(runlog)})
    with JobRecorder(kube, ns) as jobs:
        kube.helm("install", "cifar-hpo", "charts/", "-n", ns, "-f", str(values))
        wait_for("the first search to succeed", lambda: _status_cm(kube, ns).get("state") == "succeeded")
        session = {"get jobs": kube.kubectl("-n", ns, "get", "jobs", "-l", "app.kubernetes.io/component=trial"),
                   "logs": kube.kubectl("-n", ns, "logs", "job/cifar-hpo-cifar100-t0"),
                   "events": kube.kubectl("-n", ns, "get", "events", "--field-selector",
                                          "involvedObject.name=cifar-hpo-search")}
        assert "trial 0: objective" in session["logs"]  # apiserver → kubelet → the trial's own output
        first = _finished(store, "cifar100")
        assert [t["state"] for t in first["trials"]] == ["ok"] * 3

        # The controller ran as the chart's ServiceAccount (its pod's token), in a restricted namespace.
        controller = kube.pods(ns, "app.kubernetes.io/component=controller")[0]
        assert controller["spec"]["serviceAccountName"] == "cifar-hpo-controller"
        lease = kube.lease(ns, "cifar-hpo-controller")["spec"]
        assert lease["holderIdentity"] in ("", controller["metadata"]["name"])
        wait_for("the SearchFinished Event (written after the status)",
                 lambda: "SearchFinished" in {e["reason"] for e in kube.events(ns)})
        reasons = {e["reason"] for e in kube.events(ns)}
        assert {"TrialCreated", "TrialFinished", "NewBest"} <= reasons

        kube.helm("upgrade", "cifar-hpo", "charts/", "-n", ns, "--reuse-values", "--set", "search.maxTrials=5")
        wait_for("the extended search to finish 5 trials", lambda: len(
            [t for t in _finished(store, "cifar100")["trials"] if t["state"] == "ok"]) == 5)
        wait_for("the extended search to succeed", lambda: _status_cm(kube, ns).get("budgetLeft") == "0")

        # A new search in the same release (the README's advice): its own Jobs, none adopted from the first.
        kube.helm("upgrade", "cifar-hpo", "charts/", "-n", ns, "--reuse-values", "--set", "search.name=second",
                  "--set", "search.maxTrials=2")
        wait_for("the second search to finish", lambda: [t["state"] for t in _finished(store, "second")["trials"]]
                 == ["ok", "ok"])
        names = sorted(jobs.created)
        assert names == [f"cifar-hpo-cifar100-t{i}" for i in range(5)] + ["cifar-hpo-second-t0", "cifar-hpo-second-t1"]
        assert jobs.twice() == []
        ran = sorted(runlog.read_text().split())
        assert len(ran) == 7  # 5 + 2 trial processes, each once

        before = _store_keys(bucket)
        kube.helm("uninstall", "cifar-hpo", "-n", ns)
        wait_for("the garbage collector to delete the trial Jobs",
                 lambda: not kube.jobs(ns, "app.kubernetes.io/component=trial"))
        assert _store_keys(bucket) == before  # the bucket is never touched by an uninstall
    out = ROOT / ".reliability"
    out.mkdir(exist_ok=True)
    (out / "kubectl-session.json").write_text(json.dumps(session, indent=1))  # written only once all passed


def test_the_controller_has_only_its_roles_rights(kube, kube_ns, bucket, s3_endpoint, tmp_path):
    """The controller talks as a ServiceAccount; one without the chart's Role is refused by RBAC and says so."""
    ns = kube_ns
    config = kube.install_rbac(ns, "rb", ["--set", f"store.bucket={bucket}", "--set", f"store.endpoint={s3_endpoint}"])
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    allowed = kube.sa_kubeconfig(ns, "rb-cifar-hpo-controller", tmp_path / "controller.kubeconfig")
    denied = kube.sa_kubeconfig(ns, "rb-cifar-hpo-trial", tmp_path / "trial.kubeconfig")  # no rights at all
    can = kube.kubectl("--kubeconfig", str(allowed), "auth", "can-i", "create", "jobs", "-n", ns, check=False)
    cannot = kube.kubectl("--kubeconfig", str(allowed), "auth", "can-i", "create", "jobs", "-n", "default", check=False)
    assert can.strip() == "yes" and cannot.strip() == "no"
    p = run_cli("run", "--config", str(cfg), env={"KUBECONFIG": str(denied)}, check=False, timeout=120)
    assert p.returncode == 2 and "refused (403)" in p.stderr and "RBAC" in p.stderr, p.stderr[-2000:]


# -- the controller as a test's own process, as the chart's ServiceAccount -------------------------------------


class Release:
    """The chart's RBAC, ConfigMaps and S3 Secret in a test namespace; the controller is run by the test itself
    (so that it can be killed, doubled or faulted), authenticated as the chart's controller ServiceAccount."""

    def __init__(self, kube, ns, bucket, s3, tmp_path, name="hpo"):
        self.kube, self.ns, self.tmp, self.name = kube, ns, tmp_path, name
        self.full = f"{name}-cifar-hpo"
        self.store = f"s3://{bucket}/searches"
        self.config = kube.install_rbac(ns, name, [
            "--set", f"store.bucket={bucket}", "--set", f"store.endpoint={s3}", "--set", "trainer.gpu.count=0",
            "--set", f"store.accessKeyId={CREDS['AWS_ACCESS_KEY_ID']}",
            "--set", f"store.secretAccessKey={CREDS['AWS_SECRET_ACCESS_KEY']}"])
        kube.secret(ns, f"{self.full}-s3", CREDS)
        self.kubeconfig = kube.sa_kubeconfig(ns, f"{self.full}-controller", tmp_path / f"{name}.kubeconfig")

    def config_file(self, trial_env: dict[str, str] | None = None, **sections) -> Path:
        cfg = json.loads(json.dumps(self.config))
        env = [f"{k}={v}" for k, v in {"FAKE_TRIAL_SLEEP": "0.2", **(trial_env or {})}.items()]
        cfg["trial"].update(command=["env", *env, *TRIAL], epochs=3, data="synthetic:300")
        cfg["search"].update(maxFailedTrials=20)
        cfg["kube"].update(leaseSeconds=5, resyncSeconds=5, backoffLimit=0, terminationGraceSeconds=5,
                           requests={"cpu": "100m", "memory": "128Mi"}, limits={"memory": "1Gi"})
        for section, values in sections.items():
            cfg.setdefault(section, {}).update(values)
        path = self.tmp / f"controller-{len(list(self.tmp.glob('controller-*')))}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    def controller(self, cfg: Path, *args: str, pod_name: str | None = None):
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        if pod_name:
            env["POD_NAME"] = pod_name
        return subprocess.Popen([PY, "-m", "controller", "run", "--config", str(cfg), *args], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def trials(self, search="cifar100"):
        return _finished(self.store, search)["trials"]


@pytest.fixture
def release(kube, kube_ns, bucket, s3_endpoint, tmp_path):
    return Release(kube, kube_ns, bucket, s3_endpoint, tmp_path)


def test_the_real_job_controller_decides_retries_deadlines_and_failure_policy(release, tmp_path):
    """exit 1 is retried up to backoffLimit; a SIGKILLed container (137) reads as OOMKilled; activeDeadlineSeconds
    fails a hung trial; the trainer's bad-input exit 3 fails the Job at once (podFailurePolicy FailJob)."""
    kube, ns = release.kube, release.ns
    faults = tmp_path / "faults.json"
    faults.write_text(json.dumps({"0": "exit1", "1": "kill9", "2": "hang", "3": "bad_params"}))
    cfg = release.config_file({"FAKE_TRIAL_FAULTS": str(faults)}, kube={"activeDeadlineSeconds": 20, "backoffLimit": 1})
    proc = release.controller(cfg, "--max-trials", "5", "--parallelism", "5")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    trials = release.trials()
    reasons = {t["tid"]: t["reason"] for t in trials}
    assert [t["state"] for t in trials] == ["failed"] * 4 + ["ok"], reasons
    assert "BackoffLimitExceeded" in reasons[0] and "exit code 1" in reasons[0]
    assert "OOMKilled" in reasons[1]
    assert "DeadlineExceeded" in reasons[2]
    assert "params.pooling_type" in reasons[3]  # the trainer's own 'fail' result names the parameter
    conditions = kube.batch.read_namespaced_job(f"{release.full}-cifar100-t3", ns).status.conditions
    assert any(c.type == "Failed" and c.reason == "PodFailurePolicy" for c in conditions), conditions
    pods = Counter(p["metadata"]["labels"]["job-name"] for p in kube.pods(ns, "app.kubernetes.io/component=trial"))
    assert pods[f"{release.full}-cifar100-t0"] == 2  # backoffLimit 1: one retry, decided by the Job controller
    assert pods[f"{release.full}-cifar100-t3"] == 1  # FailJob on exit 3: no retry burnt


def test_an_evicted_trial_is_retried_without_burning_a_retry(release, tmp_path):
    """Eviction (node drain) puts a DisruptionTarget condition on the pod; the Job's podFailurePolicy ignores
    it, so even with backoffLimit 0 the Job controller starts a new pod, and the trial ends ok once."""
    kube, ns = release.kube, release.ns
    gate, runlog = tmp_path / "gate", tmp_path / "runlog"
    gate.mkdir()
    cfg = release.config_file({"FAKE_TRIAL_GATE": str(gate), "FAKE_TRIAL_RUNLOG": str(runlog)},
                              kube={"backoffLimit": 0})
    proc = release.controller(cfg, "--max-trials", "1")
    job = f"{release.full}-cifar100-t0"
    running = lambda: [p for p in kube.pods(ns, f"job-name={job}")  # noqa: E731
                       if (p.get("status") or {}).get("phase") == "Running"]
    wait_for("the trial's pod to run", lambda: running() and runlog.exists(), proc=proc)
    first = running()[0]["metadata"]["name"]
    kube.core.create_namespaced_pod_eviction(first, ns, {"metadata": {"name": first, "namespace": ns}})
    wait_for("a second pod", lambda: any(p["metadata"]["name"] != first for p in running()), proc=proc)
    (gate / "all").touch()
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]
    trials = release.trials()
    assert [t["state"] for t in trials] == ["ok"], trials
    assert runlog.read_text().split() == ["0", "0"]  # the same trial, run again after the eviction
    job_status = kube.batch.read_namespaced_job(job, ns).status
    assert job_status.failed in (None, 0) and job_status.succeeded == 1


def test_a_trial_without_a_free_gpu_waits_pending_and_is_not_failed(release, tmp_path):
    """The Node has 2 nvidia.com/gpu; with parallelism 3 the scheduler leaves the third pod Pending. The search
    neither fails it nor launches more, and `status` says why it waits."""
    kube, ns = release.kube, release.ns
    assert kube.info["gpus"] == 2
    gate = tmp_path / "gate"
    gate.mkdir()
    cfg = release.config_file({"FAKE_TRIAL_GATE": str(gate)}, kube={"gpuCount": 1})
    proc = release.controller(cfg, "--max-trials", "3", "--parallelism", "3")
    trial_pods = lambda: kube.pods(ns, "app.kubernetes.io/component=trial")  # noqa: E731

    def one_unschedulable():
        pending = [p for p in trial_pods() if p["status"].get("phase") == "Pending"]
        return len(trial_pods()) == 3 and len(pending) == 1 and any(
            "Insufficient nvidia.com/gpu" in (c.get("message") or "") for c in pending[0]["status"].get("conditions", []))

    wait_for("two trials running and one Pending for lack of a GPU", one_unschedulable, proc=proc)
    waiting_tid = next(int(p["metadata"]["labels"]["cifar-hpo.io/trial"]) for p in trial_pods()
                       if p["status"].get("phase") == "Pending")

    def status_says_why():
        trials = {t["tid"]: t for t in release.trials()}
        return "Insufficient nvidia.com/gpu" in (trials.get(waiting_tid, {}).get("reason") or "")

    wait_for("`status` to say why the trial waits", status_says_why, proc=proc)
    trials = release.trials()
    assert not [t for t in trials if t["state"] == "failed"] and len(kube.jobs(ns)) == 3 and len(trials) == 3
    assert any(e["reason"] == "TrialWaiting" and "nvidia.com/gpu" in e["message"] for e in kube.events(ns))
    (gate / "all").touch()  # the two running trials end, their GPUs free, the third is scheduled
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]
    assert [t["state"] for t in release.trials()] == ["ok"] * 3


def test_a_job_deleted_by_its_ttl_before_collection_is_still_one_recorded_trial(release, tmp_path):
    """The controller is SIGKILLed while its trial runs; the trial ends and the TTL controller deletes its Job
    before any controller saw it end. The restarted controller records it once, from its result, and runs
    nothing again."""
    kube, ns = release.kube, release.ns
    gate, runlog = tmp_path / "gate", tmp_path / "runlog"
    gate.mkdir()
    cfg = release.config_file({"FAKE_TRIAL_GATE": str(gate), "FAKE_TRIAL_RUNLOG": str(runlog)},
                              kube={"ttlSecondsAfterFinished": 0})
    with JobRecorder(kube, ns) as jobs:
        first = release.controller(cfg, "--max-trials", "1")
        wait_for("the trial to start", runlog.exists, proc=first)
        first.kill()
        first.wait()
        (gate / "all").touch()
        wait_for("the TTL controller to delete the finished Job", lambda: jobs.created and not kube.jobs(ns))
        second = release.controller(cfg, "--max-trials", "1")
        out, err = second.communicate(timeout=180)
        assert second.returncode == 0, err[-3000:]
        assert [t["state"] for t in release.trials()] == ["ok"]
        assert runlog.read_text().split() == ["0"] and sorted(jobs.created) == [f"{release.full}-cifar100-t0"]
        assert jobs.twice() == []


def _state(kube, ns, key="state"):
    return _status_cm(kube, ns).get(key)


def test_the_controller_pod_killed_9_times_20_while_a_search_runs(kube, kube_ns, bucket, s3_endpoint, tmp_path):
    """kill -9 of the controller pod's process at 20 moments; the kubelet restarts the container in its pod
    (same POD_NAME: it takes its own Lease back at once). The test decides how far the search may get before each
    kill (a gate per trial), so neither a fast nor a slow machine changes where the kills land; within that, each
    kill comes at a random moment after the restarted controller loaded its ledger."""
    ns, n, kills = kube_ns, 24, 20
    gate, runlog, faults = tmp_path / "gate", tmp_path / "runlog", tmp_path / "faults.json"
    gate.mkdir()
    faults.write_text(json.dumps({"2": "exit1", "9": "exit1"}))  # failures too, so that 'outcome' is written
    values = _values(tmp_path, bucket, s3_endpoint, {"FAKE_TRIAL_GATE": str(gate), "FAKE_TRIAL_RUNLOG": str(runlog),
                                                     "FAKE_TRIAL_FAULTS": str(faults), "FAKE_TRIAL_SLEEP": "0.05"},
                     search={"maxTrials": n, "parallelism": 3, "maxFailedTrials": 50}, trainer={"backoffLimit": 0})
    rng = random.Random(12)
    store = f"s3://{bucket}/searches"
    finished = lambda: _finished(store, "cifar100")["trials"]  # noqa: E731
    done = lambda: sum(t["state"] in ("ok", "failed") for t in finished())  # noqa: E731
    log_of = lambda: "".join(p.read_text(errors="replace") for p in (  # noqa: E731
        Path(kube.info["kubelet_dir"]) / "pods" / ns).glob("cifar-hpo-controller-*/controller.log"))
    done_at_kill = []
    with JobRecorder(kube, ns) as jobs:
        kube.helm("install", "cifar-hpo", "charts/", "-n", ns, "-f", str(values))
        for k in range(kills):
            opened = (k * (n - 3)) // kills  # trials below this may end before kill k; never all of them
            for tid in range(opened):
                (gate / str(tid)).touch()
            wait_for(f"the controller's start {k + 1} to load its ledger",
                     lambda: log_of().count("trials on record") >= k + 1)
            wait_for(f"{max(0, opened - 3)} trials ended before kill {k}", lambda: done() >= max(0, opened - 3))
            time.sleep(rng.uniform(0.0, 0.5))
            pid = kube.container_pid(ns, "cifar-hpo-controller-")
            assert pid is not None and _state(kube, ns) not in ("succeeded", "failed")
            os.kill(pid, signal.SIGKILL)
            done_at_kill.append(done())
        (gate / "all").touch()
        wait_for("the search to succeed after 20 kills", lambda: _state(kube, ns) == "succeeded", timeout=300)
        trials = finished()
        controller = kube.pods(ns, "app.kubernetes.io/component=controller")[0]
        restarts = controller["status"]["containerStatuses"][0]["restartCount"]
        ran = Counter(int(x) for x in runlog.read_text().split())
        fig = {"kills": len(done_at_kill), "container_restarts": restarts, "trials_done_at_each_kill": done_at_kill,
               "finished": len(trials), "budget": n, "ids_exact": [t["tid"] for t in trials] == list(range(n)),
               "jobs_created": len(jobs.created), "jobs_created_twice": jobs.twice(),
               "ran_twice": sorted(t for t, c in ran.items() if c > 1), "never_ran": sorted(set(range(n)) - set(ran)),
               "failed": sorted(t["tid"] for t in trials if t["state"] == "failed"),
               "ok": sum(t["state"] == "ok" for t in trials)}
    assert fig["kills"] == kills and restarts == kills, fig
    assert len(set(done_at_kill)) >= 5 and done_at_kill[-1] >= n // 2, fig  # spread over the whole search
    assert fig["finished"] == n and fig["ids_exact"] and fig["jobs_created"] == n, fig
    assert fig["jobs_created_twice"] == [] and fig["ran_twice"] == [] and fig["never_ran"] == [], fig
    assert fig["failed"] == [2, 9] and fig["ok"] == n - 2, fig
    record_figure("controller pod kill -9, real cluster", fig)


def test_an_apiserver_restart_mid_search_loses_and_doubles_nothing(tmp_path, bucket, s3_endpoint):
    """kube-apiserver stopped and started again while trials run (its own cluster: the restart must not disturb
    the tests sharing the session's). Watches break, calls fail for a while; the search ends exact."""
    from realkube import Kube, start_cluster

    (tmp_path / "own").mkdir()
    up = start_cluster(tmp_path / "own" / "cluster")
    try:
        kube = Kube(tmp_path / "own" / "cluster")
        rel = Release(kube, kube.namespace(), bucket, s3_endpoint, tmp_path)
        gate, runlog, n = tmp_path / "gate", tmp_path / "runlog", 8
        gate.mkdir()
        cfg = rel.config_file({"FAKE_TRIAL_GATE": str(gate), "FAKE_TRIAL_RUNLOG": str(runlog)})
        with JobRecorder(kube, rel.ns) as jobs:
            proc = rel.controller(cfg, "--max-trials", str(n), "--parallelism", "2")
            for tid in range(3):
                (gate / str(tid)).touch()
            wait_for("3 trials to end", lambda: sum(t["state"] == "ok" for t in rel.trials()) == 3, proc=proc)
            kube.restart_apiserver()
            (gate / "all").touch()
            out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        trials = rel.trials()
        ran = Counter(int(x) for x in runlog.read_text().split())
        fig = {"finished": len(trials), "budget": n, "ok": sum(t["state"] == "ok" for t in trials),
               "jobs_created": len(jobs.created), "jobs_created_twice": jobs.twice(),
               "ran_twice": sorted(t for t, c in ran.items() if c > 1),
               "controller_saw": sorted({line.split(": ", 2)[-1][:80] for line in err.splitlines()
                                         if "WARNING" in line or "re-listing" in line})[:10]}
        assert fig["ok"] == n and fig["jobs_created"] == n and fig["jobs_created_twice"] == [] and not fig["ran_twice"], fig
        record_figure("kube-apiserver restarted mid-search", fig)
    finally:
        up.terminate()
        up.wait(120)


def test_api_faults_through_a_proxy_are_counted_where_they_land(release, tmp_path):
    """Faults between the controller and the real API server: 500s on Job creation (urllib3 retries them), 500s on
    the Lease beyond urllib3's retries (they reach the controller, which tries again), a Job creation whose answer
    is lost after it landed (the AlreadyExists path), the 410 ERROR event a watch from a compacted history gets,
    and dropped watches. Each is counted where it is served and where it lands."""
    from kubeproxy import ApiFaultProxy

    kube = release.kube
    with ApiFaultProxy(kube.info["server"], kube.dir / "pki") as proxy:
        doc = yaml.safe_load(release.kubeconfig.read_text())
        doc["clusters"][0]["cluster"]["server"] = proxy.url
        release.kubeconfig.write_text(yaml.safe_dump(doc))
        plan = [("GET", r"/leases/", "status:500", 10, None), ("POST", r"/jobs$", "status:500", 3, None),
                ("POST", r"/jobs$", "drop_after_forward", 1, None), ("GET", r"/jobs$", "gone", 1, True),
                ("GET", r"/jobs$", "drop_watch", 2, True)]
        for method, path, action, count, watch in plan:
            proxy.add(method, path, action, count, watch)
        with JobRecorder(kube, release.ns) as jobs:
            proc = release.controller(release.config_file(), "--max-trials", "6", "--parallelism", "2")
            out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        served, forwarded = dict(proxy.served), proxy.forwarded
    reached = {"lease 500 (after urllib3's retries)": err.count("reading Lease hpo-cifar-hpo-controller failed"),
               "watch ERROR 410": err.count("Job watch: ERROR 410"),
               "watch dropped": err.count("Job watch ended"),
               "create answered AlreadyExists (landed before its answer was lost)": err.count("already exists; adopting")}
    fig = {"served": served, "forwarded": forwarded, "reached_the_controller": reached,
           "ok": sum(t["state"] == "ok" for t in release.trials()), "jobs_created": len(jobs.created),
           "jobs_created_twice": jobs.twice()}
    assert served == {"status:500": 13, "drop_after_forward": 1, "gone": 1, "drop_watch": 2}, fig
    assert reached["watch ERROR 410"] == 1 and reached["watch dropped"] >= 2, fig  # the ERROR branch ran
    assert reached["create answered AlreadyExists (landed before its answer was lost)"] == 1, fig
    assert 1 <= reached["lease 500 (after urllib3's retries)"] < 10, fig  # the rest absorbed by urllib3
    assert fig["ok"] == 6 and fig["jobs_created"] == 6 and fig["jobs_created_twice"] == [], fig
    record_figure("API faults through a proxy, real cluster", fig)
