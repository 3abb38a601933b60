"""One search, no operator: `controller run` without --local runs one search's loop on a cluster from a config
file, its trials as Jobs, with no Search resource (the operator, controller/kube/operator.py, is the mode the chart
installs). What a person sees of it with kubectl: Events on a ConfigMap that owns its Jobs (kube.ownerConfigMap), and
a status ConfigMap kept current (kube.statusConfigMap), both optional and created by whoever runs it. Visibility only:
a failure to write them is logged and the search goes on."""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from datetime import UTC, datetime
from typing import Any, NoReturn

from controller.data.staging import staged_settings
from controller.errors import PermanentError, TemporaryError
from controller.kube.api import Conflict, KubeClient, NotFound
from controller.kube.connect import connect
from controller.kube.grant import trial_grants
from controller.kube.jobs import labels
from controller.kube.launcher import KubernetesLauncher
from controller.kube.lease import take_lease
from controller.loop import SearchLoop
from controller.report.progress import TerminalProgress
from controller.report.publish import SearchStatus, search_publisher
from controller.settings.config import Settings
from controller.settings.kube import KubeSettings
from controller.store.uri import open_store

log = logging.getLogger(__name__)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class KubeNotifier:
    """The Notifier of a search run by `run` on a cluster: Events on its owner ConfigMap, its status ConfigMap."""

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


def run_single(settings: Settings, idle_when_done: bool = False) -> SearchStatus:
    """Runs the search to its end, its trials as Jobs, under the kube.leaseName Lease when one is set."""
    root = open_store(settings.store.uri, **settings.store.options())
    root.check()
    kube = connect(settings.kube.namespace)
    lease = take_lease(kube, settings.kube.lease_name, settings.kube.lease_seconds)
    launcher = None
    try:
        settings = staged_settings(settings, root)  # under the Lease: one controller fetches the dataset
        store = root.child(settings.search.name)
        launcher = KubernetesLauncher(kube, settings.kube, settings.search.name,
                                      grants=trial_grants(settings, store, root))
        notifier = KubeNotifier(kube, settings.kube, settings.search.name)
        loop = SearchLoop(settings, store, launcher,
                          publisher=search_publisher(settings, store, TerminalProgress(), notifier),
                          wait_seconds=settings.kube.resync_seconds)
        signal.signal(signal.SIGTERM, _terminated)
        status = loop.run()
    finally:
        if launcher:
            launcher.close()
        if lease:
            lease.release()
    print(json.dumps(status.to_json(), indent=1), flush=True)
    if idle_when_done:
        _idle(settings.search.name, status)
    return status


def _terminated(signum: int, frame: Any) -> NoReturn:
    # Unwinds through run_single's finally: the Lease is handed back, so the next pod of a rollout
    # starts at once; running Jobs go on and are adopted by it.
    log.info("SIGTERM: stopping; running trials go on and the next controller adopts them")
    raise SystemExit(143)


def _idle(search: str, status: SearchStatus) -> None:
    """A Deployment restarts a container that exits, which would only find the search ended again
    (CrashLoopBackOff); so stay up, metrics still served, until the pod is deleted or rolled."""
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    log.info("search %s %s; idle until SIGTERM (--idle-when-done)", search, status.state)
    done.wait()
