"""What a person (or a script) reads about a search: the status table/JSON and the best trial."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from controller.ledger.layout import trial_key, trial_prefix
from controller.ledger.trials import Ledger, TrialRecord, best_of
from controller.store.base import Store, get_json
from controller.trial.contract import Origin, TrialState

log = logging.getLogger(__name__)

KEY_PARAMS = 4


def search_names(root: Store) -> list[str]:
    """The searches of a store: the prefixes that hold a search.json."""
    return sorted({k.split("/")[0] for k in root.list() if k.endswith("/search.json") and k.count("/") == 1})


def flat_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A trial's point with every conditional group spread into dotted names: a choice whose options are groups
    (`booster: {type: dart, rate_drop: 0.1}`) becomes `booster.type: dart, booster.rate_drop: 0.1`, so that each
    view shows the chosen option and its own parameters (they were `[object Object]`), and importance groups by
    the chosen option. A list stays one value, shown as JSON."""
    out: dict[str, Any] = {}
    for name, value in params.items():
        key = f"{prefix}{name}"
        if isinstance(value, Mapping) and value:
            out.update(flat_params(value, key + "."))
        elif isinstance(value, (list, Mapping)):
            out[key] = json.dumps(value, separators=(",", ":"))
        else:
            out[key] = value
    return out


def live_states(records: dict[int, TrialRecord], status: Mapping[str, Any], reported: Callable[[int], bool]) -> None:
    """Open trials are 'pending' with the reason while the platform holds them (status.json's waiting: no GPU
    free, an image being pulled); else 'running' once they reported progress, or while their search runs (its loop
    launches what it proposes at once: a trial that started and has not reported yet is running, not pending)."""
    waiting = status.get("waiting")
    waiting = waiting if isinstance(waiting, dict) else {}
    searching = status.get("state") == "running"
    for r in records.values():
        if not r.finished:
            why = waiting.get(str(r.tid))
            r.state = TrialState.PENDING if why or not (searching or reported(r.tid)) else TrialState.RUNNING
            r.reason = why or r.reason


def status_json(store: Store, search: str) -> dict[str, Any]:
    """`controller status --json`: the search's state, counts, every trial and the best, read from its store."""
    records = Ledger(store).load()
    saved = get_json(store, "status.json") or {}
    live_states(records, saved if isinstance(saved, dict) else {},
                lambda tid: store.exists(trial_key(tid, "progress.json")))
    best = best_of(records.values())
    counts: dict[str, int] = {}
    for r in records.values():
        counts[r.state] = counts.get(r.state, 0) + 1
    search_doc = get_json(store, "search.json") or {}
    raw = saved.get("interruptions") if isinstance(saved, dict) else None
    interrupted = {int(t): n for t, n in raw.items() if str(t).isdigit() and isinstance(n, int)} \
        if isinstance(raw, dict) else {}
    return {
        "search": search,
        "key_params": list(search_doc.get("space") or {})[:KEY_PARAMS],
        "store": store.uri,
        "state": saved.get("state") or _unsaved_state(records),
        "reason": saved.get("reason"),
        "budget": saved.get("budget"),
        "counts": counts,
        "non_finite_values": sum(int(r.metrics.get("non_finite_values") or 0) for r in records.values()),
        "interruptions": sum(interrupted.values()),
        "trials": [{**_trial_json(r), "interruptions": interrupted.get(r.tid, 0)} for r in records.values()],
        "best": _trial_json(best) if best else None,
    }


def _unsaved_state(records: dict[int, TrialRecord]) -> str:
    """No controller has written status.json: the search has not run, unless one is running it now."""
    if not records:
        return "empty"
    if any(r.origin != Origin.IMPORT for r in records.values()):
        return "running"
    return "not started"  # only imported trials: a warm start waiting for `run`


def _trial_json(r: TrialRecord) -> dict[str, Any]:
    return {"tid": r.tid, "state": r.state, "objective": r.objective, "params": r.params, "origin": r.origin,
            "reason": r.reason, "created_at": r.created_at, "finished_at": r.finished_at, "metrics": r.metrics}


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def status_table(doc: dict[str, Any], key_params: Iterable[str] | None = None) -> str:
    """status_json's document as the table `controller status` prints."""
    trials = doc["trials"]
    key_params = list(key_params if key_params is not None else doc.get("key_params", []))
    header = ["id", "state", "objective", *key_params, "time", "note"]
    rows = []
    now = time.time()
    for t in trials:
        end = t["finished_at"] or (now if t["state"] in ("running", "pending") else None)
        took = f"{end - t['created_at']:.0f}s" if end and t["created_at"] else ""
        obj = "" if t["objective"] is None else f"{t['objective']:.4f}"
        note = t["reason"] or ("imported" if t["origin"] == Origin.IMPORT else "")
        if t.get("interruptions"):
            note = f"interrupted {t['interruptions']}x, resumed; {note}".rstrip("; ")
        if t["metrics"].get("non_finite_values"):
            note = f"{note}; {t['metrics']['non_finite_values']} NaN/inf stored as null".lstrip("; ")
        rows.append([str(t["tid"]), t["state"], obj, *[_fmt(t["params"].get(k, "")) for k in key_params], took,
                     note[:60]])
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(header, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    counts = ", ".join(f"{v} {k}" for k, v in sorted(doc["counts"].items()))
    best = doc["best"]
    summary = f"search {doc['search']} ({doc['state']}): {counts or 'no trials'}"
    if doc.get("interruptions"):
        summary += f"; {doc['interruptions']} interruptions (preempted or killed from outside), each resumed"
    if doc.get("non_finite_values"):
        summary += f"; {doc['non_finite_values']} non-finite values (NaN/inf) in results, stored as null"
    if best:
        summary += f"; best: trial {best['tid']} objective {best['objective']:.4f}"
    startup = startup_summary(t["metrics"] for t in trials)
    return "\n".join([summary, *([startup] if startup else []), *lines])


def startup_summary(metrics: Iterable[dict[str, Any]]) -> str | None:
    """The median of each start-up phase the trainer recorded (interpreter and imports, data read, model build,
    first step) over the trials that recorded them, as one line; None if none did."""
    startups = [m["startup"] for m in metrics if isinstance(m.get("startup"), dict)]
    if not startups:
        return None
    phases = {k: sorted(float(s.get(k) or 0) for s in startups)[len(startups) // 2] for k in startups[0]}
    parts = ", ".join(f"{k.removesuffix('_s').replace('_', ' ')} {v:.1f} s" for k, v in phases.items())
    return f"trial start-up, median of {len(startups)}: {sum(phases.values()):.1f} s ({parts})"


def download_best(store: Store, dest: str | Path) -> dict[str, Any]:
    """Copy every record of the best trial (params, result, model, log) into dest."""
    records = Ledger(store).load()
    best = best_of(records.values())
    if best is None:
        raise LookupError(f"{store.uri}: no finished trial with an objective yet")
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    prefix = trial_prefix(best.tid) + "/"
    files, refused = [], []
    for key in store.list(prefix):
        target = inside(out, key[len(prefix):])
        if target is None:
            log.warning("%s: key %r would be written outside %s; not downloaded (whoever can write the bucket "
                        "planted it)", store.uri, key, out)
            refused.append(key)
            continue
        data = store.get(key)
        if data is None:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        files.append(str(target.relative_to(out)))
    (out / "params.json").write_text(json.dumps(best.params, indent=1, sort_keys=True))
    files.append("params.json")
    return {"tid": best.tid, "objective": best.objective, "dir": str(out), "files": sorted(files),
            "refused": refused}


def inside(folder: Path, name: str) -> Path | None:
    """folder/name when name is a plain relative path that stays in folder (no '..', '.', empty or absolute
    parts, no backslash or NUL), else None."""
    parts = name.split("/")
    if any(p in ("", ".", "..") or "\\" in p or "\0" in p for p in parts):
        return None
    target = folder.joinpath(*parts)
    root = folder.resolve()
    return target if target.resolve().is_relative_to(root) and target.resolve() != root else None
