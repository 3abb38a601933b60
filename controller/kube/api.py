"""KubeClient: the few API calls the controller makes, on plain dicts, over the official client.

Every call goes through `call`, which is the one place API errors become the project's error kinds
(kopf does the same): 401/403 → ConfigError (RBAC, stop with the message), 404 → NotFound, 409 → Conflict
(exists already, or changed under a compare-and-swap), 400/422 → ConfigError (the object is invalid: a
setting is wrong), anything else (5xx, 429, a dropped connection) → TemporaryError (retry later).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any, cast

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from controller.errors import ConfigError, PermanentError, TemporaryError
from controller.kube.objects import Job, Lease, OwnerRef, Pod
from controller.launch.protocol import MAX_LOG_BYTES
from controller.settings.resource import GROUP, PLURAL, VERSION

log = logging.getLogger(__name__)

# The client would send a dict patch as a JSON Patch (its first JSON content type), which a real API server
# refuses: every patch here is a merge patch of a small dict.
MERGE_PATCH = "application/merge-patch+json"
API_ERRORS = (ApiException, HTTPError)
# (connect, read) seconds for one call: a call that hangs (a half-open connection) must fail and be retried, not
# hold the thread that made it (a watch thread, a search's loop) forever.
CALL_TIMEOUT = (10.0, 60.0)
# A refusal (401/403) is asked again over this many seconds before it is believed: a kube-apiserver that has just
# restarted refuses until its authorizer's caches have synced, and that must not end a search.
REFUSAL_GRACE = (0.5, 1.0, 2.0, 4.0, 8.0)


class NotFound(PermanentError):
    """404: the object is not there."""


class Conflict(TemporaryError):
    """409: the object exists already, or changed since it was read."""


def translate(e: Exception, what: str) -> PermanentError | TemporaryError:
    """An API error as one of the two error kinds: refusals and bad requests are permanent (RBAC named), conflicts,
    throttling and outages temporary."""
    status = getattr(e, "status", None)
    if status in (401, 403):
        return ConfigError(f"{what}: the API server refused ({status}); check the controller's RBAC Role")
    if status == 404:
        return NotFound(f"{what}: not found")
    if status == 409:
        return Conflict(f"{what}: it exists already or changed meanwhile (409)")
    if status in (400, 422):
        return ConfigError(f"{what}: the API server refused the object ({status}): {_message(e)}")
    return TemporaryError(f"{what}: {getattr(e, 'reason', e)} ({status})")


def _message(e: Exception) -> str:
    try:
        return str(json.loads(getattr(e, "body", "") or "{}").get("message") or getattr(e, "reason", e))
    except ValueError:
        return str(getattr(e, "reason", e))


class KubeClient:
    """The few API calls the controller makes, in one namespace, on plain dicts; every API error translated by
    translate()."""

    def __init__(self, api_client: Any, namespace: str, identity: str = "cifar-hpo-controller"):
        self.api = api_client
        self.ns = namespace
        self.identity = identity[:128]
        """The field manager of what this controller creates: metadata.managedFields tells who made a Job."""
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.coord = client.CoordinationV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)

    def raw(self, what: str, fn: Callable[..., Any], *args: Any, refusal_grace: tuple[float, ...] = REFUSAL_GRACE,
            **kwargs: Any) -> Any:
        """One API call, its HTTP response unread; any error translated. A watch's read timeout outlasts the
        server-side timeoutSeconds it asks for. refusal_grace=() for a call whose failure is only logged (Events,
        status): waiting out a lasting refusal there would stall the search for nothing."""
        watch_seconds = kwargs.get("timeout_seconds") if kwargs.get("watch") else None
        timeout = (CALL_TIMEOUT[0], watch_seconds + 30.0) if watch_seconds else CALL_TIMEOUT
        for pause in refusal_grace:
            try:
                return fn(*args, _preload_content=False, _request_timeout=timeout, **kwargs)
            except API_ERRORS as e:
                if getattr(e, "status", None) not in (401, 403):
                    raise translate(e, what) from e
                log.info("%s: refused (%s); asking again in %.1f s", what, getattr(e, "status", None), pause)
                time.sleep(pause)
        try:
            return fn(*args, _preload_content=False, _request_timeout=timeout, **kwargs)
        except API_ERRORS as e:
            raise translate(e, what) from e

    def call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        """One API call, its JSON body as a dict."""
        data = self.raw(what, fn, *args, **kwargs).data
        return cast(dict[str, Any], json.loads(data)) if data else {}

    # -- Jobs ----------------------------------------------------------------------------------------
    def create_job(self, body: Job) -> Job | None:
        """The Job created; None if it exists already."""
        try:
            return cast(Job, self.call(f"create Job {body['metadata']['name']}", self.batch.create_namespaced_job,
                                       self.ns, body, field_manager=self.identity))
        except Conflict:
            return None

    def put_secret(self, body: dict[str, Any]) -> None:
        """Creates the Secret, or replaces the data of the one of that name (no read: the operator may create and
        patch Secrets, never read one)."""
        name = body["metadata"]["name"]
        try:
            self.call(f"create Secret {name}", self.core.create_namespaced_secret, self.ns, body,
                      field_manager=self.identity)
        except Conflict:
            self.call(f"update Secret {name}", self.core.patch_namespaced_secret, name, self.ns,
                      {"stringData": body["stringData"]}, field_manager=self.identity)

    def own_secret(self, name: str, owner: OwnerRef) -> None:
        """The Secret is garbage-collected with owner from now on."""
        self.call(f"give Secret {name} to {owner['name']}", self.core.patch_namespaced_secret, name, self.ns,
                  {"metadata": {"ownerReferences": [{**owner, "blockOwnerDeletion": False}]}},
                  field_manager=self.identity)

    def get_job(self, name: str) -> Job | None:
        try:
            return cast(Job, self.call(f"read Job {name}", self.batch.read_namespaced_job, name, self.ns))
        except NotFound:
            return None

    def list_jobs(self, label_selector: str) -> dict[str, Any]:
        return self.call("list Jobs", self.batch.list_namespaced_job, self.ns, label_selector=label_selector)

    def watch_jobs(self, label_selector: str, version: str | None, timeout_seconds: int) -> Any:
        """A watch stream of Jobs from a listing's resourceVersion (the caller reads and closes it)."""
        return self.raw("watch Jobs", self.batch.list_namespaced_job, self.ns, label_selector=label_selector,
                        resource_version=version, watch=True, allow_watch_bookmarks=False,
                        timeout_seconds=timeout_seconds)

    def delete_job(self, name: str) -> None:
        try:
            # Foreground: the Job stays (deletionTimestamp set) until its pods are gone, so its DELETED
            # event means the trainer has had its grace period to write a 'stopped' result.
            self.call(f"delete Job {name}", self.batch.delete_namespaced_job, name, self.ns,
                      propagation_policy="Foreground")
        except NotFound:
            pass

    def annotate_job(self, name: str, annotations: dict[str, str]) -> None:
        try:
            self.call(f"annotate Job {name}", self.batch.patch_namespaced_job, name, self.ns,
                      {"metadata": {"annotations": annotations}}, _content_type=MERGE_PATCH)
        except NotFound:
            pass

    # -- pods ----------------------------------------------------------------------------------------
    def list_pods(self, label_selector: str) -> list[Pod]:
        return cast(list[Pod], self.pod_listing(label_selector)["items"])

    def pod_listing(self, label_selector: str) -> dict[str, Any]:
        return self.call("list pods", self.core.list_namespaced_pod, self.ns, label_selector=label_selector)

    def watch_pods(self, label_selector: str, version: str | None, timeout_seconds: int) -> Any:
        """A watch stream of pods from a listing's resourceVersion (the caller reads and closes it)."""
        return self.raw("watch pods", self.core.list_namespaced_pod, self.ns, label_selector=label_selector,
                        resource_version=version, watch=True, allow_watch_bookmarks=False,
                        timeout_seconds=timeout_seconds)

    def pod_log(self, pod: str, limit_bytes: int = MAX_LOG_BYTES) -> bytes | None:
        """A pod's whole log (its first limit_bytes), kept in the bucket as trial.log; None if it cannot be read (a
        log is a courtesy, never a reason to stop)."""
        try:
            resp = self.raw(f"read log of {pod}", self.core.read_namespaced_pod_log, pod, self.ns,
                            limit_bytes=limit_bytes)
            return bytes(resp.data)
        except (PermanentError, TemporaryError) as e:
            log.debug("no log of pod %s: %s", pod, e)
            return None

    # -- ConfigMaps and Events -----------------------------------------------------------------------
    def owner(self, config_map: str) -> OwnerRef:
        cm = self.call(f"read ConfigMap {config_map} (the trial Jobs' owner)", self.core.read_namespaced_config_map,
                       config_map, self.ns)
        return {"apiVersion": "v1", "kind": "ConfigMap", "name": config_map, "uid": cm["metadata"]["uid"]}

    def patch_config_map_data(self, name: str, data: dict[str, str]) -> None:
        self.call(f"update ConfigMap {name}", self.core.patch_namespaced_config_map, name, self.ns, {"data": data},
                  _content_type=MERGE_PATCH, refusal_grace=())

    def create_config_map(self, body: dict[str, Any]) -> None:
        self.call(f"create ConfigMap {body['metadata']['name']}", self.core.create_namespaced_config_map, self.ns,
                  body, refusal_grace=())

    def create_event(self, body: dict[str, Any]) -> None:
        self.call("create Event", self.core.create_namespaced_event, self.ns, body, refusal_grace=())

    # -- Searches ------------------------------------------------------------------------------------
    def list_searches(self, all_namespaces: bool = False, selector: str | None = None) -> dict[str, Any]:
        kw = {"label_selector": selector} if selector else {}
        if all_namespaces:
            return self.call("list Searches", self.custom.list_cluster_custom_object, GROUP, VERSION, PLURAL, **kw)
        return self.call("list Searches", self.custom.list_namespaced_custom_object, GROUP, VERSION, self.ns, PLURAL,
                         **kw)

    def watch_searches(self, all_namespaces: bool, version: str | None, timeout_seconds: int,
                       selector: str | None = None) -> Any:
        kw: dict[str, Any] = {"resource_version": version, "watch": True, "allow_watch_bookmarks": False,
              "timeout_seconds": timeout_seconds, **({"label_selector": selector} if selector else {})}
        if all_namespaces:
            return self.raw("watch Searches", self.custom.list_cluster_custom_object, GROUP, VERSION, PLURAL, **kw)
        return self.raw("watch Searches", self.custom.list_namespaced_custom_object, GROUP, VERSION, self.ns, PLURAL,
                        **kw)

    def read_search(self, name: str) -> dict[str, Any] | None:
        """The Search of this namespace named name, or None if there is none."""
        try:
            found: dict[str, Any] = self.call(f"read Search {name}", self.custom.get_namespaced_custom_object, GROUP,
                                              VERSION, self.ns, PLURAL, name)
            return found
        except NotFound:
            return None

    def patch_search_status(self, name: str, body: dict[str, Any]) -> None:
        self.call(f"update the status of Search {name}", self.custom.patch_namespaced_custom_object_status, GROUP,
                  VERSION, self.ns, PLURAL, name, body, _content_type=MERGE_PATCH, refusal_grace=())

    # -- Leases --------------------------------------------------------------------------------------
    def read_lease(self, name: str) -> Lease | None:
        try:
            return cast(Lease, self.call(f"read Lease {name}", self.coord.read_namespaced_lease, name, self.ns))
        except NotFound:
            return None

    def create_lease(self, body: Lease) -> bool:
        """False if another holder created it first."""
        try:
            self.call(f"create Lease {body['metadata']['name']}", self.coord.create_namespaced_lease, self.ns, body)
            return True
        except Conflict:
            return False

    def replace_lease(self, body: Lease) -> bool:
        """A compare-and-swap on metadata.resourceVersion: False if it changed since it was read."""
        try:
            self.call(f"take Lease {body['metadata']['name']}", self.coord.replace_namespaced_lease,
                      body["metadata"]["name"], self.ns, body)
            return True
        except Conflict:
            return False
