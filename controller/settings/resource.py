"""A Search custom resource (cifar-hpo.io/v1alpha1) as settings, and its schema, from the one set of settings.

One file describes a search everywhere: `kubectl apply -f search.yaml` hands it to the operator, and
`python -m controller run --local --config search.yaml` runs the same search on one machine. The CRD's
OpenAPI schema (charts/crds/) is generated from the settings dataclasses and their declared limits
(scripts/gen_crd.py), so the API server refuses what the controller would refuse, naming the field. Pure.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import textwrap
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from controller.errors import ConfigError
from controller.limits import camel
from controller.search.stopping import StoppingSettings
from controller.search.suggest import SuggestSettings
from controller.settings.config import SearchSection, Settings, TrialSection, read_config, settings_from_mapping
from controller.settings.kube import KubeSettings

GROUP = "cifar-hpo.io"
VERSION = "v1alpha1"
KIND = "Search"
PLURAL = "searches"
API_VERSION = f"{GROUP}/{VERSION}"

# spec.trial holds the trial's program (the settings' trial section) and how its Job runs (the kube section).
TRIAL_FIELDS = ("command", "data", "data_sha256", "epochs", "extra_args", "model_file")
JOB_FIELDS = ("image", "image_pull_policy", "gpu_resource", "gpu_count", "requests", "limits", "node_selector",
              "tolerations", "affinity", "priority_class_name", "backoff_limit", "active_deadline_seconds",
              "ttl_seconds_after_finished", "termination_grace_seconds", "start_timeout_seconds")
SPEC_SECTIONS = {"search": SearchSection, "tpe": SuggestSettings, "earlyStopping": StoppingSettings}
# Budgets: a change to these takes effect on a running search; anything else that names the search's history
# (its space, seed, folder) is refused, since the records would no longer fit it.
MAX_SPEC_BYTES = 256 * 2**10
BUDGET_FIELDS = ("max_trials", "max_failed_trials", "parallelism", "goal")
FIXED_FIELDS = ("name", "seed", "space")


def load_settings(path: str | Path | None) -> Settings:
    """A config file, or a Search manifest (kind: Search): one file describes a search on a cluster and here."""
    if path is None:
        return Settings()
    doc = read_config(path)
    return settings_from_mapping(settings_mapping(doc) if is_search(doc) else doc)


def is_search(doc: Any) -> bool:
    """Whether a YAML document is a Search manifest."""
    return isinstance(doc, Mapping) and doc.get("kind") == KIND and str(doc.get("apiVersion", "")).startswith(GROUP)


def settings_mapping(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A Search manifest → the settings' config mapping (the search's folder defaults to the object's name)."""
    name = (doc.get("metadata") or {}).get("name")
    spec = doc.get("spec") or {}
    if not isinstance(spec, Mapping):
        raise ConfigError(f"Search {name}: spec must be a mapping")
    try:
        size = len(json.dumps(spec))
    except (TypeError, ValueError, RecursionError) as e:
        raise ConfigError(f"Search {name}: spec is not plain JSON data ({type(e).__name__})") from e
    if size > MAX_SPEC_BYTES:
        raise ConfigError(f"Search {name}: spec is {size} bytes; at most {MAX_SPEC_BYTES} (a search space of a few "
                          "hundred parameters takes ~30 kB)")
    unknown = sorted(set(spec) - {*SPEC_SECTIONS, "trial"})
    if unknown:
        raise ConfigError(f"Search {name}: spec.{unknown[0]}: unknown section; known: "
                          f"{', '.join([*SPEC_SECTIONS, 'trial'])}")
    trial = dict(spec.get("trial") or {})
    trial_keys = {camel(f) for f in TRIAL_FIELDS}
    job_keys = {camel(f) for f in JOB_FIELDS}
    for key in trial:
        if key not in trial_keys | job_keys:
            raise ConfigError(f"Search {name}: spec.trial.{key}: unknown key; known: "
                              f"{', '.join(sorted(trial_keys | job_keys))}")
    search = dict(spec.get("search") or {})
    if name and not search.get("name"):
        search["name"] = name
    return {"search": search, "tpe": dict(spec.get("tpe") or {}),
            "earlyStopping": dict(spec.get("earlyStopping") or {}),
            "trial": {k: v for k, v in trial.items() if k in trial_keys},
            "kube": {k: v for k, v in trial.items() if k in job_keys}}


def settings_of(doc: Mapping[str, Any], base: Settings) -> Settings:
    """The Search's settings over base (the operator's defaults: store, Job defaults), validated; errors name
    the field as it is written in the manifest (spec.trial.gpuCount, not kube.gpuCount)."""
    name = (doc.get("metadata") or {}).get("name")
    try:
        return settings_from_mapping(settings_mapping(doc), base).validate()
    except ConfigError as e:
        text = str(e)
        if text.startswith("kube."):
            text = "trial." + text[len("kube."):]
        raise ConfigError(f"Search {name}: spec.{text}" if not text.startswith("Search ") else text) from e


def budget_change(running: Settings, wanted: Settings) -> tuple[Settings, list[str]]:
    """(running with wanted's budgets, the fixed fields wanted would change). The caller applies the first and
    refuses the second."""
    refused = [f"spec.search.{camel(f)}" for f in FIXED_FIELDS
               if getattr(running.search, f) != getattr(wanted.search, f)]
    budgets = {f: getattr(wanted.search, f) for f in BUDGET_FIELDS}
    return dataclasses.replace(running, search=dataclasses.replace(running.search, **budgets)), refused


# -- the CRD's schema ------------------------------------------------------------------------------------


def _docstrings(cls: type) -> dict[str, str]:
    """A dataclass's attribute docstrings (the string right after a field), for `kubectl explain`."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0]
        assert isinstance(body, ast.ClassDef)
        for stmt, nxt in zip(body.body, body.body[1:]):
            if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and isinstance(nxt, ast.Expr)
                    and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
                out[stmt.target.id] = " ".join(nxt.value.value.split())
    return out


def _type_schema(hint: Any) -> dict[str, Any]:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return {**_type_schema(inner), "nullable": True}
    if hint is bool:
        return {"type": "boolean"}
    if hint is int:
        return {"type": "integer"}
    if hint is float:
        return {"type": "number"}
    if hint is str:
        return {"type": "string"}
    args = typing.get_args(hint)
    if origin is list:
        return {"type": "array", "items": _type_schema(args[0])}
    if origin is dict and args[1] is str:
        return {"type": "object", "additionalProperties": {"type": "string"}}
    return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def _field_schema(cls: type, f: dataclasses.Field[Any], docs: Mapping[str, str]) -> dict[str, Any]:
    schema = _type_schema(typing.get_type_hints(cls)[f.name])
    for key, value in f.metadata.get("limits", {}).items():
        if key == "exclusiveMinimum":  # OpenAPI v3.0 (CRDs): a flag beside minimum, not JSON Schema's number
            schema.update(minimum=value, exclusiveMinimum=True)
        elif key == "exclusiveMaximum":
            schema.update(maximum=value, exclusiveMaximum=True)
        else:
            schema[key] = value
    default = f.default if f.default is not dataclasses.MISSING else (
        f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
    if default is not None and default != [] and default != {}:
        schema["default"] = default
    if f.name in docs:
        schema["description"] = docs[f.name]
    return schema


def _section_schema(cls: type, names: tuple[str, ...] | None = None, defaults: bool = True) -> dict[str, Any]:
    """defaults=False for the trial's fields: the operator's own settings (the chart's trainer values) fill what a
    Search leaves out, so the API server must not fill it first."""
    docs = _docstrings(cls)
    props = {camel(f.name): _field_schema(cls, f, docs) for f in dataclasses.fields(cls)
             if names is None or f.name in names}
    if not defaults:
        for prop in props.values():
            prop.pop("default", None)
    return {"type": "object", "properties": props}


def spec_schema() -> dict[str, Any]:
    """The Search's spec as an OpenAPI schema, from the settings' fields, limits and docstrings."""
    search = _section_schema(SearchSection)
    search["properties"]["name"].pop("default")
    search["properties"]["name"]["pattern"] = r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$"
    search["properties"]["name"]["description"] = "The search's folder in the store; default: the Search's name."
    search["properties"]["space"] = {"type": "object", "nullable": True, "x-kubernetes-preserve-unknown-fields": True,
                                     "description": "The search space (docs/quickstart.md: Search spaces); null: "
                                                    "the original project's 19-key space."}
    trial = _section_schema(TrialSection, TRIAL_FIELDS, defaults=False)
    trial["properties"].update(_section_schema(KubeSettings, JOB_FIELDS, defaults=False)["properties"])
    trial["properties"]["dataSha256"]["pattern"] = "^[0-9a-fA-F]{64}$"
    trial["x-kubernetes-validations"] = [{
        "rule": "!has(self.dataSha256) || !has(self.data) || !self.data.startsWith('synthetic')",
        "message": "dataSha256 pins an archive; generated data (synthetic[:N]) has none", "fieldPath": ".dataSha256"}]
    return {"type": "object", "properties": {
        "search": search, "tpe": _section_schema(SuggestSettings), "earlyStopping": _section_schema(StoppingSettings),
        "trial": trial}}


STATUS_SCHEMA: dict[str, Any] = {"type": "object", "properties": {
    "state": {"type": "string", "description": "Pending, Running, Succeeded, GoalReached or Failed."},
    "reason": {"type": "string"},
    "counts": {"type": "object", "properties": {k: {"type": "integer"} for k in
                                                ("pending", "running", "ok", "stopped", "failed")}},
    "finished": {"type": "integer"},
    "budgetLeft": {"type": "integer"},
    "best": {"type": "object", "properties": {
        "trial": {"type": "integer"}, "objective": {"type": "number"},
        "params": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}},
    "records": {"type": "string", "description": "Where the search's records are (its folder in the store)."},
    "bestModel": {"type": "string", "description": "The best trial's model (model.keras)."},
    "waiting": {"type": "object", "additionalProperties": {"type": "string"}},
    "waitingFor": {"type": "string", "description": "Trials launched but not started, with the short reason "
                   "(ImagePullBackOff, CreateContainerConfigError, waiting for a node)."},
    "conditions": {"type": "array", "items": {"type": "object", "required": ["type", "status"], "properties": {
        "type": {"type": "string"}, "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
        "reason": {"type": "string"}, "message": {"type": "string"},
        "lastTransitionTime": {"type": "string", "format": "date-time"},
        "observedGeneration": {"type": "integer"}}},
        "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    "observedGeneration": {"type": "integer"},
    "startTime": {"type": "string", "format": "date-time"},
    "completionTime": {"type": "string", "format": "date-time"},
}}

PRINTER_COLUMNS = [
    {"name": "State", "type": "string", "jsonPath": ".status.state"},
    {"name": "OK", "type": "integer", "jsonPath": ".status.counts.ok"},
    {"name": "Running", "type": "integer", "jsonPath": ".status.counts.running"},
    {"name": "Failed", "type": "integer", "jsonPath": ".status.counts.failed"},
    {"name": "Budget", "type": "integer", "jsonPath": ".status.budgetLeft", "description": "trials left"},
    {"name": "Best", "type": "number", "jsonPath": ".status.best.objective"},
    {"name": "Waiting", "type": "string", "jsonPath": ".status.waitingFor"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def crd() -> dict[str, Any]:
    """The CustomResourceDefinition (charts/crds/ holds its YAML; scripts/gen_crd.py writes it)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}", "labels": {"app.kubernetes.io/name": "cifar-hpo"}},
        "spec": {"group": GROUP, "scope": "Namespaced",
                 "names": {"kind": KIND, "listKind": f"{KIND}List", "plural": PLURAL, "singular": "search",
                           "shortNames": ["hps"], "categories": ["cifar-hpo"]},
                 "versions": [{"name": VERSION, "served": True, "storage": True,
                               "subresources": {"status": {}},
                               "additionalPrinterColumns": PRINTER_COLUMNS,
                               "schema": {"openAPIV3Schema": {
                                   "type": "object", "description": "A hyperparameter search: TPE over a space, "
                                   "each trial a GPU Job, its records in S3.",
                                   "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                                                  "metadata": {"type": "object"}, "spec": spec_schema(),
                                                  "status": STATUS_SCHEMA}}}}]}}
