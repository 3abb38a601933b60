"""One controller at a time: a coordination.k8s.io Lease, taken by compare-and-swap, renewed in the
background, handed back on a clean exit (client-go's leader election does the same)."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from controller.errors import ConfigError, PermanentError, TemporaryError
from controller.kube.api import KubeClient
from controller.kube.objects import Lease, LeaseSpec, ObjectMeta

log = logging.getLogger(__name__)


class LeaderLease:
    """Acquire (waiting while another holder renews), renew in the background, and call on_lost if a renewal
    fails past the lease duration (the caller must stop acting)."""

    def __init__(self, kube: KubeClient, name: str, identity: str, seconds: int, on_lost: Callable[[], None],
                 clock: Callable[[], float] = time.monotonic):
        self.kube = kube
        self.clock = clock
        self._observed: tuple[tuple[object, ...], float] | None = None
        """The other holder's record as last read, and when this process first saw it (its own clock)."""
        self.name = name
        self.identity = identity
        self.seconds = seconds
        self.on_lost = on_lost
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _body(self, version: str | None, transitions: int, acquired: str | None = None) -> Lease:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        meta: ObjectMeta = {"name": self.name, "namespace": self.kube.ns}
        if version:
            meta["resourceVersion"] = version
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
                "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": self.seconds,
                         "acquireTime": acquired or now, "renewTime": now, "leaseTransitions": transitions}}

    def try_acquire(self) -> bool:
        lease = self.kube.read_lease(self.name)
        if lease is None:
            return self.kube.create_lease(self._body(None, 0))
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        if holder not in (None, "", self.identity) and not self._expired(spec):
            return False
        transitions = int(spec.get("leaseTransitions") or 0) + (holder != self.identity)
        body = self._body(lease["metadata"]["resourceVersion"], transitions,
                          spec.get("acquireTime") if holder == self.identity else None)
        # resourceVersion makes this a compare-and-swap: of two contenders, one gets a conflict.
        return self.kube.replace_lease(body)

    def _expired(self, spec: LeaseSpec) -> bool:
        """Another holder's Lease has expired when its record has not changed for its duration by this process's
        own clock (as client-go judges it): the holder's renewTime is its clock, which may be ahead or behind."""
        record = (spec.get("holderIdentity"), spec.get("renewTime"), spec.get("leaseTransitions"))
        now = self.clock()
        if self._observed is None or self._observed[0] != record:
            self._observed = (record, now)
        return now - self._observed[1] > spec.get("leaseDurationSeconds", 15)

    def acquire(self) -> None:
        while True:
            try:
                if self.try_acquire():
                    break
                log.info("another controller holds Lease %s; waiting", self.name)
            except TemporaryError as e:
                # A standby may wait for hours: an API hiccup must not end it.
                log.warning("reading Lease %s failed: %s; trying again", self.name, e)
            time.sleep(max(1.0, self.seconds / 3))
        log.info("acquired Lease %s as %s", self.name, self.identity)
        self._renewer = threading.Thread(target=self._renew_loop, name="lease-renew", daemon=True)
        self._renewer.start()

    def _renew_loop(self) -> None:
        last_ok = time.monotonic()
        while not self._stop.wait(self.seconds / 3):
            try:
                if self.try_acquire():
                    last_ok = time.monotonic()
                    continue
                log.error("Lease %s was taken by another controller", self.name)
            except (TemporaryError, ConfigError) as e:
                log.warning("renewing Lease %s failed: %s", self.name, e)
                if time.monotonic() - last_ok < self.seconds:
                    continue
            self.on_lost()
            return

    def release(self) -> None:
        """Stop renewing and, if we still hold the Lease, hand it back so that a successor need not wait
        out its duration (client-go's ReleaseOnCancel)."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=self.seconds)  # a renewal in flight would turn our write into a conflict
        for _ in range(3):
            try:
                lease = self.kube.read_lease(self.name)
                spec = (lease or {}).get("spec") or {}
                if lease is None or spec.get("holderIdentity") != self.identity:
                    return
                body = self._body(lease["metadata"]["resourceVersion"], int(spec.get("leaseTransitions") or 0),
                                  spec.get("acquireTime"))
                body["spec"]["holderIdentity"] = ""
                body["spec"]["leaseDurationSeconds"] = 1
                if self.kube.replace_lease(body):
                    log.info("released Lease %s", self.name)
                    return
            except (PermanentError, TemporaryError) as e:
                # Best effort: the Lease then expires on its own.
                log.warning("could not release Lease %s: %s", self.name, e)
                return


def take_lease(kube: KubeClient, name: str | None, seconds: int) -> LeaderLease | None:
    """Take the named Lease, waiting while another controller holds it; None when no Lease is configured. Losing
    it later ends this process at once (exit 4), so that only one controller ever acts."""
    if not name:
        return None

    def lost() -> None:
        log.error("lost the leader Lease: exiting so that only one controller acts")
        os._exit(4)

    lease = LeaderLease(kube, name, kube.identity, seconds, lost)
    lease.acquire()
    return lease
