"""The shapes of the API objects the controller reads and sends, as TypedDicts (all optional, as the API
server may leave any of them out). Bodies stay plain dicts: what is sent is exactly what is validated."""

from __future__ import annotations

from typing import Any, TypedDict


class ObjectMeta(TypedDict, total=False):
    """An object's metadata, as far as the controller reads it."""
    name: str
    namespace: str
    uid: str
    resourceVersion: str
    creationTimestamp: str
    labels: dict[str, str]
    annotations: dict[str, str]
    ownerReferences: list[dict[str, Any]]


class Condition(TypedDict, total=False):
    """A condition of a Job, a pod or a Search."""
    type: str
    status: str
    reason: str
    message: str


class JobStatus(TypedDict, total=False):
    """A Job's status: its conditions and pod counts."""
    conditions: list[Condition]
    active: int
    failed: int
    succeeded: int


class Job(TypedDict, total=False):
    """A batch/v1 Job."""
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: dict[str, Any]
    status: JobStatus


class ContainerStatus(TypedDict, total=False):
    """A container's status in its pod: its state now and the last one."""
    name: str
    state: dict[str, dict[str, Any]]
    lastState: dict[str, dict[str, Any]]


class PodStatus(TypedDict, total=False):
    """A pod's status: phase, conditions and its containers'."""
    phase: str
    reason: str
    conditions: list[Condition]
    containerStatuses: list[ContainerStatus]


class Pod(TypedDict, total=False):
    """A pod, as far as the controller reads it."""
    metadata: ObjectMeta
    status: PodStatus


class LeaseSpec(TypedDict, total=False):
    """A coordination.k8s.io Lease's spec: who holds it and until when."""
    holderIdentity: str
    leaseDurationSeconds: int
    acquireTime: str
    renewTime: str
    leaseTransitions: int


class Lease(TypedDict, total=False):
    """A coordination.k8s.io Lease."""
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: LeaseSpec


class OwnerRef(TypedDict):
    """An ownerReference: what a trial Job belongs to (its Search), so that deleting that collects the Job."""
    apiVersion: str
    kind: str
    name: str
    uid: str
