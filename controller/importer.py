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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from controller.errors import ConfigError, SpaceError
from controller.safepickle import NUMPY_AND_BUILTINS, restricted_loads
from controller.ledger import SCHEMA_VERSION, Ledger, TrialRecord, curve_of, proposal_record
from controller.space import Space

log = logging.getLogger(__name__)

# The seed's history series, kept under their own names so old and new curves plot together.
SEED_SERIES = ("loss", "fine_outputs_loss", "coarse_outputs_loss", "fine_outputs_acc", "coarse_outputs_acc",
               "val_loss", "val_fine_outputs_loss", "val_coarse_outputs_loss", "val_fine_outputs_acc",
               "val_coarse_outputs_acc")

_TRIALS_PICKLE = NUMPY_AND_BUILTINS | {("hyperopt.base", "Trials"), ("datetime", "datetime")}


@dataclass(frozen=True)
class ImportedTrial:
    params: dict[str, Any]
    objective: float
    source: str
    result: dict[str, Any]


def load_trials_pickle(data: bytes) -> Any:
    return restricted_loads(data, _TRIALS_PICKLE,
                            "a results.pkl holds only hyperopt Trials data (hyperopt, numpy and builtin types)")


def _seed_json_trial(path: Path) -> ImportedTrial:
    try:
        d = json.loads(path.read_text())
        params = d["space"]
        objective = float(d.get("fine_best_accuracy", -d["loss"]))
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{path}: not a result of the original project (needs 'space' and 'loss'): {e}") from e
    history = {k: _json_safe(d["history"][k]) for k in SEED_SERIES if k in d.get("history", {})}
    val_acc = [v if v is not None else -1.0 for v in history.get("val_fine_outputs_acc", [])]
    result = {
        "objective": objective,
        "fine_best_accuracy": d.get("fine_best_accuracy"),
        "fine_end_accuracy": d.get("fine_end_accuracy"),
        "coarse_best_accuracy": d.get("coarse_best_accuracy"),
        "coarse_end_accuracy": d.get("coarse_end_accuracy"),
        "best_epoch": (max(range(len(val_acc)), key=val_acc.__getitem__) + 1) if val_acc else None,
        "epochs_run": len(val_acc) or None,
        "history": history,
        "model_name": d.get("model_name"),
        # The seed selected on the test set, so this objective is optimistic; kept as it was.
        "protocol": "seed: objective is the best epoch's TEST fine accuracy",
    }
    return ImportedTrial(params, objective, path.name, result)


def _json_safe(values: list) -> list:
    """Diverged epochs were saved as NaN, which is not JSON: kept as null."""
    return [v if isinstance(v, (int, float)) and math.isfinite(v) else None for v in values]


def _pickle_trials(path: Path, space: Space) -> list[ImportedTrial]:
    trials = load_trials_pickle(path.read_bytes())
    docs = getattr(trials, "_dynamic_trials", None) or getattr(trials, "_trials", None)
    if not isinstance(docs, list):
        raise ConfigError(f"{path}: the pickle holds no hyperopt trial documents")
    out = []
    for doc in docs:
        result = doc.get("result", {})
        loss = result.get("loss")
        if result.get("status") != "ok" or loss is None or not math.isfinite(float(loss)):
            continue
        vals = {k: v[0] for k, v in doc["misc"]["vals"].items() if len(v)}
        params = space.decode({k: (v.item() if hasattr(v, "item") else v) for k, v in vals.items()})
        extra = {k: v for k, v in result.items() if isinstance(v, (int, float, str)) and k not in ("loss", "status")}
        out.append(ImportedTrial(params, -float(loss), f"{path.name}#tid{doc['tid']}",
                                 {"objective": -float(loss), **extra}))
    return out


def read_source(path: str | Path, space: Space) -> list[ImportedTrial]:
    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob("*.json"))
        if not files:
            raise ConfigError(f"{p}: no *.json results in this folder")
        return [_seed_json_trial(f) for f in files]
    if p.suffix in (".pkl", ".pickle"):
        return _pickle_trials(p, space)
    if p.suffix == ".json":
        return [_seed_json_trial(p)]
    raise ConfigError(f"{p}: expected a folder of result JSON files, a .json file or a results.pkl")


def import_trials(ledger: Ledger, space: Space, trials: Iterable[ImportedTrial],
                  records: dict[int, TrialRecord]) -> list[int]:
    """Write each trial as proposal.json + result.json with origin 'import'. Already imported sources
    (same content hash) are skipped, so importing twice adds nothing."""
    seen = {r.import_key for r in records.values() if r.import_key}
    trials = list(trials)
    encoded = []
    for t in trials:
        try:
            encoded.append(space.encode(t.params))
        except SpaceError as e:
            raise ConfigError(f"{t.source}: does not fit the search's space: {e}") from e
    added = []
    tid = max(records, default=-1) + 1
    for t, vals in zip(trials, encoded):
        key = hashlib.sha256(json.dumps([t.params, t.objective], sort_keys=True).encode()).hexdigest()[:16]
        if key in seen:
            continue
        record = proposal_record(tid, t.params, vals, None, "import", {"import_source": t.source, "import_key": key})
        if not ledger.write_proposal(record):
            raise ConfigError(f"trial {tid} appeared while importing; is a controller running on this search?")
        ledger.write_result(tid, {"schema_version": SCHEMA_VERSION, "tid": tid, "status": "ok",
                                  "source": t.source, **t.result})
        records[tid] = TrialRecord(tid, t.params, vals, None, "import", record["created_at"], "ok", t.objective,
                                   import_key=key, curve=curve_of(t.result))
        seen.add(key)
        added.append(tid)
        tid += 1
    return added

