"""Reaching the Kubernetes API: the credentials (in-cluster or a kubeconfig), the connection's options, and who we
are to the API server (a Lease's holder, the Jobs' creator)."""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from controller.errors import ConfigError
from controller.kube.api import KubeClient

log = logging.getLogger(__name__)


def identity() -> str:
    """The pod's name (downward API), which survives a container restart, so a controller restarted after a crash
    takes its own Lease back at once, as client-go does; outside a pod, host and pid."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


def connect(namespace: str) -> KubeClient:
    """A KubeClient of the namespace, as this pod's service account or the kubeconfig's user."""
    return KubeClient(_api_client(), namespace, identity())


def _api_client() -> Any:
    import urllib3
    from kubernetes import client, config
    from kubernetes.utils.keepalive import tcp_keepalive_socket_options

    cfg = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=cfg)
        log.info("Kubernetes API at %s as this pod's service account (in-cluster)", cfg.host)
    except config.ConfigException:
        try:
            config.load_kube_config(client_configuration=cfg)
        except (config.ConfigException, OSError) as e:
            raise ConfigError(f"no in-cluster service account and no usable kubeconfig ({e}); "
                              "use --local to run without a cluster") from e
        log.info("Kubernetes API at %s from the kubeconfig", cfg.host)
    # TCP_NODELAY: small API requests otherwise wait on Nagle + delayed ACK (~40 ms each).
    cfg.socket_options = urllib3.connection.HTTPConnection.default_socket_options + tcp_keepalive_socket_options()
    # Retries with backoff on 5xx/429 and dropped connections, for every verb: all our writes are
    # idempotent by name (a retried create that had landed answers AlreadyExists, which means ours).
    cfg.retries = urllib3.Retry(total=6, backoff_factor=0.2, status_forcelist=(429, 500, 502, 503, 504),
                                allowed_methods=None, raise_on_status=False)
    return client.ApiClient(cfg)
