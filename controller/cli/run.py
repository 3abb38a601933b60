"""`run`: one search to its end, in local mode (trials as processes, this module's wiring) or on a cluster
(controller/kube/single.py)."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from pathlib import Path

from controller.cli.logs import setup_logging
from controller.data.staging import check_source_exists, staged_settings
from controller.launch.local import ProcessLauncher
from controller.launch.once import local_command
from controller.loop import SearchLoop
from controller.report.progress import TerminalProgress
from controller.report.publish import search_publisher
from controller.settings.config import Settings, with_overrides
from controller.settings.resource import load_settings
from controller.store.base import Store
from controller.store.local import LocalStore
from controller.store.uri import open_store

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The `run` command's flags."""
    run = sub.add_parser("run", help="run (or resume) a search")
    run.add_argument("--config", help="YAML config file (docs/quickstart.md), or a Search manifest")
    run.add_argument("--local", action="store_true", help="run trials as local processes (no cluster)")
    run.add_argument("--store", help="s3://bucket/prefix or a directory")
    run.add_argument("--search", help="search name (a folder in the store)")
    run.add_argument("--max-trials", type=int)
    run.add_argument("--parallelism", type=int)
    run.add_argument("--max-failed", type=int)
    run.add_argument("--seed", type=int)
    run.add_argument("--data", help="cifar100 | PATH, s3:// or https:// .../cifar-100-python.tar.gz | synthetic[:N]")
    run.add_argument("--data-sha256", metavar="HEX", help="the dataset archive's SHA-256 (checked before staging)")
    run.add_argument("--epochs", type=int)
    run.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    run.add_argument("--idle-when-done", action="store_true",
                     help="on Kubernetes: once the search has ended, stay up (serving metrics) until SIGTERM, "
                          "so that a Deployment does not restart it over and over")
    run.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    """Runs the search to its end; exit 0 when it succeeded or reached its goal, 3 when it failed."""
    settings = with_overrides(
        load_settings(args.config), store__uri=args.store, search__name=args.search,
        search__max_trials=args.max_trials, search__parallelism=args.parallelism,
        search__max_failed_trials=args.max_failed, search__seed=args.seed, trial__data=args.data,
        trial__data_sha256=args.data_sha256, trial__epochs=args.epochs, controller__metrics_port=args.metrics_port,
    ).validate()
    setup_logging(settings.controller.log_format, args.verbose, settings.search.name)
    if not args.local:
        from controller.kube.single import run_single  # local mode never loads the kubernetes client

        return run_single(settings, args.idle_when_done).exit_code
    return run_local(settings)


def run_local(settings: Settings) -> int:
    """Local mode: the search loop with each trial a process on this machine."""
    settings = local_command(settings)  # trials run in this interpreter's environment, not the first `python`
    check_source_exists(settings)
    root = open_store(settings.store.uri, **settings.store.options())
    root.check()
    settings = staged_settings(settings, root)
    store = root.child(settings.search.name)
    launcher = ProcessLauncher(_workdir(settings, store), settings.local.poll_seconds, settings.local.grace_seconds)
    progress = TerminalProgress()
    loop = SearchLoop(settings, store, launcher, publisher=search_publisher(settings, store, progress),
                      wait_seconds=max(1.0, settings.local.poll_seconds))
    status = loop.run()
    progress.end()
    print(json.dumps(status.to_json(), indent=1))
    return status.exit_code


def _workdir(settings: Settings, search_store: Store) -> Path:
    """Where the local launcher keeps its trials' folders: beside a directory store's records, else a cache."""
    if settings.local.workdir:
        return Path(settings.local.workdir).expanduser()
    if isinstance(search_store, LocalStore):
        return search_store.root / ".local"
    digest = hashlib.sha256(search_store.uri.encode()).hexdigest()[:12]
    return Path.home() / ".cache" / "cifar-hpo" / f"{settings.search.name}-{digest}"
