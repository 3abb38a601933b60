"""One trial program run once on a point the user gives, with no search: the trial contract as a search would drive
it (proposal.json in a trial folder, the staged dataset, `--trial URI`), in the foreground, its output on the
terminal. For trying a trainer on a point before a search, or re-running the best point with more epochs."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from controller.data.staging import check_source_exists, staged_settings
from controller.errors import ConfigError
from controller.ledger.trials import proposal_record
from controller.settings.config import Settings, with_overrides
from controller.store.base import create_json, get_json
from controller.store.uri import open_store
from controller.trial.contract import Origin

log = logging.getLogger(__name__)
ONCE_FOLDER = "once"
"""Where runs of one point go in the store: beside the searches, never one of them (no search.json)."""


@dataclass(frozen=True)
class OnceResult:
    """How the one run ended: the trial's folder, its exit status and its result.json (None if it wrote none)."""

    trial_uri: str
    exit_code: int
    result: dict[str, Any] | None


def local_command(settings: Settings) -> Settings:
    """`python` in trial.command runs as the controller's own interpreter (said in the log), as in local mode."""
    if settings.trial.command[0] not in ("python", "python3"):
        return settings
    log.info("trial.command: %r runs as %s, the controller's interpreter (give a full path for another)",
             settings.trial.command[0], sys.executable)
    return with_overrides(settings, trial__command=[sys.executable, *settings.trial.command[1:]])


def check_params(params: Any, settings: Settings) -> dict[str, Any]:
    """The point as a mapping; the space's parameters it lacks, and names the space does not have, are logged
    (a point outside the space is allowed: that is what trying one is for)."""
    if not isinstance(params, Mapping) or not all(isinstance(k, str) for k in params):
        raise ConfigError(f"--params: expected a JSON object of parameter names to values, got {type(params).__name__}"
                          ", e.g. '{\"lr\": 0.01, \"batch\": 64}'")
    names = set(settings.space().spec)
    missing, unknown = sorted(names - set(params)), sorted(set(params) - names)
    if missing:
        log.warning("--params: the space's %s not given: the trainer decides (its default, or a failure)", missing)
    if unknown:
        log.warning("--params: %s not in the search's space", unknown)
    return dict(params)


def run_once(settings: Settings, params: Mapping[str, Any], seed: int) -> OnceResult:
    """Stages the data the trial needs, writes the trial's proposal, runs the program to its end (Ctrl-C reaches
    it as it would at a terminal) and reads its result."""
    settings = local_command(settings)
    check_source_exists(settings)
    root = open_store(settings.store.uri, **settings.store.options())
    root.check()
    settings = staged_settings(settings, root)
    name = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:6]}"
    store = root.child(f"{ONCE_FOLDER}/{name}")
    record = proposal_record(0, params, {}, seed, Origin.UNKNOWN, model_file=settings.trial.model_file)
    if not create_json(store, "proposal.json", record):
        raise ConfigError(f"{store.uri}: a trial is already there; run again")
    argv = settings.trial.argv(store.uri)
    log.info("running %s", " ".join(argv))
    code = subprocess.run(argv, env={**os.environ, **settings.trial_env()}, stdin=subprocess.DEVNULL).returncode
    result = get_json(store, "result.json")
    return OnceResult(store.uri, code, result if isinstance(result, dict) else None)
