import pytest

from controller.errors import ConfigError
from controller.settings.config import Settings, settings_from_mapping, with_overrides
from controller.settings.resource import load_settings

pytestmark = pytest.mark.pure


def test_defaults_validate_and_use_the_seed_space():
    s = Settings().validate()
    assert len(s.space().root.members) == 19


def test_camel_case_file_and_flag_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("search: {maxTrials: 7, parallelism: 2, goal: 0.6}\ntpe: {nStartupJobs: 3, nEICandidates: 12}\n")
    s = load_settings(f)
    assert (s.search.max_trials, s.search.parallelism, s.search.goal) == (7, 2, 0.6)
    assert (s.tpe.n_startup_jobs, s.tpe.n_ei_candidates) == (3, 12)
    s2 = with_overrides(s, search__max_trials=9, search__seed=None).validate()
    assert s2.search.max_trials == 9 and s2.search.seed == 0


def test_to_json_round_trips():
    s = Settings()
    assert settings_from_mapping(s.to_json()) == s


@pytest.mark.parametrize("data, message", [
    ({"search": {"maxTrails": 3}}, r"search\.maxTrails: unknown key; did you mean 'maxTrials'\?"),
    ({"serch": {}}, r"serch: unknown section; did you mean 'search'\?"),
    ({"search": {"maxTrials": "many"}}, r"search\.maxTrials: expected an integer, got str 'many'"),
    ({"search": {"maxTrials": 0}}, r"search\.maxTrials: 0 must be in \[1, 10000\]"),
    ({"search": {"parallelism": True}}, r"search\.parallelism: expected an integer, got bool"),
    ({"search": {"goal": 1.5}}, r"search\.goal: 1\.5 must be in \(0, 1\]"),
    ({"search": {"name": "My Search"}}, r"search\.name: 'My Search' must be 1-40 lowercase"),
    ({"tpe": {"pending": "optimistic"}}, r"tpe\.pending: 'optimistic' must be one of hyperopt, liar_mean, ignore"),
    ({"tpe": {"gamma": 2}}, r"tpe\.gamma: 2\.0 must be in \(0, 1\)"),
    ({"trial": {"command": "python -m trainer"}}, r"trial\.command: expected a list"),
    ({"trial": {"command": [1]}}, r"trial\.command\[0\]: expected a string"),
    ({"search": {"space": {"a": {"dist": "uniform", "low": 1, "high": 0}}}}, r"search\.space\.a: low"),
    ({"controller": {"logFormat": "xml"}}, r"controller\.logFormat: 'xml'"),
    ({"trial": {"modelFile": "../model.txt"}}, r"trial\.modelFile: '\.\./model\.txt' must be a file name"),
    ({"trial": {"modelFile": "models/a.txt"}}, r"trial\.modelFile: 'models/a\.txt' must be a file name"),
    ({"trial": {"modelFile": ".hidden"}}, r"trial\.modelFile: '\.hidden' must be a file name"),
    ({"trial": {"modelFile": "result.json"}}, r"trial\.modelFile: 'result\.json' is one of the trial's records"),
    ({"trial": {"modelFile": "trial.log"}}, r"trial\.modelFile: 'trial\.log' is one of the trial's records"),
    ([1], r"config: expected a mapping"),
])
def test_bad_settings_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        settings_from_mapping(data).validate()


def test_unreadable_or_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read it"):
        load_settings(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("search: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(bad)


def test_a_search_manifest_is_a_config_file_too(tmp_path):
    """One file describes a search everywhere: examples/search.yaml as `run --local --config`."""
    from support.paths import ROOT

    s = load_settings(str(ROOT / "examples" / "search.yaml")).validate()
    assert s.search.name == "asha-goal" and s.search.goal == 0.7 and s.early_stopping.rule == "asha"
    assert s.kube.gpu_count == 1 and s.trial.extra_args == ["--patience", "15"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: cifar-hpo.io/v1alpha1\nkind: Search\nmetadata: {name: x}\n"
                   "spec: {trial: {gpuCnt: 1}}\n")
    with pytest.raises(ConfigError, match=r"spec\.trial\.gpuCnt: unknown key"):
        load_settings(str(bad))


def test_the_committed_crd_is_the_one_the_settings_generate():
    import gen_crd

    assert gen_crd.OUT.read_text() == gen_crd.render(), "charts/crds/ is stale: run scripts/gen_crd.py"
    spec = gen_crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    max_trials = spec["search"]["properties"]["maxTrials"]
    assert max_trials == {"type": "integer", "minimum": 1, "maximum": 10000, "default": 20,
                          "description": max_trials["description"]}
    assert spec["tpe"]["properties"]["gamma"]["exclusiveMaximum"] is True
    assert "default" not in spec["trial"]["properties"]["image"]  # the operator's defaults fill a Search's trial


def test_a_proposals_work_is_bounded_by_distributions_times_candidates():
    from controller.settings.config import settings_from_mapping

    space = {f"p{i}": {"dist": "uniform", "low": 0, "high": 1} for i in range(100)}
    settings_from_mapping({"search": {"space": space}, "tpe": {"nEICandidates": 250}}).validate()
    with pytest.raises(ConfigError, match=r"tpe\.nEICandidates: 251 candidates for each of the space's 100 "
                                          r"distributions is 25100 draws per proposal; at most 25000"):
        settings_from_mapping({"search": {"space": space}, "tpe": {"nEICandidates": 251}}).validate()
    with pytest.raises(ConfigError, match=r"tpe\.nEICandidates: 100000 must be in \[1, 1000\]"):
        settings_from_mapping({"tpe": {"nEICandidates": 100000}}).validate()


@pytest.mark.parametrize("section, key, value", [
    ("earlyStopping", "checkSeconds", 1e-6), ("search", "maxTrials", 10**9), ("search", "seed", 2**63),
    ("trial", "epochs", 10**9), ("earlyStopping", "eta", 1e9), ("tpe", "priorWeight", 1e300),
])
def test_every_number_a_search_sets_is_bounded(section, key, value):
    from controller.settings.config import settings_from_mapping

    with pytest.raises(ConfigError, match=rf"{section}\.{key}: .* must be in"):
        settings_from_mapping({section: {key: value}}).validate()


def test_a_search_spec_over_its_size_bound_is_refused_naming_it():
    from controller.settings.resource import settings_of

    doc = {"apiVersion": "cifar-hpo.io/v1alpha1", "kind": "Search", "metadata": {"name": "big"},
           "spec": {"trial": {"extraArgs": ["x" * 1000] * 300}}}
    with pytest.raises(ConfigError, match=r"Search big: spec is \d+ bytes; at most 262144"):
        settings_of(doc, Settings())


def test_unset_data_is_cifar100_for_the_cifar_trainer_and_nothing_for_any_other_program():
    """Third audit: a LightGBM search without `data: none` fetched CIFAR-100 (169 MB) and then suggested fixing a
    checksum. Unset, only the CIFAR trainer gets CIFAR-100; what is set is what every program gets."""
    from controller.settings.config import TrialSection

    assert TrialSection().dataset is None  # staging's default: cifar100
    assert TrialSection(command=["env", "X=1", "python3", "-m", "trainer"]).dataset is None
    assert TrialSection(command=["python", "train_lgbm.py"]).dataset == "none"
    assert TrialSection(command=["python", "-m", "mytrainer"]).dataset == "none"
    assert TrialSection(command=["python", "train.py"], data="synthetic:300").dataset == "synthetic:300"
    assert TrialSection(command=["python", "train.py"]).argv("s3://b/t/0") == ["python", "train.py", "--trial",
                                                                                "s3://b/t/0"]
