"""KubernetesLauncher: the ProcessLauncher's twin behind the Launcher protocol, with trials as Jobs.

Jobs have deterministic names (controller/kube/jobs.py), so an AlreadyExists after a restart means the Job
is ours. Completion is watch-driven: background threads watch the search's Jobs and their pods (label selector),
re-list on 410 Gone or a dropped watch, and re-list every resync period to heal anything missed; wait() blocks on
what they find.

A trial ends when its container has exited 0, not when its Job says Complete: the kubelet tears the pod down
before it reports the phase Succeeded, and the Job controller batches pod updates before it completes the Job,
time the next trial would wait for its slot. A container that exited 0 means the Job completes (restartPolicy
Never, one container, one completion), and what the trial achieved is its result.json either way. Retries,
backoffLimit and podFailurePolicy still decide every trial whose container fails: those wait for the Job's verdict.
A Job that fails after its container succeeded (its deadline raced the exit) is logged when it comes.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import time
from collections.abc import Callable, Iterable
from typing import Any, cast

from controller.errors import PermanentError
from controller.kube.api import KubeClient
from controller.kube.jobs import (
    COLLECTED,
    SEARCH_LABEL,
    TRIAL_LABEL,
    build_job,
    failure_reason,
    finished,
    grant_secret_manifest,
    job_name,
    job_prefix,
    pod_exit,
    scheduling_wait,
    selector,
    start_failure,
    started,
    succeeded,
    tid_of,
)
from controller.kube.objects import Job, OwnerRef, Pod
from controller.kube.watch import Watcher
from controller.launch.protocol import TrialExit, TrialLaunch, log_tail
from controller.settings.kube import KubeSettings
from controller.trial.contract import DEADLINE_ENV

log = logging.getLogger(__name__)

# While a launched trial has not started, wait() returns this often so that the loop reads its pod: an image that
# cannot be pulled is reported within seconds, not after a quiet spell of resyncSeconds.
START_POLL_SECONDS = 2.0
POD = "POD"
"""The pod watch's events are "POD ADDED", "POD MODIFIED", "POD DELETED" on the launcher's queue (the Job watch's
are ADDED, MODIFIED, DELETED)."""


class KubernetesLauncher:
    """The Launcher with trials as Jobs: creates them (idempotent by name), adopts them after a restart, and hears
    their ends from a watch of Jobs and pods."""

    relaunches = False  # one Job per trial; its backoffLimit retries it (a Job per attempt: issue 36, next)

    def __init__(self, kube: KubeClient, settings: KubeSettings, search: str, owner: OwnerRef | None = None,
                 grants: Callable[[int], dict[str, str]] | None = None):
        """owner: what owns the trial Jobs (the operator's Search); else the release's ConfigMap, if configured.
        grants: tid → the environment giving that trial its store access (controller/kube/grant.py); with it, trial pods
        get no store credentials."""
        self.kube = kube
        self.s = settings
        self.search = search
        self.selector = selector(settings, search)
        self.prefix = job_prefix(settings, search)
        self.grants = grants
        self.owner = owner or (kube.owner(settings.owner_config_map) if settings.owner_config_map else None)
        self._tracked: set[int] = set()
        self._reported: set[int] = set()
        self._cancelled: set[int] = set()
        self._started: set[int] = set()
        self._stuck_since: dict[int, float] = {}
        self._start_failed: dict[int, str] = {}
        self._ended_early: set[int] = set()
        """Trials reported when their pod succeeded, whose Job's own verdict has not come yet."""
        self._events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.watch = Watcher("Job", lambda: kube.list_jobs(self.selector),
                             lambda version, timeout: kube.watch_jobs(self.selector, version, timeout),
                             lambda kind, job: self._events.put((kind, job)), settings.resync_seconds)
        self.pod_watch = Watcher("pod", lambda: kube.pod_listing(self.selector),
                                 lambda version, timeout: kube.watch_pods(self.selector, version, timeout),
                                 lambda kind, pod: self._events.put((f"{POD} {kind}", pod)), settings.resync_seconds)
        self._ended: list[TrialExit] = []
        """Ends that waiting() came upon, for the next wait()."""
        self._pods: dict[int, Pod] = {}
        """Each tracked trial's newest pod, as the pod watch last showed it: waiting() reads it, listing nothing (a
        list per Search every few seconds while trials wait for a node grew with the Searches)."""

    # -- Launcher ------------------------------------------------------------------------------------
    def launch(self, trial: TrialLaunch) -> None:
        # The Job's deadline counts from now (pending time included): the trainer stops short of it with its best.
        env = {**trial.env, DEADLINE_ENV: str(int(time.time()) + self.s.active_deadline_seconds)}
        settings, secret = self.s, None
        if self.grants is not None:
            secret = grant_secret_manifest(self.s, self.search, trial.tid, self.grants(trial.tid), self.owner)
            self.kube.put_secret(secret)
            settings = dataclasses.replace(settings, s3_secret_name=None)
        body = build_job(settings, self.search, trial.tid, trial.argv, env, trial.params, self.owner,
                         secret["metadata"]["name"] if secret else None)
        name = body["metadata"]["name"]
        created = self.kube.create_job(body)
        if created:
            log.info("trial %d: created Job %s", trial.tid, name)
            if secret:
                self.kube.own_secret(secret["metadata"]["name"], {"apiVersion": "batch/v1", "kind": "Job",
                                                                  "name": name, "uid": created["metadata"]["uid"]})
        else:
            existing = self.kube.get_job(name) or body
            found = (existing.get("metadata") or {}).get("labels") or {}
            if (found.get(SEARCH_LABEL), found.get(TRIAL_LABEL)) != (self.search, str(trial.tid)):
                raise PermanentError(f"trial {trial.tid}: Job {name} exists but belongs to search "
                                     f"{found.get(SEARCH_LABEL)!r}; delete it or use another release name")
            log.info("trial %d: Job %s already exists; adopting it", trial.tid, name)
        self._tracked.add(trial.tid)
        self._ensure_watch()

    def adopt(self, tids: Iterable[int]) -> set[int]:
        wanted = set(tids)
        found = set()
        for job in self.kube.list_jobs(self.selector)["items"]:
            tid = tid_of(job)
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
        self.kube.delete_job(job_name(self.prefix, tid))
        log.info("trial %d: deleting Job (SIGTERM to the trainer, then its result)", tid)

    def running(self) -> set[int]:
        return set(self._tracked)

    def waiting(self) -> dict[int, str]:
        """Trials whose pod has not started: no node for it yet (they wait), or a container that cannot start
        (image, Secret), which fails the trial once it has lasted start_timeout_seconds."""
        self._ensure_watch()
        self._ended += self._drain()  # what the watches showed since the last wait(); ends are kept for it
        out = {}
        stuck = {}
        for tid, pod in self._pods.items():
            if tid not in self._tracked or tid in self._start_failed:
                continue
            if started(pod):
                self._started.add(tid)
            failure = start_failure(pod)
            why = scheduling_wait(pod) or failure
            if why:
                out[tid] = why
            if failure:
                stuck[tid] = failure
        now = time.monotonic()
        self._stuck_since = {t: self._stuck_since.get(t, now) for t in stuck}
        for tid, since in self._stuck_since.items():
            if now - since >= self.s.start_timeout_seconds:
                self._start_failed[tid] = (f"did not start within startTimeoutSeconds "
                                           f"({self.s.start_timeout_seconds} s): {stuck[tid]}")
                log.warning("trial %d: %s; deleting its Job", tid, self._start_failed[tid])
                self.kube.delete_job(job_name(self.prefix, tid))
        return out

    def release(self, tid: int) -> None:
        self.kube.annotate_job(job_name(self.prefix, tid), {COLLECTED: "true"})

    def wake(self) -> None:
        """Make a wait() in progress return now (the operator changed what the loop should do)."""
        self._events.put(("WAKE", {}))

    def wait(self, timeout: float) -> list[TrialExit]:
        self._ensure_watch()
        ended, self._ended = self._ended, []
        if self._tracked - self._started:
            timeout = min(timeout, START_POLL_SECONDS)
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
            ended += self._drain()  # what arrived together
        return ended

    def _drain(self) -> list[TrialExit]:
        ended = []
        while not self._events.empty():
            ended += self._handle(*self._events.get_nowait())
        return ended

    def close(self) -> None:
        self.watch.close()
        self.pod_watch.close()

    @property
    def watch_errors(self) -> list[int]:
        """Codes of the ERROR events the Job watch received (410: history compacted)."""
        return self.watch.errors

    # -- what ended ----------------------------------------------------------------------------------
    def _handle(self, kind: str, job: Job) -> list[TrialExit]:
        tid = tid_of(job)
        if kind.startswith(POD):
            self._keep_pod(tid, kind.endswith("DELETED"), cast(Pod, job))
            return self._pod_succeeded(tid, cast(Pod, job))
        if tid in self._ended_early and (kind == "DELETED" or finished(job)):
            self._ended_early.discard(tid)
            if finished(job) == "Failed":
                log.warning("trial %d: its Job failed after its pod succeeded (%s); the trial's record stands",
                            tid, failure_reason(job))
        if tid is None or tid not in self._tracked or tid in self._reported:
            return []
        name = job["metadata"]["name"]
        if kind == "DELETED":
            code, reason, output = self._last_pod(name)
            if tid in self._start_failed:
                return [self._report(tid, None, self._start_failed[tid], output)]
            why = "stopped by the controller" if tid in self._cancelled else "its Job was deleted"
            return [self._report(tid, code, reason or why, output)]
        state = finished(job)
        if state is None:
            return []
        code, reason, output = self._last_pod(name)  # an ok trial's log is kept too (trial.log), as in local mode
        if state == "Complete":
            return [self._report(tid, 0, None, output)]
        return [self._report(tid, code, "; ".join(r for r in (failure_reason(job), reason) if r), output)]

    def _keep_pod(self, tid: int | None, deleted: bool, pod: Pod) -> None:
        if tid is None or tid not in self._tracked:
            return
        kept = self._pods.get(tid)
        same = kept is not None and kept["metadata"].get("uid") == pod["metadata"].get("uid")
        if deleted:
            if same:
                del self._pods[tid]
        elif kept is None or same or (pod["metadata"].get("creationTimestamp") or "") >= (
                kept["metadata"].get("creationTimestamp") or ""):  # a Job's retry: its newest pod counts
            self._pods[tid] = pod

    def _pod_succeeded(self, tid: int | None, pod: Pod) -> list[TrialExit]:
        """The trial's end at its pod's success, a Job-controller round trip before its Job completes. A trial
        being stopped or failed to start ends with its Job, which says why."""
        if (tid is None or tid not in self._tracked or tid in self._reported or tid in self._cancelled
                or tid in self._start_failed or not succeeded(pod)):
            return []
        self._ended_early.add(tid)
        log.info("trial %d: its container exited 0 (pod %s)", tid, pod["metadata"]["name"])
        return [self._report(tid, 0, None, self.kube.pod_log(pod["metadata"]["name"]))]

    def _last_pod(self, job: str) -> tuple[int | None, str | None, bytes | None]:
        """(exit code, reason, whole log) of the Job's last pod."""
        pods = self.kube.list_pods(f"job-name={job}")
        if not pods:
            return None, None, None
        pod = max(pods, key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "")
        code, reason = pod_exit(pod)
        return code, reason, self.kube.pod_log(pod["metadata"]["name"])

    def _report(self, tid: int, code: int | None, reason: str | None, output: bytes | None) -> TrialExit:
        self._reported.add(tid)
        self._tracked.discard(tid)
        self._pods.pop(tid, None)
        self._started.discard(tid)
        self._stuck_since.pop(tid, None)
        return TrialExit(tid, code, reason, log_tail(output or b""), output or None)

    def _ensure_watch(self) -> None:
        self.watch.start()
        self.pod_watch.start()
