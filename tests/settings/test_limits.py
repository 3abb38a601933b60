"""One source for limits: every limit the chart's values.schema.json puts on a value that reaches the controller's
settings is the limit the settings declare (controller/limits.py), field by field, and the other way round.

Which chart value feeds which setting is read from the chart's own config template, so a value wired to another
setting, or a limit added on one side only, fails here.
"""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
from support.paths import ROOT

from controller.limits import LIMIT_KEYS, camel, limits_of
from controller.settings.config import Settings

pytestmark = pytest.mark.pure

CHART = ROOT / "charts"
# Limits the chart has and the settings cannot: they shape objects the chart itself renders.
CHART_ONLY = {
    "store.bucket": "an S3 bucket name; the settings take a whole store URI",
    "trainer.image.repository": "renders the image reference",
    "controller.image.repository": "the controller's own Deployment",
    "controller.image.pullPolicy": "the controller's own Deployment",
    "trainer.data": "a non-empty data spec; the settings parse the spec itself (controller/settings/dataspec.py)",
    "trainer.gpu.resourceName": "non-empty; rendered into the trial Jobs as a resource name",
    "trainer.dataSha256": "the settings check the same 64 hex digits in TrialSection.validate",
    "store.endpoint": "a URL pattern for the rendered endpointUrl",
    "search.name": "the settings check the same pattern in SearchSection.validate",
    "controller.image.digest": "the operator's own Deployment",
    "trainer.image.digest": "rendered into kube.image as repository@digest",
    "store.caBundle.key": "a key of the ConfigMap; rendered into store.caBundle as the mounted file's path",
}
# Limits that differ on purpose.
DIFFERENT = {
    "controller.metricsPort": "the chart always serves metrics (its Service and probe need a port), so 0 (off) "
                              "is the settings' only",
    "controller.dashboard.port": "the chart's off-switch is controller.dashboard.enabled (it renders 0), so 0 (off) "
                                 "is the settings' only",
}


def _schema_limits() -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}

    def walk(node: dict, path: str) -> None:
        if "properties" in node:
            for key, sub in node["properties"].items():
                walk(sub, f"{path}.{key}" if path else key)
            return
        found = {k: node[k] for k in LIMIT_KEYS if k in node}
        if found or any(k in node for k in ("pattern", "minLength")):
            out[path] = found

    walk(json.loads((CHART / "values.schema.json").read_text()), "")
    return out


def _wiring() -> dict[str, str]:
    """chart value → settings key, from the config the chart renders (templates/configmap-search.yaml and the
    operator's part of it, cifar-hpo.operatorConfig in templates/_helpers.tpl)."""
    text = (CHART / "templates" / "configmap-search.yaml").read_text() + "\n" + \
        (CHART / "templates" / "_helpers.tpl").read_text().split('define "cifar-hpo.operatorConfig"')[1]
    wiring: dict[str, str] = {}
    section = None
    for line in text.splitlines():
        if m := re.fullmatch(r" *(\w+):", line):
            section = m.group(1)
        elif m := re.search(r"toYaml \.Values\.(\w+) ", line):
            for f in dataclasses.fields(getattr(Settings(), _field(section))):
                wiring[f"{m.group(1)}.{camel(f.name)}"] = f"{section}.{camel(f.name)}"
        elif m := re.fullmatch(r" +(\w+): \{\{ \.Values\.([\w.]+)\b.*", line):
            wiring[m.group(2)] = f"{section}.{m.group(1)}"
    return wiring


def _field(section: str | None) -> str:
    return next(f.name for f in dataclasses.fields(Settings) if camel(f.name) == section)


def _settings_limits() -> dict[str, dict[str, object]]:
    settings = Settings()
    return {f"{camel(f.name)}.{key}": spec for f in dataclasses.fields(settings)
            for key, spec in limits_of(getattr(settings, f.name)).items()}


def test_the_wiring_is_read_from_the_template():
    wiring = _wiring()
    assert wiring["trainer.gpu.count"] == "kube.gpuCount"
    assert wiring["controller.leaseSeconds"] == "kube.leaseSeconds"
    assert wiring["search.parallelism"] == "search.parallelism"
    assert wiring["earlyStopping.eta"] == "earlyStopping.eta"


def test_chart_limits_are_the_settings_limits():
    wiring, python = _wiring(), _settings_limits()
    mismatches = []
    for value, schema in sorted(_schema_limits().items()):
        if value in CHART_ONLY or value in DIFFERENT:
            continue
        assert value in wiring, f"{value}: limited in values.schema.json but reaches no setting; wire it or add it " \
                                "to CHART_ONLY with the reason"
        if schema != python.get(wiring[value], {}):
            mismatches.append(f"{value} {schema} != {wiring[value]} {python.get(wiring[value], {})}")
    assert not mismatches, "\n".join(mismatches)


def test_every_limited_setting_the_chart_sets_is_limited_there_alike():
    schema, python = _schema_limits(), _settings_limits()
    for value, key in sorted(_wiring().items()):
        if key in python and value not in DIFFERENT:
            assert schema.get(value) == python[key], f"{key} {python[key]} but chart {value} {schema.get(value)}"


def test_the_deliberate_differences_still_differ():
    schema, python, wiring = _schema_limits(), _settings_limits(), _wiring()
    for value in DIFFERENT:
        assert schema[value] != python[wiring[value]], f"{value}: now agrees; drop it from DIFFERENT"
