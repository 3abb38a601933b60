"""The operator: watches Search objects and runs each one's search loop (the same SearchLoop as local mode).

One SearchWorker thread per Search: it builds the search's settings from the Search's spec over the operator's
own (store, Job defaults), stages its dataset, and runs the loop with a KubernetesLauncher whose Jobs the Search
owns (deleting the Search garbage-collects them; its records stay in the store) and a SearchStatusWriter
(status subresource, Events). A worker's failure or slow store stalls only its own thread.

Spec edits: budgets (maxTrials, maxFailedTrials, parallelism, goal) are applied to the running loop at once;
other accepted changes (trial, tpe, early stopping) restart the loop, which resumes from the store and adopts
its running Jobs; a changed space, seed or folder is refused with a condition and a Warning Event, and the
search goes on as it was. A Search refused before it ran (its spec beyond the policy, or invalid) is tried again
at its next edit.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from controller.backoff import Backoff
from controller.data.staging import stage
from controller.errors import ConfigError, PermanentError, RecordError, TemporaryError
from controller.kube.api import KubeClient
from controller.kube.grant import trial_grants
from controller.kube.launcher import KubernetesLauncher
from controller.kube.objects import OwnerRef
from controller.kube.search_status import SearchStatusWriter
from controller.kube.watch import Watcher
from controller.ledger.layout import OWNER_KEY
from controller.loop import SearchLoop
from controller.report.publish import Notifier, Publisher
from controller.settings.config import Settings
from controller.settings.policy import PolicyError, check_data, check_job, merged_job
from controller.settings.resource import API_VERSION, KIND, budget_change, settings_of
from controller.store.base import Store, bucket_of, create_json, get_json, put_json

log = logging.getLogger(__name__)

PublisherFactory = Callable[[Settings, Store, Notifier], Publisher]


class StoreUnavailable(TemporaryError):
    """The store failed its check: retried with backoff, shown on the Search meanwhile."""


class SearchWorker:
    """One Search's thread: its settings checked against the policy, its search loop run, its edits followed, its
    status written."""

    def __init__(self, op: Operator, obj: dict[str, Any]):
        self.op = op
        self.obj = obj
        self.name: str = obj["metadata"]["name"]
        self.uid: str = obj["metadata"]["uid"]
        self.kube = KubeClient(op.kube.api, obj["metadata"]["namespace"], op.kube.identity)
        self.settings: Settings | None = None
        self.applied = -1
        """The spec generation the running search follows."""
        self.loop: SearchLoop | None = None
        self.launcher: KubernetesLauncher | None = None
        # One writer for the worker's life: it holds every condition, and a merge patch replaces the whole list,
        # so a second writer would drop the conditions the first one set.
        self.writer = SearchStatusWriter(self.kube, obj, op.root.child(self.folder).uri)
        self.halted = threading.Event()
        self.changed = threading.Event()
        self.store_problem: str | None = None
        self.spec_refused = False
        """The newest generation was refused (a fixed field, the policy, an invalid spec): SpecAccepted stays False
        until an edit is accepted (a loop that starts again meanwhile must not say the spec was accepted)."""
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name=f"search-{self.name}", daemon=True)

    @property
    def folder(self) -> str:
        return str((((self.obj.get("spec") or {}).get("search") or {}).get("name")) or self.name)

    def start(self) -> None:
        self.thread.start()

    def halt(self) -> None:
        """The Search is gone (or the operator stops): stop orchestrating; running Jobs are the garbage
        collector's (deleted Search) or the next operator's (adopted)."""
        self.halted.set()
        self.changed.set()
        with self._lock:
            if self.loop:
                self.loop.halt()
            if self.launcher:
                self.launcher.wake()

    def update(self, obj: dict[str, Any]) -> None:
        """A new version of the Search: apply its budgets, restart for other changes, refuse fixed fields."""
        self.obj = obj
        generation = int(obj["metadata"].get("generation") or 0)
        if generation == self.applied:
            return
        if self.settings is None:
            # Never started: its spec was refused (or its store has not answered yet). The worker tries this one.
            self.changed.set()
            return
        try:
            wanted = self._settings_of(obj)
        except PolicyError as e:
            self.spec_refused = True
            self._refuse("PolicyViolation", str(e))
            return
        except ConfigError as e:
            self.spec_refused = True
            self._refuse("InvalidSpec", str(e))
            return
        with self._lock:
            merged, refused = budget_change(self.settings, wanted)
            self.applied = generation
            self.writer.generation = generation
            self.spec_refused = bool(refused)
            if refused:
                self._refuse("FixedFieldChanged", f"{', '.join(refused)} cannot change once a search has records "
                                                  "(they would not fit); it goes on as it was. Create another "
                                                  "Search for another space, seed or folder.")
            else:
                self._accept()
            restart = dataclasses.replace(wanted, search=merged.search) != merged and not refused
            self.settings = dataclasses.replace(wanted, search=merged.search) if restart else merged
            if self.loop and not restart:
                self.loop.settings = merged  # the loop reads its budgets at every step
            elif self.loop:
                self.loop.halt()
            if self.launcher:
                self.launcher.wake()
        self.changed.set()
        log.info("Search %s: generation %d applied%s", self.name, generation, " (loop restarted)" if restart else "")

    # -- the worker's thread ---------------------------------------------------------------------------------
    def _run(self) -> None:
        backoff = Backoff()
        while not self.halted.is_set():
            self.changed.clear()
            try:
                self._run_once()
                backoff.reset()
            except ConfigError as e:  # its settings, or its data source: the Search says why until it is edited
                log.error("Search %s: %s", self.name, e)
                if isinstance(e, PolicyError):
                    self._refuse("PolicyViolation", str(e))
                self._fail(str(e))
            except (TemporaryError, PermanentError, OSError) as e:
                backoff.failed(f"in Search {self.name}", e)
                continue
            except Exception as e:  # a bug must not take every other search down with this thread
                log.exception("Search %s: unexpected error; its search starts again", self.name)
                backoff.failed(f"in Search {self.name}", e)
                continue
            if self.loop is not None and self.loop.halted and not self.halted.is_set():
                continue  # halted for a restart with new settings
            self.changed.wait()

    def _check_store(self) -> None:
        """The store answers and honours conditional writes, or the Search says why (a condition, the WAITING
        column, one Warning Event per new reason) and its worker retries with backoff: a bucket created, a Secret
        fixed, and the search goes on with no edit to the Search and no restart of the operator."""
        try:
            self.op.root.check()
        except (ConfigError, TemporaryError) as e:
            message = str(e)
            if message != self.store_problem:
                self.writer.event("StoreUnavailable", message, warning=True)
            self.store_problem = message
            self.writer.store_problem(message)
            raise StoreUnavailable(message) from e
        self.store_problem = None
        self.writer.store_problem(None)

    def _run_once(self) -> None:
        self._check_store()
        if self.settings is None:
            # Observed even if refused: an edit (a new generation) is what makes the worker try again.
            self.applied = self.writer.generation = int(self.obj["metadata"].get("generation") or 0)
            self.settings = self._settings_of(self.obj)
            self.spec_refused = False
        settings = self.settings
        self._check_folder_owner(settings)
        staged = stage(settings.trial.dataset, settings.trial.data_sha256, self.op.root, self.op.base.policy,
                       field="spec.trial.data")
        if staged is not None:
            settings = staged.settings(settings)
        store = self.op.root.child(settings.search.name)
        writer = self.writer
        writer.records_uri, writer.generation = store.uri, self.applied
        owner: OwnerRef = {"apiVersion": API_VERSION, "kind": KIND, "name": self.name, "uid": self.uid}
        grants = trial_grants(settings, store, self.op.root)
        launcher = KubernetesLauncher(self.kube, settings.kube, settings.search.name, owner=owner, grants=grants)
        loop = SearchLoop(settings, store, launcher, publisher=self.op.publisher(settings, store, writer),
                          wait_seconds=settings.kube.resync_seconds)
        with self._lock:
            if self.halted.is_set():
                launcher.close()
                return
            self.launcher, self.loop = launcher, loop
        if not self.spec_refused:
            self._accept()
        if grants is None and self.op.root.uri.startswith("s3://"):
            self.writer.condition("TrialAccessScoped", False, "SharedCredentials",
                                  "kube.trialAccess is credentials: every trial pod holds the store's keys and can "
                                  "read and write the whole bucket")
        elif grants is not None:
            self.writer.condition("TrialAccessScoped", True, "Presigned",
                                  "each trial reaches only its own keys and the staged dataset (presigned URLs)")
        try:
            loop.run()
        finally:
            launcher.close()
            if not loop.halted:
                # Ended: nothing of it stays in memory (records, TPE's history). An edit of the Search (a larger
                # budget) runs a new loop, which reads the store again.
                with self._lock:
                    self.loop, self.launcher = None, None

    def _check_folder_owner(self, settings: Settings) -> None:
        """A folder belongs to the Search that first claimed it (owner.json: namespace, name and UID, created
        once), whatever order an operator hears of Searches in: another Search naming it is refused, naming the
        owner, while the owner exists. A Search of the owner's namespace and name (deleted and created again), or
        any Search once the owner is gone, takes it over. Folders from before owner.json: another release's
        Search (search.json's namespace) is refused; records of `controller run` (no operator) may be taken over."""
        folder = self.op.root.child(settings.search.name)
        me = {"namespace": self.kube.ns, "name": self.name, "uid": self.uid}
        owner = _read_owner(folder)
        if owner is None:
            self._check_legacy_owner(settings, folder)
            if create_json(folder, OWNER_KEY, {**me, "claimed_at": time.time()}):
                return
            owner = _read_owner(folder) or {}  # another Search claimed it at the same moment
        if owner.get("uid") == self.uid:
            return
        ns, name = owner.get("namespace"), owner.get("name")
        if isinstance(ns, str) and isinstance(name, str) and (ns, name) != (self.kube.ns, self.name) \
                and self._alive(ns, name, owner.get("uid")):
            self._folder_in_use(settings, f"{ns}/{name}")
        log.info("Search %s: taking over folder %s from %s (no longer there)", self.name, settings.search.name,
                 f"{ns}/{name}" if ns else "an unreadable owner record")
        put_json(folder, OWNER_KEY, {**me, "claimed_at": time.time(), "previous": owner})

    def _alive(self, namespace: str, name: str, uid: Any) -> bool:
        """Whether the Search that owns a folder still exists (unknown, when it cannot be read: taken as yes)."""
        try:
            found = KubeClient(self.op.kube.api, namespace, self.op.kube.identity).read_search(name)
        except (PermanentError, TemporaryError) as e:
            log.warning("Search %s: cannot tell whether %s/%s exists (%s); its folder stays its own", self.name,
                        namespace, name, e)
            return True
        return found is not None and (found.get("metadata") or {}).get("uid") == uid

    def _check_legacy_owner(self, settings: Settings, folder: Store) -> None:
        doc = get_json(folder, "search.json")
        recorded = doc.get("settings") if isinstance(doc, dict) else None
        kube = recorded.get("kube") if isinstance(recorded, dict) else None
        if not (isinstance(kube, dict) and kube.get("jobPrefix")) or kube.get("namespace") == settings.kube.namespace:
            return
        self._folder_in_use(settings, f"{kube.get('namespace')}/{kube['jobPrefix']}",
                            " (another release sharing this bucket and prefix?)",
                            ", or the release another store.prefix")

    def _folder_in_use(self, settings: Settings, owner: str, why: str = "", fix: str = "") -> None:
        message = (f"spec.search.name: folder {settings.search.name!r} in {self.op.root.uri} holds the records "
                   f"of Search {owner}{why}; give this Search another name or spec.search.name{fix}")
        self._refuse("FolderInUse", message)
        raise ConfigError(message)

    def _settings_of(self, obj: dict[str, Any]) -> Settings:
        settings = settings_of(obj, self.op.base)
        kube = dataclasses.replace(settings.kube, namespace=obj["metadata"]["namespace"], job_prefix=self.name,
                                   instance=self.name, owner_config_map=None, status_config_map=None,
                                   lease_name=None)
        base = self.op.base
        # A Search adds to the operator's placement and limits; it never removes them.
        settings = dataclasses.replace(settings, kube=merged_job(base.kube, kube))
        spec_trial = (obj.get("spec") or {}).get("trial") or {}
        if "command" in spec_trial and "data" not in spec_trial:
            # A program of the Search's own gets the dataset it names, not the operator's trainer's: unset, the
            # CIFAR trainer reads CIFAR-100 and any other program nothing (TrialSection.dataset).
            settings = dataclasses.replace(settings, trial=dataclasses.replace(settings.trial, data=None,
                                                                                data_sha256=None))
        # A Search gets the operator's trial settings and what its policy lets it change: nothing else.
        check_job(base.policy, base, settings, spec_trial, settings.search.parallelism)
        check_data(base.policy, settings.trial.dataset, settings.trial.data_sha256, bucket_of(self.op.root),
                   "spec.trial.data")
        return settings

    def _accept(self) -> None:
        """SpecAccepted, and the generation now followed (observedGeneration), written at once."""
        self.writer.condition("SpecAccepted", True, "Accepted", f"generation {self.applied} applied")

    def _refuse(self, reason: str, message: str) -> None:
        writer = self.writer
        writer.condition("SpecAccepted", False, reason, message)
        writer.event("SpecRefused", message, warning=True)

    def _fail(self, message: str) -> None:
        writer = self.writer
        writer.status({"state": "failed", "reason": message, "counts": {}, "finished": 0, "budget_left": 0})
        writer.event("SearchFailed", message, warning=True)


def _read_owner(folder: Store) -> dict[str, Any] | None:
    """The folder's owner record; None if there is none; {} if it cannot be read (damaged: any Search may take the
    folder over, as from a Search that is gone)."""
    try:
        owner = get_json(folder, OWNER_KEY)
    except RecordError as e:
        log.warning("%s/%s: %s", folder.uri, OWNER_KEY, e)
        return {}
    return owner if isinstance(owner, dict) or owner is None else {}


class Operator:
    """Watches the Searches of one namespace (or of all) and keeps one SearchWorker per Search."""

    def __init__(self, kube: KubeClient, base: Settings, root: Store, publisher: PublisherFactory,
                 all_namespaces: bool = False, selector: str | None = None):
        """selector: only the Searches with these labels (several operators can share a cluster by label)."""
        self.kube = kube
        self.base = base
        self.root = root
        self.publisher = publisher
        self.all_namespaces = all_namespaces
        self.workers: dict[tuple[str, str], SearchWorker] = {}
        self._lock = threading.Lock()
        self.watcher = Watcher("Search", lambda: kube.list_searches(all_namespaces, selector),
                               lambda version, timeout: kube.watch_searches(all_namespaces, version, timeout, selector),
                               self._on_event, base.kube.resync_seconds)

    def run(self, stop: threading.Event) -> None:
        log.info("operator: watching Searches in %s", "all namespaces" if self.all_namespaces else self.kube.ns)
        self.watcher.start()
        while not stop.wait(5.0):
            self.watcher.start()  # a watch thread that died is started again
        self.shutdown()

    def shutdown(self) -> None:
        self.watcher.close()
        with self._lock:
            workers = list(self.workers.values())
        for w in workers:
            w.halt()
        for w in workers:
            if w.thread.ident is not None:  # a refused Search's worker never started
                w.thread.join(timeout=60)

    def _on_event(self, kind: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        key = (meta.get("namespace", self.kube.ns), meta.get("name", ""))
        with self._lock:
            worker = self.workers.get(key)
            if kind == "DELETED" or (worker is not None and worker.uid != meta.get("uid")):
                if worker is not None:
                    log.info("Search %s/%s deleted: its trials stop with their Jobs; its records stay", *key)
                    worker.halt()
                    del self.workers[key]
                if kind == "DELETED":
                    return
                worker = None
            if worker is not None:
                worker.update(obj)
                return
            # Which Search a folder is decided by its owner record in the store (the worker claims it first), never by
            # the order an operator hears of them: that changes with every restart.
            worker = SearchWorker(self, obj)
            self.workers[key] = worker
        log.info("Search %s/%s: starting its search", *key)
        worker.start()
