"""The controller's command line.

  python -m controller run [--config FILE] [--local] [--store URI] [--search NAME] [--max-trials N]
                           [--parallelism P] [--max-failed N] [--seed S] [--data SPEC] [--epochs E]
  python -m controller status --store URI [--search NAME] [--json]
  python -m controller best --store URI [--search NAME] [--download DIR]
  python -m controller import --store URI [--search NAME] PATH
  python -m controller report --store URI [--search NAME] [--out DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controller.dashboard.server import serve as serve_dashboard
from controller.data.staging import stage
from controller.errors import ConfigError, PermanentError, TemporaryError
from controller.kube.grant import trial_grants
from controller.launch.local import ProcessLauncher
from controller.ledger.importer import import_trials, read_source
from controller.ledger.trials import Ledger
from controller.loop import SearchLoop, open_search
from controller.report.drawer import BackgroundDrawer
from controller.report.html import render
from controller.report.metrics import Metrics
from controller.report.publish import Notifier, Publisher, SearchStatus
from controller.report.summary import download_best, search_names, status_json, status_table
from controller.settings.config import Settings, read_config, settings_from_mapping, with_overrides
from controller.settings.dataspec import parse_data_spec
from controller.settings.resource import is_search, settings_mapping
from controller.store.base import Store
from controller.store.local import LocalStore
from controller.store.uri import open_store
from controller.trial.contract import SearchState, TrialState

if TYPE_CHECKING:
    from controller.kube.api import KubeClient
    from controller.kube.lease import LeaderLease

log = logging.getLogger("controller")


class _Context(logging.Filter):
    """Puts the search name and, for "trial N: ..." lines, the trial id on every record."""

    def __init__(self, search: str):
        super().__init__()
        self.search = search

    def filter(self, record: logging.LogRecord) -> bool:
        record.search = self.search
        tid = None
        if isinstance(record.msg, str) and record.msg.startswith("trial %d") and record.args:
            tid = record.args[0] if isinstance(record.args, tuple) else None
        record.tid = tid
        record.trial = f" trial={tid}" if tid is not None else ""
        return True


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {"ts": record.created, "level": record.levelname, "logger": record.name,
               "search": getattr(record, "search", None), "msg": record.getMessage()}
        tid = getattr(record, "tid", None)  # set by _Context on "trial N: ..." lines
        if tid is not None:
            doc["tid"] = tid
        return json.dumps(doc)


def _setup_logging(fmt: str, verbose: bool, search: str = "-") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_Context(search))
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s search=%(search)s%(trial)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("botocore", "boto3", "urllib3", "hyperopt", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _load(path: str | None) -> Settings:
    """A config file, or a Search manifest (kind: Search): one file describes a search on a cluster and here."""
    if path is None:
        return Settings()
    doc = read_config(path)
    return settings_from_mapping(settings_mapping(doc) if is_search(doc) else doc)


def _root_store(uri: str, settings: Settings | None = None) -> Store:
    if settings is None:
        return open_store(uri)
    s = settings.store
    return open_store(uri, endpoint_url=s.endpoint_url, region=s.region, timeout_s=s.timeout_seconds,
                      addressing_style=s.addressing_style, checksums=s.checksums, ca_bundle=s.ca_bundle)


def _search_store(root: Store, search: str | None) -> tuple[Store, str]:
    """The named search, or the only one in the store."""
    if search:
        return root.child(search), search
    names = search_names(root)
    if len(names) == 1:
        return root.child(names[0]), names[0]
    if not names:
        raise ConfigError(f"--store {root.uri}: no search found here (no <name>/search.json); check the URI")
    raise ConfigError(f"--store {root.uri}: holds several searches ({', '.join(names)}); pick one with --search")


def _local_workdir(settings: Settings, search_store: Store) -> Path:
    if settings.local.workdir:
        return Path(settings.local.workdir).expanduser()
    if isinstance(search_store, LocalStore):
        return search_store.root / ".local"
    digest = hashlib.sha256(search_store.uri.encode()).hexdigest()[:12]
    return Path.home() / ".cache" / "cifar-hpo" / f"{settings.search.name}-{digest}"


class _Progress:
    """One updating line on a terminal; a log line per change otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()

    def __call__(self, status: SearchStatus) -> None:
        done, budget = status.finished, status.budget
        best = status.best
        best_txt = f"best {best['objective']:.4f} (trial {best['tid']})" if best else "best -"
        running, failed = status.counts[TrialState.RUNNING], status.counts[TrialState.FAILED]
        if self.tty:
            width = 24
            filled = int(width * done / budget) if budget else width
            sys.stderr.write(f"\r[{'#' * filled}{'-' * (width - filled)}] {done}/{budget} trials  {best_txt}  "
                             f"running {running}  failed {failed}   ")
            sys.stderr.flush()
        else:
            log.info("progress: %d/%d trials, %s, running %d, failed %d", done, budget, best_txt, running, failed)


def cmd_run(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    settings = with_overrides(
        settings, store__uri=args.store, search__name=args.search, search__max_trials=args.max_trials,
        search__parallelism=args.parallelism, search__max_failed_trials=args.max_failed, search__seed=args.seed,
        trial__data=args.data, trial__data_sha256=args.data_sha256, trial__epochs=args.epochs,
        controller__metrics_port=args.metrics_port,
    ).validate()
    _setup_logging(settings.controller.log_format, args.verbose, settings.search.name)
    if not args.local:
        return _run_on_kubernetes(settings, args.idle_when_done)
    if settings.trial.command[0] in ("python", "python3"):
        # Trials run in this interpreter's environment, not whatever `python` is first on PATH.
        settings = with_overrides(settings, trial__command=[sys.executable, *settings.trial.command[1:]])
    _check_data_exists(settings)
    root = _root_store(settings.store.uri, settings)
    root.check()
    settings = _staged(settings, root)
    store = root.child(settings.search.name)
    launcher = ProcessLauncher(_local_workdir(settings, store), settings.local.poll_seconds)
    progress = _Progress()
    loop = SearchLoop(settings, store, launcher, publisher=_publisher(settings, store, progress),
                      wait_seconds=max(1.0, settings.local.poll_seconds))
    status = loop.run()
    if progress.tty:
        sys.stderr.write("\n")
    print(json.dumps(status.to_json(), indent=1))
    return _exit_code(status)


def _exit_code(status: SearchStatus) -> int:
    return 0 if status.state in (SearchState.SUCCEEDED, SearchState.GOAL_REACHED) else 3


def _publisher(settings: Settings, store: Store, progress: _Progress, notifier: Notifier | None = None) -> Publisher:
    return Publisher(store, settings.search.name, notifier=notifier, metrics=_metrics(settings),
                     report_seconds=settings.controller.report_seconds, on_change=progress)


def _check_data_exists(settings: Settings) -> None:
    """What can be refused before anything is written: a local file that is not there, or staged arrays (.npz,
    which staging does not read) missing from their bucket. A source that staging fetches (cifar100, a URL, an
    s3:// archive) is checked by that fetch, once."""
    if settings.trial.data is None:
        return
    spec = parse_data_spec(settings.trial.data, "trial.data (--data)")
    if spec.kind in ("path", "npz") and not spec.spec.startswith("s3://"):
        if not Path(spec.spec).expanduser().is_file():
            raise ConfigError(f"trial.data (--data): no file at {spec.spec}; give the path of "
                              "cifar-100-python.tar.gz, or cifar100 / synthetic[:N]")
    elif spec.kind == "npz":
        parent, _, name = spec.spec.rpartition("/")
        if not _root_store(parent, settings).exists(name):
            raise ConfigError(f"trial.data (--data): no staged arrays at {spec.spec}; give the archive instead "
                              "and the controller stages it")


def _staged(settings: Settings, root: Store) -> Settings:
    """The dataset fetched and checked once, kept in the store; trials get the staged copy as their --data."""
    staged = stage(settings.trial.data, settings.trial.data_sha256, root)
    return settings if staged is None else staged.settings(settings)


def _metrics(settings: Settings) -> Metrics | None:
    if not settings.controller.metrics_port:
        return None
    metrics = Metrics(settings.search.name)
    metrics.serve(settings.controller.metrics_port)
    return metrics


def _kube_api() -> Any:
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


def _terminated(signum: int, frame: Any) -> None:
    # Unwinds through _run_on_kubernetes' finally: the Lease is handed back, so the next pod of a rollout
    # starts at once; running Jobs go on and are adopted by it.
    log.info("SIGTERM: stopping; running trials go on and the next controller adopts them")
    raise SystemExit(143)


def _lead(kube: KubeClient, settings: Settings, identity: str) -> LeaderLease | None:
    """Take the search's Lease (waiting while another controller holds it); None when none is configured."""
    from controller.kube.lease import LeaderLease

    if not settings.kube.lease_name:
        return None

    def lost() -> None:
        log.error("lost the leader Lease: exiting so that only one controller acts")
        os._exit(4)

    lease = LeaderLease(kube, settings.kube.lease_name, identity, settings.kube.lease_seconds, lost)
    lease.acquire()
    return lease


def _run_on_kubernetes(settings: Settings, idle_when_done: bool = False) -> int:
    # Imported here: local mode never loads the kubernetes client.
    from controller.kube.api import KubeClient
    from controller.kube.launcher import KubernetesLauncher
    from controller.kube.single import KubeNotifier

    root = _root_store(settings.store.uri, settings)
    root.check()
    # The pod's name (downward API) survives a container restart, so a controller restarted after a crash
    # takes its own Lease back at once, as client-go does; outside a pod, host and pid.
    identity = os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
    kube = KubeClient(_kube_api(), settings.kube.namespace, identity)
    lease = _lead(kube, settings, identity)
    launcher = None
    try:
        settings = _staged(settings, root)  # under the Lease: one controller fetches the dataset, after RBAC spoke
        store = root.child(settings.search.name)
        launcher = KubernetesLauncher(kube, settings.kube, settings.search.name,
                                      grants=trial_grants(settings, store, root))
        notifier = KubeNotifier(kube, settings.kube, settings.search.name)
        loop = SearchLoop(settings, store, launcher, publisher=_publisher(settings, store, _Progress(), notifier),
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
    return _exit_code(status)


def _idle(search: str, status: SearchStatus) -> None:
    """A Deployment restarts a container that exits, which would only find the search ended again
    (CrashLoopBackOff); so stay up, metrics still served, until the pod is deleted or rolled."""
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    log.info("search %s %s; idle until SIGTERM (--idle-when-done)", search, status.state)
    done.wait()


def cmd_operator(args: argparse.Namespace) -> int:
    settings = with_overrides(_load(args.config), store__uri=args.store,
                              controller__metrics_port=args.metrics_port).validate()
    if not settings.kube.lease_name:  # never two operators acting on one namespace's Searches
        settings = with_overrides(settings, kube__lease_name="cifar-hpo-operator")
    _setup_logging(settings.controller.log_format, args.verbose, "operator")
    from controller.kube.api import KubeClient
    from controller.kube.operator import Operator
    from controller.report.metrics import Families

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
    root = _root_store(settings.store.uri, settings)
    if settings.controller.dashboard_port:
        # Read-only, and served by a standby too: the pod's port (the chart's Service and NetworkPolicy guard it).
        serve_dashboard(root, "0.0.0.0", settings.controller.dashboard_port)
    identity = os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
    kube = KubeClient(_kube_api(), settings.kube.namespace, identity)
    lease = _lead(kube, settings, identity)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        Operator(kube, settings, root, publisher, all_namespaces=args.all_namespaces, selector=args.selector).run(stop)
    finally:
        drawer.close()
        if lease:
            lease.release()
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    _setup_logging("text", args.verbose)
    if not 0 < args.refresh_seconds <= 3600:
        raise ConfigError(f"--refresh-seconds: {args.refresh_seconds} must be in (0, 3600]")
    root = _root_store(args.store, _load(args.config) if args.config else None)
    try:
        server = serve_dashboard(root, args.host, args.port, args.refresh_seconds)
    except OSError as e:
        raise ConfigError(f"--host/--port: cannot listen on {args.host}:{args.port} ({e}); pick another --port") from e
    host, port = server.server_address[:2]
    print(f"dashboard: http://{host!s}:{port}/ (read-only; Ctrl-C stops it)", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    server.shutdown()
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    _setup_logging("text", args.verbose)
    store, name = _search_store(_root_store(args.store), args.search)
    doc = status_json(store, name)
    print(json.dumps(doc, indent=1) if args.json else status_table(doc))
    return 0


def cmd_best(args: argparse.Namespace) -> int:
    _setup_logging("text", args.verbose)
    store, _ = _search_store(_root_store(args.store), args.search)
    if args.download:
        print(json.dumps(download_best(store, args.download), indent=1))
        return 0
    doc = status_json(store, args.search or "")
    if doc["best"] is None:
        raise ConfigError(f"--store {store.uri}: no finished trial with an objective yet")
    print(json.dumps(doc["best"], indent=1))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    _setup_logging("text", args.verbose)
    store, name = _search_store(_root_store(args.store), args.search)
    files = render(Ledger(store).load().values(), name)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for fname, data in files.items():
            (out / fname).write_bytes(data)
        where = str(out / "index.html")
    else:
        for fname, data in files.items():
            store.put(f"report/{fname}", data)
        where = f"{store.uri}/report/index.html"
    print(json.dumps({"report": where, "files": sorted(files)}))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    _setup_logging("text", args.verbose)
    settings = with_overrides(_load(args.config), store__uri=args.store, search__name=args.search).validate()
    root = _root_store(settings.store.uri, settings)
    root.check()
    store = root.child(settings.search.name)
    space = settings.space()
    open_search(store, settings, space)
    trials = read_source(args.path, space)
    ledger = Ledger(store)
    records = ledger.load()
    added = import_trials(ledger, space, trials, records)
    ledger.write_checkpoint(records.values(), max(records, default=-1) + 1)
    print(json.dumps({"imported": len(added), "skipped": len(trials) - len(added), "trials": len(records)}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m controller", description="cifar-hpo search controller")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)
    _run_parser(sub)
    op = sub.add_parser("operator", help="on Kubernetes: run every Search object of the namespace")
    op.add_argument("--config", help="YAML config file: the store and the defaults of every Search's trials")
    op.add_argument("--store", help="s3://bucket/prefix: where each Search's folder goes")
    op.add_argument("--all-namespaces", action="store_true", help="watch Searches in every namespace")
    op.add_argument("--selector", metavar="LABELS", help="only Searches with these labels, e.g. team=vision")
    op.add_argument("--metrics-port", type=int, help="serve Prometheus metrics (all searches) on this port")
    op.set_defaults(func=cmd_operator)
    for name, func, helptext in (("status", cmd_status, "show every trial"),
                                 ("best", cmd_best, "show or download the best trial"),
                                 ("report", cmd_report, "HTML page with PNG plots (to --out DIR, else the store's "
                                                        "report/)"),
                                 ("import", cmd_import, "warm start from the original project's results or "
                                                        "results.pkl")):
        c = sub.add_parser(name, help=helptext)
        c.add_argument("--store", required=True)
        c.add_argument("--search")
        c.set_defaults(func=func)
    dash = sub.add_parser("dashboard", help="a live, read-only web page of the store's searches")
    dash.add_argument("--store", required=True, help="s3://bucket/prefix or a directory (also a finished search's)")
    dash.add_argument("--config", help="YAML config file: the store's endpoint, region, CA bundle")
    dash.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    dash.add_argument("--port", type=int, default=8080)
    dash.add_argument("--refresh-seconds", type=float, default=2.0,
                      help="read a watched search again at most this often")
    dash.set_defaults(func=cmd_dashboard)
    sub.choices["status"].add_argument("--json", action="store_true")
    sub.choices["best"].add_argument("--download", metavar="DIR")
    sub.choices["report"].add_argument("--out", metavar="DIR")
    sub.choices["import"].add_argument("--config")
    sub.choices["import"].add_argument("path")
    return p


def _run_parser(sub: Any) -> None:
    run = sub.add_parser("run", help="run (or resume) a search")
    run.add_argument("--config", help="YAML config file (see charts/values.yaml and README), or a Search manifest")
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except ConfigError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    except (PermanentError, TemporaryError) as e:
        sys.stderr.write(f"error: {type(e).__name__}: {e}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("interrupted; run the same command again to resume\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
