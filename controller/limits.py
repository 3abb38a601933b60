"""Numeric and choice limits of settings fields, declared once on the field and checked generically.

A field says `field(default=…, metadata=limit(minimum=1))`; `check(section, "search")` enforces it with
the key named (`search.maxTrials: 0 must be >= 1`). tests/settings/test_limits.py compares these declarations with
the chart's values.schema.json field by field, so the two cannot drift apart. Pure.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from controller.errors import ConfigError

LIMIT_KEYS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "enum")
# Bounds on what a Search may set that no real search comes near, so that none can make the operator work without
# end (benchmarks/RESULTS.md, S3, measures a proposal at these bounds).
MAX_TRIALS = 10_000
MAX_EPOCHS = 100_000
MAX_EI_CANDIDATES = 1000
MAX_TPE_WORK = 25_000
"""Distributions × nEICandidates: one proposal's work (256 × 1000 took 2.1 s; 25 × 1000, 0.19 s: RESULTS.md S3)."""


def camel(name: str) -> str:
    """A settings field's name as config files and the CRD spell it (n_ei_candidates: nEICandidates)."""
    special = {"n_ei_candidates": "nEICandidates"}
    if name in special:
        return special[name]
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def limit(*, minimum: float | None = None, maximum: float | None = None, exclusive_minimum: float | None = None,
          exclusive_maximum: float | None = None, enum: tuple[str, ...] | None = None,
          hint: str = "") -> dict[str, Any]:
    """Field metadata in JSON Schema's own words, so the schema comparison is a plain equality. hint is added
    to the error message (what the value means)."""
    spec = {"minimum": minimum, "maximum": maximum, "exclusiveMinimum": exclusive_minimum,
            "exclusiveMaximum": exclusive_maximum, "enum": list(enum) if enum is not None else None}
    return {"limits": {k: v for k, v in spec.items() if v is not None}, "hint": hint}


def limits_of(section: Any) -> dict[str, dict[str, Any]]:
    """camelCase field name → its declared limits, for the fields that have any."""
    return {camel(f.name): dict(f.metadata["limits"]) for f in dataclasses.fields(section) if "limits" in f.metadata}


def describe(spec: Mapping[str, Any]) -> str:
    """'>= 1', 'in (0, 1]', 'one of a, b': the wording of every error about a limit."""
    if "enum" in spec:
        return "one of " + ", ".join(map(str, spec["enum"]))
    low = next(((k, spec[k]) for k in ("minimum", "exclusiveMinimum") if k in spec), None)
    high = next(((k, spec[k]) for k in ("maximum", "exclusiveMaximum") if k in spec), None)
    if low and high:
        return (f"in {'[' if low[0] == 'minimum' else '('}{low[1]:g}, "
                f"{high[1]:g}{']' if high[0] == 'maximum' else ')'}")
    if low:
        return f"{'>=' if low[0] == 'minimum' else '>'} {low[1]:g}"
    assert high is not None, "a limit without bounds or choices"
    return f"{'<=' if high[0] == 'maximum' else '<'} {high[1]:g}"


def within(value: Any, spec: Mapping[str, Any]) -> bool:
    """Whether a value meets a field's declared limits (an enum, or a minimum and maximum, exclusive or not)."""
    if "enum" in spec:
        return value in spec["enum"]
    return all(ok for ok in (
        "minimum" not in spec or value >= spec["minimum"],
        "exclusiveMinimum" not in spec or value > spec["exclusiveMinimum"],
        "maximum" not in spec or value <= spec["maximum"],
        "exclusiveMaximum" not in spec or value < spec["exclusiveMaximum"],
    ))


def check(section: Any, prefix: str) -> None:
    """Raise ConfigError naming the first field outside its declared limits (None means 'not set')."""
    for f in dataclasses.fields(section):
        spec = f.metadata.get("limits")
        value = getattr(section, f.name)
        if spec is None or value is None or within(value, spec):
            continue
        hint = f.metadata.get("hint", "")
        raise ConfigError(f"{prefix}.{camel(f.name)}: {value!r} must be {describe(spec)}{' ' + hint if hint else ''}")
