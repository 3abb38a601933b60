"""Test helpers around the local control plane (scripts/localkube): a namespace per test, the chart's RBAC,
kubeconfigs holding a ServiceAccount's own token, a record of every Job created, and the controller pod's
process for kill tests. Everything is decided by the real API server, controllers and scheduler."""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import ssl
import subprocess
import threading
import time
import urllib.request
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from support.paths import ROOT

TOOLS = ROOT / ".tools" / "bin"


class Kube:
    """A running local cluster (its cluster.json) seen from a test."""

    def __init__(self, cluster_dir: Path):
        from kubernetes import client, config

        self.dir = cluster_dir
        self.info = json.loads((cluster_dir / "cluster.json").read_text())
        self.kubeconfig = Path(self.info["kubeconfig"])
        self.api = config.new_client_from_config(str(self.kubeconfig))
        self.core = client.CoreV1Api(self.api)
        self.batch = client.BatchV1Api(self.api)
        self.coord = client.CoordinationV1Api(self.api)
        self.policy = client.PolicyV1Api(self.api)

    # -- tools ----------------------------------------------------------------------------------------
    def env(self, kubeconfig: Path | None = None) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(kubeconfig or self.kubeconfig),
                "PATH": f"{TOOLS}:{os.environ['PATH']}"}

    def run(self, *argv: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        p = subprocess.run(list(argv), cwd=ROOT, env=self.env(), capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {p.returncode}:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
        return p

    def kubectl(self, *args: str, **kw: Any) -> str:
        return self.run(str(TOOLS / "kubectl"), *args, **kw).stdout

    def helm(self, *args: str, **kw: Any) -> str:
        return self.run(str(TOOLS / "helm"), *args, **kw).stdout

    @contextmanager
    def port_forward(self, ns: str, target: str, remote: int) -> Iterator[int]:
        """`kubectl port-forward` to target's remote port (through the API server and the kubelet, as a person
        does it); yields the local port kubectl picked."""
        proc = subprocess.Popen([str(TOOLS / "kubectl"), "-n", ns, "port-forward", target, f":{remote}"], cwd=ROOT,
                                env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = proc.stdout.readline() if proc.stdout else ""  # "Forwarding from 127.0.0.1:PORT -> remote"
            m = re.search(r"127\.0\.0\.1:(\d+)", line)
            assert m, f"kubectl port-forward {target}: {line}{proc.stderr.read() if proc.stderr else ''}"
            yield int(m.group(1))
        finally:
            proc.terminate()
            proc.wait(30)

    # -- namespaces and identities ------------------------------------------------------------------------
    def namespace(self, prefix: str = "t", restricted: bool = True) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        labels = {"pod-security.kubernetes.io/enforce": "restricted"} if restricted else {}
        self.core.create_namespace({"metadata": {"name": name, "labels": labels}})
        wait_for(f"ServiceAccount default in {name}", lambda: self._has_default_sa(name))
        return name

    def _has_default_sa(self, ns: str) -> bool:
        from kubernetes.client.exceptions import ApiException

        try:
            self.core.read_namespaced_service_account("default", ns)
            return True
        except ApiException:
            return False

    def delete_namespace(self, ns: str) -> None:
        from kubernetes.client.exceptions import ApiException

        for delete in (lambda: self.core.delete_namespace(ns),
                       lambda: self.core.delete_persistent_volume(f"shared-{ns}")):  # shared_dir's, if any
            try:
                delete()
            except ApiException:
                pass

    def sa_kubeconfig(self, ns: str, sa: str, path: Path) -> Path:
        """A kubeconfig that authenticates as ServiceAccount ns/sa (a TokenRequest token): RBAC applies."""
        token = self.core.create_namespaced_service_account_token(
            sa, ns, {"spec": {"expirationSeconds": 7200}}).status.token
        doc = yaml.safe_load(self.kubeconfig.read_text())
        doc["users"] = [{"name": sa, "user": {"token": token}}]
        doc["contexts"][0]["context"]["user"] = sa
        path.write_text(yaml.safe_dump(doc))
        return path

    def install_rbac(self, ns: str, release: str, values: list[str] = ()) -> dict[str, Any]:
        """The chart's ServiceAccounts, Role, RoleBinding and config ConfigMap, applied into ns (no Deployment): for
        tests that run the controller themselves, as the chart's ServiceAccount; with what one search run without the
        operator (controller/kube/single.py) needs beyond the chart. Returns the rendered config, set for that mode."""
        shown = ("serviceaccounts.yaml", "rbac.yaml", "configmap-search.yaml")
        rendered = self.helm("template", release, "charts/", "-n", ns, *values,
                             *[a for f in shown for a in ("--show-only", f"templates/{f}")])
        docs = [d for d in yaml.safe_load_all(rendered) if d]
        search_cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-search"))
        full = search_cm["metadata"]["name"].removesuffix("-search")
        docs += _single_search_plumbing(full)
        manifest = Path(f"/tmp/rbac-{ns}-{release}.yaml")
        manifest.write_text(yaml.safe_dump_all(docs))
        self.kubectl("apply", "-n", ns, "-f", str(manifest))
        manifest.unlink()
        config: dict[str, Any] = yaml.safe_load(search_cm["data"]["search.yaml"])
        config["kube"].update(ownerConfigMap=f"{full}-search", statusConfigMap=f"{full}-status")
        return config

    def secret(self, ns: str, name: str, data: dict[str, str]) -> None:
        self.core.create_namespaced_secret(ns, {"metadata": {"name": name}, "stringData": data})

    # -- what happened --------------------------------------------------------------------------------
    def jobs(self, ns: str, selector: str = "") -> list[dict[str, Any]]:
        return json.loads(self.batch.list_namespaced_job(ns, label_selector=selector,
                                                         _preload_content=False).data)["items"]

    def pods(self, ns: str, selector: str = "") -> list[dict[str, Any]]:
        return json.loads(self.core.list_namespaced_pod(ns, label_selector=selector,
                                                        _preload_content=False).data)["items"]

    def lease(self, ns: str, name: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return json.loads(self.coord.read_namespaced_lease(name, ns, _preload_content=False).data)
        except ApiException:
            return None

    def events(self, ns: str) -> list[dict[str, Any]]:
        return json.loads(self.core.list_namespaced_event(ns, _preload_content=False).data)["items"]

    def container_pid(self, ns: str, pod_prefix: str) -> int | None:
        """The host pid of the running container (its PID 1) of the newest running pod named pod_prefix*, as
        containerd reports it."""
        pods = [pod for pod in self.pods(ns) if pod["metadata"]["name"].startswith(pod_prefix)
                and (pod["status"].get("containerStatuses") or [{}])[0].get("state", {}).get("running")]
        if not pods:
            return None
        pod = max(pods, key=lambda pod: pod["metadata"]["creationTimestamp"])
        cid = pod["status"]["containerStatuses"][0]["containerID"].split("://", 1)[-1]
        tasks = subprocess.run(["ctr", "-a", self.info["containerd"], "-n", "k8s.io", "tasks", "ls"],
                               capture_output=True, text=True).stdout
        for line in tasks.splitlines()[1:]:
            task, pid, status = line.split()[:3]
            if task == cid and status == "RUNNING":
                return int(pid)
        return None

    def container_logs(self, ns: str, pod_prefix: str, container: str) -> str:
        """Every log line the kubelet kept of a container, across its restarts and its pods named pod_prefix*
        (the CRI log files: `<time> <stream> <tag> <line>`)."""
        lines = []
        for f in sorted(Path(self.info["pod_logs"]).glob(f"{ns}_{pod_prefix}*/{container}/*.log*")):
            lines += [line.split(" ", 3)[-1] for line in f.read_text(errors="replace").splitlines()]
        return "\n".join(lines)

    def shared_dir(self, ns: str, path: Path) -> str:
        """A host folder that the namespace's pods mount as the PersistentVolumeClaim `shared`: what tests and
        stand-in trials exchange (gates, start logs, planted faults) goes through it. Returns the claim's name."""
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o777)  # trials run as UID 10002
        pv = f"shared-{ns}"
        self.core.create_persistent_volume({"metadata": {"name": pv}, "spec": {
            "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"], "storageClassName": "",
            "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": str(path), "type": "Directory"},
            "claimRef": {"namespace": ns, "name": "shared"}}})
        self.core.create_namespaced_persistent_volume_claim(ns, {"metadata": {"name": "shared"}, "spec": {
            "accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": pv,
            "resources": {"requests": {"storage": "1Gi"}}}})
        wait_for("the shared claim to bind", lambda: self.core.read_namespaced_persistent_volume_claim(
            "shared", ns).status.phase == "Bound", timeout=60)
        return "shared"

    def free_gpus(self, ns: str) -> None:
        """Delete the namespace's Jobs and wait for their pods to be gone, before gpus() is left."""
        self.kubectl("-n", ns, "delete", "jobs", "--all", "--cascade=foreground", "--wait=true", timeout=180)
        wait_for("the trial pods to be gone", lambda: not self.pods(ns), timeout=180)

    @contextmanager
    def gpus(self) -> Iterator[None]:
        """Held by a test that needs the node's GPUs to itself: one such test at a time across the xdist workers."""
        with open(self.dir / "gpus.lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            # Any other pod still holding a GPU (a test that asked for one outside this lock) would make the holder's
            # counts wrong: wait for none, and fail naming it if it never goes.
            wait_for("no other pod to hold a GPU", lambda: not self.gpu_holders(), timeout=180)
            yield

    def gpu_holders(self) -> list[str]:
        pods = json.loads(self.core.list_pod_for_all_namespaces(_preload_content=False).data)["items"]
        return [f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in pods
                if p["status"].get("phase") in ("Pending", "Running")
                and any("nvidia.com/gpu" in ((c.get("resources") or {}).get("limits") or {})
                        for c in p["spec"]["containers"])]

    def restart_apiserver(self) -> float:
        """SIGUSR1 to `localkube up`: kube-apiserver is stopped (SIGTERM, SIGKILL after 5 s) and started again.
        Returns once it is ready again, with the seconds it was seen not ready."""
        os.kill(self.info["pid"], signal.SIGUSR1)
        wait_for("kube-apiserver to go down", lambda: not self.ready(), timeout=60)
        down = time.monotonic()
        wait_for("kube-apiserver to be ready again", self.ready, timeout=300)
        return round(time.monotonic() - down, 1)

    def ready(self) -> bool:
        token = yaml.safe_load(self.kubeconfig.read_text())["users"][0]["user"]["token"]
        ctx = ssl.create_default_context(cafile=str(self.dir / "pki" / "ca.crt"))
        req = urllib.request.Request(f"{self.info['server']}/readyz", headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=2) as r:
                return r.status == 200
        except OSError:
            return False


class _NamespaceWatch:
    """Watches one kind of a namespace from now on and hands every version of every object to _add (a 410 or a
    break lists again; what _add records is keyed by uid, so a second sight changes nothing)."""

    def __init__(self, kube: Kube, ns: str, list_fn: Any):
        self.kube, self.ns, self._list = kube, ns, list_fn
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Any:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()

    def _add(self, obj: dict[str, Any]) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        version = None
        while not self._stop.is_set():
            try:
                if version is None:
                    listing = json.loads(self._list(self.ns, _preload_content=False).data)
                    for obj in listing["items"]:
                        self._add(obj)
                    version = listing["metadata"]["resourceVersion"]
                resp = self._list(self.ns, watch=True, resource_version=version, timeout_seconds=5,
                                  _preload_content=False)
                for line in resp.stream(amt=None, decode_content=False):
                    for part in line.split(b"\n"):
                        if not part.strip():
                            continue
                        event = json.loads(part)
                        if event["type"] == "ERROR":
                            version = None  # 410 Gone: list again
                            break
                        self._add(event["object"])
                        version = event["object"]["metadata"]["resourceVersion"]
            except Exception:  # the API server restarting, a chunk split mid-line: list again
                version = None
                self._stop.wait(0.3)


class JobRecorder(_NamespaceWatch):
    """Records every Job creation of a namespace (name → uids): a Job created twice shows as two uids under one
    name, whatever happened to the first."""

    def __init__(self, kube: Kube, ns: str):
        super().__init__(kube, ns, kube.batch.list_namespaced_job)
        self.created: dict[str, list[str]] = defaultdict(list)

    def _add(self, job: dict[str, Any]) -> None:
        name, uid = job["metadata"]["name"], job["metadata"]["uid"]
        if uid not in self.created[name]:
            self.created[name].append(uid)

    def twice(self) -> list[str]:
        return sorted(n for n, uids in self.created.items() if len(uids) > 1)

    def figure(self) -> dict[str, Any]:
        return {"created": len(self.created), "twice": self.twice()}


class PodStarts(_NamespaceWatch):
    """The kubelet's record of trial program starts, outside the program: every trial pod's container statuses,
    watched. A pod counts once its container has started (running, or terminated with a start time), plus each
    restart; a program that dies before doing anything is still counted."""

    def __init__(self, kube: Kube, ns: str):
        super().__init__(kube, ns, kube.core.list_namespaced_pod)
        self._pods: dict[str, tuple[str, int, int]] = {}  # uid → (search, tid, starts)

    def _add(self, pod: dict[str, Any]) -> None:
        labels = pod["metadata"].get("labels") or {}
        if "cifar-hpo.io/trial" not in labels:
            return
        starts = 0
        for c in (pod.get("status") or {}).get("containerStatuses") or []:
            state = c.get("state") or {}
            began = "running" in state or bool((state.get("terminated") or {}).get("startedAt"))
            starts += c.get("restartCount", 0) + (1 if began else 0)
        uid = pod["metadata"]["uid"]
        seen = self._pods.get(uid, ("", 0, 0))[2]
        self._pods[uid] = (labels.get("cifar-hpo.io/search", ""), int(labels["cifar-hpo.io/trial"]), max(seen, starts))

    def starts(self, search: str | None = None) -> dict[int, int]:
        out: Counter[int] = Counter()
        for s, tid, n in list(self._pods.values()):
            if search is None or s == search:
                out[tid] += n
        return dict(out)


def wait_for(what: str, predicate: Any, timeout: float = 180.0, proc: subprocess.Popen | None = None) -> None:
    """Poll until predicate() holds. The timeout only catches a hang, and fails loudly; every wait is for an
    event the system under test produces, never for wall-clock time to pass."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"waiting for {what}: the process exited ({proc.returncode})")
        if time.monotonic() > deadline:
            raise AssertionError(f"waiting for {what}: not reached in {timeout:.0f} s")
        time.sleep(0.05)


def node_leftovers(index: int) -> list[str]:
    """What a stopped local node (localkube --index) would have left on this host: its bridge, cgroups, sockets
    folder, CNI rules, processes naming its containerd."""
    left = [f"link {line.split()[1]}" for line in subprocess.run(["ip", "-o", "link"], capture_output=True,
                                                                  text=True).stdout.splitlines()
            if line.split()[1].rstrip(":").split("@")[0] == f"khpo{index}"]
    left += [f"cgroup {d}" for d in Path("/sys/fs/cgroup").glob(f"*/cifar-hpo-real-{index}")]
    left += [f"folder {d}" for d in Path("/run").glob(f"cifar-hpo-node-{index}")]
    for table in ("nat", "filter"):
        rules = subprocess.run(["iptables", "-t", table, "-S"], capture_output=True, text=True).stdout
        left += [f"iptables {table} {r}" for r in rules.splitlines() if f"cifar-hpo-{index}\\\"" in r]
    procs = subprocess.run(["pgrep", "-af", f"/run/cifar-hpo-node-{index}/"], capture_output=True, text=True).stdout
    return left + [f"process {line}" for line in procs.splitlines()]


def start_cluster(state_dir: Path, gpus: int = 2, index: int = 0) -> subprocess.Popen:
    """`localkube up` as a child process, its node running the images scripts/build-images.sh builds; returns once
    it printed `ready`. index 1: a second cluster beside the session's."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "scripts")}
    images = state_dir.parent / "images.txt"
    images.write_text(subprocess.run([str(ROOT / "scripts" / "build-images.sh")], check=True, text=True,
                                     stdout=subprocess.PIPE).stdout)
    extra = ["--images", str(images), "--index", str(index)]
    proc = subprocess.Popen([str(ROOT / ".venv" / "bin" / "python"), "-m", "localkube", "up", "--dir", str(state_dir),
                             "--gpus", str(gpus), *extra], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=open(state_dir.parent / "localkube.log", "ab"), text=True)
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.terminate()  # its stop undoes what the node changed on the host
        proc.wait()
        log = state_dir.parent / "localkube.log"
        # The tail in the error itself: a CI log is often all there is of a failed start.
        raise RuntimeError(f"localkube did not start; the end of {log}:\n{log.read_text(errors='replace')[-4000:]}")
    return proc


def _single_search_plumbing(full: str) -> list[dict[str, Any]]:
    """What `controller run` on a cluster (one search, no operator) needs that the chart does not carry: the right to
    read the ConfigMap that owns its Jobs and to patch the status ConfigMap it keeps current, and that ConfigMap."""
    names = [f"{full}-search", f"{full}-status"]
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": f"{full}-single"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": names,
                       "verbs": ["get", "patch"]}]}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": f"{full}-single"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": f"{full}-single"},
               "subjects": [{"kind": "ServiceAccount", "name": f"{full}-controller"}]}
    status = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"{full}-status"}}
    return [role, binding, status]
