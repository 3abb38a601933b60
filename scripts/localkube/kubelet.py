"""A process kubelet: plays one Node. It runs the container command of every Pod the real scheduler binds to
its Node as a local process, and writes Pod status the way a kubelet does, so that the real Job, ReplicaSet,
garbage-collector and TTL controllers act on it. Images are ignored: `python` is this interpreter (the
project's venv) and an image's ENTRYPOINT is taken from the project's Dockerfiles.

What it honours: env (value, secretKeyRef, configMapKeyRef, fieldRef, envFrom), emptyDir / configMap / secret /
hostPath / persistentVolumeClaim / projected (ServiceAccount token by TokenRequest, configMap, downwardAPI)
volumes as folders (mount paths in args and env are rewritten to them), restartPolicy with a short back-off,
graceful deletion (SIGTERM, grace period, SIGKILL, final status, then the object's removal), exit codes
(137 not sent by us reads as OOMKilled), and `kubectl logs` (GET /containerLogs over HTTPS).

A process cannot see the in-cluster token path, so a Pod with a ServiceAccount token mounted gets KUBECONFIG
pointing at a kubeconfig with that same token (tokenFile): the API server sees the Pod's ServiceAccount.
"""

from __future__ import annotations

import base64
import http.server
import json
import logging
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
SA_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
STRATEGIC = "application/strategic-merge-patch+json"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def dockerfile_entrypoints(root: Path = ROOT) -> dict[str, list[str]]:
    """{'controller': [...], 'trainer': [...]} from Dockerfile.<name>'s exec-form ENTRYPOINT."""
    out = {}
    for f in root.glob("Dockerfile.*"):
        for line in f.read_text().splitlines():
            if line.startswith("ENTRYPOINT"):
                out[f.suffix[1:]] = json.loads(line[len("ENTRYPOINT"):].strip())
    return out


@dataclass
class PodRun:
    """One Pod's container, run as a process group, restarted per restartPolicy."""

    pod: dict[str, Any]
    dir: Path
    stop: threading.Event = field(default_factory=threading.Event)
    proc: subprocess.Popen | None = None
    thread: threading.Thread | None = None
    killed_by_us: bool = False

    @property
    def key(self) -> str:
        return f"{self.pod['metadata']['namespace']}/{self.pod['metadata']['name']}"


class ProcessKubelet:
    def __init__(self, api_client: Any, node: str, state_dir: Path, server: str, ca_file: Path,
                 cert: tuple[Path, Path], python: str = sys.executable):
        from kubernetes import client

        self.api = api_client
        self.core = client.CoreV1Api(api_client)
        self.node = node
        self.dir = state_dir
        self.server = server
        self.ca_file = ca_file
        self.cert = cert
        self.python = python
        self.entrypoints = dockerfile_entrypoints()
        self.runs: dict[str, PodRun] = {}  # by pod uid
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd: http.server.ThreadingHTTPServer | None = None
        self.port = 0

    # -- lifecycle ------------------------------------------------------------------------------------
    def serve_logs(self) -> int:
        kubelet = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def do_GET(self) -> None:
                kubelet._container_logs(self)

        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(self.cert[0]), str(self.cert[1]))
        httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
        httpd.daemon_threads = True
        self._httpd = httpd
        self.port = httpd.server_address[1]
        threading.Thread(target=httpd.serve_forever, name="kubelet-logs", daemon=True).start()
        return self.port

    def start(self) -> None:
        threading.Thread(target=self._watch_loop, name="kubelet-watch", daemon=True).start()

    def stop(self, grace: float = 10.0) -> None:
        self._stop.set()
        with self.lock:
            runs = list(self.runs.values())
        for run in runs:
            run.stop.set()
            self._terminate(run, grace)
        if self._httpd:
            self._httpd.shutdown()

    def pid_of(self, namespace: str, pod: str) -> int | None:
        """The pid of a Pod's running container (tests kill it)."""
        with self.lock:
            for run in self.runs.values():
                if run.key == f"{namespace}/{pod}" and run.proc and run.proc.poll() is None:
                    return run.proc.pid
        return None

    # -- watching Pods --------------------------------------------------------------------------------
    def _watch_loop(self) -> None:
        selector = f"spec.nodeName={self.node}"
        while not self._stop.is_set():
            try:
                listing = json.loads(self.core.list_pod_for_all_namespaces(
                    field_selector=selector, _preload_content=False).data)
                for pod in listing["items"]:
                    self._reconcile(pod)
                resp = self.core.list_pod_for_all_namespaces(
                    field_selector=selector, watch=True, resource_version=listing["metadata"]["resourceVersion"],
                    timeout_seconds=60, _preload_content=False)
                buffer = b""
                for chunk in resp.stream(amt=None, decode_content=False):
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        if event["type"] == "ERROR":
                            raise RuntimeError(f"watch ERROR {event['object'].get('code')}")
                        if event["type"] == "DELETED":
                            self._deleted(event["object"])
                        else:
                            self._reconcile(event["object"])
                    if self._stop.is_set():
                        return
            except Exception as e:  # the API server restarting, a compacted watch: list again
                if not self._stop.is_set():
                    log.info("kubelet: pod watch ended (%s); re-listing", e)
                    self._stop.wait(0.5)

    def _reconcile(self, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        with self.lock:
            run = self.runs.get(uid)
            if run is not None:
                run.pod = pod
        terminal = (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")
        if pod["metadata"].get("deletionTimestamp"):
            if run is not None and run.proc is not None and run.proc.poll() is None:
                if not run.stop.is_set():
                    run.stop.set()  # the runner thread terminates it and removes the object
            elif run is None or run.thread is None or not run.thread.is_alive():
                self._remove(pod)
            return
        if run is None and not terminal:
            self._start(pod)

    def _deleted(self, pod: dict[str, Any]) -> None:
        with self.lock:
            run = self.runs.pop(pod["metadata"]["uid"], None)
        if run is not None:
            run.stop.set()
            self._terminate(run, 0)

    # -- running a Pod --------------------------------------------------------------------------------
    def _start(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        d = self.dir / "pods" / meta["namespace"] / f"{meta['name']}-{meta['uid'][:8]}"
        d.mkdir(parents=True, exist_ok=True)
        run = PodRun(pod, d)
        with self.lock:
            self.runs[meta["uid"]] = run
        run.thread = threading.Thread(target=self._run_pod, args=(run,), name=f"pod-{meta['name']}", daemon=True)
        run.thread.start()

    def _run_pod(self, run: PodRun) -> None:
        pod = run.pod
        spec = pod["spec"]
        container = spec["containers"][0]
        try:
            mounts = self._volumes(pod, run.dir)
            argv, env = self._command(pod, container, mounts, run.dir)
        except Exception as e:  # e.g. a Secret that does not exist: the kubelet reports, the Pod waits
            log.warning("kubelet: %s cannot start: %s", run.key, e)
            self._patch_status(pod, {"phase": "Pending", "containerStatuses": [self._cstatus(
                container, 0, {"waiting": {"reason": "CreateContainerConfigError", "message": str(e)[:500]}})]})
            self._wait_for_deletion(run)
            return
        restarts, policy, started_at = 0, spec.get("restartPolicy", "Always"), _now()
        last_state: dict[str, Any] = {}
        quick_failures = 0
        log_path = run.dir / f"{container['name']}.log"
        while True:
            started_at, t0 = _now(), time.monotonic()
            with open(log_path, "ab") as out:
                run.proc = subprocess.Popen(argv, env=env, cwd=str(ROOT), stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
            (run.dir / f"{container['name']}.pid").write_text(str(run.proc.pid))
            self._patch_status(pod, self._running_status(pod, container, restarts, started_at, last_state))
            while run.proc.poll() is None and not run.stop.wait(0.1):
                pass
            if run.stop.is_set():
                self._terminate(run, self._grace(run.pod))
            code = run.proc.wait()
            exit_code = 128 - code if code < 0 else code
            oom = code == -9 and not run.killed_by_us
            reason = "Completed" if exit_code == 0 else ("OOMKilled" if oom else "Error")
            term = {"exitCode": exit_code, "reason": reason, "startedAt": started_at, "finishedAt": _now(),
                    "containerID": f"process://{run.proc.pid}"}
            again = not run.stop.is_set() and (policy == "Always" or (policy == "OnFailure" and exit_code != 0))
            if again:
                restarts += 1
                last_state = {"terminated": term}
                quick_failures = quick_failures + 1 if time.monotonic() - t0 < 1 else 0
                # A real kubelet backs off from 10 s to 5 min; here 0.5 s, doubling only while the container
                # dies within a second of its start (a crash loop), so kill tests stay quick.
                self._patch_status(pod, {"containerStatuses": [self._cstatus(
                    container, restarts - 1, {"waiting": {"reason": "CrashLoopBackOff"}}, {"terminated": term})]})
                if run.stop.wait(min(10.0, 0.5 * 2 ** max(0, quick_failures - 1))):
                    break
                continue
            break
        phase = "Succeeded" if exit_code == 0 else "Failed"
        self._patch_status(run.pod, {
            "phase": phase,
            "conditions": [self._cond("Ready", "False", "PodCompleted"),
                           self._cond("ContainersReady", "False", "PodCompleted")],
            "containerStatuses": [self._cstatus(container, restarts, {"terminated": term}, last_state, ready=False)]})
        if run.stop.is_set() or run.pod["metadata"].get("deletionTimestamp"):
            self._remove(run.pod)
        else:
            self._wait_for_deletion(run)

    def _wait_for_deletion(self, run: PodRun) -> None:
        """A finished Pod stays until its owner or the GC deletes it; then the object is removed here."""
        while not self._stop.is_set():
            if run.stop.wait(0.5) or run.pod["metadata"].get("deletionTimestamp"):
                self._remove(run.pod)
                return

    def _terminate(self, run: PodRun, grace: float) -> None:
        proc = run.proc
        if proc is None or proc.poll() is not None:
            return
        run.killed_by_us = True
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    @staticmethod
    def _grace(pod: dict[str, Any]) -> float:
        meta = pod["metadata"]
        return float(meta.get("deletionGracePeriodSeconds", pod["spec"].get("terminationGracePeriodSeconds", 30)))

    def _remove(self, pod: dict[str, Any]) -> None:
        from kubernetes.client.exceptions import ApiException

        meta = pod["metadata"]
        with self.lock:
            self.runs.pop(meta["uid"], None)
        try:
            # With a body the API server reads the options from it alone: the grace period goes in there.
            self.core.delete_namespaced_pod(meta["name"], meta["namespace"], _preload_content=False,
                                            body={"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}})
        except ApiException as e:
            if e.status not in (404, 409):
                log.warning("kubelet: removing %s/%s: %s", meta["namespace"], meta["name"], e.status)

    # -- status ---------------------------------------------------------------------------------------
    @staticmethod
    def _cond(kind: str, status: str, reason: str | None = None) -> dict[str, Any]:
        c = {"type": kind, "status": status, "lastTransitionTime": _now(), "lastProbeTime": None}
        if reason:
            c["reason"] = reason
        return c

    @staticmethod
    def _cstatus(container: dict[str, Any], restarts: int, state: dict[str, Any], last: dict[str, Any] | None = None,
                 ready: bool = False) -> dict[str, Any]:
        return {"name": container["name"], "image": container.get("image", ""), "imageID": "", "ready": ready,
                "started": "running" in state, "restartCount": restarts, "state": state, "lastState": last or {}}

    def _running_status(self, pod: dict[str, Any], container: dict[str, Any], restarts: int, started: str,
                        last: dict[str, Any]) -> dict[str, Any]:
        return {
            "phase": "Running", "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}], "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}], "startTime": (pod.get("status") or {}).get("startTime") or started,
            "conditions": [self._cond(k, "True") for k in ("PodReadyToStartContainers", "Initialized",
                                                            "ContainersReady", "Ready")],
            "containerStatuses": [self._cstatus(container, restarts, {"running": {"startedAt": started}}, last,
                                                ready=True)]}

    def _patch_status(self, pod: dict[str, Any], status: dict[str, Any]) -> None:
        from kubernetes.client.exceptions import ApiException

        meta = pod["metadata"]
        for attempt in range(20):
            try:
                self.core.patch_namespaced_pod_status(meta["name"], meta["namespace"], {"status": status},
                                                      _content_type=STRATEGIC, _preload_content=False)
                return
            except ApiException as e:
                if e.status == 404:
                    return
                log.info("kubelet: status of %s/%s: %s; retrying", meta["namespace"], meta["name"], e.status)
            except Exception as e:  # the API server restarting
                log.info("kubelet: status of %s/%s: %s; retrying", meta["namespace"], meta["name"], e)
            time.sleep(min(5.0, 0.2 * 2 ** attempt))

    # -- volumes, env and the command ------------------------------------------------------------------
    def _volumes(self, pod: dict[str, Any], d: Path) -> dict[str, Path]:
        """{volume name: local folder}."""
        ns = pod["metadata"]["namespace"]
        out: dict[str, Path] = {}
        for vol in pod["spec"].get("volumes") or []:
            name = vol["name"]
            target = d / "volumes" / name
            if "hostPath" in vol:
                target = Path(vol["hostPath"]["path"])
                target.mkdir(parents=True, exist_ok=True)
            elif "persistentVolumeClaim" in vol:
                target = self.dir / "pvcs" / ns / vol["persistentVolumeClaim"]["claimName"]
                target.mkdir(parents=True, exist_ok=True)
            else:
                target.mkdir(parents=True, exist_ok=True)
                if "configMap" in vol:
                    self._write_items(target, self._configmap(ns, vol["configMap"]["name"]), vol["configMap"])
                elif "secret" in vol:
                    self._write_items(target, self._secret(ns, vol["secret"]["secretName"]), vol["secret"])
                elif "projected" in vol:
                    for source in vol["projected"].get("sources") or []:
                        self._projected(pod, source, target)
            out[name] = target
        return out

    @staticmethod
    def _write_items(target: Path, data: dict[str, str], source: dict[str, Any]) -> None:
        items = source.get("items") or [{"key": k, "path": k} for k in data]
        for item in items:
            if item["key"] in data:
                path = target / item["path"]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(data[item["key"]])

    def _projected(self, pod: dict[str, Any], source: dict[str, Any], target: Path) -> None:
        meta = pod["metadata"]
        if "serviceAccountToken" in source:
            sat = source["serviceAccountToken"]
            spec: dict[str, Any] = {"expirationSeconds": sat.get("expirationSeconds", 3607),
                                    "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": meta["name"],
                                                       "uid": meta["uid"]}}
            if sat.get("audience"):
                spec["audiences"] = [sat["audience"]]
            resp = self.core.create_namespaced_service_account_token(
                pod["spec"].get("serviceAccountName", "default"), meta["namespace"], {"spec": spec},
                _preload_content=False)
            (target / sat["path"]).write_text(json.loads(resp.data)["status"]["token"])
        elif "configMap" in source:
            try:
                data = self._configmap(meta["namespace"], source["configMap"]["name"], wait=15)
            except LookupError:
                data = {"ca.crt": self.ca_file.read_text()}  # kube-root-ca.crt not published yet
            self._write_items(target, data, source["configMap"])
        elif "downwardAPI" in source:
            for item in source["downwardAPI"].get("items") or []:
                if "fieldRef" in item:
                    (target / item["path"]).write_text(str(self._field(pod, item["fieldRef"]["fieldPath"])))

    def _configmap(self, ns: str, name: str, wait: float = 0) -> dict[str, str]:
        from kubernetes.client.exceptions import ApiException

        deadline = time.monotonic() + wait
        while True:
            try:
                return json.loads(self.core.read_namespaced_config_map(name, ns, _preload_content=False).data).get(
                    "data") or {}
            except ApiException as e:
                if e.status != 404 or time.monotonic() > deadline:
                    raise LookupError(f"ConfigMap {ns}/{name}: {e.status}") from e
                time.sleep(0.3)

    def _secret(self, ns: str, name: str) -> dict[str, str]:
        from kubernetes.client.exceptions import ApiException

        try:
            raw = json.loads(self.core.read_namespaced_secret(name, ns, _preload_content=False).data).get("data") or {}
        except ApiException as e:
            raise LookupError(f"Secret {ns}/{name}: {e.status}") from e
        return {k: base64.b64decode(v).decode() for k, v in raw.items()}

    @staticmethod
    def _field(pod: dict[str, Any], path: str) -> Any:
        meta, spec = pod["metadata"], pod["spec"]
        return {"metadata.name": meta["name"], "metadata.namespace": meta["namespace"], "metadata.uid": meta["uid"],
                "spec.nodeName": spec.get("nodeName"), "spec.serviceAccountName": spec.get("serviceAccountName"),
                "status.podIP": "127.0.0.1", "status.hostIP": "127.0.0.1"}.get(path, "")

    def _command(self, pod: dict[str, Any], container: dict[str, Any], volumes: dict[str, Path],
                 d: Path) -> tuple[list[str], dict[str, str]]:
        mounts = sorted(((m["mountPath"].rstrip("/") or "/", volumes[m["name"]] / m.get("subPath", ""))
                         for m in container.get("volumeMounts") or [] if m["name"] in volumes),
                        key=lambda m: -len(m[0]))
        rewrite = _path_rewriter(mounts)
        ns = pod["metadata"]["namespace"]
        env = {"PATH": f"{Path(self.python).parent}:/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
               "HOSTNAME": pod["metadata"]["name"]}
        for source in container.get("envFrom") or []:
            prefix = source.get("prefix", "")
            if "secretRef" in source:
                env.update({prefix + k: v for k, v in self._secret(ns, source["secretRef"]["name"]).items()})
            if "configMapRef" in source:
                env.update({prefix + k: v for k, v in self._configmap(ns, source["configMapRef"]["name"]).items()})
        for e in container.get("env") or []:
            if "value" in e:
                env[e["name"]] = rewrite(e["value"])
                continue
            ref = e.get("valueFrom") or {}
            if "secretKeyRef" in ref:
                env[e["name"]] = self._secret(ns, ref["secretKeyRef"]["name"])[ref["secretKeyRef"]["key"]]
            elif "configMapKeyRef" in ref:
                env[e["name"]] = self._configmap(ns, ref["configMapKeyRef"]["name"])[ref["configMapKeyRef"]["key"]]
            elif "fieldRef" in ref:
                env[e["name"]] = str(self._field(pod, ref["fieldRef"]["fieldPath"]))
        sa_dir = dict(mounts).get(SA_MOUNT)
        if sa_dir is not None and (sa_dir / "token").exists():
            from localkube.cluster import ControlPlane  # the kubeconfig format lives there

            doc = ControlPlane(self.dir, Path(".")).kubeconfig_doc("", "pod", token_file=sa_dir / "token")
            doc["clusters"][0]["cluster"].update(server=self.server,
                                                 **{"certificate-authority": str(sa_dir / "ca.crt")})
            (d / "kubeconfig").write_text(json.dumps(doc))
            env["KUBECONFIG"] = str(d / "kubeconfig")
        command = list(container.get("command") or [])
        if not command:
            image = container.get("image", "")
            kind = next((k for k in self.entrypoints if k in image.rsplit("/", 1)[-1]), None)
            if kind is None:
                raise LookupError(f"image {image!r}: no command and no Dockerfile entrypoint known for it")
            command = list(self.entrypoints[kind])
            if command[:2] == ["tini", "--"]:  # the image's init; a process here is no PID 1
                command = command[2:]
        argv = [rewrite(a) for a in command + list(container.get("args") or [])]
        if argv and argv[0] in ("python", "python3"):
            argv[0] = self.python
        return argv, env

    # -- logs -----------------------------------------------------------------------------------------
    def _container_logs(self, req: http.server.BaseHTTPRequestHandler) -> None:
        url = urllib.parse.urlsplit(req.path)
        parts = url.path.strip("/").split("/")
        query = urllib.parse.parse_qs(url.query)
        if len(parts) != 4 or parts[0] != "containerLogs":
            req.send_error(404)
            return
        _, ns, pod, container = parts
        with self.lock:
            found = [r for r in self.runs.values() if r.key == f"{ns}/{pod}"]
        pod_dirs = sorted((self.dir / "pods" / ns).glob(f"{pod}-*"), key=lambda p: p.stat().st_mtime)
        path = (found[0].dir if found else (pod_dirs[-1] if pod_dirs else None))
        path = path / f"{container}.log" if path else None
        if path is None or not path.exists():
            req.send_error(404, f"no logs for {ns}/{pod}/{container}")
            return
        req.send_response(200)
        req.send_header("Content-Type", "text/plain")
        req.end_headers()
        data = path.read_bytes()
        if "tailLines" in query:
            n = int(query["tailLines"][0])
            data = b"".join(data.splitlines(keepends=True)[-n:]) if n > 0 else b""
        req.wfile.write(data)
        if query.get("follow", ["false"])[0] != "true" or not found:
            return
        offset = path.stat().st_size
        with open(path, "rb") as f:
            f.seek(offset)
            while found[0].proc is not None and found[0].proc.poll() is None:
                chunk = f.read()
                if chunk:
                    req.wfile.write(chunk)
                    req.wfile.flush()
                else:
                    time.sleep(0.2)
            req.wfile.write(f.read())


def _path_rewriter(mounts: list[tuple[str, Path]]) -> Callable[[str], str]:
    """An arg or env value that is a mount path, or lies under one, points into the folder standing in for it.
    Only whole values: a path inside `K=/tmp/x` belongs to the host (tests pass their own folders so)."""
    def rewrite(value: str) -> str:
        for mount, local in mounts:
            if value == mount or value.startswith(mount + "/"):
                return str(local) + value[len(mount):]
        return value

    return rewrite
