"""The chart and the controller on real Kubernetes components (scripts/localkube): the API server decides RBAC and
Pod Security admission, the real Job controller decides retries and failures, the real scheduler binds by GPU
count, the real garbage collector removes what an uninstall leaves. Only the kubelet is ours."""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from pathlib import Path

import boto3
import pytest
import yaml

from conftest import PY, ROOT, run_cli
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
