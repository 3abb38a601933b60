"""Typed settings, loaded and checked once at the edge.

The config file is YAML with camelCase keys, the same names the Helm chart's values use, so the chart
renders its ConfigMap straight from values and both sides agree on one schema:

    search:  {name, maxTrials, maxFailedTrials, parallelism, goal, seed, space}
    tpe:     {nStartupJobs, nEICandidates, gamma, priorWeight, pending}
    store:   {uri, endpointUrl, region}
    trial:   {command, data, epochs, extraArgs, modelFile}
    local:   {workdir, pollSeconds}
    controller: {checkpointEvery, logFormat, metricsPort, reportSeconds}
    kube:    {namespace, release, image, gpuResource, gpuCount, requests, limits, nodeSelector, ...}
    earlyStopping: {rule, startEpoch, minTrials, graceEpochs, eta, margin, checkSeconds}

Every error names the key (e.g. `search.maxTrials`) and what would be valid.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from controller import limits
from controller.errors import ConfigError
from controller.limits import MAX_EPOCHS, MAX_TPE_WORK, MAX_TRIALS, limit
from controller.limits import camel as _camel
from controller.search.space import Space
from controller.search.stopping import StoppingSettings
from controller.search.suggest import SuggestSettings
from controller.settings.dataspec import parse_data_spec
from controller.settings.kube import KubeSettings
from controller.settings.policy import MAX_PARALLELISM, PolicySettings
from controller.trial.contract import MODEL_FILE, model_file_problem


@dataclass(frozen=True)
class SearchSection:
    """The search section: its name, budget, parallelism, goal, seed and space."""
    name: str = "cifar100"
    """The search's folder under the store: a new name starts a new search."""
    max_trials: int = field(default=20, metadata=limit(minimum=1, maximum=MAX_TRIALS))
    """Trials this search runs to the end (imported trials do not count)."""
    max_failed_trials: int = field(default=5, metadata=limit(minimum=1, maximum=MAX_TRIALS))
    """The search stops, marked failed, when this many of its trials have failed."""
    max_attempts: int = field(default=4, metadata=limit(minimum=1, maximum=100))
    """Attempts per trial: a trial interrupted from outside (preempted, evicted, killed) starts again from its
    last checkpoint, and fails once interrupted this many times. Interruptions are not failures."""
    parallelism: int = field(default=1, metadata=limit(minimum=1, maximum=MAX_PARALLELISM))
    """Trials in flight at once."""
    goal: float | None = field(default=None, metadata=limit(exclusive_minimum=0, maximum=1,
                                                              hint="(a validation accuracy) or null"))
    """Stop once a trial's objective (validation fine accuracy) reaches this value."""
    seed: int = field(default=0, metadata=limit(minimum=0, maximum=2**31 - 1))
    """Search seed: every proposal's seed derives from it and the trial id."""
    space: dict[str, Any] | None = None
    """The search space (see controller/search/space.py); null means the seed project's 19-key space."""

    def validate(self) -> None:
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?", self.name):
            raise ConfigError(
                f"search.name: {self.name!r} must be 1-40 lowercase letters, digits or '-' "
                "(it names a store folder and Kubernetes objects)"
            )
        limits.check(self, "search")


@dataclass(frozen=True)
class StoreSection:
    """The store section: where a search keeps its records and how to reach it."""
    uri: str = "./runs"
    """s3://bucket/prefix, a directory path, or file://path."""
    endpoint_url: str | None = None
    """S3 endpoint for MinIO or another S3-compatible server; null uses AWS_ENDPOINT_URL_S3 / AWS."""
    region: str | None = None
    """S3 region; null uses the AWS default chain."""
    timeout_seconds: float = field(default=20.0, metadata=limit(exclusive_minimum=0, maximum=600))
    """S3 connect/read timeout per attempt (botocore retries with backoff after it)."""
    addressing_style: str = field(default="auto", metadata=limit(enum=("auto", "path", "virtual")))
    """S3 addressing: path (http://host/bucket/key, most self-hosted stores), virtual (http://bucket.host/key) or
    auto (botocore decides)."""
    checksums: str = field(default="when_supported", metadata=limit(enum=("when_supported", "when_required")))
    """when_supported: boto3's default since 1.36 (a CRC32 checksum on every upload); when_required: only where S3
    requires one, for stores that refuse the others."""
    ca_bundle: str | None = None
    """A PEM file of the CA that signed the store's TLS certificate (a private MinIO or Ceph); trials get it too."""

    def validate(self) -> None:
        if not self.uri:
            raise ConfigError("store.uri: required, e.g. ./runs or s3://my-bucket/searches")
        limits.check(self, "store")

    def options(self) -> dict[str, Any]:
        """How to reach a store: open_store(uri, **options()) (controller/store/uri.py) with this section's endpoint,
        TLS and S3 settings."""
        return {"endpoint_url": self.endpoint_url, "region": self.region, "timeout_s": self.timeout_seconds,
                "addressing_style": self.addressing_style, "checksums": self.checksums, "ca_bundle": self.ca_bundle}


@dataclass(frozen=True)
class TrialSection:
    """The trial section: the program each trial runs, its data and epochs."""
    command: list[str] = field(default_factory=lambda: ["python", "-m", "trainer"])
    """The trial program; it gets `--trial <trial URI>` (and --data/--epochs when set) appended."""
    data: str | None = None
    """Dataset: cifar100, a cifar-100-python.tar.gz URL / path / S3 URI, synthetic[:N], or none (a trial program
    that brings its own data: nothing staged, no --data); staged once into the store when the search starts
    (controller/data/staging.py), and trials read that copy. null: cifar100 for the CIFAR trainer (`-m trainer`
    in the command), none for any other program."""
    data_sha256: str | None = None
    """The SHA-256 (64 hex digits) of what `data` names, checked before staging (and by every trial, of the staged
    arrays); cifar100's published hash is built in."""
    epochs: int | None = field(default=None, metadata=limit(minimum=1, maximum=MAX_EPOCHS))
    """Epochs per trial; null uses the trainer's default."""
    extra_args: list[str] = field(default_factory=list)
    """More arguments appended to every trial's command."""
    model_file: str = MODEL_FILE
    """The name of the model the trial saves in its folder, with its extension (model.txt, model.joblib): the grant
    covers exactly this key, and downloads keep the name."""

    def validate(self) -> None:
        if not self.command:
            raise ConfigError("trial.command: must name a program, e.g. [python, -m, trainer]")
        limits.check(self, "trial")
        if self.data is not None:
            parse_data_spec(self.data, "trial.data (--data)")
        problem = model_file_problem(self.model_file)
        if problem:
            raise ConfigError(f"trial.modelFile: {problem}")
        if self.data_sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", self.data_sha256):
            raise ConfigError(f"trial.dataSha256 (--data-sha256): {self.data_sha256!r} must be 64 hex digits "
                              "(`sha256sum cifar-100-python.tar.gz`)")

    @property
    def dataset(self) -> str | None:
        """What trials read: data when set; unset, CIFAR-100 (None: staging's default) for the CIFAR trainer and
        nothing ("none") for any other program, which should not get a 169 MB download it never asked for."""
        if self.data is not None:
            return self.data
        runs_trainer = any(a == "-m" and b == "trainer" for a, b in zip(self.command, self.command[1:]))
        return None if runs_trainer else "none"

    def argv(self, trial_uri: str) -> list[str]:
        args = [*self.command, "--trial", trial_uri]
        if self.data and self.data != "none":
            args += ["--data", self.data]
        if self.data_sha256:
            args += ["--data-sha256", self.data_sha256]
        if self.epochs:
            args += ["--epochs", str(self.epochs)]
        return args + list(self.extra_args)


@dataclass(frozen=True)
class LocalSection:
    """The local section: local mode's working folder, poll interval and stop grace."""
    workdir: str | None = None
    """Where local mode keeps trial processes' locks, exit codes and logs until they are uploaded;
    null: <store>/<search>/.local for a directory store, ~/.cache/cifar-hpo/... for S3."""
    poll_seconds: float = field(default=0.2, metadata=limit(minimum=0.01, maximum=60))
    """How often local mode checks its trial processes."""
    grace_seconds: float = field(default=30.0, metadata=limit(minimum=0, maximum=3600))
    """How long a trial asked to stop (SIGTERM) may take to end before it is killed, as a pod's grace period."""

    def validate(self) -> None:
        limits.check(self, "local")


@dataclass(frozen=True)
class ControllerSection:
    """The controller section: checkpointing, logs, metrics, the report and the dashboard."""
    checkpoint_every: int = field(default=25, metadata=limit(minimum=1))
    """Write the ledger checkpoint after this many decided trials (it makes resume fast)."""
    log_format: str = field(default="text", metadata=limit(enum=("text", "json")))
    metrics_port: int = field(default=0, metadata=limit(minimum=0, maximum=65535, hint="(0: off)"))
    """Serve Prometheus metrics on this port (/metrics); 0: off."""
    dashboard_port: int = field(default=0, metadata=limit(minimum=0, maximum=65535, hint="(0: off)"))
    """The operator serves the read-only dashboard (every search of its store) on this port; 0: off."""
    dashboard_hosts: list[str] = field(default_factory=list)
    """Names the dashboard answers to besides loopback ones and addresses (a Service's or an Ingress's host):
    a request naming another host is refused (DNS rebinding)."""
    report_seconds: float = field(default=30.0, metadata=limit(minimum=0))
    """Rebuild report/ in the store after a finished trial at most this often (and at the end); 0: after each."""

    def validate(self) -> None:
        limits.check(self, "controller")


@dataclass(frozen=True)
class TpeSection(SuggestSettings):
    """The tpe section: SuggestSettings, checked as a section of the config."""

    def validate(self) -> None:
        limits.check(self, "tpe")


@dataclass(frozen=True)
class Settings:
    """Every section of the settings, loaded and range-checked once at the edge (validate())."""
    search: SearchSection = SearchSection()
    tpe: TpeSection = TpeSection()
    store: StoreSection = StoreSection()
    trial: TrialSection = TrialSection()
    local: LocalSection = LocalSection()
    controller: ControllerSection = ControllerSection()
    kube: KubeSettings = KubeSettings()
    policy: PolicySettings = PolicySettings()
    """The operator's: what a Search may ask of it (controller/settings/policy.py)."""
    early_stopping: StoppingSettings = StoppingSettings()

    def space(self) -> Space:
        if self.search.space is None:
            return Space.default()
        return Space.from_spec(self.search.space, "search.space")

    def validate(self) -> Settings:
        for f in dataclasses.fields(self):
            getattr(self, f.name).validate()
        work = len(self.space().dists) * self.tpe.n_ei_candidates
        if work > MAX_TPE_WORK:
            raise ConfigError(f"tpe.nEICandidates: {self.tpe.n_ei_candidates} candidates for each of the space's "
                              f"{len(self.space().dists)} distributions is {work} draws per proposal; at most "
                              f"{MAX_TPE_WORK} (lower nEICandidates: 24 is TPE's usual)")
        return self

    def to_json(self) -> dict[str, Any]:
        return {_camel(f.name): _section_json(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def trial_env(self) -> dict[str, str]:
        """What every trial's environment gets from these settings (the store's endpoint and region)."""
        env = {"PYTHONUNBUFFERED": "1"}
        if self.store.endpoint_url:
            env["AWS_ENDPOINT_URL_S3"] = self.store.endpoint_url
        if self.store.region:
            env["AWS_DEFAULT_REGION"] = self.store.region
        if self.store.ca_bundle:
            env["AWS_CA_BUNDLE"] = self.store.ca_bundle  # boto3 reads it; so does a trial's grant store
        return env


def _section_json(section: Any) -> dict[str, Any]:
    return {_camel(f.name): getattr(section, f.name) for f in dataclasses.fields(section)}


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Check value against a field's type hint; ints are accepted where floats are expected."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(key, value, inner)
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint in (str, bool) and isinstance(value, hint):
        return value
    if origin is list and isinstance(value, list):
        (inner,) = typing.get_args(hint)
        return [_coerce(f"{key}[{i}]", v, inner) for i, v in enumerate(value)]
    if origin is dict and isinstance(value, dict):
        return {str(k): v for k, v in value.items()}
    want = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(hint, str(hint))
    if origin is list:
        want = "a list"
    if origin is dict:
        want = "a mapping"
    raise ConfigError(f"{key}: expected {want}, got {type(value).__name__} {value!r}")


def _overlay(cls: type, data: Any, path: str, base: Any, what: str,
             convert: Callable[[str, Any, Any, Any], Any]) -> Any:
    """A copy of base with data's camelCase keys applied through convert(key path, value, hint, old)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    by_camel = {_camel(f.name): f.name for f in dataclasses.fields(cls)}
    updates = {}
    for key, value in data.items():
        keypath = f"{path}.{key}" if path else str(key)
        if key not in by_camel:
            close = difflib.get_close_matches(str(key), list(by_camel), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(by_camel)}"
            raise ConfigError(f"{keypath}: unknown {what}{hint}")
        name = by_camel[key]
        updates[name] = convert(keypath, value, hints[name], getattr(base, name))
    return dataclasses.replace(base, **updates)


def settings_from_mapping(data: Mapping[str, Any] | None, base: Settings = Settings()) -> Settings:
    """Overlay a config mapping on base. Validation is separate (flags may still override)."""
    def section(keypath: str, value: Any, hint: Any, old: Any) -> Any:
        return _overlay(hint, value or {}, keypath, old, "key", lambda kp, v, h, _: _coerce(kp, v, h))

    settings: Settings = _overlay(Settings, data or {}, "", base, "section", section)
    return settings


def read_config(path: str | Path) -> Any:
    """The config file's YAML document."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"--config {path}: cannot read it ({e.strerror})") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"--config {path}: not valid YAML ({e})") from e
    return data


def with_overrides(settings: Settings, **overrides: Any) -> Settings:
    """Apply CLI flags (section__field=value; None means 'not given')."""
    sections: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        if value is None:
            continue
        section, name = key.split("__")
        sections.setdefault(section, {})[name] = value
    return dataclasses.replace(
        settings, **{s: dataclasses.replace(getattr(settings, s), **v) for s, v in sections.items()}
    )
