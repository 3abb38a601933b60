"""`trial`: one trial program run once on a given point, with no search (controller/launch/once.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from controller.cli.logs import setup_logging
from controller.errors import ConfigError
from controller.launch.once import check_params, run_once
from controller.settings.config import with_overrides
from controller.settings.resource import load_settings
from controller.trial.contract import EXIT_BAD_INPUT, ResultStatus


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The `trial` command's flags."""
    p = sub.add_parser("trial", help="run the trial program once on a point, without a search")
    p.add_argument("--config", help="the search's config file or Search manifest (its trial section and store)")
    p.add_argument("--params", required=True, metavar="JSON|@FILE",
                   help="the point: a JSON object, or @file.json (e.g. a trial's params.json from best --download)")
    p.add_argument("--store", help="s3://bucket/prefix or a directory (the trial's folder goes in its once/)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", help="as for run")
    p.add_argument("--data-sha256", metavar="HEX")
    p.add_argument("--epochs", type=int)
    p.set_defaults(func=cmd_trial)


def _point(text: str) -> Any:
    source = "--params"
    if text.startswith("@"):
        source = f"--params {text}"
        try:
            text = Path(text[1:]).expanduser().read_text()
        except OSError as e:
            raise ConfigError(f"{source}: {e.strerror or e}; give a JSON file of the point") from e
    try:
        return json.loads(text)
    except ValueError as e:
        raise ConfigError(f"{source}: not JSON ({e}); e.g. --params '{{\"lr\": 0.01}}' or @params.json") from e


def cmd_trial(args: argparse.Namespace) -> int:
    """Exit 0 when the trial ended ok (or stopped), 3 when it failed on its input, else the program's own status."""
    settings = with_overrides(load_settings(args.config), store__uri=args.store, trial__data=args.data,
                              trial__data_sha256=args.data_sha256, trial__epochs=args.epochs).validate()
    setup_logging(settings.controller.log_format, args.verbose, "trial")
    params = check_params(_point(args.params), settings)
    once = run_once(settings, params, args.seed)
    result = once.result or {}
    shown = ("status", "objective", "objective_name", "best_epoch", "epochs_run", "error", "model_file")
    summary: dict[str, Any] = {"trial": once.trial_uri, "exit": once.exit_code,
                               **{k: result[k] for k in shown if k in result}}
    print(json.dumps(summary, indent=1))
    if result.get("status") == ResultStatus.FAIL:
        return EXIT_BAD_INPUT
    if result.get("status") in (ResultStatus.OK, ResultStatus.STOPPED):
        return 0
    return once.exit_code or 1  # no result: the program's own status (1 when it exited 0 without one)
