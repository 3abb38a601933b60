"""JSON has no NaN or Infinity: diverged runs produce them, and one such value makes a record unreadable.

finite_json turns every non-finite number (Python or numpy floats, at any depth) into null and counts
them, so a writer can keep the record and say how much was lost. Pure: no I/O.
"""

from __future__ import annotations

import math
import numbers
from typing import Any


def finite_json(value: Any) -> tuple[Any, int]:
    """(a copy of value with every non-finite number as None, how many there were). numpy scalars
    become plain Python numbers; tuples become lists (as JSON would have them)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value, 0
    if isinstance(value, numbers.Integral):
        return int(value), 0
    if isinstance(value, numbers.Real):
        f = float(value)
        return (f, 0) if math.isfinite(f) else (None, 1)
    if isinstance(value, dict):
        out, n = {}, 0
        for k, v in value.items():
            out[k], m = finite_json(v)
            n += m
        return out, n
    if isinstance(value, (list, tuple)):
        items, n = [], 0
        for v in value:
            x, m = finite_json(v)
            items.append(x)
            n += m
        return items, n
    if hasattr(value, "tolist"):  # a numpy array
        return finite_json(value.tolist())
    return value, 0


def finite_or_none(value: Any) -> Any:
    """The value with every non-finite number replaced by None."""
    return finite_json(value)[0]
