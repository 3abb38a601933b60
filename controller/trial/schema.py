"""The trial contract's records checked against their JSON Schemas (controller/trial/schemas/, shipped in the
package and documented in docs/TRIAL_CONTRACT.md). Pure: no I/O but reading the schemas.

The checker implements the part of JSON Schema the schemas use (type, required, properties,
additionalProperties, items, enum, minimum), so the trial side needs no validation library. It answers with the
first problem, naming the field by its path (`history.loss[3]: expected number or null, got str 'x'`), or None.
"""

from __future__ import annotations

import json
import math
from functools import cache
from importlib import resources
from typing import Any

KINDS = ("proposal", "progress", "result", "outcome", "stop")
_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool}


@cache
def schema(kind: str) -> dict[str, Any]:
    """The JSON Schema of one record kind (proposal, progress, result, outcome, stop)."""
    if kind not in KINDS:
        raise ValueError(f"no schema for {kind!r}; one of {KINDS}")
    text = resources.files("controller.trial").joinpath("schemas", f"{kind}.schema.json").read_text()
    doc: dict[str, Any] = json.loads(text)
    return doc


def check_record(kind: str, doc: Any) -> str | None:
    """The first way doc breaks the schema of `kind`, naming the field; None if it conforms."""
    return _check(schema(kind), doc, "")


def _is(value: Any, name: str) -> bool:
    if name == "null":
        return value is None
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, _TYPES[name])


def _show(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


def _check(s: dict[str, Any], value: Any, path: str) -> str | None:
    where = path or "the record"
    if "type" in s:
        names = s["type"] if isinstance(s["type"], list) else [s["type"]]
        if not any(_is(value, n) for n in names):
            return f"{where}: expected {' or '.join(names)}, got {_show(value)}"
    if "enum" in s and value not in s["enum"]:
        return f"{where}: {value!r} is not one of {s['enum']}"
    if "minimum" in s and _is(value, "number") and value < s["minimum"]:
        return f"{where}: {value} is below the minimum {s['minimum']}"
    if isinstance(value, dict):
        for key in s.get("required", []):
            if key not in value:
                return f"{path + '.' if path else ''}{key}: required, missing"
        props = s.get("properties", {})
        extra = s.get("additionalProperties", True)
        for key, sub in value.items():
            at = f"{path}.{key}" if path else str(key)
            if key in props:
                problem = _check(props[key], sub, at)
            elif isinstance(extra, dict):
                problem = _check(extra, sub, at)
            elif extra is False:
                problem = f"{at}: not a field of this record"
            else:
                problem = None
            if problem:
                return problem
    if isinstance(value, list) and isinstance(s.get("items"), dict):
        for i, item in enumerate(value):
            problem = _check(s["items"], item, f"{path}[{i}]")
            if problem:
                return problem
    return None
