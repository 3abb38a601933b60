"""A declarative search space's spec, parsed into nodes (controller/search/space.py turns them into hyperopt's).

A space is a mapping of parameter name → spec. A spec is a literal (str, number, bool, null), or a
mapping with `dist` naming a distribution:

    lr_rate_mult:   {dist: loguniform, log_low: -0.5, log_high: 0.5}   # hyperopt's log bounds
    lr:             {dist: loguniform, low: 1.0e-4, high: 1.0e-2}      # or the values themselves
    batch_size:     {dist: quniform, low: 100, high: 450, q: 5}
    optimizer:      {dist: choice, options: [Adam, Nadam, RMSprop]}
    residual:       {dist: choice, options: [null, {dist: quniform, low: 0.501, high: 4.499, q: 1,
                                                    label: residual_units}]}
    head:           {dist: choice, options: [{kind: small}, {kind: big, width: {dist: uniform, ...}}]}

A choice option may itself be a distribution (its value becomes the choice's value) or a mapping of
names to specs (a conditional group, decoded as a dict). Anywhere else a mapping must be a distribution or an explicit
literal, `{literal: {any: value}}`: a mistyped distribution (`{loguniform: {low: 0.1}}`) is refused with its path, never
taken for a value and sent to every trial. `label` overrides the hyperopt label, which
defaults to the key; labels must be unique, because hyperopt keys its raw values by them.

Decoding a point gives the same structure with every distribution replaced by its value, with
hyperopt's types (quniform values stay floats), so results stay comparable with the seed project's.
"""

from __future__ import annotations

import json
import math
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from controller.errors import SpaceError

Value = Any

_BOUNDED = {"uniform", "quniform", "loguniform", "qloguniform", "randint"}
GAUSSIAN = {"normal", "qnormal", "lognormal", "qlognormal"}
QUANTIZED = {"quniform", "qloguniform", "qnormal", "qlognormal"}
LOG = {"loguniform", "qloguniform"}
DISTRIBUTIONS = sorted(_BOUNDED | GAUSSIAN | {"choice"})
_ALLOWED_KEYS = {
    "uniform": {"low", "high"},
    "quniform": {"low", "high", "q"},
    "loguniform": {"low", "high", "log_low", "log_high"},
    "qloguniform": {"low", "high", "log_low", "log_high", "q"},
    "randint": {"low", "high"},
    "normal": {"mu", "sigma"},
    "qnormal": {"mu", "sigma", "q"},
    "lognormal": {"mu", "sigma"},
    "qlognormal": {"mu", "sigma", "q"},
    "choice": {"options"},
}
# The form each distribution is written in, for the hint when a mapping names one without `dist`.
_FORM = {"uniform": ("low: ..", "high: .."), "quniform": ("low: ..", "high: ..", "q: .."),
         "loguniform": ("low: ..", "high: .."), "qloguniform": ("low: ..", "high: ..", "q: .."),
         "randint": ("low: ..", "high: .."), "normal": ("mu: ..", "sigma: .."),
         "qnormal": ("mu: ..", "sigma: ..", "q: .."), "lognormal": ("mu: ..", "sigma: .."),
         "qlognormal": ("mu: ..", "sigma: ..", "q: .."), "choice": ("options: [..]",)}


@dataclass(frozen=True)
class Literal:
    """A fixed value in a space."""
    value: Value


@dataclass(frozen=True)
class Dist:
    """One hyperopt random variable. `args` are hyperopt's positional arguments."""

    kind: str
    label: str
    path: str
    args: tuple[float, ...] = ()
    options: tuple[Node, ...] = ()


@dataclass(frozen=True)
class Group:
    """A mapping of names to nodes: the space itself, or a choice's sub-space."""
    members: tuple[tuple[str, Node], ...]


Node = Literal | Dist | Group


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxstring, _REPR.maxother = 3, 6, 6, 60, 60


def _short(value: Any) -> str:
    """A bounded repr for messages: a spec is whoever wrote the Search's, and its errors go to its status."""
    return _REPR.repr(value)


def is_number(x: Any) -> bool:
    """A number that is not a bool."""
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def same_literal(a: Value, b: Value) -> bool:
    """Whether two literal values are the same value of the same type (floats compared with a tolerance)."""
    # True == 1 in Python; a choice of [0, False] must still tell them apart.
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if is_number(a) and is_number(b):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return type(a) is type(b) and a == b


def _literal(value: Any, path: str) -> Any:
    """An explicit literal: any JSON value with finite numbers."""
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise SpaceError(f"{path}: a literal must be plain JSON with finite numbers ({e})") from e
    return json.loads(text)


# What one proposal may cost is set by the space: hyperopt's TPE works per distribution and candidate, and treats a
# choice, and a randint, as a categorical of that many weights (randint 0..10^7: 1.2 GB and 5.7 s per proposal).
# These bounds keep one proposal under ~0.3 s and ~0.2 GB (benchmarks/RESULTS.md, S3); the search's tpe section is
# bounded with them (controller/settings/config.py).
MAX_DISTRIBUTIONS = 256
MAX_OPTIONS = 1000
MAX_RANDINT_RANGE = 100_000
MAX_GROUP_DEPTH = 8


class Parser:
    """Parses a declarative spec into nodes, checking every path and keeping labels unique."""

    def __init__(self) -> None:
        self.labels: dict[str, str] = {}
        self.depth = 0

    def group(self, spec: Any, path: str) -> Group:
        if not isinstance(spec, Mapping) or not spec:
            raise SpaceError(f"{path}: expected a non-empty mapping of parameter name -> spec, got {_short(spec)}")
        if self.depth >= MAX_GROUP_DEPTH:
            raise SpaceError(f"{path}: groups nested more than {MAX_GROUP_DEPTH} deep")
        self.depth += 1
        members = []
        for name, sub in spec.items():
            if not isinstance(name, str) or not name:
                raise SpaceError(f"{path}: parameter names must be non-empty strings, got {_short(name)}")
            members.append((name, self.node(sub, f"{path}.{name}", default_label=name)))
        self.depth -= 1
        return Group(tuple(members))

    def node(self, spec: Any, path: str, default_label: str, group_ok: bool = False) -> Node:
        """group_ok: a mapping of specs is a conditional group here (a choice's option); anywhere else a mapping must
        be a distribution or an explicit literal, so that a mistyped distribution is never taken for a value."""
        if spec is None or isinstance(spec, (str, bool, int, float)):
            if isinstance(spec, float) and not math.isfinite(spec):
                raise SpaceError(f"{path}: literal values must be finite, got {_short(spec)}")
            return Literal(spec)
        if isinstance(spec, Mapping) and "dist" in spec:
            return self.dist(spec, path, default_label)
        if isinstance(spec, Mapping) and set(spec) == {"literal"}:
            return Literal(_literal(spec["literal"], f"{path}.literal"))
        if isinstance(spec, Mapping) and group_ok:
            return self.group(spec, path)
        if isinstance(spec, Mapping):
            named = [k for k in spec if k in DISTRIBUTIONS]
            hint = (f"did you mean {{dist: {named[0]}, {', '.join(_FORM[named[0]])}}}? " if named else "")
            raise SpaceError(
                f"{path}: a mapping without 'dist' is neither a distribution nor a literal; {hint}write "
                f"{{dist: <{' | '.join(DISTRIBUTIONS)}>, ...}}, or {{literal: {_short(dict(spec))}}} for a fixed "
                "mapping value (a mapping of specs is a conditional group only as a choice's option)")
        raise SpaceError(
            f"{path}: expected a literal or a mapping with 'dist' (one of {', '.join(DISTRIBUTIONS)}), "
            f"got {type(spec).__name__} {_short(spec)}"
        )

    def _label(self, spec: Mapping[str, Any], path: str, default_label: str) -> str:
        label = spec.get("label", default_label)
        if not isinstance(label, str) or not label:
            raise SpaceError(f"{path}.label: must be a non-empty string, got {_short(label)}")
        if len(self.labels) >= MAX_DISTRIBUTIONS:
            raise SpaceError(f"{path}: more than {MAX_DISTRIBUTIONS} distributions in the space")
        if label in self.labels:
            raise SpaceError(
                f"{path}: duplicate label {_short(label)} (already used at {self.labels[label]}); "
                "give one of them an explicit distinct 'label'"
            )
        self.labels[label] = path
        return label

    def dist(self, spec: Mapping[str, Any], path: str, default_label: str) -> Dist:
        kind = spec["dist"]
        if kind not in _ALLOWED_KEYS:
            raise SpaceError(f"{path}.dist: unknown distribution {_short(kind)}; use one of {', '.join(DISTRIBUTIONS)}")
        unknown = set(spec) - _ALLOWED_KEYS[kind] - {"dist", "label"}
        if unknown:
            raise SpaceError(
                f"{path}: unknown key(s) {sorted(unknown)} for {kind}; allowed: {sorted(_ALLOWED_KEYS[kind])}"
            )
        label = self._label(spec, path, default_label)
        if kind == "choice":
            options = spec.get("options")
            if not isinstance(options, list) or not options:
                raise SpaceError(f"{path}.options: a choice needs a non-empty list of options, got {_short(options)}")
            if len(options) > MAX_OPTIONS:
                raise SpaceError(f"{path}.options: {len(options)} options; at most {MAX_OPTIONS} (for more values "
                                 "of a number, use a quantized distribution: quniform, qloguniform)")
            parsed = tuple(
                self.node(opt, f"{path}.options[{i}]", default_label=f"{label}_{i}", group_ok=True)
                for i, opt in enumerate(options)
            )
            return Dist("choice", label, path, (), parsed)
        return Dist(kind, label, path, self._numeric_args(kind, spec, path))

    @staticmethod
    def _num(spec: Mapping[str, Any], key: str, path: str) -> float:
        if key not in spec:
            raise SpaceError(f"{path}.{key}: required for {spec['dist']}")
        v = spec[key]
        if not is_number(v) or not math.isfinite(v):
            raise SpaceError(f"{path}.{key}: must be a finite number, got {type(v).__name__} {_short(v)}")
        return float(v)

    def _numeric_args(self, kind: str, spec: Mapping[str, Any], path: str) -> tuple[float, ...]:
        if kind in GAUSSIAN:
            mu, sigma = self._num(spec, "mu", path), self._num(spec, "sigma", path)
            if sigma <= 0:
                raise SpaceError(f"{path}.sigma: must be > 0, got {sigma}")
            args: tuple[float, ...] = (mu, sigma)
        elif kind in LOG:
            has_log = "log_low" in spec or "log_high" in spec
            has_lin = "low" in spec or "high" in spec
            if has_log == has_lin:
                raise SpaceError(
                    f"{path}: give either low/high (the values) or log_low/log_high (hyperopt's natural-log bounds)"
                )
            if has_lin:
                low, high = self._num(spec, "low", path), self._num(spec, "high", path)
                if low <= 0:
                    raise SpaceError(f"{path}.low: {kind} bounds must be > 0, got {low}")
                self._check_order(low, high, path, "low", "high")
                args = (math.log(low), math.log(high))
            else:
                args = (self._num(spec, "log_low", path), self._num(spec, "log_high", path))
                self._check_order(args[0], args[1], path, "log_low", "log_high")
        else:
            low, high = self._num(spec, "low", path), self._num(spec, "high", path)
            self._check_order(low, high, path, "low", "high")
            if kind == "randint" and not (low.is_integer() and high.is_integer()):
                raise SpaceError(f"{path}: randint bounds must be integers, got {low}, {high}")
            if kind == "randint" and high - low > MAX_RANDINT_RANGE:
                raise SpaceError(f"{path}: randint over {high - low:.0f} values; at most {MAX_RANDINT_RANGE} (TPE "
                                 "weighs each one: use quniform with q: 1 for a wider range of integers)")
            args = (low, high)
        if kind in QUANTIZED:
            q = self._num(spec, "q", path)
            if q <= 0:
                raise SpaceError(f"{path}.q: must be > 0, got {q}")
            args = args + (q,)
        return args

    @staticmethod
    def _check_order(low: float, high: float, path: str, lo_name: str, hi_name: str) -> None:
        if not low < high:
            raise SpaceError(f"{path}: {lo_name} ({low}) must be < {hi_name} ({high})")
