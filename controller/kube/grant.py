"""A trial's access to the store: presigned URLs for its own keys, and nothing else.

A trial runs code that whoever wrote its Search chose, so on a cluster it never gets the bucket's keys. The
controller signs, per trial, the few requests the trial contract needs (read proposal.json, see whether stop.json
exists, write progress.json and its model file (trial.modelFile), create result.json once, read the staged dataset)
and hands them to the trial as one environment variable, which the trial side (controller/trial.py) reads. The store
itself refuses anything else: another key is not signed, a changed URL fails its signature, and an unsigned request
is anonymous. What a signature allows is fixed when it is made: result.json's URL carries `If-None-Match: *`, so a
trial cannot replace a result either.

Signatures last as long as the trial may (its Job's activeDeadlineSeconds, at most 7 days: SigV4's limit). Signed
with temporary credentials (workload identity), they end with those credentials: SECURITY.md says what to do.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from controller.ledger.layout import trial_prefix
from controller.settings.config import Settings
from controller.settings.policy import MAX_DEADLINE_SECONDS
from controller.store.base import Signer, Store
from controller.trial.contract import GRANT_ENV, MODEL_FILE, trial_keys

SLACK_SECONDS = 600


def make_grant(trial: Signer, data: tuple[Signer, str] | None, expires_s: int,
               model_file: str = MODEL_FILE) -> dict[str, Any]:
    """The grant of one trial: its folder's store (the contract's records and its model file), and the staged
    dataset (its store and key) if any."""
    urls = {key: {m: trial.presign(m, key, expires_s) for m in methods}
            for key, methods in trial_keys(model_file).items()}
    grant: dict[str, Any] = {"version": 1, "trial": trial.uri, "expires_at": int(time.time()) + expires_s,
                             "urls": urls}
    if data is not None:
        root, key = data
        grant["data"] = {"uri": f"{root.uri.rstrip('/')}/{key}", "GET": root.presign("GET", key, expires_s)}
    return grant


def trial_grants(settings: Settings, trials: Store, root: Store) -> Callable[[int], dict[str, str]] | None:
    """tid → the environment that gives a trial its grant; None where trials get no grant: kube.trialAccess is
    credentials, or the store cannot sign (a directory store, which the trial sees as the same folder)."""
    if settings.kube.trial_access != "presigned" or not (hasattr(trials, "presign") and hasattr(root, "presign")):
        return None
    expires = min(MAX_DEADLINE_SECONDS, settings.kube.active_deadline_seconds + SLACK_SECONDS)
    root_prefix = root.uri.rstrip("/") + "/"
    data_uri = settings.trial.data
    data_key = data_uri[len(root_prefix):] if data_uri and data_uri.startswith(root_prefix) else None

    def env(tid: int) -> dict[str, str]:
        trial: Any = trials.child(trial_prefix(tid))
        data = (root, data_key) if data_key else None
        grant = make_grant(trial, data, expires, settings.trial.model_file)  # type: ignore[arg-type]
        return {GRANT_ENV: json.dumps(grant, separators=(",", ":"))}

    return env
