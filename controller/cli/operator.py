"""`operator`: every Search object of the namespace (or of all namespaces), each its own search loop, in one
process; with the dashboard and metrics served when their ports are set."""

from __future__ import annotations

import argparse
import math
import signal
import threading

from controller.cli.logs import setup_logging
from controller.dashboard.server import serve as serve_dashboard
from controller.report.drawer import BackgroundDrawer
from controller.report.metrics import Families, Metrics
from controller.report.publish import Notifier, Publisher
from controller.settings.config import Settings, with_overrides
from controller.settings.resource import load_settings
from controller.store.base import Store
from controller.store.uri import open_store


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The `operator` command's flags."""
    op = sub.add_parser("operator", help="on Kubernetes: run every Search object of the namespace")
    op.add_argument("--config", help="YAML config file: the store and the defaults of every Search's trials")
    op.add_argument("--store", help="s3://bucket/prefix: where each Search's folder goes")
    op.add_argument("--all-namespaces", action="store_true", help="watch Searches in every namespace")
    op.add_argument("--selector", metavar="LABELS", help="only Searches with these labels, e.g. team=vision")
    op.add_argument("--metrics-port", type=int, help="serve Prometheus metrics (all searches) on this port")
    op.set_defaults(func=cmd_operator)


def cmd_operator(args: argparse.Namespace) -> int:
    """Runs until SIGTERM; the Searches' Jobs go on and the next operator adopts them."""
    settings = with_overrides(load_settings(args.config), store__uri=args.store,
                              controller__metrics_port=args.metrics_port).validate()
    if not settings.kube.lease_name:  # never two operators acting on one namespace's Searches
        settings = with_overrides(settings, kube__lease_name="cifar-hpo-operator")
    setup_logging(settings.controller.log_format, args.verbose, "operator")
    # Imported here: the other commands (local mode above all) never load the kubernetes client.
    from controller.kube.connect import connect
    from controller.kube.lease import take_lease
    from controller.kube.operator import Operator

    families = Families()
    if settings.controller.metrics_port:
        families.serve(settings.controller.metrics_port)  # at once: it is the pod's readiness too

    drawer = BackgroundDrawer()
    # With the dashboard served, the live view is the browser's: report/ is drawn once, when a search ends.
    report_seconds = math.inf if settings.controller.dashboard_port else None

    def publisher(s: Settings, store: Store, notifier: Notifier) -> Publisher:
        return Publisher(store, s.search.name, notifier=notifier, metrics=Metrics(s.search.name, families),
                         report_seconds=report_seconds or s.controller.report_seconds, drawer=drawer)

    # The store is checked by each Search's worker, which shows a failure on that Search and retries: a missing
    # bucket must not put the operator in CrashLoopBackOff with the reason only in its log.
    root = open_store(settings.store.uri, **settings.store.options())
    if settings.controller.dashboard_port:
        # Read-only, and served by a standby too: the pod's port (the chart's Service and NetworkPolicy guard it).
        serve_dashboard(root, "0.0.0.0", settings.controller.dashboard_port,
                        allow_hosts=settings.controller.dashboard_hosts)
    kube = connect(settings.kube.namespace)
    lease = take_lease(kube, settings.kube.lease_name, settings.kube.lease_seconds)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        Operator(kube, settings, root, publisher, all_namespaces=args.all_namespaces, selector=args.selector).run(stop)
    finally:
        drawer.close()
        if lease:
            lease.release()
    return 0
