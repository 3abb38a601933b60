"""Warm start from the original project's results.

Two sources: its per-trial JSON files (results/model_<acc>_<hex>.txt.json) and its results.pkl, a
pickled hyperopt Trials. The pickle is read through an unpickler that admits only the classes such a
file needs (hyperopt's Trials, numpy arrays and scalars, a few builtins) and refuses anything else
before it is called: a pickle from a bucket must not become code execution.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from controller.data.safepickle import Opaque, restricted_loads, with_classes
from controller.errors import ConfigError, SpaceError
from controller.ledger.legacy import V1_CIFAR_OBJECTIVE
from controller.ledger.trials import IMPORT_INCOMPLETE, Ledger, TrialRecord, curve_of, proposal_record
from controller.search.space import Space
from controller.store.base import dumps
from controller.trial.contract import SCHEMA_VERSION, Origin, ResultStatus, TrialState
from controller.trial.finite import finite_json

log = logging.getLogger(__name__)

# The seed's history series, kept under their own names so old and new curves plot together.
SEED_SERIES = ("loss", "fine_outputs_loss", "coarse_outputs_loss", "fine_outputs_acc", "coarse_outputs_acc",
               "val_loss", "val_fine_outputs_loss", "val_coarse_outputs_loss", "val_fine_outputs_acc",
               "val_coarse_outputs_acc")

# The seed's top-level result fields kept beside the history (losses may be NaN in diverged runs).
SEED_FIELDS = ("loss", "real_loss", "model_name", *(f"{head}_{kind}_{what}" for head in ("fine", "coarse")
                                                   for kind in ("best", "end") for what in ("accuracy", "loss")))

_TRIALS_PICKLE = with_classes("hyperopt.base.Trials")


@dataclass(frozen=True)
class ImportedTrial:
    """A trial read from an earlier result (the seed's JSON, a results.pkl), as it enters the ledger."""
    params: dict[str, Any]
    objective: float | None
    """None when the source has no finite objective (a diverged run): imported as a failed trial."""
    source: str
    result: dict[str, Any]
    """Only finite numbers: NaN/±Infinity in the source are null here, counted in non_finite_values."""


def load_trials_pickle(data: bytes) -> Any:
    """A hyperopt results.pkl unpickled through the allowlist (hyperopt, numpy and builtin types only)."""
    return restricted_loads(data, _TRIALS_PICKLE,
                            "a results.pkl holds only hyperopt Trials data (hyperopt, numpy and builtin types)")


def _imported(params: Any, objective: Any, source: str, result: dict[str, Any]) -> ImportedTrial:
    """Non-finite values become null (and are counted); no finite objective makes a failed trial."""
    clean, non_finite = finite_json(result)
    objective, _ = finite_json(objective)
    if non_finite:
        clean["non_finite_values"] = non_finite
    if objective is None:
        clean.update(status=ResultStatus.FAIL, error="diverged: the source has no finite objective")
    else:
        clean.update(status=ResultStatus.OK, objective=float(objective))
    return ImportedTrial(params, None if objective is None else float(objective), source, clean)


def _seed_json_trial(path: Path) -> ImportedTrial:
    try:
        d = json.loads(path.read_text())  # Python's json reads NaN and Infinity, as the seed wrote them
        params = d["space"]
        objective = d.get("fine_best_accuracy", -d["loss"])
        history = d.get("history") or {}
        if not isinstance(params, dict) or not isinstance(history, dict):
            raise TypeError("'space' and 'history' must be JSON objects")
    except (ValueError, KeyError, TypeError, OSError) as e:
        raise ConfigError(f"{path}: not a result of the original project (needs 'space' and 'loss'): {e}") from e
    series = {k: history[k] for k in SEED_SERIES if isinstance(history.get(k), list)}
    val_acc = [v if isinstance(v, (int, float)) and math.isfinite(v) else -1.0
               for v in series.get(V1_CIFAR_OBJECTIVE, [])]
    if V1_CIFAR_OBJECTIVE in series:  # converted: the contract's series, as a trial of today writes it
        series["objective"] = series[V1_CIFAR_OBJECTIVE]
    result = {
        **{k: d.get(k) for k in SEED_FIELDS},
        "best_epoch": (max(range(len(val_acc)), key=val_acc.__getitem__) + 1) if val_acc else None,
        "epochs_run": len(val_acc) or None,
        "history": series,
        # The seed selected on the test set, so this objective is optimistic; kept as it was.
        "protocol": "seed: objective is the best epoch's TEST fine accuracy",
    }
    return _imported(params, objective, path.name, result)


def pickle_trials(data: bytes, path: Path, space: Space) -> list[ImportedTrial]:
    """The trials of a results.pkl's bytes (path names it in messages)."""
    trials = load_trials_pickle(data)
    state = trials.state if isinstance(trials, Opaque) and trials.name == "hyperopt.base.Trials" else None
    docs = (state.get("_dynamic_trials") or state.get("_trials")) if isinstance(state, dict) else None
    if not isinstance(docs, list):
        raise ConfigError(f"{path}: the pickle holds no hyperopt trial documents")
    out = []
    for i, doc in enumerate(docs):
        try:
            trial = _pickle_trial(doc, space, path)
        except (AttributeError, KeyError, TypeError, IndexError, ValueError) as e:
            raise ConfigError(f"{path}: trial document {i} is not hyperopt's ({type(e).__name__}: {e}); "
                              "nothing was imported") from e
        if trial is not None:
            out.append(trial)
    return out


def _pickle_trial(doc: Any, space: Space, path: Path) -> ImportedTrial | None:
    result = doc.get("result", {})
    if result.get("status") != ResultStatus.OK:
        return None  # hyperopt's own failures carry no point worth learning from
    loss, tid = result.get("loss"), doc["tid"]
    vals = {k: v[0] for k, v in doc["misc"]["vals"].items() if len(v)}
    # Plain values only, before anything formats or decodes them: a pickle can share one tuple into a structure
    # whose repr takes exponential time.
    if type(tid) is not int or not all(isinstance(k, str) and isinstance(v, (int, float, str, np.ndarray))
                                       for k, v in vals.items()):
        raise ValueError("tid and misc.vals must hold plain numbers")
    params = space.decode({k: (v.item() if isinstance(v, np.ndarray) else v) for k, v in vals.items()})
    extra = {k: v for k, v in result.items() if isinstance(v, (int, float, str)) and k not in ("loss", "status")}
    objective = -float(loss) if isinstance(loss, (int, float)) else None
    return _imported(params, objective, f"{path.name}#tid{tid}", extra)


def read_source(path: str | Path, space: Space) -> list[ImportedTrial]:
    """The trials of an import source: a folder of the original project's result JSONs, or a results.pkl; a
    ConfigError naming the path otherwise."""
    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob("*.json"))
        if not files:
            raise ConfigError(f"{p}: no *.json results in this folder")
        return [_seed_json_trial(f) for f in files]
    if p.suffix in (".pkl", ".pickle"):
        return pickle_trials(p.read_bytes(), p, space)
    if p.suffix == ".json":
        return [_seed_json_trial(p)]
    raise ConfigError(f"{p}: expected a folder of result JSON files, a .json file or a results.pkl")


def import_trials(ledger: Ledger, space: Space, trials: Iterable[ImportedTrial],
                  records: dict[int, TrialRecord]) -> list[int]:
    """Write each trial as proposal.json + result.json with origin 'import'. Safe to run again: sources
    already imported (same content hash) are skipped, and a trial a crashed import left without its
    result gets it now. Every record is built and serialised before the first write, so bad input
    stops the import with nothing written."""
    trials = list(trials)
    planned = []
    for t in trials:
        try:
            vals = space.encode(t.params)
        except SpaceError as e:
            raise ConfigError(f"{t.source}: does not fit the search's space: {e}") from e
        # (params, objective) as before, so stores imported earlier still skip what they hold; a diverged
        # trial has no objective to tell it apart, so its whole result goes into the key.
        identity = [t.params, t.objective] if t.objective is not None else [t.params, None, t.result]
        key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
        planned.append((t, vals, key))
        dumps(t.result)  # refuses what is not JSON now, not half-way through the writes
    incomplete = {r.import_key: r.tid for r in records.values()
                  if r.origin == Origin.IMPORT and r.reason == IMPORT_INCOMPLETE and r.import_key}
    seen = {r.import_key for r in records.values() if r.import_key}
    added = []
    tid = max(records, default=-1) + 1
    for t, vals, key in planned:
        if key in incomplete:
            _write_result(ledger, incomplete.pop(key), t, vals, key, records)
            continue
        if key in seen:
            continue
        record = proposal_record(tid, t.params, vals, None, Origin.IMPORT, import_key=key, import_source=t.source)
        if not ledger.write_proposal(record):
            raise ConfigError(f"trial {tid} appeared while importing; is a controller running on this search?")
        _write_result(ledger, tid, t, vals, key, records, record["created_at"])
        seen.add(key)
        added.append(tid)
        tid += 1
    return added


def _write_result(ledger: Ledger, tid: int, t: ImportedTrial, vals: dict[str, Any], key: str,
                  records: dict[int, TrialRecord], created_at: float | None = None) -> None:
    ledger.write_result(tid, {"schema_version": SCHEMA_VERSION, "tid": tid, "source": t.source, **t.result})
    state = TrialState.OK if t.objective is not None else TrialState.FAILED
    if created_at is None and tid in records:
        created_at = records[tid].created_at
    metrics = {"non_finite_values": t.result["non_finite_values"]} if "non_finite_values" in t.result else {}
    records[tid] = TrialRecord(tid, t.params, vals, None, Origin.IMPORT, created_at, state, t.objective,
                               reason=t.result.get("error"), import_key=key, curve=curve_of(t.result),
                               metrics=metrics)
