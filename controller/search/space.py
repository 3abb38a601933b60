"""Declarative search spaces ⇄ hyperopt: a Space is a parsed spec (controller/search/nodes.py, which documents the
format) with what hyperopt needs (its pyll expression), decoding a point hyperopt drew into the params a trial reads,
and encoding params back (an imported trial's point).

Decoding a point gives the same structure with every distribution replaced by its value, with
hyperopt's types (quniform values stay floats), so results stay comparable with the seed project's.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from functools import cached_property
from importlib import resources
from typing import Any

import yaml

from controller.errors import SpaceError
from controller.search.nodes import (
    GAUSSIAN,
    LOG,
    QUANTIZED,
    Dist,
    Group,
    Literal,
    Node,
    Parser,
    Value,
    is_number,
    same_literal,
)


class Space:
    """A validated search space. Build with Space.from_spec / from_yaml / default()."""

    def __init__(self, root: Group, spec: Mapping[str, Any]):
        self.root = root
        self.spec = spec

    @classmethod
    def from_spec(cls, spec: Any, path: str = "space") -> Space:
        parser = Parser()
        root = parser.group(spec, path)
        return cls(root, json.loads(json.dumps(spec)))

    @classmethod
    def from_yaml(cls, text: str, path: str = "space") -> Space:
        try:
            spec = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise SpaceError(f"{path}: not valid YAML: {e}") from e
        return cls.from_spec(spec, path)

    @classmethod
    def default(cls) -> Space:
        """The seed project's 19-key space."""
        text = resources.files("controller.search").joinpath("default_space.yaml").read_text()
        return cls.from_yaml(text)

    @cached_property
    def dists(self) -> dict[str, Dist]:
        """Every distribution by hyperopt label."""
        out: dict[str, Dist] = {}

        def walk(node: Node) -> None:
            if isinstance(node, Group):
                for _, sub in node.members:
                    walk(sub)
            elif isinstance(node, Dist):
                out[node.label] = node
                for opt in node.options:
                    walk(opt)

        walk(self.root)
        return out

    # -- hyperopt ------------------------------------------------------------------------------
    @cached_property
    def hyperopt(self) -> Any:
        """The equivalent hyperopt expression (a dict of hp.* nodes)."""
        from hyperopt import hp

        def build(node: Node) -> Any:
            if isinstance(node, Literal):
                return node.value
            if isinstance(node, Group):
                return {name: build(sub) for name, sub in node.members}
            if node.kind == "choice":
                return hp.choice(node.label, [build(o) for o in node.options])
            if node.kind == "randint":
                return hp.randint(node.label, int(node.args[0]), int(node.args[1]))
            return getattr(hp, node.kind)(node.label, *node.args)

        return build(self.root)

    # -- points ------------------------------------------------------------------------------------
    def decode(self, vals: Mapping[str, Value]) -> dict[str, Value]:
        """Hyperopt raw values (label → value; choice → index) of one point → decoded params."""

        def dec(node: Node, path: str) -> Value:
            if isinstance(node, Literal):
                return node.value
            if isinstance(node, Group):
                return {name: dec(sub, f"{path}.{name}") for name, sub in node.members}
            if node.label not in vals:
                raise SpaceError(f"{path}: the point has no value for label {node.label!r}")
            v = vals[node.label]
            if node.kind == "choice":
                idx = int(v)
                if not 0 <= idx < len(node.options) or idx != v:
                    raise SpaceError(f"{path}: choice index {v!r} is out of range 0..{len(node.options) - 1}")
                return dec(node.options[idx], f"{path}.options[{idx}]")
            if node.kind == "randint":
                return int(v)
            return float(v)

        params = dec(self.root, "params")
        if not isinstance(params, dict):
            raise SpaceError("params: the space's root must be a group of named parameters")
        return params

    def encode(self, params: Mapping[str, Value]) -> dict[str, Value]:
        """Decoded params → hyperopt raw values of the active labels. Raises SpaceError naming the
        first parameter that does not fit the space (so a proposal or import is checked before use)."""
        vals: dict[str, Value] = {}
        self._encode(self.root, params, "params", vals)
        return vals

    def _encode(self, node: Node, value: Value, path: str, vals: dict[str, Value]) -> None:
        if isinstance(node, Literal):
            if not same_literal(node.value, value):
                raise SpaceError(f"{path}: expected {node.value!r}, got {value!r}")
            return
        if isinstance(node, Group):
            if not isinstance(value, Mapping):
                raise SpaceError(f"{path}: expected a mapping, got {value!r}")
            names = [n for n, _ in node.members]
            extra = sorted(set(value) - set(names))
            if extra:
                raise SpaceError(f"{path}: unknown parameter(s) {extra}; the space has {names}")
            for name, sub in node.members:
                if name not in value:
                    raise SpaceError(f"{path}.{name}: missing")
                self._encode(sub, value[name], f"{path}.{name}", vals)
            return
        if node.kind == "choice":
            errors = []
            for idx, opt in enumerate(node.options):
                trial: dict[str, Value] = {}
                try:
                    self._encode(opt, value, path, trial)
                except SpaceError as e:
                    errors.append(str(e))
                    continue
                vals[node.label] = idx
                vals.update(trial)
                return
            raise SpaceError(f"{path}: {value!r} matches no option of choice {node.label!r} ({'; '.join(errors)})")
        vals[node.label] = self._check_numeric(node, value, path)

    @staticmethod
    def _check_numeric(node: Dist, value: Value, path: str) -> float | int:
        if not is_number(value) or not math.isfinite(value):
            raise SpaceError(f"{path}: expected a finite number for {node.kind} {node.label!r}, got {value!r}")
        v = float(value)
        if node.kind in GAUSSIAN:
            if node.kind.endswith("lognormal") and v < 0:
                raise SpaceError(f"{path}: {node.kind} values are >= 0, got {v}")
            return v
        low, high = node.args[0], node.args[1]
        if node.kind in LOG:
            low, high = math.exp(low), math.exp(high)
        if node.kind == "randint":
            if not v.is_integer() or not low <= v < high:
                raise SpaceError(f"{path}: expected an integer in [{low:g}, {high:g}), got {value!r}")
            return int(v)
        slack = node.args[2] / 2 if node.kind in QUANTIZED else 0.0
        tol = 1e-9 * max(1.0, abs(high))
        if not (low - slack - tol <= v <= high + slack + tol):
            raise SpaceError(f"{path}: {v} is outside [{low:g}, {high:g}] of {node.kind} {node.label!r}")
        if node.kind in QUANTIZED:
            q = node.args[2]
            if not math.isclose(v / q, round(v / q), abs_tol=1e-6):
                raise SpaceError(f"{path}: {v} is not a multiple of q={q:g} for {node.label!r}")
        return v

    def diff(self, other: Space) -> str | None:
        """The first path at which two spaces differ, or None if they are equal."""
        return _first_difference(self.spec, other.spec, "space")


def _first_difference(a: Any, b: Any, path: str) -> str | None:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                return f"{path}.{key}"
            found = _first_difference(a[key], b[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return path
        for i, (x, y) in enumerate(zip(a, b)):
            found = _first_difference(x, y, f"{path}[{i}]")
            if found:
                return found
        return None
    return None if a == b and type(a) is type(b) else path
