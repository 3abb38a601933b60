"""What a person sees with kubectl: Events on the release's ConfigMap, and the status ConfigMap kept current.
Visibility only: a failure here is logged and the search goes on."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from controller.errors import PermanentError, TemporaryError
from controller.kube.api import Conflict, KubeClient, NotFound
from controller.kube.jobs import labels
from controller.settings.kube import KubeSettings

log = logging.getLogger(__name__)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class KubeNotifier:
    def __init__(self, kube: KubeClient, settings: KubeSettings, search: str):
        self.kube = kube
        self.s = settings
        self.search = search
        self.involved = (kube.owner(settings.owner_config_map) if settings.owner_config_map else None)

    def event(self, reason: str, message: str, warning: bool = False, once: str | None = None) -> None:
        if self.involved is None:
            return
        name = f"{self.involved['name']}.{once or format(time.time_ns(), 'x')}"
        body = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": name, "namespace": self.kube.ns,
                                                                  "labels": labels(self.s, self.search)},
                "involvedObject": {**self.involved, "namespace": self.kube.ns}, "reason": reason,
                "message": message[:1000], "type": "Warning" if warning else "Normal", "firstTimestamp": _now(),
                "lastTimestamp": _now(), "count": 1, "source": {"component": "cifar-hpo-controller"}}
        try:
            self.kube.create_event(body)
        except Conflict:
            log.info("Event %s: recorded before", reason)
        except (PermanentError, TemporaryError) as e:
            log.warning("could not record Event %s: %s", reason, e)

    def status(self, status_doc: dict[str, Any]) -> None:
        name = self.s.status_config_map
        if not name:
            return
        data = {"status.json": json.dumps(status_doc, indent=1), "state": str(status_doc.get("state")),
                "best": json.dumps((status_doc.get("best") or {}).get("objective")),
                "budgetLeft": str(status_doc.get("budget_left"))}
        try:
            # A patch of data only: the chart's labels and Helm's ownership annotations stay.
            self.kube.patch_config_map_data(name, data)
        except NotFound:
            self._create(name, data)
        except (PermanentError, TemporaryError) as e:
            log.warning("could not update ConfigMap %s: %s", name, e)

    def _create(self, name: str, data: dict[str, str]) -> None:
        body = {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": self.kube.ns,
                             "labels": {**labels(self.s, self.search), "app.kubernetes.io/component": "status"}},
                "data": data}
        try:
            self.kube.create_config_map(body)
        except (PermanentError, TemporaryError) as e:
            log.warning("could not create ConfigMap %s: %s", name, e)
