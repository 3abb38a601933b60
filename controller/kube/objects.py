"""The shapes of the API objects the controller reads and sends, as TypedDicts (all optional, as the API
server may leave any of them out). Bodies stay plain dicts: what is sent is exactly what is validated."""

from __future__ import annotations

from typing import Any, TypedDict


class ObjectMeta(TypedDict, total=False):
    name: str
    namespace: str
    uid: str
    resourceVersion: str
    creationTimestamp: str
    labels: dict[str, str]
    annotations: dict[str, str]
    ownerReferences: list[dict[str, Any]]


class Condition(TypedDict, total=False):
    type: str
    status: str
    reason: str
    message: str


class JobStatus(TypedDict, total=False):
    conditions: list[Condition]
    active: int
    failed: int
    succeeded: int


class Job(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: dict[str, Any]
    status: JobStatus


class ContainerStatus(TypedDict, total=False):
    name: str
    state: dict[str, dict[str, Any]]
    lastState: dict[str, dict[str, Any]]


class PodStatus(TypedDict, total=False):
    phase: str
    reason: str
    conditions: list[Condition]
    containerStatuses: list[ContainerStatus]


class Pod(TypedDict, total=False):
    metadata: ObjectMeta
    status: PodStatus


class LeaseSpec(TypedDict, total=False):
    holderIdentity: str
    leaseDurationSeconds: int
    acquireTime: str
    renewTime: str
    leaseTransitions: int


class Lease(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: LeaseSpec


class OwnerRef(TypedDict):
    apiVersion: str
    kind: str
    name: str
    uid: str
