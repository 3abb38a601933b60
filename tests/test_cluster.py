"""The chart and the controller on real Kubernetes components (scripts/localkube): the API server decides RBAC and
Pod Security admission, the real Job controller decides retries and failures, the real scheduler binds by GPU
count, the real garbage collector removes what an uninstall leaves. Only the kubelet is ours."""

from __future__ import annotations

import json
import os
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
