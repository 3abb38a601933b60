"""The Kubernetes side: trials as batch/v1 Jobs, Events and a status ConfigMap, and a Lease.

KubernetesLauncher is the ProcessLauncher's twin behind the Launcher protocol. Jobs have deterministic
names (<release>-t<tid>), so an AlreadyExists after a restart means the Job is ours. Completion is
watch-driven: a background thread watches the search's Jobs (label selector), re-lists on 410 Gone or
a dropped watch, and re-lists every resync period to heal anything missed; wait() blocks on what it
finds. Everything is sent as plain dicts, so what the controller sends is exactly what is validated.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping, Sequence

from controller.errors import ConfigError, PermanentError, TemporaryError
from controller.launcher import TrialExit

log = logging.getLogger(__name__)

APP = "cifar-hpo"
COLLECTED = "cifar-hpo.io/collected"
EXIT_BAD_INPUT = 3  # trainer/__main__.py: bad parameters or data spec; retrying cannot help
# The client would send a dict patch as a JSON Patch (its first JSON content type), which a real API server
# refuses: every patch here is a merge patch of a small dict.
MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True)
class KubeSettings:
    namespace: str = "default"
    release: str = "cifar-hpo"
    """Prefixes Job names (<release>-t<tid>): the chart passes its full name."""
    instance: str | None = None
    """The app.kubernetes.io/instance label (the Helm release name); null: `release`."""
    image: str = "cifar-hpo-trainer:latest"
    image_pull_policy: str = "IfNotPresent"
    image_pull_secrets: list[str] = field(default_factory=list)
    gpu_resource: str = "nvidia.com/gpu"
    gpu_count: int = 1
    """Accelerators per trial; 0 for CPU-only clusters."""
    requests: dict[str, str] = field(default_factory=lambda: {"cpu": "4", "memory": "16Gi"})
    limits: dict[str, str] = field(default_factory=lambda: {"memory": "24Gi"})
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    affinity: dict[str, Any] = field(default_factory=dict)
    priority_class_name: str | None = None
    service_account_name: str | None = None
    """Trial pods' ServiceAccount (no API rights; its token is not mounted anyway)."""
    s3_secret_name: str | None = None
    """Secret with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY; null for workload identity (IRSA etc.)."""
    backoff_limit: int = 1
    active_deadline_seconds: int | None = 86400
    ttl_seconds_after_finished: int = 86400
    termination_grace_seconds: int = 60
    """Time the trainer gets after SIGTERM to write its 'stopped' result."""
    cache_size_limit: str = "20Gi"
    data_cache_claim: str | None = None
    """An existing PVC mounted as the trials' dataset cache (shared by the trials of a node or of all nodes)."""
    data_cache_host_path: str | None = None
    """A node folder as the dataset cache (hostPath: not allowed where Pod Security is `restricted`)."""
    owner_config_map: str | None = None
    """A ConfigMap of the release that owns the trial Jobs (uninstall garbage-collects them)."""
    status_config_map: str | None = None
    lease_name: str | None = None
    lease_seconds: int = 15
    resync_seconds: float = 60.0

    def validate(self) -> None:
        dns = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
        for key, value in (("kube.namespace", self.namespace), ("kube.release", self.release)):
            if not dns.fullmatch(value) or len(value) > 53:
                raise ConfigError(f"{key}: {value!r} must be a DNS-1123 label of at most 53 characters")
        if self.gpu_count < 0:
            raise ConfigError(f"kube.gpuCount: {self.gpu_count} must be >= 0 (0 for CPU-only clusters)")
        if self.backoff_limit < 0:
            raise ConfigError(f"kube.backoffLimit: {self.backoff_limit} must be >= 0")
        if self.lease_seconds < 5:
            raise ConfigError(f"kube.leaseSeconds: {self.lease_seconds} must be >= 5")
        if self.resync_seconds < 1:
            raise ConfigError(f"kube.resyncSeconds: {self.resync_seconds} must be >= 1")
        if self.image_pull_policy not in ("Always", "IfNotPresent", "Never"):
            raise ConfigError(f"kube.imagePullPolicy: {self.image_pull_policy!r} must be Always, IfNotPresent or Never")


def _labels(s: KubeSettings, search: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": APP, "app.kubernetes.io/instance": s.instance or s.release,
            "app.kubernetes.io/managed-by": "cifar-hpo-controller", "cifar-hpo.io/search": search}


def job_name(release: str, search: str, tid: int) -> str:
    """<release>-<search>-t<tid>: two searches of one release (or of two releases) never share a Job. A name
    over 63 characters keeps its head and a hash of the whole, so it stays unique and stable."""
    suffix = f"-t{tid}"
    name = f"{release}-{search}{suffix}"
    if len(name) <= 63:
        return name
    digest = hashlib.sha256(f"{release}/{search}".encode()).hexdigest()[:6]
    head = f"{release}-{search}"[:63 - len(suffix) - 7].rstrip("-")
    return f"{head}-{digest}{suffix}"


def selector(s: KubeSettings, search: str) -> str:
    return ",".join(f"{k}={v}" for k, v in _labels(s, search).items() if k != "app.kubernetes.io/managed-by") + \
        ",app.kubernetes.io/component=trial"


def build_job(s: KubeSettings, search: str, tid: int, argv: Sequence[str], env: Mapping[str, str],
              params: Mapping[str, Any], owner: Mapping[str, str] | None) -> dict[str, Any]:
    """The batch/v1 Job of one trial (a plain dict, exactly what is sent)."""
    labels = {**_labels(s, search), "app.kubernetes.io/component": "trial", "cifar-hpo.io/trial": str(tid)}
    resources: dict[str, dict[str, str]] = {"requests": dict(s.requests), "limits": dict(s.limits)}
    if s.gpu_count:
        resources["limits"][s.gpu_resource] = str(s.gpu_count)
        resources["requests"][s.gpu_resource] = str(s.gpu_count)
    env_list: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in sorted(env.items())]
    if s.s3_secret_name:
        env_list += [{"name": key, "valueFrom": {"secretKeyRef": {"name": s.s3_secret_name, "key": key}}}
                     for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")]
    env_list += [{"name": "HOME", "value": "/tmp"}, {"name": "KERAS_HOME", "value": "/cache/keras"},
                 {"name": "CIFAR_HPO_DATA_CACHE", "value": "/cache/datasets"}]
    container = {
        "name": "trainer",
        "image": s.image,
        "imagePullPolicy": s.image_pull_policy,
        "command": list(argv[:3]) if argv[:3] == ["python", "-m", "trainer"] else [argv[0]],
        "args": list(argv[3:]) if argv[:3] == ["python", "-m", "trainer"] else list(argv[1:]),
        "env": env_list,
        "resources": resources,
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
                            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, {"name": "cache", "mountPath": "/cache"}],
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": s.termination_grace_seconds,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": s.cache_size_limit}}, _cache_volume(s)],
    }
    for key, value in (("nodeSelector", s.node_selector), ("tolerations", s.tolerations), ("affinity", s.affinity),
                       ("priorityClassName", s.priority_class_name), ("serviceAccountName", s.service_account_name),
                       ("imagePullSecrets", [{"name": n} for n in s.image_pull_secrets])):
        if value:
            pod_spec[key] = value
    spec: dict[str, Any] = {
        "backoffLimit": s.backoff_limit,
        "ttlSecondsAfterFinished": s.ttl_seconds_after_finished,
        # Node disruption does not burn a retry; bad parameters fail the Job at once.
        "podFailurePolicy": {"rules": [
            {"action": "FailJob", "onExitCodes": {"containerName": "trainer", "operator": "In",
                                                  "values": [EXIT_BAD_INPUT]}},
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        ]},
        "template": {"metadata": {"labels": labels}, "spec": pod_spec},
    }
    if s.active_deadline_seconds:
        spec["activeDeadlineSeconds"] = s.active_deadline_seconds
    metadata: dict[str, Any] = {
        "name": job_name(s.release, search, tid),
        "namespace": s.namespace,
        "labels": labels,
        "annotations": {"cifar-hpo.io/params": json.dumps(params, sort_keys=True)},
    }
    if owner:
        metadata["ownerReferences"] = [{"apiVersion": owner["apiVersion"], "kind": owner["kind"],
                                        "name": owner["name"], "uid": owner["uid"], "blockOwnerDeletion": False}]
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": spec}


def _cache_volume(s: KubeSettings) -> dict[str, Any]:
    """/cache: the dataset cache (trainer/data.py fills it by checksum, safe when trials fill it at once)."""
    if s.data_cache_claim:
        return {"name": "cache", "persistentVolumeClaim": {"claimName": s.data_cache_claim}}
    if s.data_cache_host_path:
        return {"name": "cache", "hostPath": {"path": s.data_cache_host_path, "type": "DirectoryOrCreate"}}
    return {"name": "cache", "emptyDir": {"sizeLimit": s.cache_size_limit}}


def _finished(job: Mapping[str, Any]) -> str | None:
    """'Complete' or 'Failed' once the Job has ended, else None."""
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") in ("Complete", "Failed") and c.get("status") == "True":
            return c["type"]
    return None


def _condition_reason(job: Mapping[str, Any]) -> str | None:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Failed" and c.get("status") == "True":
            return f"{c.get('reason')}: {c.get('message', '')}".strip(": ")
    return None


def _tid(job: Mapping[str, Any]) -> int | None:
    value = ((job.get("metadata") or {}).get("labels") or {}).get("cifar-hpo.io/trial")
    return int(value) if value and value.isdigit() else None


def _api_error(e: Exception, what: str) -> Exception:
    status = getattr(e, "status", None)
    if status in (401, 403):
        return ConfigError(f"{what}: the API server refused ({status}); check the controller's RBAC Role")
    return TemporaryError(f"{what}: {getattr(e, 'reason', e)} ({status})")


class KubeClient:
    """The few API calls the controller makes, on raw dicts, over the official client."""

    def __init__(self, api_client: Any, namespace: str, identity: str = "cifar-hpo-controller"):
        from kubernetes import client

        self.api = api_client
        self.ns = namespace
        self.identity = identity[:128]
        """The field manager of what this controller creates: metadata.managedFields tells who made a Job."""
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.coord = client.CoordinationV1Api(api_client)

    @staticmethod
    def _json(resp: Any) -> dict[str, Any]:
        return json.loads(resp.data)

    def create_job(self, body: dict) -> bool:
        """False if the Job already exists."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            self.batch.create_namespaced_job(self.ns, body, field_manager=self.identity, _preload_content=False)
            return True
        except (ApiException, HTTPError) as e:
            if getattr(e, "status", None) == 409:
                return False
            raise _api_error(e, f"create Job {body['metadata']['name']}") from e

    def get_job(self, name: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return self._json(self.batch.read_namespaced_job(name, self.ns, _preload_content=False))
        except (ApiException, HTTPError) as e:
            if getattr(e, "status", None) == 404:
                return None
            raise _api_error(e, f"read Job {name}") from e

    def list_jobs(self, label_selector: str) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return self._json(self.batch.list_namespaced_job(self.ns, label_selector=label_selector,
                                                             _preload_content=False))
        except (ApiException, HTTPError) as e:
            raise _api_error(e, "list Jobs") from e

    def delete_job(self, name: str) -> None:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            # Foreground: the Job stays (deletionTimestamp set) until its pods are gone, so its DELETED
            # event means the trainer has had its grace period to write a 'stopped' result.
            self.batch.delete_namespaced_job(name, self.ns, propagation_policy="Foreground", _preload_content=False)
        except (ApiException, HTTPError) as e:
            if getattr(e, "status", None) != 404:
                raise _api_error(e, f"delete Job {name}") from e

    def annotate_job(self, name: str, annotations: dict[str, str]) -> None:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            self.batch.patch_namespaced_job(name, self.ns, {"metadata": {"annotations": annotations}},
                                            _content_type=MERGE_PATCH, _preload_content=False)
        except (ApiException, HTTPError) as e:
            if getattr(e, "status", None) != 404:
                raise _api_error(e, f"annotate Job {name}") from e

    def list_pods(self, label_selector: str) -> list[dict[str, Any]]:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return self._json(self.core.list_namespaced_pod(self.ns, label_selector=label_selector,
                                                            _preload_content=False))["items"]
        except (ApiException, HTTPError) as e:
            raise _api_error(e, "list pods") from e

    def pod_failure(self, job: str) -> tuple[int | None, str | None, str]:
        """(exit code, reason, log tail) of the Job's last pod."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            pods = self._json(self.core.list_namespaced_pod(self.ns, label_selector=f"job-name={job}",
                                                            _preload_content=False))["items"]
        except (ApiException, HTTPError) as e:
            raise _api_error(e, f"list pods of {job}") from e
        if not pods:
            return None, None, ""
        pod = max(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "")
        code = reason = None
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated")
            if term:
                code, reason = term.get("exitCode"), term.get("reason")
        if reason is None:
            reason = (pod.get("status") or {}).get("reason")
        try:
            tail = self.core.read_namespaced_pod_log(pod["metadata"]["name"], self.ns, tail_lines=60,
                                                     _preload_content=False).data.decode(errors="replace")
        except (ApiException, HTTPError):
            tail = ""
        return code, reason, tail

    def owner(self, config_map: str) -> dict[str, str]:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            cm = self._json(self.core.read_namespaced_config_map(config_map, self.ns, _preload_content=False))
        except (ApiException, HTTPError) as e:
            raise _api_error(e, f"read ConfigMap {config_map} (the trial Jobs' owner)") from e
        return {"apiVersion": "v1", "kind": "ConfigMap", "name": config_map, "uid": cm["metadata"]["uid"]}


class KubernetesLauncher:
    def __init__(self, kube: KubeClient, settings: KubeSettings, search: str,
                 params_of: Callable[[int], Mapping[str, Any]]):
        self.kube = kube
        self.s = settings
        self.search = search
        self.params_of = params_of
        self.selector = selector(settings, search)
        self.owner = kube.owner(settings.owner_config_map) if settings.owner_config_map else None
        self._tracked: set[int] = set()
        self._reported: set[int] = set()
        self._cancelled: set[int] = set()
        self._events: queue.Queue[tuple[str, dict]] = queue.Queue()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._resp: Any = None
        self._resp_lock = threading.Lock()
        self.watch_errors: list[int] = []
        """Codes of the ERROR events the Job watch received (410: history compacted)."""

    # -- Launcher ------------------------------------------------------------------------------------
    def launch(self, tid: int, argv: Sequence[str], env: Mapping[str, str]) -> None:
        body = build_job(self.s, self.search, tid, argv, env, self.params_of(tid), self.owner)
        name = body["metadata"]["name"]
        if self.kube.create_job(body):
            log.info("trial %d: created Job %s", tid, name)
        else:
            existing = self.kube.get_job(name) or {"metadata": {"labels": body["metadata"]["labels"]}}
            labels = existing["metadata"].get("labels") or {}
            if (labels.get("cifar-hpo.io/search"), labels.get("cifar-hpo.io/trial")) != (self.search, str(tid)):
                raise PermanentError(f"trial {tid}: Job {name} exists but belongs to search "
                                     f"{labels.get('cifar-hpo.io/search')!r}; delete it or use another release name")
            log.info("trial %d: Job %s already exists; adopting it", tid, name)
        self._tracked.add(tid)
        self._ensure_watch()

    def adopt(self, tids: Iterable[int]) -> set[int]:
        wanted = set(tids)
        found = set()
        for job in self.kube.list_jobs(self.selector)["items"]:
            tid = _tid(job)
            if tid is None:
                continue
            collected = ((job["metadata"].get("annotations") or {}).get(COLLECTED) == "true")
            if tid in wanted or not collected:
                self._tracked.add(tid)
                self._reported.discard(tid)
                if tid in wanted:
                    found.add(tid)
                    log.info("trial %d: adopted Job %s", tid, job["metadata"]["name"])
        self._ensure_watch()
        return found

    def cancel(self, tid: int) -> None:
        self._cancelled.add(tid)
        self.kube.delete_job(job_name(self.s.release, self.search, tid))
        log.info("trial %d: deleting Job (SIGTERM to the trainer, then its result)", tid)

    def running(self) -> set[int]:
        return set(self._tracked)

    def waiting(self) -> dict[int, str]:
        """Trials whose pod the scheduler could not place yet (e.g. 'Insufficient nvidia.com/gpu'): they wait,
        they have not failed."""
        out = {}
        for pod in self.kube.list_pods(self.selector):
            tid = _tid(pod)
            if tid not in self._tracked or (pod.get("status") or {}).get("phase") != "Pending":
                continue
            for c in (pod.get("status") or {}).get("conditions") or []:
                if c.get("type") == "PodScheduled" and c.get("status") == "False":
                    out[tid] = f"waiting for a node: {c.get('message') or c.get('reason')}"
        return out

    def release(self, tid: int) -> None:
        self.kube.annotate_job(job_name(self.s.release, self.search, tid), {COLLECTED: "true"})

    def wait(self, timeout: float) -> list[TrialExit]:
        self._ensure_watch()
        ended: list[TrialExit] = []
        deadline = time.monotonic() + timeout
        while not ended:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                kind, job = self._events.get(timeout=remaining)
            except queue.Empty:
                break
            ended += self._handle(kind, job)
            while not self._events.empty():  # drain what arrived together
                ended += self._handle(*self._events.get_nowait())
        return ended

    def close(self) -> None:
        """Stop watching and wait for the watch thread: a daemon thread still inside an HTTP read or a log
        write when the interpreter shuts down can abort it (SIGABRT) after a search that succeeded."""
        self._stop.set()
        with self._resp_lock:
            if self._resp is not None:
                self._resp.shutdown()  # unblocks a read waiting for the next event
        if self._watcher is not None:
            self._watcher.join(timeout=30)
            if self._watcher.is_alive():
                log.warning("the Job watch did not stop within 30 s")

    # -- watching ------------------------------------------------------------------------------------
    def _handle(self, kind: str, job: dict) -> list[TrialExit]:
        tid = _tid(job)
        if tid is None or tid not in self._tracked or tid in self._reported:
            return []
        name = job["metadata"]["name"]
        if kind == "DELETED":
            code, reason, tail = self.kube.pod_failure(name)
            why = "stopped by the controller" if tid in self._cancelled else "its Job was deleted"
            return [self._report(tid, code, reason or why, tail)]
        state = _finished(job)
        if state is None:
            return []
        code, reason, tail = self.kube.pod_failure(name) if state == "Failed" else (0, None, "")
        if state == "Failed":
            reason = "; ".join(r for r in (_condition_reason(job), reason) if r)
        return [self._report(tid, code, reason, tail)]

    def _report(self, tid: int, code: int | None, reason: str | None, tail: str) -> TrialExit:
        self._reported.add(tid)
        self._tracked.discard(tid)
        return TrialExit(tid, code, reason, tail, tail.encode() if tail else None)

    def _ensure_watch(self) -> None:
        if self._stop.is_set():
            return
        if self._watcher is None or not self._watcher.is_alive():
            self._watcher = threading.Thread(target=self._watch_loop, name="job-watch", daemon=True)
            self._watcher.start()

    def _watch_loop(self) -> None:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        while not self._stop.is_set():
            try:
                listing = self.kube.list_jobs(self.selector)
                for job in listing["items"]:
                    self._events.put(("MODIFIED", job))
                self._watch_from(listing["metadata"].get("resourceVersion"))
            except (ApiException, HTTPError, OSError, ValueError) as e:
                if self._stop.is_set():
                    return  # close() cut the stream
                log.info("Job watch ended (%s: %s); re-listing", type(e).__name__, getattr(e, "status", e))
                self._stop.wait(0.2)

    def _watch_from(self, version: str | None) -> None:
        """One watch from a listing's resourceVersion, until it ends, errs or the resync period is up. The
        stream is read here, not through kubernetes.watch.Watch, whose raw mode drops ERROR events
        (KeyError 'raw_object' in client 37.0.1); keeping the response also lets close() cut it."""
        resp = self.kube.batch.list_namespaced_job(
            self.kube.ns, label_selector=self.selector, resource_version=version, watch=True,
            allow_watch_bookmarks=False, timeout_seconds=max(1, int(self.s.resync_seconds)), _preload_content=False)
        with self._resp_lock:
            self._resp = resp
        try:
            if self._stop.is_set():
                return
            buffer = b""
            for chunk in resp.stream(amt=None, decode_content=False):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip() and not self._on_watch_event(json.loads(line)):
                        return
        finally:
            with self._resp_lock:
                self._resp = None
            resp.release_conn()

    def _on_watch_event(self, event: Mapping[str, Any]) -> bool:
        """Queue a Job event; False ends this watch (an ERROR: e.g. 410 Gone once history was compacted)."""
        if event.get("type") == "ERROR":
            status = event.get("object") or {}
            self.watch_errors.append(int(status.get("code") or 0))
            log.info("Job watch: ERROR %s (%s); re-listing", status.get("code"), status.get("message", "no message"))
            return False
        self._events.put((event["type"], event["object"]))
        return True


# -- visible with kubectl: Events and a status ConfigMap ----------------------------------------------


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class KubeNotifier:
    """Kubernetes Events on the release's ConfigMap, and the status ConfigMap kept current."""

    def __init__(self, kube: KubeClient, settings: KubeSettings, search: str):
        self.kube = kube
        self.s = settings
        self.search = search
        self.involved = (kube.owner(settings.owner_config_map) if settings.owner_config_map else None)

    def event(self, reason: str, message: str, warning: bool = False) -> None:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        if self.involved is None:
            return
        name = f"{self.involved['name']}.{time.time_ns():x}"
        body = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": name, "namespace": self.kube.ns,
                                                                  "labels": _labels(self.s, self.search)},
                "involvedObject": {**self.involved, "namespace": self.kube.ns}, "reason": reason,
                "message": message[:1000], "type": "Warning" if warning else "Normal", "firstTimestamp": _now(),
                "lastTimestamp": _now(), "count": 1, "source": {"component": "cifar-hpo-controller"}}
        try:
            self.kube.core.create_namespaced_event(self.kube.ns, body, _preload_content=False)
        except (ApiException, HTTPError) as e:
            log.warning("could not record Event %s: %s", reason, getattr(e, "status", None))  # visibility only; the search goes on

    def status(self, status_doc: dict[str, Any]) -> None:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        if not self.s.status_config_map:
            return
        data = {"status.json": json.dumps(status_doc, indent=1), "state": str(status_doc.get("state")),
                "best": json.dumps((status_doc.get("best") or {}).get("objective")),
                "budgetLeft": str(status_doc.get("budget_left"))}
        body = {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": self.s.status_config_map, "namespace": self.kube.ns,
                             "labels": {**_labels(self.s, self.search), "app.kubernetes.io/component": "status"}},
                "data": data}
        try:
            # A patch of data only: the chart's labels and Helm's ownership annotations stay.
            self.kube.core.patch_namespaced_config_map(self.s.status_config_map, self.kube.ns, {"data": data},
                                                       _content_type=MERGE_PATCH, _preload_content=False)
        except (ApiException, HTTPError) as e:
            if getattr(e, "status", None) != 404:
                log.warning("could not update ConfigMap %s: %s", self.s.status_config_map, getattr(e, "status", None))
                return
            try:
                self.kube.core.create_namespaced_config_map(self.kube.ns, body, _preload_content=False)
            except (ApiException, HTTPError) as e2:
                log.warning("could not create ConfigMap %s: %s", self.s.status_config_map, getattr(e2, "status", None))


# -- one controller at a time -----------------------------------------------------------------------------


class LeaderLease:
    """coordination.k8s.io Lease: acquire (waiting while another holder renews), renew in the background,
    and call on_lost if a renewal fails past the lease duration (the caller must stop acting)."""

    def __init__(self, kube: KubeClient, name: str, identity: str, seconds: int, on_lost: Callable[[], None]):
        self.kube = kube
        self.name = name
        self.identity = identity
        self.seconds = seconds
        self.on_lost = on_lost
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _body(self, version: str | None, transitions: int, acquired: str | None = None) -> dict:
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        meta: dict[str, Any] = {"name": self.name, "namespace": self.kube.ns}
        if version:
            meta["resourceVersion"] = version
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
                "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": self.seconds,
                         "acquireTime": acquired or now, "renewTime": now, "leaseTransitions": transitions}}

    def try_acquire(self) -> bool:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            lease = json.loads(self.kube.coord.read_namespaced_lease(self.name, self.kube.ns,
                                                                     _preload_content=False).data)
        except (ApiException, HTTPError) as e:
            if getattr(e, "status", None) != 404:
                raise _api_error(e, f"read Lease {self.name}") from e
            try:
                self.kube.coord.create_namespaced_lease(self.kube.ns, self._body(None, 0), _preload_content=False)
                return True
            except (ApiException, HTTPError) as e2:
                if getattr(e2, "status", None) == 409:
                    return False
                raise _api_error(e2, f"create Lease {self.name}") from e2
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        renew = spec.get("renewTime")
        expired = True
        if renew:
            renewed = datetime.strptime(renew.replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z")
            expired = (datetime.now(timezone.utc) - renewed).total_seconds() > spec.get("leaseDurationSeconds", 15)
        if holder not in (None, "", self.identity) and not expired:
            return False
        transitions = int(spec.get("leaseTransitions") or 0) + (holder != self.identity)
        body = self._body(lease["metadata"]["resourceVersion"], transitions,
                          spec.get("acquireTime") if holder == self.identity else None)
        try:
            # resourceVersion makes this a compare-and-swap: of two contenders, one gets 409.
            self.kube.coord.replace_namespaced_lease(self.name, self.kube.ns, body, _preload_content=False)
            return True
        except (ApiException, HTTPError) as e:
            if getattr(e, "status", None) == 409:
                return False
            raise _api_error(e, f"take Lease {self.name}") from e

    def acquire(self) -> None:
        while True:
            try:
                if self.try_acquire():
                    break
                log.info("another controller holds Lease %s; waiting", self.name)
            except TemporaryError as e:
                # A standby may wait for hours: an API hiccup must not end it.
                log.warning("reading Lease %s failed: %s; trying again", self.name, e)
            time.sleep(max(1.0, self.seconds / 3))
        log.info("acquired Lease %s as %s", self.name, self.identity)
        self._renewer = threading.Thread(target=self._renew_loop, name="lease-renew", daemon=True)
        self._renewer.start()

    def _renew_loop(self) -> None:
        last_ok = time.monotonic()
        while not self._stop.wait(self.seconds / 3):
            try:
                if self.try_acquire():
                    last_ok = time.monotonic()
                    continue
                log.error("Lease %s was taken by another controller", self.name)
            except (TemporaryError, ConfigError) as e:
                log.warning("renewing Lease %s failed: %s", self.name, e)
                if time.monotonic() - last_ok < self.seconds:
                    continue
            self.on_lost()
            return

    def release(self) -> None:
        """Stop renewing and, if we still hold the Lease, hand it back so that a successor need not wait
        out its duration (client-go's ReleaseOnCancel)."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=self.seconds)  # a renewal in flight would turn our write into a 409
        for _ in range(3):
            try:
                lease = json.loads(self.kube.coord.read_namespaced_lease(self.name, self.kube.ns,
                                                                         _preload_content=False).data)
                spec = lease.get("spec") or {}
                if spec.get("holderIdentity") != self.identity:
                    return
                body = self._body(lease["metadata"]["resourceVersion"], int(spec.get("leaseTransitions") or 0),
                                  spec.get("acquireTime"))
                body["spec"].update(holderIdentity="", leaseDurationSeconds=1)
                self.kube.coord.replace_namespaced_lease(self.name, self.kube.ns, body, _preload_content=False)
                log.info("released Lease %s", self.name)
                return
            except (ApiException, HTTPError) as e:
                if getattr(e, "status", None) == 409:
                    continue  # written meanwhile: read it again
                # Best effort: the Lease then expires on its own.
                log.warning("could not release Lease %s: %s", self.name, getattr(e, "status", e))
                return
