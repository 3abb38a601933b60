"""Shared by the real-cluster tests: a chart release whose controller the test runs itself, values files with
quick stand-in trials, and reads of the store."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import boto3
import yaml

from support.cli import run_cli
from support.paths import PY, ROOT

CREDS = {key: os.environ[key] for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
TRIAL = ["python", "tests/objective.py"]  # the test image's working directory is laid out like the checkout
CACHE = "/cache"  # where a trial pod mounts its cache claim (controller/kube/jobs.py)
TRIAL_RESOURCES = {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}}


def image(kube, name: str) -> tuple[str, str]:
    """(repository, tag) of one of our images on the cluster's node (scripts/build-images.sh)."""
    ref = next(r for r in kube.info["images"] if r.startswith(f"localhost/cifar-hpo-{name}:"))
    repo, tag = ref.rsplit(":", 1)
    return repo, tag


def trial_env(env: dict[str, str], shared: Path | None) -> list[str]:
    """`env` assignments for the trial command; paths under the host's shared folder become the pod's."""
    def pod_path(v: str) -> str:
        return v.replace(str(shared), CACHE) if shared is not None else v

    return [f"{k}={pod_path(v)}" for k, v in {"FAKE_TRIAL_SLEEP": "0.2", **env}.items()]


def chart_values(kube, ns: str, tmp_path: Path, bucket: str, s3: str, env: dict[str, str] | None = None,
                 shared: Path | None = None, **sections) -> Path:
    """A values file: moto's S3, quick stand-in trials (the test image) on the cluster's node, the controller
    image as the operator. shared: a host folder the trials mount at /cache (Kube.shared_dir)."""
    ctrl, trial = image(kube, "controller"), image(kube, "objective")
    values = {
        "store": {"bucket": bucket, "endpoint": s3, "accessKeyId": CREDS["AWS_ACCESS_KEY_ID"],
                  "secretAccessKey": CREDS["AWS_SECRET_ACCESS_KEY"]},
        "search": {"maxTrials": 3, "parallelism": 2},
        "trainer": {"command": ["env", *trial_env(env or {}, shared), *TRIAL], "epochs": 2, "data": "synthetic:300",
                    "image": {"repository": trial[0], "tag": trial[1]}, "gpu": {"count": 0},
                    "resources": TRIAL_RESOURCES},
        "controller": {"resyncSeconds": 5, "leaseSeconds": 5,
                       "image": {"repository": ctrl[0], "tag": ctrl[1]},
                       "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}}},
    }
    if shared is not None:
        values["trainer"]["dataCache"] = {"existingClaim": kube.shared_dir(ns, shared)}
    for section, overrides in sections.items():
        values.setdefault(section, {}).update(overrides)
    path = tmp_path / f"values-{len(list(tmp_path.glob('values-*')))}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def status_config_map_data(kube, ns, release="cifar-hpo"):
    """The data of the one-search mode's status ConfigMap, {} while there is none."""
    from kubernetes.client.exceptions import ApiException

    try:
        return kube.core.read_namespaced_config_map(f"{release}-status", ns).data or {}
    except ApiException:
        return {}


def bucket_etags(bucket):
    """Every key of the bucket with its ETag: what a test compares to see that nothing changed."""
    s3 = boto3.client("s3")
    return {o["Key"]: o["ETag"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])}


def finished_status(store_uri, search):
    """`controller status --json` of a search, or an empty document while it has none."""
    p = run_cli("status", "--store", store_uri, "--search", search, "--json", check=False)
    return json.loads(p.stdout) if p.returncode == 0 else {"trials": [], "state": None}


class Release:
    """The chart's RBAC, ConfigMaps and S3 Secret in a test namespace; the controller is run by the test itself
    (so that it can be killed, doubled or faulted), authenticated as the chart's controller ServiceAccount."""

    def __init__(self, kube, ns, bucket, s3, tmp_path, name="hpo"):
        self.kube, self.ns, self.tmp, self.name = kube, ns, tmp_path, name
        # What the test and its trials exchange (gates, start logs, planted faults): on the host here, at /cache in
        # each trial pod.
        self.shared = tmp_path / "shared"
        self._claim: str | None = None
        self.full = f"{name}-cifar-hpo"
        self.store = f"s3://{bucket}/searches"
        self.config = kube.install_rbac(ns, name, [
            "--set", f"store.bucket={bucket}", "--set", f"store.endpoint={s3}", "--set", "trainer.gpu.count=0",
            "--set", f"store.accessKeyId={CREDS['AWS_ACCESS_KEY_ID']}",
            "--set", f"store.secretAccessKey={CREDS['AWS_SECRET_ACCESS_KEY']}"])
        kube.secret(ns, f"{self.full}-s3", CREDS)
        self.kubeconfig = kube.sa_kubeconfig(ns, f"{self.full}-controller", tmp_path / f"{name}.kubeconfig")

    def share(self) -> Path:
        """The shared folder, its claim made: trials see it at /cache."""
        if self._claim is None:
            self._claim = self.kube.shared_dir(self.ns, self.shared)
        return self.shared

    def config_file(self, env: dict[str, str] | None = None, **sections) -> Path:
        cfg = json.loads(json.dumps(self.config))
        cfg["trial"].update(command=["env", *trial_env(env or {}, self.shared), *TRIAL], epochs=3,
                            data="synthetic:300")
        cfg["search"].update(maxFailedTrials=20)
        cfg["controller"].update(metricsPort=0)  # several controllers share this host
        self.share()
        repo, tag = image(self.kube, "objective")
        cfg["kube"].update(leaseSeconds=5, resyncSeconds=5, backoffLimit=0, terminationGraceSeconds=5,
                           image=f"{repo}:{tag}", dataCacheClaim=self._claim, **TRIAL_RESOURCES)
        for section, values in sections.items():
            cfg.setdefault(section, {}).update(values)
        path = self.tmp / f"controller-{len(list(self.tmp.glob('controller-*')))}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    def controller(self, cfg: Path, *args: str, pod_name: str | None = None, log: Path | None = None):
        """The controller as this test's process; its stderr to `log` when given (read while it runs)."""
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        if pod_name:
            env["POD_NAME"] = pod_name
        return subprocess.Popen([PY, "-m", "controller", "run", "--config", str(cfg), *args], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=open(log, "w") if log else subprocess.PIPE, text=True)

    def operator(self, cfg: Path, *args: str, pod_name: str = "operator-0", log: Path | None = None,
                 kubeconfig: Path | None = None, code: Path = ROOT):
        """`controller operator` as this test's process, as the chart's ServiceAccount (or kubeconfig's user). A
        fixed POD_NAME: like a restarted container, a restarted operator takes its own Lease back at once. code: the
        checkout whose controller runs (a benchmark compares two commits)."""
        env = {**os.environ, "KUBECONFIG": str(kubeconfig or self.kubeconfig), "POD_NAME": pod_name,
               "PYTHONPATH": str(code)}
        return subprocess.Popen([PY, "-m", "controller", "operator", "--config", str(cfg), *args], cwd=code, env=env,
                                stdout=subprocess.DEVNULL, stderr=open(log, "a") if log else subprocess.DEVNULL,
                                text=True)

    def job_creators(self) -> dict[str, set[str]]:
        """Job name → the field managers that created it (each controller creates as its own identity)."""
        # A create is recorded as an "Update" entry; its manager is the one owning the spec (a later controller's
        # `collected` annotation owns only that annotation, the Job controller only the status subresource).
        return {j["metadata"]["name"]: {m["manager"] for m in j["metadata"].get("managedFields", [])
                                        if not m.get("subresource") and "f:spec" in (m.get("fieldsV1") or {})}
                for j in self.kube.jobs(self.ns)}

    def trials(self, search="cifar100"):
        return finished_status(self.store, search)["trials"]
