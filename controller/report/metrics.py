"""Prometheus metrics of the controller (served on /metrics when a port is set)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from controller.trial.contract import TrialState

log = logging.getLogger(__name__)

STATES = tuple(TrialState)


class Families:
    """The metric families, in one registry: the operator's searches share it (one /metrics, a `search` label)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.trials = Gauge("cifar_hpo_trials", "Trials by state", ["search", "state"], registry=r)
        self.running = Gauge("cifar_hpo_trials_running", "Trials in flight", ["search"], registry=r)
        self.best = Gauge("cifar_hpo_best_objective", "Best objective so far (validation fine accuracy)",
                          ["search"], registry=r)
        self.budget_left = Gauge("cifar_hpo_budget_left", "Trials left in the budget", ["search"], registry=r)
        self.proposal = Histogram("cifar_hpo_proposal_seconds", "Time to propose one batch of trials", ["search"],
                                  registry=r, buckets=(0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30))
        self.launch = Histogram("cifar_hpo_launch_seconds", "Time to create one trial's Job or process",
                                ["search"], registry=r, buckets=(0.005, 0.01, 0.03, 0.1, 0.3, 1, 3))
        self.errors = Counter("cifar_hpo_temporary_errors_total", "Store or API errors retried", ["search"],
                              registry=r)

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        start_http_server(port, addr=addr, registry=self.registry)
        log.info("serving Prometheus metrics on %s:%d/metrics", addr, port)


class Metrics:
    """One search's view of the families."""

    def __init__(self, search: str, families: Families | None = None):
        self.families = families or Families()
        self.search = search

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        self.families.serve(port, addr)

    def update(self, counts: Mapping[str, int], running: int, best: float | None, budget_left: int) -> None:
        f = self.families
        for state in STATES:
            f.trials.labels(self.search, state).set(counts.get(state, 0))
        f.running.labels(self.search).set(running)
        if best is not None:
            f.best.labels(self.search).set(best)
        f.budget_left.labels(self.search).set(budget_left)

    def proposed(self, seconds: float) -> None:
        self.families.proposal.labels(self.search).observe(seconds)

    def launched(self, seconds: float) -> None:
        self.families.launch.labels(self.search).observe(seconds)

    def error(self) -> None:
        self.families.errors.labels(self.search).inc()
