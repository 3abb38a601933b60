"""A small Kubernetes API server and kubelet for tests, spoken to by the real `kubernetes` client over HTTP.

API server: Jobs (create/get/list/patch/delete with propagation, watch), Pods and their logs, ConfigMaps,
Events, Secrets, Leases; label selectors; resourceVersion conflicts (409), AlreadyExists (409), 410 Gone
for watches older than the retained history, 422 for bodies that kubernetes-validate --strict rejects
(so the controller cannot send what a real API server would refuse). Fault hooks: injected error
statuses, latency, dropped watch connections, history compaction.

Kubelet: turns each Job into local processes (the container's command, args and env, `python` mapped to
this interpreter), writes back Pod and Job status: Complete, Failed with BackoffLimitExceeded,
PodFailurePolicy (FailJob on exit codes), DeadlineExceeded, OOMKilled (a SIGKILLed process), and
foreground deletion (SIGTERM, grace period, then the Job disappears).
"""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import kubernetes_validate

ROOT = Path(__file__).resolve().parent.parent
KINDS = {"jobs": ("batch/v1", "Job"), "pods": ("v1", "Pod"), "configmaps": ("v1", "ConfigMap"),
         "events": ("v1", "Event"), "secrets": ("v1", "Secret"), "leases": ("coordination.k8s.io/v1", "Lease")}
PATH = re.compile(r"^/(?:api/v1|apis/(?P<group>[^/]+)/(?P<version>[^/]+))/namespaces/(?P<ns>[^/]+)/(?P<plural>[a-z]+)"
                  r"(?:/(?P<name>[^/]+)(?:/(?P<sub>[a-z]+))?)?$")
HISTORY = 2000


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _matches(labels: dict, selector: str | None) -> bool:
    if not selector:
        return True
    for term in selector.split(","):
        if "!=" in term:
            k, v = term.split("!=")
            if labels.get(k) == v:
                return False
        elif "=" in term:
            k, v = term.split("=", 1)
            if labels.get(k.rstrip("=")) != v:
                return False
        elif labels.get(term) is None:
            return False
    return True


def _merge(a: Any, b: Any) -> Any:
    if isinstance(a, dict) and isinstance(b, dict):
        out = dict(a)
        for k, v in b.items():
            out[k] = None if v is None else _merge(a.get(k), v)
        return {k: v for k, v in out.items() if v is not None}
    return copy.deepcopy(b)


@dataclass
class Fault:
    status: int
    method: str | None = None
    path: str | None = None
    count: int = 1


@dataclass
class Cluster:
    """The API server's state. Everything under one lock; watchers wait on `changed`."""

    validate_version: str = "1.31"
    objects: dict[tuple[str, str, str], dict] = field(default_factory=dict)
    history: list[tuple[int, str, str, dict]] = field(default_factory=list)
    rv: int = 0
    oldest_rv: int = 0
    faults: list[Fault] = field(default_factory=list)
    latency: float = 0.0
    requests: list[tuple[str, str]] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    watch_epoch: int = 0
    created: list[tuple[str, str, float]] = field(default_factory=list)
    """(plural, name, time) of every successful create, kept across compaction."""

    def __post_init__(self) -> None:
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)

    # -- state changes (also used by the kubelet) -------------------------------------------------
    def _record(self, kind: str, plural: str, obj: dict) -> None:
        self.history.append((self.rv, kind, plural, copy.deepcopy(obj)))
        if len(self.history) > HISTORY:
            self.oldest_rv = self.history.pop(0)[0]
        self.changed.notify_all()

    def put(self, plural: str, obj: dict, event: str) -> dict:
        with self.lock:
            self.rv += 1
            obj["metadata"]["resourceVersion"] = str(self.rv)
            key = (plural, obj["metadata"]["namespace"], obj["metadata"]["name"])
            if event == "DELETED":
                self.objects.pop(key, None)
            else:
                self.objects[key] = obj
            self._record(event, plural, obj)
            return obj

    def get(self, plural: str, ns: str, name: str) -> dict | None:
        with self.lock:
            obj = self.objects.get((plural, ns, name))
            return copy.deepcopy(obj) if obj else None

    def items(self, plural: str, ns: str | None = None, selector: str | None = None) -> list[dict]:
        with self.lock:
            return [copy.deepcopy(o) for (p, n, _), o in sorted(self.objects.items())
                    if p == plural and (ns is None or n == ns)
                    and _matches(o["metadata"].get("labels") or {}, selector)]

    def compact(self) -> None:
        """Forget watch history: a watch from an older resourceVersion gets 410 Gone."""
        with self.lock:
            self.history.clear()
            self.oldest_rv = self.rv

    def drop_watches(self) -> None:
        with self.lock:
            self.watch_epoch += 1
            self.changed.notify_all()

    def fail(self, status: int, method: str | None = None, path: str | None = None, count: int = 1) -> None:
        with self.lock:
            self.faults.append(Fault(status, method, path, count))

    def _fault(self, method: str, path: str) -> int | None:
        with self.lock:
            for f in self.faults:
                if (f.method in (None, method)) and (f.path is None or re.search(f.path, path)) and f.count > 0:
                    f.count -= 1
                    return f.status
        return None

    def jobs_created(self) -> list[str]:
        with self.lock:
            return [name for plural, name, _ in self.created if plural == "jobs"]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    cluster: Cluster

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, code: int, body: Any, content_type: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _status(self, code: int, reason: str, message: str) -> None:
        self._send(code, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                          "message": message, "reason": reason, "code": code})

    def _body(self) -> Any:
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n)) if n else None

    def _route(self, method: str) -> None:
        c = self.cluster
        url = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        with c.lock:
            c.requests.append((method, url.path))
        if c.latency:
            time.sleep(c.latency)
        body = self._body() if method in ("POST", "PUT", "PATCH", "DELETE") else None
        fault = c._fault(method, url.path)
        if fault:
            return self._status(fault, "InternalError" if fault >= 500 else "Injected", "injected fault")
        m = PATH.match(url.path)
        if not m or m["plural"] not in KINDS:
            return self._status(404, "NotFound", f"no such path {url.path}")
        plural, ns, name, sub = m["plural"], m["ns"], m["name"], m["sub"]
        api_version, kind = KINDS[plural]
        if method == "GET" and name is None:
            if q.get("watch") in ("true", "1"):
                return self._watch(plural, ns, q)
            items = c.items(plural, ns, q.get("labelSelector"))
            return self._send(200, {"apiVersion": api_version, "kind": f"{kind}List",
                                    "metadata": {"resourceVersion": str(c.rv)}, "items": items})
        if method == "GET" and sub == "log":
            return self._log(ns, name, q)
        if method == "POST" and name is None:
            return self._create(plural, ns, api_version, kind, body)
        obj = c.get(plural, ns, name)
        if obj is None:
            return self._status(404, "NotFound", f'{plural} "{name}" not found')
        if method == "GET":
            return self._send(200, obj)
        if method == "PUT":
            return self._replace(plural, obj, body)
        if method == "PATCH":
            return self._replace(plural, obj, _merge(obj, body), patch=True)
        if method == "DELETE":
            policy = q.get("propagationPolicy") or (body or {}).get("propagationPolicy") or "Background"
            if plural == "jobs" and policy == "Foreground":
                obj["metadata"]["deletionTimestamp"] = _now()
                obj["metadata"]["finalizers"] = ["foregroundDeletion"]
                c.put(plural, obj, "MODIFIED")
            else:
                c.put(plural, obj, "DELETED")
            return self._send(200, obj)
        return self._status(405, "MethodNotAllowed", method)

    def _invalid(self, obj: dict) -> str | None:
        try:
            kubernetes_validate.validate(obj, self.cluster.validate_version, strict=True)
        except kubernetes_validate.ValidationError as e:
            return str(e).splitlines()[0] + f" (at {'.'.join(str(p) for p in e.path)})"
        return None

    def _create(self, plural: str, ns: str, api_version: str, kind: str, body: Any) -> None:
        c = self.cluster
        problem = self._invalid(body) if isinstance(body, dict) else "body is not an object"
        if problem or body.get("kind") != kind:
            with c.lock:
                c.rejected.append((plural, problem or f"kind {body.get('kind')} != {kind}"))
            return self._status(422, "Invalid", f"{kind} is invalid: {problem}")
        meta = body.setdefault("metadata", {})
        meta.setdefault("namespace", ns)
        if c.get(plural, ns, meta["name"]) is not None:
            return self._status(409, "AlreadyExists", f'{plural} "{meta["name"]}" already exists')
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now())
        if plural == "jobs":
            labels = body["spec"]["template"].setdefault("metadata", {}).setdefault("labels", {})
            labels.update({"job-name": meta["name"], "batch.kubernetes.io/job-name": meta["name"]})
            body["status"] = {}
        with c.lock:
            c.created.append((plural, meta["name"], time.time()))
        self._send(201, c.put(plural, body, "ADDED"))

    def _replace(self, plural: str, old: dict, new: dict, patch: bool = False) -> None:
        c = self.cluster
        problem = self._invalid(new)
        if problem:
            with c.lock:
                c.rejected.append((plural, problem))
            return self._status(422, "Invalid", problem)
        with c.lock:
            current = c.get(plural, old["metadata"]["namespace"], old["metadata"]["name"])
            wanted = (new.get("metadata") or {}).get("resourceVersion")
            if current is None:
                return self._status(404, "NotFound", "gone")
            if not patch and wanted and wanted != current["metadata"]["resourceVersion"]:
                return self._status(409, "Conflict", "the object has been modified; please apply your changes "
                                                     "to the latest version and try again")
            for k in ("uid", "creationTimestamp", "namespace"):
                new["metadata"][k] = current["metadata"][k]
            if "status" in current and plural == "jobs":
                new["status"] = current["status"]
            self._send(200, c.put(plural, new, "MODIFIED"))

    def _log(self, ns: str, name: str, q: dict) -> None:
        pod = self.cluster.get("pods", ns, name)
        path = ((pod or {}).get("metadata", {}).get("annotations") or {}).get("fake/log")
        text = Path(path).read_text(errors="replace") if path and Path(path).exists() else ""
        if "tailLines" in q:
            text = "\n".join(text.splitlines()[-int(q["tailLines"]):])
        self._send(200, text.encode(), "text/plain")

    def _watch(self, plural: str, ns: str, q: dict) -> None:
        c = self.cluster
        since = int(q.get("resourceVersion") or 0)
        deadline = time.monotonic() + float(q.get("timeoutSeconds") or 300)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def chunk(obj: dict) -> None:
            data = (json.dumps(obj) + "\n").encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        try:
            with c.lock:
                epoch = c.watch_epoch
                if since and since < c.oldest_rv:
                    chunk({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                                       "message": "too old resource version", "reason": "Expired",
                                                       "code": 410}})
                    self.wfile.write(b"0\r\n\r\n")
                    return
            while time.monotonic() < deadline:
                with c.lock:
                    if c.watch_epoch != epoch:
                        self.close_connection = True
                        return  # dropped: no terminating chunk, the client sees a broken stream
                    pending = [(rv, kind, o) for rv, kind, p, o in c.history
                               if rv > since and p == plural and o["metadata"]["namespace"] == ns
                               and _matches(o["metadata"].get("labels") or {}, q.get("labelSelector"))]
                    if not pending:
                        c.changed.wait(timeout=min(0.5, max(0.0, deadline - time.monotonic())))
                        continue
                for rv, kind, o in pending:
                    chunk({"type": kind, "object": o})
                    since = rv
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_PUT(self) -> None:
        self._route("PUT")

    def do_PATCH(self) -> None:
        self._route("PATCH")

    def do_DELETE(self) -> None:
        self._route("DELETE")


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients dropping connections (a killed controller) are expected here


class FakeApiServer:
    def __init__(self, cluster: Cluster | None = None):
        self.cluster = cluster or Cluster()
        handler = type("Handler", (_Handler,), {"cluster": self.cluster})
        self.httpd = _QuietServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "FakeApiServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.cluster.drop_watches()
        self.httpd.shutdown()
        self.httpd.server_close()

    def kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        import yaml

        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "fake-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}],
        }))
        return path


@dataclass
class _Run:
    proc: subprocess.Popen
    pod: str
    started: float


class Kubelet:
    """Runs each Job's container as a local process and writes back Pod and Job status."""

    def __init__(self, cluster: Cluster, workdir: Path, poll: float = 0.05, base_env: dict | None = None):
        self.c = cluster
        self.workdir = workdir
        self.poll = poll
        self.base_env = dict(os.environ if base_env is None else base_env)
        self.runs: dict[tuple[str, str], _Run] = {}
        self.resources_seen: dict[str, dict] = {}
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True, name="kubelet")

    def __enter__(self) -> "Kubelet":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self.thread.join(5)
        for run in self.runs.values():
            if run.proc.poll() is None:
                os.killpg(run.proc.pid, signal.SIGKILL)

    def _loop(self) -> None:
        while not self._stop.wait(self.poll):
            live = {(j["metadata"]["namespace"], j["metadata"]["name"]) for j in self.c.items("jobs")}
            for key, run in list(self.runs.items()):
                if key not in live and run.proc.poll() is None:  # deleted in the background: kill its pod
                    os.killpg(run.proc.pid, signal.SIGKILL)
            for job in self.c.items("jobs"):
                try:
                    self._sync(job)
                except Exception as e:  # keep the kubelet alive; the test sees the effect
                    print(f"kubelet: {type(e).__name__}: {e}", file=sys.stderr)

    def _env(self, container: dict, ns: str) -> dict[str, str]:
        env = dict(self.base_env)
        for e in container.get("env") or []:
            if "value" in e:
                env[e["name"]] = e["value"]
            elif "valueFrom" in e:
                ref = e["valueFrom"]["secretKeyRef"]
                secret = self.c.get("secrets", ns, ref["name"])
                if secret and ref["key"] in (secret.get("stringData") or {}):
                    env[e["name"]] = secret["stringData"][ref["key"]]
        env["HOME"] = str(self.workdir)
        env.pop("KERAS_HOME", None)
        return env

    def _start(self, job: dict, attempt: int) -> None:
        ns, name = job["metadata"]["namespace"], job["metadata"]["name"]
        container = job["spec"]["template"]["spec"]["containers"][0]
        self.resources_seen[name] = container.get("resources", {})
        argv = [*(container.get("command") or []), *(container.get("args") or [])]
        if argv and argv[0] in ("python", "python3"):
            argv[0] = sys.executable
        pod_name = f"{name}-{attempt}{uuid.uuid4().hex[:5]}"
        log_path = self.workdir / f"{pod_name}.log"
        with open(log_path, "wb") as logf:
            proc = subprocess.Popen(argv, cwd=ROOT, env=self._env(container, ns), stdout=logf,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        labels = dict(job["spec"]["template"]["metadata"]["labels"])
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": pod_name, "namespace": ns, "labels": labels, "uid": str(uuid.uuid4()),
                            "creationTimestamp": _now(), "annotations": {"fake/log": str(log_path)}},
               "spec": job["spec"]["template"]["spec"], "status": {"phase": "Running", "startTime": _now()}}
        self.c.put("pods", pod, "ADDED")
        self.runs[(ns, name)] = _Run(proc, pod_name, time.monotonic())
        status = job.get("status") or {}
        status.update(active=1, startTime=status.get("startTime") or _now())
        self._set_status(job, status)

    def _set_status(self, job: dict, status: dict) -> None:
        with self.c.lock:
            current = self.c.get("jobs", job["metadata"]["namespace"], job["metadata"]["name"])
            if current is None:
                return
            current["status"] = status
            self.c.put("jobs", current, "MODIFIED")

    def _finish_pod(self, job: dict, run: _Run, code: int) -> tuple[int, str]:
        ns = job["metadata"]["namespace"]
        reason = "Completed" if code == 0 else ("OOMKilled" if code in (-9, 137) else "Error")
        exit_code = 128 - code if code < 0 else code
        pod = self.c.get("pods", ns, run.pod)
        if pod:
            pod["status"] = {"phase": "Succeeded" if code == 0 else "Failed", "containerStatuses": [
                {"name": "trainer", "ready": False, "restartCount": 0, "image": "x", "imageID": "x",
                 "state": {"terminated": {"exitCode": exit_code, "reason": reason, "finishedAt": _now()}}}]}
            self.c.put("pods", pod, "MODIFIED")
        return exit_code, reason

    def _sync(self, job: dict) -> None:
        ns, name = job["metadata"]["namespace"], job["metadata"]["name"]
        key = (ns, name)
        status = job.get("status") or {}
        run = self.runs.get(key)
        if job["metadata"].get("deletionTimestamp"):
            return self._delete(job, run)
        if any(cnd.get("status") == "True" for cnd in status.get("conditions") or []):
            return
        if run is None:
            return self._start(job, 0)
        code = run.proc.poll()
        deadline = job["spec"].get("activeDeadlineSeconds")
        if code is None and deadline and time.monotonic() - run.started > deadline:
            os.killpg(run.proc.pid, signal.SIGKILL)
            run.proc.wait()
            self._finish_pod(job, run, -9)
            return self._fail(job, status, "DeadlineExceeded", "Job was active longer than specified deadline")
        if code is None:
            return
        exit_code, _ = self._finish_pod(job, run, code)
        if code == 0:
            status.update(active=0, succeeded=1, completionTime=_now(),
                          conditions=[{"type": "Complete", "status": "True", "lastTransitionTime": _now()}])
            return self._set_status(job, status)
        status["failed"] = status.get("failed", 0) + 1
        for rule in (job["spec"].get("podFailurePolicy") or {}).get("rules", []):
            codes = (rule.get("onExitCodes") or {}).get("values", [])
            if rule["action"] == "FailJob" and exit_code in codes:
                return self._fail(job, status, "PodFailurePolicy",
                                  f"Container trainer for pod {ns}/{run.pod} failed with exit code {exit_code} "
                                  "matching FailJob rule at index 0")
        if status["failed"] > job["spec"].get("backoffLimit", 6):
            return self._fail(job, status, "BackoffLimitExceeded", "Job has reached the specified backoff limit")
        self._set_status(job, status)
        self._start(job, status["failed"])

    def _fail(self, job: dict, status: dict, reason: str, message: str) -> None:
        status.update(active=0, conditions=[{"type": "Failed", "status": "True", "reason": reason,
                                             "message": message, "lastTransitionTime": _now()}])
        self._set_status(job, status)

    def _delete(self, job: dict, run: _Run | None) -> None:
        if run is not None and run.proc.poll() is None:
            os.killpg(run.proc.pid, signal.SIGTERM)
            grace = job["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
            try:
                run.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                os.killpg(run.proc.pid, signal.SIGKILL)
                run.proc.wait()
            self._finish_pod(job, run, run.proc.returncode)
        current = self.c.get("jobs", job["metadata"]["namespace"], job["metadata"]["name"])
        if current is not None:
            self.c.put("jobs", current, "DELETED")
