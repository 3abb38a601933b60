import json
import math

import numpy as np
import pytest
from hyperopt.pyll import stochastic
from support.paths import SEED_RESULTS

from controller.errors import SpaceError
from controller.search.space import Space

pytestmark = pytest.mark.pure

SEED_KEYS = {
    "lr_rate_mult", "l2_weight_reg_mult", "batch_size", "optimizer", "coarse_labels_weight",
    "conv_dropout_drop_proba", "fc_dropout_drop_proba", "use_BN", "first_conv", "residual",
    "conv_hiddn_units_mult", "nb_conv_pool_layers", "conv_pool_res_start_idx", "pooling_type",
    "conv_kernel_size", "res_conv_kernel_size", "fc_units_1_mult", "one_more_fc", "activation",
}


def test_default_space_is_the_seeds_19_keys_with_its_labels():
    space = Space.default()
    assert {name for name, _ in space.root.members} == SEED_KEYS
    labels = set(space.dists)
    assert {"conv_dropout_proba", "fc_dropout_proba", "first_conv_size", "residual_units", "fc_units_2_mult"} <= labels
    assert space.dists["batch_size"].args == (100.0, 450.0, 5.0)


def test_every_seed_result_encodes_and_decodes_to_itself():
    space = Space.default()
    files = sorted(SEED_RESULTS.glob("*.json"))
    assert len(files) == 42
    for f in files:
        params = json.loads(f.read_text())["space"]
        assert space.decode(space.encode(params)) == params, f.name


def test_hyperopt_samples_decode_like_space_eval():
    from hyperopt import space_eval

    space = Space.default()
    rng = np.random.default_rng(3)
    for _ in range(200):
        point = stochastic.sample(space.hyperopt, rng=rng)
        vals = space.encode(point)
        assert space.decode(vals) == point
        assert space_eval(space.hyperopt, vals) == point


def test_loguniform_accepts_values_or_log_bounds():
    a = Space.from_spec({"lr": {"dist": "loguniform", "low": 1e-4, "high": 1e-2}})
    b = Space.from_spec({"lr": {"dist": "loguniform", "log_low": math.log(1e-4), "log_high": math.log(1e-2)}})
    assert a.dists["lr"].args == pytest.approx(b.dists["lr"].args)
    with pytest.raises(SpaceError, match=r"params\.lr: 0\.5 is outside"):
        a.encode({"lr": 0.5})


def test_a_fixed_mapping_is_written_as_an_explicit_literal():
    space = Space.from_spec({"head": {"literal": {"width": 3, "kinds": ["a", "b"]}},
                             "lr": {"dist": "uniform", "low": 0, "high": 1}})
    assert space.decode({"lr": 0.5}) == {"head": {"width": 3, "kinds": ["a", "b"]}, "lr": 0.5}


def test_nested_group_options_decode_to_dicts():
    space = Space.from_spec({
        "opt": {"dist": "choice", "options": [
            {"name": "sgd", "momentum": {"dist": "uniform", "low": 0.0, "high": 0.99}},
            {"name": "adam"},
        ]},
    })
    assert space.decode({"opt": 0, "momentum": 0.5}) == {"opt": {"name": "sgd", "momentum": 0.5}}
    assert space.decode({"opt": 1}) == {"opt": {"name": "adam"}}
    assert space.encode({"opt": {"name": "adam"}}) == {"opt": 1}


@pytest.mark.parametrize("spec, message", [
    ({"a": {"dist": "gaussian", "mu": 0, "sigma": 1}}, r"space\.a\.dist: unknown distribution 'gaussian'"),
    ({"a": {"dist": "uniform", "low": 1, "high": 1}}, r"space\.a: low \(1\.0\) must be < high \(1\.0\)"),
    ({"a": {"dist": "uniform", "low": 2, "high": 1}}, r"space\.a: low"),
    ({"a": {"dist": "choice", "options": []}}, r"space\.a\.options: a choice needs a non-empty list"),
    ({"a": {"dist": "uniform", "low": 0, "high": 1, "label": "x"},
      "b": {"dist": "uniform", "low": 0, "high": 1, "label": "x"}}, r"space\.b: duplicate label 'x'.*space\.a"),
    ({"a": {"dist": "uniform", "low": "0", "high": 1}}, r"space\.a\.low: must be a finite number, got str"),
    ({"a": {"dist": "quniform", "low": 0, "high": 4}}, r"space\.a\.q: required"),
    ({"a": {"dist": "quniform", "low": 0, "high": 4, "q": 0}}, r"space\.a\.q: must be > 0"),
    ({"a": {"dist": "normal", "mu": 0, "sigma": -1}}, r"space\.a\.sigma: must be > 0"),
    ({"a": {"dist": "uniform", "low": 0, "high": 1, "step": 2}}, r"space\.a: unknown key\(s\) \['step'\]"),
    ({"a": {"dist": "choice", "options": [1, {"dist": "uniform", "low": 3, "high": 1}]}},
     r"space\.a\.options\[1\]: low"),
    ({"a": [1, 2]}, r"space\.a: expected a literal or a mapping"),
    ({}, r"space: expected a non-empty mapping"),
    ({"a": {"dist": "loguniform", "low": 0, "high": 1}}, r"space\.a\.low: loguniform bounds must be > 0"),
    # As a new user writes them: the distribution as a key, `high` missing; a group where no choice makes one.
    ({"lr_rate_mult": {"loguniform": {"low": 0.1}}},
     r"space\.lr_rate_mult: a mapping without 'dist' is neither a distribution nor a literal; did you mean "
     r"\{dist: loguniform, low: \.\., high: \.\.\}\?"),
    ({"head": {"width": 3, "depth": {"dist": "uniform", "low": 0, "high": 1}}},
     r"space\.head: a mapping without 'dist'.*\{literal: "),
    ({"a": {"dist": "choice", "options": [{"b": {"uniform": {"low": 0, "high": 1}}}]}},
     r"space\.a\.options\[0\]\.b: a mapping without 'dist'.*did you mean \{dist: uniform"),
    ({"a": {"literal": {"x": float("inf")}}}, r"space\.a\.literal: a literal must be plain JSON"),
])
def test_invalid_spaces_name_the_bad_entry(spec, message):
    with pytest.raises(SpaceError, match=message):
        Space.from_spec(spec)


def test_encode_rejects_points_outside_the_space_naming_the_parameter():
    space = Space.default()
    params = json.loads(sorted(SEED_RESULTS.glob("*.json"))[0].read_text())["space"]
    with pytest.raises(SpaceError, match=r"params\.batch_size: 5000\.0 is outside"):
        space.encode({**params, "batch_size": 5000.0})
    with pytest.raises(SpaceError, match=r"params\.optimizer: 'SGD' matches no option"):
        space.encode({**params, "optimizer": "SGD"})
    with pytest.raises(SpaceError, match=r"unknown parameter\(s\) \['bogus'\]"):
        space.encode({**params, "bogus": 1})
    with pytest.raises(SpaceError, match=r"params\.use_BN: .*matches no option"):
        space.encode({**params, "use_BN": 1})  # 1 is not True: bools are kept apart from numbers


KINDS = Space.from_spec({
    "u": {"dist": "uniform", "low": 0, "high": 1},
    "q": {"dist": "quniform", "low": 0, "high": 100, "q": 10},
    "g": {"dist": "normal", "mu": 0, "sigma": 1},
    "ln": {"dist": "lognormal", "mu": 0, "sigma": 1},
    "r": {"dist": "randint", "low": 2, "high": 5},
    "big": {"dist": "uniform", "low": 0, "high": 1000},
})
POINT = {"u": 0.5, "q": 30.0, "g": -2.0, "ln": 0.5, "r": 3, "big": 10.0}


@pytest.mark.parametrize("name, value, says", [
    ("g", "x", r"params\.g: expected a finite number for normal 'g', got 'x'"),
    ("g", math.inf, r"params\.g: expected a finite number"),
    ("ln", -0.5, r"params\.ln: lognormal values are >= 0, got -0\.5"),
    ("r", 3.5, r"params\.r: expected an integer in \[2, 5\), got 3\.5"),
    ("r", 5, r"params\.r: expected an integer in \[2, 5\), got 5"),  # high excluded, as hyperopt's
    ("r", 1, r"params\.r: expected an integer in \[2, 5\), got 1"),
    ("q", 35.0, r"params\.q: 35\.0 is not a multiple of q=10"),
    ("q", 106.0, r"params\.q: 106\.0 is outside \[0, 100\]"),
    ("u", 1.0 + 2e-9, r"params\.u: 1\.000000002 is outside \[0, 1\]"),  # the tolerance is relative, ~1e-9
])
def test_encode_refuses_each_kind_of_value_outside_its_distribution(name, value, says):
    """mutmut S2's survivors in Space._check_numeric: each check, and its message, pinned."""
    with pytest.raises(SpaceError, match=says):
        KINDS.encode({**POINT, name: value})


def test_encode_accepts_each_distributions_edges():
    edges = {**POINT, "u": 1.0, "q": 100.0, "g": -50.0, "ln": 0.0, "r": 2, "big": 1000 + 5e-7}  # within tolerance
    vals = KINDS.encode(edges)
    assert vals["r"] == 2 and isinstance(vals["r"], int) and vals["ln"] == 0.0 and vals["g"] == -50.0


def test_diff_names_the_first_difference():
    a = Space.default()
    spec = json.loads(json.dumps(a.spec))
    spec["batch_size"]["high"] = 700
    assert a.diff(Space.from_spec(spec)) == "space.batch_size.high"
    assert a.diff(Space.default()) is None
    del spec["batch_size"]
    assert a.diff(Space.from_spec(spec)) == "space.batch_size"  # a key one side lacks
    assert Space.from_spec(spec).diff(a) == "space.batch_size"


def test_a_search_with_a_mistyped_distribution_is_refused_naming_its_spec_path():
    from controller.errors import ConfigError
    from controller.settings.config import Settings
    from controller.settings.resource import settings_of

    doc = {"apiVersion": "cifar-hpo.io/v1alpha1", "kind": "Search", "metadata": {"name": "s"},
           "spec": {"search": {"maxTrials": 3, "space": {"lr_rate_mult": {"loguniform": {"low": 0.1}}}}}}
    with pytest.raises(ConfigError, match=r"Search s: spec\.search\.space\.lr_rate_mult: a mapping without 'dist'"):
        settings_of(doc, Settings()).validate()


# -- issue 34: a space cannot make one proposal cost without bound --


@pytest.mark.parametrize("spec, message", [
    ({"a": {"dist": "choice", "options": list(range(1001))}}, r"space\.a\.options: 1001 options; at most 1000"),
    ({"a": {"dist": "randint", "low": 0, "high": 10_000_000}}, r"space\.a: randint over 10000000 values; at most"),
    ({f"p{i}": {"dist": "uniform", "low": 0, "high": 1} for i in range(257)}, r"more than 256 distributions"),
])
def test_a_space_whose_proposals_would_cost_without_bound_is_refused(spec, message):
    with pytest.raises(SpaceError, match=message):
        Space.from_spec(spec)


def test_groups_nest_at_most_eight_deep_and_errors_quote_a_bounded_value():
    spec: dict = {"x": 1}
    for i in range(9):
        spec = {"c": {"dist": "choice", "label": f"c{i}", "options": [spec]}}
    with pytest.raises(SpaceError, match="nested more than 8 deep"):
        Space.from_spec(spec)
    with pytest.raises(SpaceError) as e:
        Space.from_spec({"a": {"dist": "uniform", "low": "x" * 100_000, "high": 1}})
    assert len(str(e.value)) < 300


def test_the_bounds_themselves_are_accepted():
    Space.from_spec({"a": {"dist": "choice", "options": list(range(1000))},
                     "b": {"dist": "randint", "low": 0, "high": 100_000}})
