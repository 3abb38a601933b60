"""Warm start from the original project's results: its 42 JSON files and its pickled Trials."""

import json
import os
import pickle

import pytest
from support.cli import run_cli
from support.paths import SEED_RESULTS

from controller.errors import ConfigError
from controller.ledger.importer import load_trials_pickle

pytestmark = pytest.mark.e2e


def test_import_the_42_seed_results_and_best_is_0_6761(store_uri_factory):
    uri = store_uri_factory()
    out = json.loads(run_cli("import", "--store", uri, str(SEED_RESULTS)).stdout)
    assert out == {"imported": 42, "skipped": 0, "trials": 42}
    best = json.loads(run_cli("best", "--store", uri).stdout)
    assert round(best["objective"], 4) == 0.6761
    assert best["params"]["optimizer"] == "Nadam" and best["params"]["batch_size"] == 320.0
    again = json.loads(run_cli("import", "--store", uri, str(SEED_RESULTS)).stdout)
    assert again == {"imported": 0, "skipped": 42, "trials": 42}
    doc = json.loads(run_cli("status", "--store", uri, "--json").stdout)
    assert len(doc["trials"]) == 42 and {t["origin"] for t in doc["trials"]} == {"import"}


@pytest.fixture(params=["local", "s3"])
def store_uri_factory(request, tmp_path):
    if request.param == "local":
        return lambda: str(tmp_path / "runs")
    b = request.getfixturevalue("bucket")
    return lambda: f"s3://{b}/imp"


def test_imported_trials_warm_start_tpe_but_not_the_budget(tmp_path, fake_trial_config):
    store = str(tmp_path / "runs")
    run_cli("import", "--store", store, str(SEED_RESULTS))
    cfg = fake_trial_config("tpe:\n  nStartupJobs: 20\n")
    final = json.loads(run_cli("run", "--config", str(cfg), "--local", "--store", store, "--max-trials", "2").stdout)
    assert final["finished"] == 2
    trials = json.loads(run_cli("status", "--store", store, "--json").stdout)["trials"]
    assert len(trials) == 44
    proposals = [json.loads((tmp_path / f"runs/cifar100/trials/{t:06d}/proposal.json").read_text()) for t in (42, 43)]
    assert [p["origin"] for p in proposals] == ["tpe", "tpe"]  # 42 imported trials are past the start-up phase


def _real_trials_pickle():
    from hyperopt import Trials, fmin, tpe

    from controller.search.space import Space

    trials = Trials()
    fmin(lambda p: -p["coarse_labels_weight"], Space.default().hyperopt, algo=tpe.suggest, max_evals=5,
         trials=trials, rstate=__import__("numpy").random.default_rng(0), show_progressbar=False)
    return pickle.dumps(trials, protocol=2), trials


def test_results_pkl_of_a_real_hyperopt_trials_imports(tmp_path):
    data, trials = _real_trials_pickle()
    (tmp_path / "results.pkl").write_bytes(data)
    out = json.loads(run_cli("import", "--store", str(tmp_path / "runs"), str(tmp_path / "results.pkl")).stdout)
    assert out["imported"] == 5
    best = json.loads(run_cli("best", "--store", str(tmp_path / "runs")).stdout)
    assert best["objective"] == pytest.approx(-min(trials.losses()))


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/cifar-hpo-pwned-marker",))


def test_a_pickle_with_anything_else_is_refused_without_running_it(tmp_path):
    marker = "/tmp/cifar-hpo-pwned-marker"
    if os.path.exists(marker):
        os.remove(marker)
    bad = pickle.dumps({"trials": _Evil()})
    with pytest.raises(ConfigError, match=r"refusing to unpickle (posix|os)\.system"):
        load_trials_pickle(bad)
    (tmp_path / "results.pkl").write_bytes(bad)
    p = run_cli("import", "--store", str(tmp_path / "runs"), str(tmp_path / "results.pkl"), check=False)
    assert p.returncode == 2 and "refusing to unpickle" in p.stderr
    assert not os.path.exists(marker)


def test_a_result_outside_the_space_is_refused_naming_file_and_parameter(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    d = json.loads(sorted(SEED_RESULTS.glob("*.json"))[0].read_text())
    d["space"]["pooling_type"] = "fractional"
    (src / "model_x.txt.json").write_text(json.dumps(d))
    p = run_cli("import", "--store", str(tmp_path / "runs"), str(src), check=False)
    assert p.returncode == 2
    assert "model_x.txt.json" in p.stderr and "params.pooling_type" in p.stderr


# -- real files are messy: NaN / Infinity, and imports that stop half-way --------------------------------


def test_the_seed_files_with_nan_histories_import_and_status_says_so(tmp_path):
    """4 of the 42 original files hold NaN losses (diverged runs): kept as null, counted, shown."""
    store = str(tmp_path / "runs")
    run_cli("import", "--store", store, str(SEED_RESULTS))
    doc = json.loads(run_cli("status", "--store", store, "--json").stdout)
    with_nan = [t for t in doc["trials"] if t["metrics"].get("non_finite_values")]
    assert len(with_nan) == 4 and doc["non_finite_values"] == sum(t["metrics"]["non_finite_values"] for t in with_nan)
    assert doc["state"] == "not started"  # only imported trials: nothing runs (was "running")
    table = run_cli("status", "--store", store).stdout
    assert "(not started)" in table and "non-finite values (NaN/inf) in results, stored as null" in table
    for f in (tmp_path / "runs" / "cifar100" / "trials").glob("*/result.json"):
        json.loads(f.read_text(), parse_constant=lambda c, f=f: pytest.fail(f"{f}: {c} written"))


def _diverged(src, name, **fields):
    d = json.loads(sorted(SEED_RESULTS.glob("*.json"))[5].read_text())
    d.update(fields)
    d["history"]["val_fine_outputs_acc"][3] = float("inf")
    (src / name).write_text(json.dumps(d))  # Python writes NaN / Infinity, as the seed's code did


def test_infinite_and_nan_objectives_import_as_failed_trials_never_pending(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _diverged(src, "model_inf.txt.json", fine_best_accuracy=float("inf"), real_loss=float("-inf"))
    _diverged(src, "model_nan.txt.json", fine_best_accuracy=float("nan"), loss=float("nan"))
    _diverged(src, "model_fine.txt.json", fine_best_accuracy=0.5)
    store = str(tmp_path / "runs")
    out = json.loads(run_cli("import", "--store", store, str(src)).stdout)
    assert out["imported"] == 3
    doc = json.loads(run_cli("status", "--store", store, "--json").stdout)
    states = sorted(t["state"] for t in doc["trials"])
    assert states == ["failed", "failed", "ok"] and doc["counts"].get("pending", 0) == 0
    assert all("no finite objective" in t["reason"] for t in doc["trials"] if t["state"] == "failed")
    assert json.loads(run_cli("import", "--store", store, str(src)).stdout)["imported"] == 0


class _FailingAfter:
    """A store whose writes stop working after `n` of them (a crash half-way through an import)."""

    def __init__(self, inner, n):
        self.inner, self.left = inner, n

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def create(self, key, data):
        self.left -= 1
        if self.left < 0:
            raise RuntimeError("crashed")
        return self.inner.create(key, data)


def test_an_import_that_crashed_half_way_leaves_no_pending_trial_and_a_rerun_completes_it(tmp_path):
    from controller.ledger.importer import import_trials, read_source
    from controller.ledger.trials import IMPORT_INCOMPLETE, Ledger
    from controller.search.space import Space
    from controller.store.uri import open_store

    space, store = Space.default(), open_store(str(tmp_path / "runs"))
    trials = read_source(SEED_RESULTS, space)
    with pytest.raises(RuntimeError):
        import_trials(Ledger(_FailingAfter(store, 7)), space, trials, {})  # 3 whole trials + 1 proposal alone
    after_crash = Ledger(store).load()
    assert len(after_crash) == 4 and not [r for r in after_crash.values() if not r.finished]
    assert [r.tid for r in after_crash.values() if r.reason == IMPORT_INCOMPLETE] == [3]
    added = import_trials(Ledger(store), space, trials, after_crash)
    records = Ledger(store).load_full()
    assert len(added) == 38 and len(records) == 42
    assert all(r.state == "ok" for r in records.values()), [r.reason for r in records.values() if r.state != "ok"]
    assert sorted(r.import_key for r in records.values()) == sorted({r.import_key for r in records.values()})
    assert import_trials(Ledger(store), space, trials, Ledger(store).load()) == []
