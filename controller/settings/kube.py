"""How trials run on Kubernetes: the `kube` section of the settings. Pure: no kubernetes client here, so the
config loader (and local mode) never imports it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from controller import limits
from controller.errors import ConfigError
from controller.limits import limit
from controller.settings.policy import MAX_DEADLINE_SECONDS, MAX_GPUS


@dataclass(frozen=True)
class KubeSettings:
    """The kube section: how a trial's Job is made (image, GPUs, resources, placement, retries, deadlines, store
    access)."""
    namespace: str = "default"
    release: str = "cifar-hpo"
    """Prefixes Job names (<release>-<search>-t<tid>): the chart passes its full name."""
    job_prefix: str | None = None
    """Names Jobs <job_prefix>-t<tid> instead (the operator: the Search's own name)."""
    instance: str | None = None
    """The app.kubernetes.io/instance label (the Helm release name); null: `release`."""
    image: str = "cifar-hpo-trainer:latest"
    image_pull_policy: str = field(default="IfNotPresent", metadata=limit(enum=("Always", "IfNotPresent", "Never")))
    image_pull_secrets: list[str] = field(default_factory=list)
    gpu_resource: str = "nvidia.com/gpu"
    gpu_count: int = field(default=1, metadata=limit(minimum=0, maximum=MAX_GPUS, hint="(0 for CPU-only clusters)"))
    """Accelerators per trial; 0 for CPU-only clusters."""
    requests: dict[str, str] = field(default_factory=lambda: {"cpu": "3", "memory": "10Gi"})
    """Fits a 4-vCPU/16-GiB single-GPU node after its reservations (the chart's values.yaml has the table)."""
    limits: dict[str, str] = field(default_factory=lambda: {"memory": "12Gi"})
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    affinity: dict[str, Any] = field(default_factory=dict)
    priority_class_name: str | None = None
    service_account_name: str | None = None
    """Trial pods' ServiceAccount (no API rights; its token is not mounted anyway)."""
    s3_secret_name: str | None = None
    """Secret with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY; null for workload identity (IRSA etc.)."""
    trial_access: str = field(default="presigned", metadata=limit(enum=("presigned", "credentials")))
    """How trials reach an S3 store: presigned (URLs for the trial's own keys only; no keys in trial pods) or
    credentials (the store's Secret in every trial pod: any trial can read and write the whole bucket)."""
    backoff_limit: int = field(default=1, metadata=limit(minimum=0, maximum=10))
    active_deadline_seconds: int = field(default=86400, metadata=limit(minimum=1, maximum=MAX_DEADLINE_SECONDS))
    """Every trial Job ends after this long (pending time included): no trial holds a GPU for ever."""
    ttl_seconds_after_finished: int = field(default=86400, metadata=limit(minimum=0, maximum=MAX_DEADLINE_SECONDS))
    termination_grace_seconds: int = field(default=60, metadata=limit(minimum=1, maximum=3600))
    """Time the trainer gets after SIGTERM to write its 'stopped' result."""
    start_timeout_seconds: int = field(default=600, metadata=limit(minimum=1, maximum=MAX_DEADLINE_SECONDS))
    """A trial whose container cannot start (its image cannot be pulled, a Secret it names is missing) fails
    after this long, with the kubelet's reason, instead of holding its slot until activeDeadlineSeconds. Waiting
    for a node (no GPU free) does not count."""
    ca_config_map: str | None = None
    """A ConfigMap with the store's CA bundle, mounted at /etc/cifar-hpo/ca in trial pods (store.caBundle is the
    file's path there)."""
    cache_size_limit: str = "20Gi"
    data_cache_claim: str | None = None
    """An existing PVC mounted as the trials' dataset cache (shared by the trials of a node or of all nodes)."""
    data_cache_host_path: str | None = None
    """A node folder as the dataset cache (hostPath: not allowed where Pod Security is `restricted`)."""
    owner_config_map: str | None = None
    """A ConfigMap of the release that owns the trial Jobs (uninstall garbage-collects them)."""
    status_config_map: str | None = None
    lease_name: str | None = None
    lease_seconds: int = field(default=15, metadata=limit(minimum=5))
    resync_seconds: float = field(default=60.0, metadata=limit(minimum=1))

    def validate(self) -> None:
        dns = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
        for key, value in (("kube.namespace", self.namespace), ("kube.release", self.release)):
            if not dns.fullmatch(value) or len(value) > 53:
                raise ConfigError(f"{key}: {value!r} must be a DNS-1123 label of at most 53 characters")
        limits.check(self, "kube")
