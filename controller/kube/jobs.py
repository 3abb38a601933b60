"""A trial's batch/v1 Job: its name, labels and body, and what a finished Job or its pod says. Pure: plain
dicts in and out, so what is built here is exactly what the API server validates."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from controller.kube.objects import Condition, Job, OwnerRef, Pod
from controller.settings.kube import KubeSettings
from controller.trial.contract import EXIT_BAD_INPUT, EXPECT_GPUS_ENV, GRANT_ENV

APP = "cifar-hpo"
COLLECTED = "cifar-hpo.io/collected"
SEARCH_LABEL = "cifar-hpo.io/search"
TRIAL_LABEL = "cifar-hpo.io/trial"
GRANT_KEY = "grant.json"
TRAINER_ENTRYPOINT = ["python", "-m", "trainer"]
CONTAINER = "trainer"
TRAINER_UID = 10002
# The chart's store.caBundle: mounted here in the operator's pod and every trial's.
CA_DIR = "/etc/cifar-hpo/ca"  # Dockerfile.trainer's user: not 1000, the first user of many hosts


def labels(s: KubeSettings, search: str) -> dict[str, str]:
    """The labels of a search's trial Jobs and pods (the app.kubernetes.io set and the search's)."""
    return {"app.kubernetes.io/name": APP, "app.kubernetes.io/instance": s.instance or s.release,
            "app.kubernetes.io/managed-by": "cifar-hpo-controller", SEARCH_LABEL: search}


def job_name(prefix: str, tid: int) -> str:
    """<prefix>-t<tid>. A name over 63 characters keeps its head and a hash of the whole prefix, so it stays unique
    and stable."""
    suffix = f"-t{tid}"
    name = f"{prefix}{suffix}"
    if len(name) <= 63:
        return name
    digest = hashlib.sha256(prefix.encode()).hexdigest()[:6]
    return f"{prefix[:63 - len(suffix) - 7].rstrip('-')}-{digest}{suffix}"


def job_prefix(s: KubeSettings, search: str) -> str:
    """<release>-<search> (two searches of one release, or of two releases, never share a Job), or the operator's
    own prefix: the Search's name."""
    return s.job_prefix or f"{s.release}-{search}"


def selector(s: KubeSettings, search: str) -> str:
    """The label selector of a search's trial Jobs and pods."""
    return ",".join(f"{k}={v}" for k, v in labels(s, search).items() if k != "app.kubernetes.io/managed-by") + \
        ",app.kubernetes.io/component=trial"


def build_job(s: KubeSettings, search: str, tid: int, argv: Sequence[str], env: Mapping[str, str],
              params: Mapping[str, Any], owner: OwnerRef | None, grant_secret: str | None = None) -> Job:
    """The batch/v1 Job of one trial. grant_secret: the Secret holding its grant (grant_secret_manifest)."""
    trial_labels = {**labels(s, search), "app.kubernetes.io/component": "trial", TRIAL_LABEL: str(tid)}
    spec: dict[str, Any] = {
        "backoffLimit": s.backoff_limit,
        "activeDeadlineSeconds": s.active_deadline_seconds,
        "ttlSecondsAfterFinished": s.ttl_seconds_after_finished,
        # Node disruption does not burn a retry; bad parameters fail the Job at once.
        "podFailurePolicy": {"rules": [
            {"action": "FailJob", "onExitCodes": {"containerName": CONTAINER, "operator": "In",
                                                  "values": [EXIT_BAD_INPUT]}},
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        ]},
        "template": {"metadata": {"labels": trial_labels}, "spec": _pod_spec(s, argv, env, grant_secret)},
    }
    job: Job = {"apiVersion": "batch/v1", "kind": "Job", "spec": spec, "metadata": {
        "name": job_name(job_prefix(s, search), tid), "namespace": s.namespace, "labels": trial_labels,
        "annotations": {"cifar-hpo.io/params": json.dumps(params, sort_keys=True)}}}
    if owner:
        job["metadata"]["ownerReferences"] = [{**owner, "blockOwnerDeletion": False}]
    return job


def grant_secret_manifest(s: KubeSettings, search: str, tid: int, grant: Mapping[str, str],
                          owner: OwnerRef | None) -> dict[str, Any]:
    """The Secret that carries one trial's grant into its pod: in the Job's env, `get jobs` (Kubernetes' built-in
    `view` role) would read the trial's URLs; a Secret takes `get secrets`. Owned by the Search until its Job
    exists, then by the Job (garbage-collected with it)."""
    name = f"{job_name(job_prefix(s, search), tid)}-grant"
    secret: dict[str, Any] = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                              "metadata": {"name": name, "namespace": s.namespace,
                                           "labels": {**labels(s, search), TRIAL_LABEL: str(tid)}},
                              "stringData": {GRANT_KEY: grant[GRANT_ENV]}}
    if owner:
        secret["metadata"]["ownerReferences"] = [{**owner, "blockOwnerDeletion": False}]
    return secret


def _pod_spec(s: KubeSettings, argv: Sequence[str], env: Mapping[str, str],
              grant_secret: str | None = None) -> dict[str, Any]:
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": s.termination_grace_seconds,
        "securityContext": {"runAsNonRoot": True, "runAsUser": TRAINER_UID, "runAsGroup": TRAINER_UID,
                            "fsGroup": TRAINER_UID,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [_container(s, argv, env, grant_secret)],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": s.cache_size_limit}}, _cache_volume(s),
                    *([{"name": "store-ca", "configMap": {"name": s.ca_config_map}}] if s.ca_config_map else [])],
    }
    for key, value in (("nodeSelector", s.node_selector), ("tolerations", s.tolerations), ("affinity", s.affinity),
                       ("priorityClassName", s.priority_class_name), ("serviceAccountName", s.service_account_name),
                       ("imagePullSecrets", [{"name": n} for n in s.image_pull_secrets])):
        if value:
            pod_spec[key] = value
    return pod_spec


def _container(s: KubeSettings, argv: Sequence[str], env: Mapping[str, str],
               grant_secret: str | None = None) -> dict[str, Any]:
    resources: dict[str, dict[str, str]] = {"requests": dict(s.requests), "limits": dict(s.limits)}
    if s.gpu_count:
        resources["limits"][s.gpu_resource] = str(s.gpu_count)
        resources["requests"][s.gpu_resource] = str(s.gpu_count)
    env_list: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in sorted(env.items())]
    if grant_secret:
        env_list.append({"name": GRANT_ENV, "valueFrom": {"secretKeyRef": {"name": grant_secret, "key": GRANT_KEY}}})
    if s.s3_secret_name:
        env_list += [{"name": key, "valueFrom": {"secretKeyRef": {"name": s.s3_secret_name, "key": key}}}
                     for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")]
    env_list += [{"name": "HOME", "value": "/tmp"}, {"name": "KERAS_HOME", "value": "/cache/keras"},
                 {"name": "CIFAR_HPO_DATA_CACHE", "value": "/cache/datasets"}]
    # A GPU trial checks it sees its GPUs; a CPU trial sees none, even where the NVIDIA runtime would pass them all.
    env_list.append({"name": EXPECT_GPUS_ENV, "value": str(s.gpu_count)} if s.gpu_count
                    else {"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"})
    # The trainer's command (the default) leaves the image's ENTRYPOINT in charge, as values.yaml says: a trainer
    # image of one's own with another entrypoint runs that. Any other command replaces the entrypoint.
    trainer = list(argv[:3]) == TRAINER_ENTRYPOINT
    command = {} if trainer else {"command": [argv[0]]}
    return {
        "name": CONTAINER,
        "image": s.image,
        "imagePullPolicy": s.image_pull_policy,
        **command,
        "args": list(argv[3:]) if trainer else list(argv[1:]),
        "env": env_list,
        "resources": resources,
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
                            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, {"name": "cache", "mountPath": "/cache"},
                         *([{"name": "store-ca", "mountPath": CA_DIR, "readOnly": True}] if s.ca_config_map else [])],
    }


def _cache_volume(s: KubeSettings) -> dict[str, Any]:
    """/cache: the dataset cache (trainer/data.py fills it by checksum, safe when trials fill it at once)."""
    if s.data_cache_claim:
        return {"name": "cache", "persistentVolumeClaim": {"claimName": s.data_cache_claim}}
    if s.data_cache_host_path:
        return {"name": "cache", "hostPath": {"path": s.data_cache_host_path, "type": "DirectoryOrCreate"}}
    return {"name": "cache", "emptyDir": {"sizeLimit": s.cache_size_limit}}


def _conditions(job: Job) -> list[Condition]:
    return (job.get("status") or {}).get("conditions") or []


def finished(job: Job) -> str | None:
    """'Complete' or 'Failed' once the Job has ended, else None."""
    for c in _conditions(job):
        if c.get("type") in ("Complete", "Failed") and c.get("status") == "True":
            return c["type"]
    return None


def failure_reason(job: Job) -> str | None:
    """A failed Job's reason and message (its Failed condition), or None while it has not failed."""
    for c in _conditions(job):
        if c.get("type") == "Failed" and c.get("status") == "True":
            return f"{c.get('reason')}: {c.get('message', '')}".strip(": ")
    return None


def tid_of(obj: Job | Pod) -> int | None:
    """The trial id a Job or pod is labelled with, or None for one that is not a trial's."""
    value = ((obj.get("metadata") or {}).get("labels") or {}).get(TRIAL_LABEL)
    return int(value) if value and value.isdigit() else None


def pod_exit(pod: Pod) -> tuple[int | None, str | None]:
    """(exit code, reason) of a pod's trainer: its last termination, else the pod's own reason (Evicted…)."""
    code: int | None = None
    reason: str | None = None
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        term = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated")
        if term:
            code, reason = term.get("exitCode"), term.get("reason")
    return code, reason or (pod.get("status") or {}).get("reason")


# A container waiting for one of these will not start by itself: the image cannot be had, or the pod names a
# Secret or ConfigMap that does not exist. The kubelet retries them with back-off, for ever.
START_FAILURES = frozenset({"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName",
                            "RegistryUnavailable", "CreateContainerConfigError", "CreateContainerError",
                            "RunContainerError"})


def succeeded(pod: Pod) -> bool:
    """The trial's container exited 0. With restartPolicy Never and one container that decides the pod's phase and
    so the Job's completion; the kubelet reports it a pod-teardown earlier than the phase Succeeded."""
    if (pod.get("status") or {}).get("phase") == "Succeeded":
        return True
    return any(cs.get("name") == CONTAINER and ((cs.get("state") or {}).get("terminated") or {}).get("exitCode") == 0
               for cs in (pod.get("status") or {}).get("containerStatuses") or [])


def start_failure(pod: Pod) -> str | None:
    """'<kubelet reason>: <message>' while the pod's container cannot start, else None."""
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in START_FAILURES:
            return f"{waiting['reason']}: {waiting.get('message') or ''}".strip(": ")
    return None


def started(pod: Pod) -> bool:
    """The pod's container ran (or runs): it got past image pull and container creation."""
    return any((cs.get("state") or {}).get("running") or (cs.get("state") or {}).get("terminated")
               or (cs.get("lastState") or {}).get("terminated")
               for cs in (pod.get("status") or {}).get("containerStatuses") or [])


def scheduling_wait(pod: Pod) -> str | None:
    """Why a Pending pod has no node yet (e.g. 'Insufficient nvidia.com/gpu'), or None."""
    status = pod.get("status") or {}
    if status.get("phase") != "Pending":
        return None
    for c in status.get("conditions") or []:
        if c.get("type") == "PodScheduled" and c.get("status") == "False":
            return f"waiting for a node: {c.get('message') or c.get('reason')}"
    return None
