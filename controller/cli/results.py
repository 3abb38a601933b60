"""The commands over a store's searches: status, best, report, import, and the dashboard."""

from __future__ import annotations

import argparse
import json
import signal
import threading
from pathlib import Path

from controller.cli.logs import setup_logging
from controller.dashboard.server import serve as serve_dashboard
from controller.errors import ConfigError
from controller.ledger.importer import import_trials, read_source
from controller.ledger.trials import Ledger
from controller.loop import open_search
from controller.report.html import render
from controller.report.summary import download_best, search_names, status_json, status_table
from controller.settings.config import with_overrides
from controller.settings.resource import load_settings
from controller.store.base import Store
from controller.store.uri import open_store


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The flags of status, best, report, import and dashboard."""
    for name, func, helptext in (("status", cmd_status, "show every trial"),
                                 ("best", cmd_best, "show or download the best trial"),
                                 ("report", cmd_report, "HTML page with PNG plots (to --out DIR, else the store's "
                                                        "report/)"),
                                 ("import", cmd_import, "warm start from the original project's results or "
                                                        "results.pkl")):
        c = sub.add_parser(name, help=helptext)
        c.add_argument("--store", required=True)
        c.add_argument("--search")
        c.add_argument("--config", help="YAML config file (or a Search manifest): the store's endpoint, region, CA "
                                        "bundle, addressing style")
        c.set_defaults(func=func)
    dash = sub.add_parser("dashboard", help="a live, read-only web page of the store's searches")
    dash.add_argument("--store", required=True, help="s3://bucket/prefix or a directory (also a finished search's)")
    dash.add_argument("--config", help="YAML config file: the store's endpoint, region, CA bundle")
    dash.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    dash.add_argument("--port", type=int, default=8080)
    dash.add_argument("--refresh-seconds", type=float, default=2.0,
                      help="read a watched search again at most this often")
    dash.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                      help="a host name the page may be reached by, besides localhost and addresses (repeatable); "
                           "requests naming other hosts are refused (DNS rebinding)")
    dash.set_defaults(func=cmd_dashboard)
    sub.choices["status"].add_argument("--json", action="store_true")
    sub.choices["best"].add_argument("--download", metavar="DIR")
    sub.choices["report"].add_argument("--out", metavar="DIR")
    sub.choices["import"].add_argument("path")


def _open_root(args: argparse.Namespace) -> Store:
    """--store, reached with --config's store settings when given."""
    return open_store(args.store, **(load_settings(args.config).store.options() if args.config else {}))


def _search_store(args: argparse.Namespace) -> tuple[Store, str]:
    """The search --search names (refused, naming the store's searches, if it is not one), or the only one."""
    root = _open_root(args)
    search: str | None = args.search
    if search:
        if not root.child(search).exists("search.json"):
            names = search_names(root)
            raise ConfigError(f"--search: no search {search!r} in {root.uri}; "
                              + (f"its searches: {', '.join(names)}" if names else "it holds none (check --store)"))
        return root.child(search), search
    names = search_names(root)
    if len(names) == 1:
        return root.child(names[0]), names[0]
    if not names:
        raise ConfigError(f"--store {root.uri}: no search found here (no <name>/search.json); check the URI")
    raise ConfigError(f"--store {root.uri}: holds several searches ({', '.join(names)}); pick one with --search")


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Serves the dashboard until SIGTERM or Ctrl-C."""
    setup_logging("text", args.verbose)
    if not 0 < args.refresh_seconds <= 3600:
        raise ConfigError(f"--refresh-seconds: {args.refresh_seconds} must be in (0, 3600]")
    root = _open_root(args)
    try:
        server = serve_dashboard(root, args.host, args.port, args.refresh_seconds, args.allow_host)
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
    """Every trial of a search, as a table or JSON."""
    setup_logging("text", args.verbose)
    store, name = _search_store(args)
    doc = status_json(store, name)
    print(json.dumps(doc, indent=1) if args.json else status_table(doc))
    return 0


def cmd_best(args: argparse.Namespace) -> int:
    """The best trial's record, or its files downloaded."""
    setup_logging("text", args.verbose)
    store, _ = _search_store(args)
    if args.download:
        print(json.dumps(download_best(store, args.download), indent=1))
        return 0
    doc = status_json(store, args.search or "")
    if doc["best"] is None:
        raise ConfigError(f"--store {store.uri}: no finished trial with an objective yet")
    print(json.dumps(doc["best"], indent=1))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """The HTML report drawn now, to --out or the store's report/."""
    setup_logging("text", args.verbose)
    store, name = _search_store(args)
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
    """Earlier results (the seed's, an old store's) added to a search as trials TPE learns from."""
    setup_logging("text", args.verbose)
    settings = with_overrides(load_settings(args.config), store__uri=args.store, search__name=args.search).validate()
    root = open_store(settings.store.uri, **settings.store.options())
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
