"""The Kubernetes launcher end to end: the controller as its own process, talking through the real
`kubernetes` client to the fake API server (every body schema-validated), a test kubelet running the
trial program, and moto's S3 server holding the records."""

import json
import os
import signal
import subprocess
import time
from collections import Counter

import pytest
import yaml

from conftest import PY, ROOT, run_cli
from controller.kube import KubeSettings, build_job
from fakekube import FakeApiServer, Kubelet

RELEASE = "hpo"


@pytest.fixture
def cluster(tmp_path, bucket):
    with FakeApiServer() as api, Kubelet(api.cluster, tmp_path / "kubelet") as kubelet:
        (tmp_path / "kubelet").mkdir(exist_ok=True)
        c = api.cluster
        c.put("configmaps", {"apiVersion": "v1", "kind": "ConfigMap",
                             "metadata": {"name": f"{RELEASE}-search", "namespace": "default", "uid": "owner-uid-1"},
                             "data": {}}, "ADDED")
        c.put("secrets", {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"{RELEASE}-s3",
                                                                             "namespace": "default"},
                          "stringData": {"AWS_ACCESS_KEY_ID": os.environ["AWS_ACCESS_KEY_ID"],
                                         "AWS_SECRET_ACCESS_KEY": os.environ["AWS_SECRET_ACCESS_KEY"]}}, "ADDED")
        kubeconfig = api.kubeconfig(tmp_path / "kubeconfig")
        yield api, kubelet, kubeconfig, f"s3://{bucket}/searches"


def _config(tmp_path, store, extra=None):
    cfg = {
        "store": {"uri": store},
        "search": {"maxFailedTrials": 20},
        "trial": {"command": ["python", "tests/objective.py"]},
        "kube": {"namespace": "default", "release": RELEASE, "image": "registry.example/cifar-hpo-trainer:test",
                 "ownerConfigMap": f"{RELEASE}-search", "statusConfigMap": f"{RELEASE}-status",
                 "leaseName": f"{RELEASE}-controller", "leaseSeconds": 5, "resyncSeconds": 2,
                 "s3SecretName": f"{RELEASE}-s3", "backoffLimit": 0, "terminationGraceSeconds": 5},
    }
    for section, values in (extra or {}).items():
        cfg.setdefault(section, {}).update(values)
    path = tmp_path / f"controller-{time.monotonic_ns()}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _controller(cfg, kubeconfig, *args):
    return subprocess.Popen([PY, "-m", "controller", "run", "--config", str(cfg), *args], cwd=ROOT,
                            env={**os.environ, "KUBECONFIG": str(kubeconfig)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _status(store):
    return json.loads(run_cli("status", "--store", store, "--json").stdout)


def _jobs_added(c):
    return Counter(c.jobs_created())


def test_a_parallel_search_runs_as_jobs_with_every_body_valid(cluster, tmp_path):
    api, kubelet, kubeconfig, store = cluster
    c = api.cluster
    proc = _controller(_config(tmp_path, store), kubeconfig, "--max-trials", "5", "--parallelism", "3")
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    doc = _status(store)
    assert [t["state"] for t in doc["trials"]] == ["ok"] * 5
    assert c.rejected == []
    added = _jobs_added(c)
    assert sorted(added) == [f"{RELEASE}-t{i}" for i in range(5)] and set(added.values()) == {1}
    job = next(o for rv, kind, plural, o in c.history if plural == "jobs" and kind == "ADDED")
    spec = job["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert job["metadata"]["ownerReferences"][0]["uid"] == "owner-uid-1"
    assert json.loads(job["metadata"]["annotations"]["cifar-hpo.io/params"]) == doc["trials"][0]["params"]
    env = {e["name"]: e for e in spec["containers"][0]["env"]}
    assert "valueFrom" in env["AWS_SECRET_ACCESS_KEY"] and "value" not in env["AWS_SECRET_ACCESS_KEY"]
    reasons = Counter(o["reason"] for o in c.items("events"))
    assert reasons["TrialCreated"] == 5 and reasons["TrialFinished"] == 5 and reasons["SearchFinished"] == 1
    assert reasons["NewBest"] >= 1
    status = c.get("configmaps", "default", f"{RELEASE}-status")["data"]
    assert status["state"] == "succeeded" and status["budgetLeft"] == "0"
    lease = c.get("leases", "default", f"{RELEASE}-controller")["spec"]
    # held while it ran (one acquisition), handed back as it exited
    assert lease["holderIdentity"] == "" and lease["leaseTransitions"] == 0 and lease["leaseDurationSeconds"] == 1
    # completion is watch-driven: no busy polling of Jobs
    lists = sum(1 for m, p in c.requests if m == "GET" and p.endswith("/jobs"))
    assert lists < 40, lists


def test_failed_jobs_become_failed_trials_with_the_platform_reason(cluster, tmp_path):
    api, kubelet, kubeconfig, store = cluster
    faults = tmp_path / "faults.json"
    faults.write_text(json.dumps({"0": "exit1", "1": "kill9", "2": "hang", "3": "bad_params"}))
    cfg = _config(tmp_path, store, {"kube": {"activeDeadlineSeconds": 4, "backoffLimit": 1}})
    kubelet.base_env["FAKE_TRIAL_FAULTS"] = str(faults)  # trial pods get the kubelet's environment
    proc = _controller(cfg, kubeconfig, "--max-trials", "5", "--parallelism", "5")
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    trials = _status(store)["trials"]
    reasons = {t["tid"]: t["reason"] for t in trials}
    assert [t["state"] for t in trials] == ["failed"] * 4 + ["ok"]
    assert "BackoffLimitExceeded" in reasons[0] and "exit code 1" in reasons[0]
    assert "OOMKilled" in reasons[1]
    assert "DeadlineExceeded" in reasons[2]
    assert "PodFailurePolicy" in reasons[3] and "exit code 3" in reasons[3]
    c = api.cluster
    pods_of_0 = [p for p in c.items("pods") if p["metadata"]["labels"]["job-name"] == f"{RELEASE}-t0"]
    assert len(pods_of_0) == 2  # backoffLimit 1: one retry
    pods_of_3 = [p for p in c.items("pods") if p["metadata"]["labels"]["job-name"] == f"{RELEASE}-t3"]
    assert len(pods_of_3) == 1  # FailJob on the trainer's bad-input exit code: no retry burnt
    log = run_cli("best", "--store", store).stdout
    assert json.loads(log)["tid"] == 4


def test_two_controllers_only_the_lease_holder_launches(cluster, tmp_path):
    api, kubelet, kubeconfig, store = cluster
    cfg = _config(tmp_path, store)
    kubelet.base_env["FAKE_TRIAL_SLEEP"] = "0.5"  # a's search outlasts b's start-up
    a = _controller(cfg, kubeconfig, "--max-trials", "4", "--parallelism", "2")
    deadline = time.monotonic() + 60
    while not (api.cluster.get("leases", "default", f"{RELEASE}-controller") or {}).get("spec", {}).get(
            "holderIdentity") and time.monotonic() < deadline:
        time.sleep(0.05)
    b = _controller(cfg, kubeconfig, "--max-trials", "4", "--parallelism", "2")
    out_a, err_a = a.communicate(timeout=240)
    out_b, err_b = b.communicate(timeout=240)
    assert a.returncode == 0 and b.returncode == 0, (err_a[-2000:], err_b[-2000:])
    assert "another controller holds Lease" in err_a + err_b
    added = _jobs_added(api.cluster)
    assert len(added) == 4 and set(added.values()) == {1}
    assert len(_status(store)["trials"]) == 4


def test_sigterm_hands_the_lease_back_and_an_ended_search_idles(cluster, tmp_path):
    """A rollout's SIGTERM mid-search: prompt exit, Lease handed back, Jobs left running for the next pod.
    With --idle-when-done (the chart's Deployment) an ended search keeps the pod up until SIGTERM."""
    api, kubelet, kubeconfig, store = cluster
    c = api.cluster
    kubelet.base_env["FAKE_TRIAL_SLEEP"] = "0.5"
    cfg = _config(tmp_path, store)
    args = ("--max-trials", "4", "--parallelism", "2", "--idle-when-done")
    first = _controller(cfg, kubeconfig, *args)
    deadline = time.monotonic() + 60
    while not _jobs_added(c) and time.monotonic() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=20)
    assert first.returncode == 143, err[-2000:]
    assert c.get("leases", "default", f"{RELEASE}-controller")["spec"]["holderIdentity"] == ""
    second = _controller(cfg, kubeconfig, *args)

    def holder():
        return c.get("leases", "default", f"{RELEASE}-controller")["spec"]["holderIdentity"]

    deadline = time.monotonic() + 120
    for wanted in (True, False):  # the second takes the Lease, then hands it back when the search has ended
        while bool(holder()) != wanted and second.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    time.sleep(1.0)
    assert second.poll() is None, "an ended search must keep the controller up"
    second.send_signal(signal.SIGTERM)
    out, err = second.communicate(timeout=20)
    assert second.returncode == 0, err[-2000:]
    assert json.loads(out)["state"] == "succeeded" and "idle until SIGTERM" in err
    added = _jobs_added(c)
    assert len(added) == 4 and set(added.values()) == {1}
    assert [t["state"] for t in _status(store)["trials"]] == ["ok"] * 4


def test_api_faults_are_survived(cluster, tmp_path):
    """500s on Job creation, the watch and the Lease, slow responses, a compacted history (410), dropped
    watches."""
    api, kubelet, kubeconfig, store = cluster
    c = api.cluster
    c.latency = 0.05  # every API call slow until the first Jobs exist
    c.fail(500, "POST", r"/jobs$", count=3)
    c.fail(503, "GET", r"/jobs$", count=2)
    c.fail(500, "GET", r"/leases/", count=10)  # more than urllib3's retries: acquiring must try again
    kubelet.base_env["FAKE_TRIAL_SLEEP"] = "0.3"
    proc = _controller(_config(tmp_path, store), kubeconfig, "--max-trials", "6", "--parallelism", "2")
    deadline = time.monotonic() + 60
    while len(_jobs_added(c)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    c.latency = 0.0
    c.compact()
    c.drop_watches()
    time.sleep(1.0)
    c.drop_watches()
    out, err = proc.communicate(timeout=240)
    errors = [line for line in err.splitlines() if "ERROR" in line or "Traceback" in line or "error:" in line]
    assert proc.returncode == 0, "\n".join(errors[-20:]) + "\n...\n" + err[-2000:]
    added = _jobs_added(c)
    assert len(added) == 6 and set(added.values()) == {1}
    assert [t["state"] for t in _status(store)["trials"]] == ["ok"] * 6
    assert "reading Lease hpo-controller failed" in err


def test_job_bodies_validate_for_other_options():
    """CPU-only, tolerations, node selector, affinity, pull secrets, no Secret (workload identity)."""
    import kubernetes_validate

    s = KubeSettings(namespace="ml", release="a" * 40, gpu_count=0, node_selector={"pool": "gpu"},
                     tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                     affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                         {"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["a100", "h100"]}]}]}}},
                     image_pull_secrets=["regcred"], priority_class_name="batch-low")
    job = build_job(s, "cifar100", 123456, ["python", "-m", "trainer", "--trial", "s3://b/t"], {}, {"x": 1}, None)
    # The published schemas require onPodConditions in every podFailurePolicy rule up to 1.28.
    for version in ("1.29", "1.31", "1.33", "1.35", "1.37"):
        kubernetes_validate.validate(job, version, strict=True)
    assert len(job["metadata"]["name"]) <= 63
    assert "nvidia.com/gpu" not in json.dumps(job["spec"]["template"]["spec"]["containers"][0]["resources"])
