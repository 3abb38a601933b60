"""What only a real node decides, on the local cluster's node: the real kubelet (built from the pinned source) with
containerd and runc running the images scripts/build-images.sh builds from our Dockerfiles. The user, the read-only
root, memory limits, exit codes, image pulls, Secrets and device allocation are the runtime's verdicts here, not
ours."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.clusterkit import Release, chart_values, finished_status
from support.realkube import wait_for

pytestmark = pytest.mark.e2e

RESTRICTED = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
              "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}


@pytest.fixture(scope="module")
def node(kube) -> dict[str, Any]:
    return {"name": kube.info["node"], "ip": kube.info["ip"], "gpus": kube.info["gpus"], "images": kube.info["images"]}


def image(node: dict[str, Any], name: str) -> str:
    return next(ref for ref in node["images"] if ref.startswith(f"localhost/cifar-hpo-{name}:"))


def run_pod(kube, ns: str, node: dict[str, Any], img: str, code: str, limits: dict[str, str] | None = None,
            gpus: int = 0, name: str = "probe", shell: bool = False,
            volumes: tuple[tuple[dict[str, Any], str], ...] = ()) -> dict[str, Any]:
    """A pod that runs `python -c code` (shell: `sh -c code`) on the real node as UID 10002 under the restricted
    profile, with fsGroup 10002 as trial pods have; volumes: (volume, mount path) pairs."""
    resources = {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "512Mi", **(limits or {})}}
    if gpus:
        resources["limits"]["nvidia.com/gpu"] = str(gpus)
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {
        "restartPolicy": "Never", "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10002, "runAsGroup": 10002, "fsGroup": 10002,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "main", "image": img, "imagePullPolicy": "Never",
                        "command": ["sh" if shell else "python", "-c", code],
                        "resources": resources, "securityContext": RESTRICTED,
                        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"},
                                         *({"name": v["name"], "mountPath": path} for v, path in volumes)]}],
        "volumes": [{"name": "tmp", "emptyDir": {}}, *(v for v, _ in volumes)]}}
    kube.core.create_namespaced_pod(ns, body)
    return body


def pod_json(kube, ns: str, name: str) -> dict[str, Any]:
    return json.loads(kube.core.read_namespaced_pod(name, ns, _preload_content=False).data)


def terminated(kube, ns: str, name: str) -> dict[str, Any]:
    def done() -> bool:
        cs = (pod_json(kube, ns, name)["status"].get("containerStatuses") or [{}])[0]
        return bool((cs.get("state") or {}).get("terminated"))

    wait_for(f"pod {name} to end", done, timeout=180)
    return pod_json(kube, ns, name)["status"]["containerStatuses"][0]["state"]["terminated"]


def test_the_node_is_the_real_kubelet_on_containerd(kube, node):
    wide = kube.kubectl("get", "nodes", "-o", "wide")
    row = next(line.split() for line in wide.splitlines() if line.startswith(node["name"] + " "))
    assert row[1] == "Ready" and "v1.34.4" in row and any(c.startswith("containerd://") for c in row), wide
    info = kube.core.read_node(node["name"])
    assert info.status.node_info.kubelet_version == "v1.34.4"
    assert info.status.node_info.container_runtime_version.startswith("containerd://")
    # The device plugin's devices, as the kubelet counts them (our Node never has its capacity patched).
    assert info.status.allocatable["nvidia.com/gpu"] == str(node["gpus"])
    assert kube.kubectl("version", "--client", "-o", "json").count('"gitVersion": "v1.34.4"') == 1


def test_the_nodes_containerd_cache_holds_this_build_and_this_runs_containers_only(kube, node):
    """containerd's root is kept across runs (images import once per build); what earlier runs left there is
    removed at the node's start, or the cache grows by a build per commit until a start fails on a full disk."""
    ctr = ["ctr", "-a", kube.info["containerd"], "-n", "k8s.io"]
    rows = [line.split() for line in subprocess.run([*ctr, "images", "ls"], capture_output=True, text=True,
                                                      check=True).stdout.splitlines()[1:] if line.strip()]
    digest = {row[0]: row[2] for row in rows}
    assert {digest.get(ref) for ref in node["images"]} == set(digest.values()), rows  # every ref names this build
    registered = kube.core.read_node(node["name"]).metadata.creation_timestamp
    for cid in subprocess.run([*ctr, "containers", "ls", "-q"], capture_output=True, text=True,
                              check=True).stdout.split():
        shown = subprocess.run([*ctr, "containers", "info", cid], capture_output=True, text=True)
        if shown.returncode != 0:
            continue  # removed since it was listed
        # RFC 3339 with nanoseconds, which fromisoformat takes only to microseconds
        stamp = re.fullmatch(r"(.+T[\d:]{8})(\.\d+)?(Z|[+-][\d:]{5})", json.loads(shown.stdout)["CreatedAt"])
        assert stamp, shown.stdout[:300]
        created = datetime.fromisoformat(stamp[1] + (stamp[2] or "")[:7] + stamp[3].replace("Z", "+00:00"))
        assert created >= registered, f"container {cid} from {created}, before this node registered at {registered}"


def test_a_deleted_namespace_with_a_claim_goes_whole(kube):
    """A claim carries the protection finalizer from admission; the protection controller lifts it once no pod
    uses the claim. Without that controller every namespace that had a claim (the dataset cache's) stayed
    Terminating for good."""
    from kubernetes.client.exceptions import ApiException

    ns = kube.namespace("pvc")
    kube.core.create_namespaced_persistent_volume_claim(ns, {
        "metadata": {"name": "cache"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Mi"}},
                 "storageClassName": "none-such"}})
    claim = kube.core.read_namespaced_persistent_volume_claim("cache", ns)
    assert "kubernetes.io/pvc-protection" in (claim.metadata.finalizers or []), claim.metadata

    def gone() -> bool:
        try:
            kube.core.read_namespace(ns)
        except ApiException as e:
            return e.status == 404
        return False

    kube.core.delete_namespace(ns)
    wait_for(f"namespace {ns} to be deleted", gone, timeout=180)


def test_uid_read_only_root_and_exit_code_are_the_runtimes(kube, kube_ns, node):
    code = ("import os, sys\nprint('uid', os.getuid(), 'gid', os.getgid())\n"
            "open('/tmp/ok', 'w').write('x'); print('tmp writable')\n"
            "try:\n    open('/etc/probe', 'w')\nexcept OSError as e:\n    print('root:', e.strerror)\nsys.exit(7)")
    run_pod(kube, kube_ns, node, image(node, "objective"), code)
    term = terminated(kube, kube_ns, "probe")
    assert (term["exitCode"], term["reason"]) == (7, "Error")
    log = kube.kubectl("logs", "-n", kube_ns, "probe")
    assert "uid 10002 gid 10002" in log and "tmp writable" in log and "root: Read-only file system" in log, log


def test_a_memory_limit_exceeded_is_oomkilled_by_the_runtime(kube, kube_ns, node):
    run_pod(kube, kube_ns, node, image(node, "objective"), "b = b'x' * (400 * 2**20)\nprint(len(b))",
            limits={"memory": "96Mi"})
    term = terminated(kube, kube_ns, "probe")
    assert (term["exitCode"], term["reason"]) == (137, "OOMKilled"), term


def test_a_self_inflicted_sigkill_is_error_137_not_oomkilled(kube, kube_ns, node):
    # PID 1 of a container cannot be killed by a signal from inside it (the kernel drops it): the program killed
    # is a child, and the shell that is PID 1 exits with its status, as a wrapper script would.
    run_pod(kube, kube_ns, node, image(node, "objective"),
            "python -c 'import os, signal; os.kill(os.getpid(), signal.SIGKILL)'; exit $?", shell=True)
    term = terminated(kube, kube_ns, "probe")
    assert (term["exitCode"], term["reason"]) == (137, "Error"), term


def _status(kube, ns: str, release: str = "hpo-cifar-hpo") -> dict[str, Any]:
    from kubernetes.client.exceptions import ApiException

    try:
        data = kube.core.read_namespaced_config_map(f"{release}-status", ns).data or {}
    except ApiException:
        return {}
    return json.loads(data.get("status.json", "{}"))


def test_gpus_are_the_device_plugins_two_and_a_third_trial_waits(kube, kube_ns, node, bucket, s3_endpoint, tmp_path):
    rel = Release(kube, kube_ns, bucket, s3_endpoint, tmp_path)
    cfg = rel.config_file({"FAKE_TRIAL_SLEEP": "600"}, kube={"gpuCount": 1}, search={"maxTrials": 3, "parallelism": 3})
    with kube.gpus():
        _two_on_gpus_one_waiting(kube, kube_ns, rel.controller(cfg, log=tmp_path / "controller.log"))
        kube.free_gpus(kube_ns)


def _two_on_gpus_one_waiting(kube, kube_ns, proc) -> None:
    try:
        def two_running_one_waiting() -> bool:
            pods = kube.pods(kube_ns, "app.kubernetes.io/component=trial")
            phases = sorted(p["status"].get("phase", "") for p in pods)
            waiting = _status(kube, kube_ns).get("waiting") or {}
            return phases == ["Pending", "Running", "Running"] and any(
                "Insufficient nvidia.com/gpu" in why for why in waiting.values())

        wait_for("two trials on the two GPUs and the third waiting for one", two_running_one_waiting, proc=proc)
        checkpoint = json.loads((Path(kube.info["device_plugins"]) / "kubelet_internal_checkpoint").read_text())
        allocated = {e["PodUID"]: sorted(d for ids in e["DeviceIDs"].values() for d in ids)
                     for e in checkpoint["Data"]["PodDeviceEntries"]}
        seen = []
        for p in kube.pods(kube_ns, "app.kubernetes.io/component=trial"):
            if p["status"].get("phase") != "Running":
                continue
            env = kube.kubectl("exec", "-n", kube_ns, p["metadata"]["name"], "--", "python", "-c",
                               "import os; print(os.environ['NVIDIA_VISIBLE_DEVICES'])").strip()
            assert [env] == allocated[p["metadata"]["uid"]], (env, allocated)
            seen.append(env)
        assert sorted(seen) == ["GPU-local-0", "GPU-local-1"]
    finally:
        proc.terminate()
        proc.wait(60)


@pytest.mark.parametrize("fault", ["absent image", "missing secret"])
def test_a_trial_that_cannot_start_is_reported_then_failed(kube, kube_ns, node, bucket, s3_endpoint, tmp_path, fault):
    if fault == "absent image":
        broken, expected = {"image": "localhost/cifar-hpo-absent:1"}, ("ErrImagePull", "ImagePullBackOff")
    else:
        # Trials name the Secret only when they get the store's keys (trialAccess credentials).
        broken = {"s3SecretName": "no-such-secret", "trialAccess": "credentials"}
        expected = ("CreateContainerConfigError",)
    rel = Release(kube, kube_ns, bucket, s3_endpoint, tmp_path)
    cfg = rel.config_file({"FAKE_TRIAL_SLEEP": "0.1"}, kube={**broken, "startTimeoutSeconds": 20},
                          search={"maxTrials": 1, "parallelism": 1, "maxFailedTrials": 1})
    proc = rel.controller(cfg, log=tmp_path / "controller.log")
    try:
        t0 = time.monotonic()
        wait_for("the kubelet's reason in the search's status",
                 lambda: any(r in why for why in (_status(kube, kube_ns).get("waiting") or {}).values()
                             for r in expected), proc=proc)
        reported_after = time.monotonic() - t0
        events = [e["message"] for e in kube.events(kube_ns) if e.get("reason") == "TrialWaiting"]
        assert any(r in m for m in events for r in expected), events
        assert proc.wait(300) != 0  # maxFailedTrials 1: the search fails
    finally:
        if proc.poll() is None:
            proc.kill()
    (trial,) = finished_status(rel.store, "cifar100")["trials"]
    assert trial["state"] == "failed"
    assert "did not start within startTimeoutSeconds (20 s)" in trial["reason"], trial
    assert any(r in trial["reason"] for r in expected), trial
    assert not kube.jobs(kube_ns), "the trial's Job is deleted: it no longer holds a slot"
    print(f"{fault}: reason in status {reported_after:.1f} s after the controller started")


def test_a_real_trainer_search_runs_as_containers(kube, kube_ns, node, bucket, s3_endpoint, tmp_path):
    """The trainer image (Dockerfile.trainer, TensorFlow CPU build) as the trials: UID 10002, read-only root with
    only the Job's emptyDirs writable, training on generated data and saving its model into the bucket."""
    rel = Release(kube, kube_ns, bucket, s3_endpoint, tmp_path)
    cfg = rel.config_file(trial={"command": ["python", "-m", "trainer"], "epochs": 1, "data": "synthetic:256",
                                 "extraArgs": ["--no-xla"]},
                          kube={"image": image(node, "trainer"), "requests": {"cpu": "500m", "memory": "1Gi"},
                                "limits": {"memory": "4Gi"}, "ttlSecondsAfterFinished": 600},
                          search={"maxTrials": 2, "parallelism": 2, "maxFailedTrials": 1})
    proc = rel.controller(cfg, log=tmp_path / "controller.log")
    rc = proc.wait(900)
    assert rc == 0, (tmp_path / "controller.log").read_text()[-3000:]
    trials = finished_status(rel.store, "cifar100")["trials"]
    assert [t["state"] for t in trials] == ["ok", "ok"], trials
    import boto3

    keys = {o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket)["Contents"]}
    logs = {p["metadata"]["name"]: kube.kubectl("logs", "-n", kube_ns, p["metadata"]["name"])[-1500:]
            for p in kube.pods(kube_ns, "app.kubernetes.io/component=trial")}
    assert {f"searches/cifar100/trials/{t['tid']:06d}/model.keras" for t in trials} <= keys, (
        sorted(k for k in keys if "/trials/" in k), logs)
    for p in kube.pods(kube_ns, "app.kubernetes.io/component=trial"):
        (cs,) = p["status"]["containerStatuses"]
        assert cs["imageID"] and cs["image"].startswith("localhost/cifar-hpo-trainer:"), cs
        log = kube.kubectl("logs", "-n", kube_ns, p["metadata"]["name"])
        assert "uid 10002 gid 10002" in log, log[-2000:]
        described = kube.kubectl("describe", "pod", "-n", kube_ns, p["metadata"]["name"])
        assert "Image ID:" in described and node["name"] in described


def _chart_values(kube, ns: str, tmp_path: Path, bucket: str, s3_endpoint: str) -> Path:
    return chart_values(kube, ns, tmp_path, bucket, s3_endpoint)


def _search_state(kube, ns: str) -> str | None:
    out = kube.kubectl("-n", ns, "get", "search", "cifar100", "-o", "json", check=False)
    return ((json.loads(out).get("status") or {}).get("state")) if out.strip() else None


def test_the_chart_runs_the_operator_image_in_cluster_and_its_trials_as_containers(kube, kube_ns, node, bucket,
                                                                                   s3_endpoint, tmp_path):
    kube.helm("install", "cifar-hpo", "charts/", "-n", kube_ns, "-f", str(_chart_values(kube, kube_ns, tmp_path,
                                                                                          bucket, s3_endpoint)))
    wait_for("the Search to succeed", lambda: _search_state(kube, kube_ns) == "Succeeded", timeout=300)
    (operator,) = kube.pods(kube_ns, "app.kubernetes.io/component=controller")
    assert operator["spec"]["nodeName"] == node["name"]
    assert operator["status"]["containerStatuses"][0]["image"] == image(node, "controller")
    log = kube.kubectl("-n", kube_ns, "logs", operator["metadata"]["name"])
    # No kubeconfig in the pod: the mounted token and KUBERNETES_SERVICE_HOST, through kube-proxy to the apiserver.
    assert "Kubernetes API at https://10.0.0.1:443 as this pod's service account (in-cluster)" in log, log[-2000:]
    trials = finished_status(f"s3://{bucket}/searches", "cifar100")["trials"]
    assert [t["state"] for t in trials] == ["ok"] * 3
    for p in kube.pods(kube_ns, "app.kubernetes.io/component=trial"):
        assert p["spec"]["nodeName"] == node["name"]
        assert p["status"]["containerStatuses"][0]["image"] == image(node, "objective")
    print(kube.kubectl("-n", kube_ns, "get", "searches"))
    # The operator's dashboard, as NOTES.txt says to reach it: kubectl port-forward to its Service.
    with kube.port_forward(kube_ns, "svc/cifar-hpo-dashboard", 8080) as port:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as r:
            assert r.status == 200 and b"/static/app.js" in r.read()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/searches", timeout=30) as r:
            (listed,) = json.loads(r.read())
        assert listed["name"] == "cifar100" and listed["state"] == "succeeded" and listed["budget"]["finished"] == 3


def test_a_sigterm_to_the_operators_pid_1_is_honoured_at_every_moment_of_its_start(kube, kube_ns, node, bucket,
                                                                                    s3_endpoint, tmp_path):
    """Three moments, each tied to what the operator has done: its container just started (interpreter and
    imports), it waits for a Lease another holds, it runs a Search. Each time the container must end by itself,
    exit 0 or 143; a SIGTERM ignored (PID 1 without a handler) would leave it running until the test gives up."""
    from kubernetes.client.exceptions import ApiException

    now = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    lease = tmp_path / "lease.yaml"
    lease.write_text(yaml.safe_dump({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                     "metadata": {"name": "cifar-hpo-controller", "namespace": kube_ns},
                                     "spec": {"holderIdentity": "someone-else", "leaseDurationSeconds": 3600,
                                              "acquireTime": now, "renewTime": now}}))
    kube.kubectl("apply", "-f", str(lease))
    kube.helm("install", "cifar-hpo", "charts/", "-n", kube_ns, "-f", str(_chart_values(kube, kube_ns, tmp_path,
                                                                                          bucket, s3_endpoint)))

    def container() -> tuple[str, dict[str, Any]]:
        pods = kube.pods(kube_ns, "app.kubernetes.io/component=controller")
        return (pods[0]["metadata"]["name"], (pods[0]["status"].get("containerStatuses") or [{}])[0]) if pods \
            else ("", {})

    def sigterm_then_restart(restarts: int) -> dict[str, Any]:
        name, _ = container()
        kube.kubectl("-n", kube_ns, "exec", name, "--", "python", "-c", "import os, signal; os.kill(1, signal.SIGTERM)")
        wait_for(f"restart {restarts + 1} after the SIGTERM",
                 lambda: container()[1].get("restartCount") == restarts + 1, timeout=120)
        return container()[1]["lastState"]["terminated"]

    def log_has(text: str) -> bool:
        name, cs = container()
        if not (cs.get("state") or {}).get("running"):
            return False
        return text in kube.kubectl("-n", kube_ns, "logs", name, check=False)

    ended = {}
    wait_for("the operator container to run", lambda: (container()[1].get("state") or {}).get("running"))
    ended["just started"] = sigterm_then_restart(0)
    wait_for("the operator waiting for the Lease", lambda: log_has("another controller holds Lease"))
    ended["waiting for the Lease"] = sigterm_then_restart(1)
    try:
        kube.coord.delete_namespaced_lease("cifar-hpo-controller", kube_ns)
    except ApiException:
        pass
    wait_for("the operator running the Search", lambda: log_has("starting its search"), timeout=180)
    ended["running a Search"] = sigterm_then_restart(2)
    for moment, term in ended.items():
        assert term["exitCode"] in (0, 143), (moment, term)
    print({m: (t["exitCode"], t["reason"]) for m, t in ended.items()})


def test_a_search_whose_trial_image_is_absent_says_so_in_kubectl_get_searches(kube, kube_ns, bucket, s3_endpoint,
                                                                               tmp_path):
    """The chart's operator (in its pod) on a trial image that does not exist: `kubectl get searches` shows the
    kubelet's reason in WAITING, then the Search fails with it after startTimeoutSeconds."""
    values = chart_values(kube, kube_ns, tmp_path, bucket, s3_endpoint, search={"maxTrials": 1, "parallelism": 1,
                                                                           "maxFailedTrials": 1})
    doc = yaml.safe_load(values.read_text())
    doc["trainer"].update(image={"repository": "localhost/cifar-hpo-absent", "tag": "1"}, startTimeoutSeconds=20)
    values.write_text(yaml.safe_dump(doc))
    kube.helm("install", "cifar-hpo", "charts/", "-n", kube_ns, "-f", str(values))
    seen = []

    def shown() -> bool:
        seen.append(kube.kubectl("-n", kube_ns, "get", "searches"))
        return "1 trial: ErrImagePull" in seen[-1] or "1 trial: ImagePullBackOff" in seen[-1]

    wait_for("the pull failure in kubectl get searches", shown, timeout=120)
    wait_for("the Search to fail", lambda: _search_state(kube, kube_ns) == "Failed", timeout=180)
    (trial,) = finished_status(f"s3://{bucket}/searches", "cifar100")["trials"]
    assert trial["state"] == "failed" and "did not start within startTimeoutSeconds (20 s)" in trial["reason"], trial
    assert "ImagePull" in trial["reason"] or "ErrImagePull" in trial["reason"], trial
    print(seen[-1])


def test_a_root_owned_cache_folder_costs_the_cache_not_the_trial_and_1777_fixes_it(kube, kube_ns, node, tmp_path):
    """A cache claim on a root-owned folder with mode 755 (a hostPath volume, as an NFS/EFS share: fsGroup does not
    reach it): the trainer's data loader, as UID 10002 on the real node, says what to change and goes on with what it
    read; once the folder is 1777 (what the README says to do), the same code caches there."""
    code = ("import logging\nlogging.basicConfig(level=logging.INFO)\nfrom trainer.data import cached\n"
            "print('read', cached('s3://b/datasets/x.npz', lambda: b'staged arrays', '/cache/datasets'))\n")
    folder = tmp_path / "node-cache"
    claim = kube.shared_dir(kube_ns, folder)  # a hostPath PersistentVolume: the namespace is `restricted`
    cache = {"name": "cache", "persistentVolumeClaim": {"claimName": claim}}
    for mode, name in ((0o755, "rootowned"), (0o1777, "opened")):
        folder.chmod(mode)
        run_pod(kube, kube_ns, node, image(node, "objective"), code, name=name, volumes=((cache, "/cache"),))
        assert terminated(kube, kube_ns, name)["exitCode"] == 0
        log = kube.kubectl("logs", "-n", kube_ns, name)
        assert "read b'staged arrays'" in log, log
        if mode == 0o755:
            assert "not writable by uid 10002" in log and "chmod 1777" in log, log
            assert not (folder / "datasets").exists()
        else:
            assert "not writable" not in log, log
            assert (folder / "datasets" / "x.npz").read_bytes() == b"staged arrays"
            assert (folder / "datasets" / "x.npz").stat().st_uid == 10002
