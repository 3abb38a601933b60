"""The trial contract (docs/TRIAL_CONTRACT.md): its JSON Schemas, the trial library every trial program uses
(controller/trial/), and a second trainer that is not Keras (examples/digits) run as a search."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys

import pytest
from support.cli import run_cli
from support.paths import PY, ROOT

from controller.ledger.trials import Ledger, judge_result, proposal_record
from controller.store.base import dumps, get_json
from controller.store.local import MemoryStore
from controller.trial import Trial
from controller.trial.contract import EXIT_BAD_INPUT, EXIT_INTERRUPTED, TrialState
from controller.trial.schema import KINDS, check_record, schema


@pytest.mark.pure
def test_every_record_has_a_schema_shipped_in_the_package_and_documented():
    doc = (ROOT / "docs" / "TRIAL_CONTRACT.md").read_text()
    for kind in KINDS:
        s = schema(kind)
        assert s["$id"].endswith(f"/{kind}.schema.json") and s["type"] == "object" and s["required"]
        assert f"{kind}.schema.json" in doc
        for field in s["required"]:
            assert f"`{field}`" in doc, (kind, field)  # every required field is documented


@pytest.mark.pure
@pytest.mark.parametrize("kind, doc, says", [
    ("result", {"schema_version": 1, "tid": 3, "status": "okay"},
     "status: 'okay' is not one of ['ok', 'stopped', 'fail']"),
    ("result", {"schema_version": 1, "tid": "3", "status": "ok"}, "tid: expected integer, got str '3'"),
    ("result", {"schema_version": 1, "status": "ok"}, "tid: required, missing"),
    ("result", {"schema_version": 1, "tid": 3, "status": "ok", "history": {"loss": [0.5, "x"]}},
     "history.loss[1]: expected number or null, got str 'x'"),
    ("result", {"schema_version": 1, "tid": 3, "status": "ok", "epochs_run": -1},
     "epochs_run: -1 is below the minimum 0"),
    ("result", {"schema_version": 2, "tid": 3, "status": "ok"}, "schema_version: 2 is not one of [1]"),
    ("progress", {"tid": 3, "epoch": 2, "history": {"objective": [0.1, True]}},
     "history.objective[1]: expected number or null, got bool True"),
    ("progress", {"tid": 3, "history": {}}, "epoch: required, missing"),
    ("proposal", {"schema_version": 1, "tid": 0, "params": [1, 2]}, "params: expected object, got list [1, 2]"),
    # third audit: a boolean is no integer (True == 1 in Python), and a proposal without params is no proposal
    ("proposal", {"schema_version": 1, "tid": True, "params": {}}, "tid: expected integer, got bool True"),
    ("proposal", {"schema_version": True, "tid": 0, "params": {}}, "schema_version: expected integer, got bool True"),
    ("proposal", {"schema_version": 1, "tid": 0}, "params: required, missing"),
    ("stop", {"schema_version": 1, "tid": 0, "reason": "x"}, "requested_at: required, missing"),
    ("outcome", {"schema_version": 1, "tid": 0, "state": "ok", "reason": "x", "finished_at": 1.0},
     "state: 'ok' is not one of ['failed', 'stopped']"),
])
def test_a_record_breaking_its_schema_is_refused_naming_the_field(kind, doc, says):
    assert check_record(kind, doc) == says


@pytest.mark.pure
def test_the_records_this_project_writes_conform():
    assert check_record("proposal", proposal_record(4, {"x": 1.0}, {"x": 1.0}, 7, "tpe")) is None
    for f in sorted((ROOT / "examples" / "seed-results").glob("*.json"))[:5]:
        assert check_record("proposal", {"schema_version": 1, "tid": 0, "params": json.loads(f.read_text())["space"]}) \
            is None


@pytest.mark.pure
def test_the_controller_fails_a_result_that_breaks_the_schema_and_says_where():
    state, objective, reason, _ = judge_result({"schema_version": 1, "tid": 3, "status": "ok", "objective": 0.9,
                                                "history": {"loss": [0.5, "nan"]}}, 3)
    assert state is TrialState.FAILED and objective is None
    assert reason == "result.json: history.loss[1]: expected number or null, got str 'nan'"


@pytest.mark.pure
def test_progress_breaking_the_schema_is_skipped_naming_the_field(caplog):
    root = MemoryStore()
    store = root.child("s")
    store.put("trials/000002/progress.json", dumps({"tid": 2, "epoch": 1, "history": {"objective": ["0.4"]}}))
    assert Ledger(store).read_curve(2) == []
    assert "progress.json: history.objective[0]: expected number or null, got str '0.4'" in caplog.text
    store.put("trials/000002/progress.json", dumps({"tid": 2, "epoch": 2, "history": {"objective": [0.4, None]}}))
    assert Ledger(store).read_curve(2) == [0.4, None]


def _trial(params=None, model_file=None) -> tuple[Trial, MemoryStore]:
    root = MemoryStore()
    store = root.child("s").child("trials/000005")
    store.put("proposal.json", dumps(proposal_record(5, params or {"hidden": 32}, {}, 9, "tpe", model_file=model_file)))
    return Trial(store, get_json(store, "proposal.json")), root


@pytest.mark.pure
@pytest.mark.parametrize("model_file, saved", [(None, "model.keras"), ("booster.txt", "booster.txt")])
def test_the_model_is_saved_under_the_searchs_model_file_and_the_result_names_it(model_file, saved):
    t, root = _trial(model_file=model_file)
    assert t.model_file == saved
    t.report(1, objective=0.5)
    assert t.finish(model=b"trees") == 0
    assert t.store.get(saved) == b"trees" and (saved == "model.keras" or not t.store.exists("model.keras"))
    result = get_json(t.store, "result.json")
    assert result["model_file"] == saved and check_record("result", result) is None
    assert Ledger(root.child("s")).read_trial(5).metrics["model_file"] == saved  # what status and downloads read


@pytest.mark.pure
def test_a_result_names_no_model_file_when_no_model_was_saved():
    t, _ = _trial(model_file="booster.txt")
    t.report(1, objective=0.5)
    assert t.finish() == 0 and "model_file" not in get_json(t.store, "result.json")


@pytest.mark.pure
def test_the_library_reports_each_step_and_finishes_once_with_the_best():
    t, root = _trial()
    assert (t.tid, t.params, t.seed) == (5, {"hidden": 32}, 9)
    for step, score in enumerate([0.2, 0.5, float("nan"), 0.4], start=1):
        t.report(step, objective=score, loss=1 / step)
        assert not t.should_stop()
    progress = get_json(t.store, "progress.json")
    assert progress["epoch"] == 4 and progress["history"]["objective"] == [0.2, 0.5, None, 0.4]
    assert check_record("progress", progress) is None
    assert t.finish(extra_metric=1.5) == 0
    result = get_json(t.store, "result.json")
    assert (result["status"], result["objective"], result["epochs_run"], result["extra_metric"]) == ("ok", 0.5, 4, 1.5)
    rec = Ledger(root.child("s")).read_trial(5)
    assert rec.state is TrialState.OK and rec.objective == 0.5 and rec.curve == [0.2, 0.5, None, 0.4]
    assert not t.result({"status": "ok", "objective": 0.9})  # once only: the first result stands
    assert get_json(t.store, "result.json")["objective"] == 0.5


@pytest.mark.pure
@pytest.mark.parametrize("objective, metrics, says", [
    ("0.5", {}, "objective must be a number or None, got str '0.5'"),
    (0.5, {"loss": [0.1]}, "loss must be a number or None, got list"),
    (True, {}, "objective must be a number or None, got bool"),
])
def test_a_report_that_is_not_a_number_is_refused_at_once_naming_it(objective, metrics, says):
    """Third audit: t.report() took a string objective, the trial trained to its end and failed in finish() with a
    bare TypeError. Refused when reported, naming the value; nothing of it written."""
    import numpy as np

    from controller.errors import ConfigError

    t, _ = _trial()
    t.report(1, objective=0.4)
    with pytest.raises(ConfigError, match=f"report\\(step=2\\): {says}"):
        t.report(2, objective=objective, **metrics)
    assert get_json(t.store, "progress.json")["history"]["objective"] == [0.4] and t.history == {"objective": [0.4]}
    t.report(2, objective=np.float32(0.6), loss=np.int64(1))  # numpy numbers are numbers
    assert t.finish() == 0 and get_json(t.store, "result.json")["objective"] == pytest.approx(0.6)


@pytest.mark.pure
def test_a_stop_request_makes_a_stopped_result_and_an_unasked_sigterm_none():
    t, _ = _trial()
    t.report(1, objective=0.3)
    t.store.put("stop.json", dumps({"schema_version": 1, "tid": 5, "reason": "median rule", "requested_at": 1.0}))
    assert t.should_stop()
    assert t.finish() == 0 and get_json(t.store, "result.json")["status"] == "stopped"
    t2, _ = _trial()
    t2.report(1, objective=0.3)
    t2.sigterm = True  # a drain or an eviction: nobody asked
    assert t2.should_stop() and t2.finish() == EXIT_INTERRUPTED and get_json(t2.store, "result.json") is None


@pytest.mark.pure
def test_bad_input_is_a_fail_result_and_exit_3_and_a_result_breaking_the_schema_is_refused():
    t, _ = _trial()
    assert t.fail("params.hidden: -1 is not a number in [4, 512]") == EXIT_BAD_INPUT
    assert get_json(t.store, "result.json")["error"] == "params.hidden: -1 is not a number in [4, 512]"
    t2, _ = _trial()
    from controller.errors import ConfigError

    with pytest.raises(ConfigError, match=r"result.json: history.loss: expected array, got str"):
        t2.result({"status": "ok", "objective": 0.5, "history": {"loss": "low"}})
    assert get_json(t2.store, "result.json") is None


@pytest.mark.pure
def test_the_library_imports_no_framework_no_cluster_client_and_no_boto3():
    code = ("import sys; import controller.trial; "
            "print(sorted(m for m in ('tensorflow', 'keras', 'kubernetes', 'boto3', 'botocore', 'hyperopt', 'numpy') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.e2e
def test_the_digits_trainer_runs_a_search_to_its_end_with_early_stopping(tmp_path):
    """The second trainer (scikit-learn, not Keras) as a local search: every trial ends, the median rule cuts some,
    and `best --download` brings its model (the weights as a NumPy archive, never a pickle)."""
    import numpy as np

    store = tmp_path / "runs"
    out = run_cli("run", "--local", "--config", str(ROOT / "examples" / "digits" / "config.yaml"), "--store",
                  str(store), "--max-trials", "8", "--epochs", "10")
    assert json.loads(out.stdout)["finished"] == 8
    doc = json.loads(run_cli("status", "--store", str(store), "--json").stdout)
    states = [t["state"] for t in doc["trials"]]
    assert set(states) <= {"ok", "stopped"} and "stopped" in states and "ok" in states, states
    assert doc["best"]["objective"] > 0.9, doc["best"]  # chance is 0.1
    stopped = [t for t in doc["trials"] if t["state"] == "stopped"]
    assert all(t["reason"].startswith("early-stopped: median rule") for t in stopped), stopped
    got = json.loads(run_cli("best", "--store", str(store), "--download", str(tmp_path / "best")).stdout)
    # saved under the name its config gives (trial.modelFile), and recorded so in its result
    assert {"model.npz", "result.json", "params.json"} <= set(got["files"]) and "model.keras" not in got["files"]
    assert doc["best"]["metrics"]["model_file"] == "model.npz"
    weights = np.load(io.BytesIO((tmp_path / "best" / "model.npz").read_bytes()), allow_pickle=False)
    assert weights["coef_0"].shape == (64, int(doc["best"]["params"]["hidden"]))
    # the model is the epoch its number comes from (third audit: the last epoch's weights beside the best's score)
    result = json.loads((tmp_path / "best" / "result.json").read_text())
    assert int(weights["epoch"]) == result["best_epoch"]
    assert result["history"]["objective"][result["best_epoch"] - 1] == result["objective"]


@pytest.mark.e2e
def test_the_digits_trainer_fails_a_bad_point_at_once_naming_it(tmp_path):
    store = tmp_path / "t"
    store.mkdir()
    (store / "proposal.json").write_text(json.dumps(proposal_record(0, {"hidden": 2, "alpha": 0.1, "lr": 0.01,
                                                                         "batch": 16}, {}, 1, "tpe")))
    p = subprocess.run([PY, str(ROOT / "examples" / "digits" / "trainer.py"), "--trial", str(store)], cwd=ROOT,
                       capture_output=True, text=True, env=os.environ)
    assert p.returncode == EXIT_BAD_INPUT, p.stderr
    assert json.loads((store / "result.json").read_text())["error"] == "params.hidden: 2 is not a number in [4, 512]"


USER_PROGRAM = """\
import sys

from controller import trial

t = trial.start()
x = t.params["x"]
for step in range(1, 4):
    t.report(step, objective=1.0 - (x - 0.3) ** 2 - 0.1 / step)
    if t.should_stop():
        break
sys.exit(t.finish())
"""


@pytest.mark.e2e
def test_a_trial_program_on_the_base_install_alone_runs_a_whole_local_search(tmp_path):
    """The base distribution is the trial library with no dependency: installed by itself (--no-index: nothing else
    can come) into a virtualenv, it runs a user's program as every trial of a search the controller drives."""
    src, wheels = tmp_path / "src", tmp_path / "wheels"  # built from a copy, as the images are: no build/ here
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "controller", "trainer"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, src / name)
    subprocess.run([PY, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(src)],
                   check=True, capture_output=True, text=True)
    base = tmp_path / "base"
    subprocess.run([sys.executable, "-m", "venv", str(base)], check=True)
    py = str(base / "bin" / "python")
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-index", *map(str, wheels.glob("*.whl"))], check=True,
                   capture_output=True, text=True)
    installed = subprocess.run([py, "-m", "pip", "list", "--format", "json"], check=True, capture_output=True,
                               text=True).stdout
    assert {p["name"] for p in json.loads(installed)} <= {"cifar-hpo", "pip", "setuptools"}, installed
    # The operator's modules are in the wheel but cannot run there: the environment really lacks their packages.
    lacks = subprocess.run([py, "-c", "import controller.search.suggest"], cwd=tmp_path, capture_output=True, text=True)
    assert "ModuleNotFoundError: No module named 'numpy'" in lacks.stderr, lacks.stderr
    program = tmp_path / "program.py"
    program.write_text(USER_PROGRAM)
    config = tmp_path / "search.yaml"
    config.write_text(json.dumps({
        "search": {"name": "user", "maxTrials": 4, "parallelism": 2, "space": {"x": {"dist": "uniform", "low": 0,
                                                                                        "high": 1}}},
        "tpe": {"nStartupJobs": 2},
        "trial": {"command": [py, str(program)], "data": "none"},
        "local": {"pollSeconds": 0.1}}))
    store = tmp_path / "runs"
    out = run_cli("run", "--local", "--config", str(config), "--store", str(store))
    assert json.loads(out.stdout)["finished"] == 4
    doc = json.loads(run_cli("status", "--store", str(store), "--json").stdout)
    assert [t["state"] for t in doc["trials"]] == ["ok"] * 4, doc["trials"]
    for t in doc["trials"]:
        x = t["params"]["x"]
        assert t["objective"] == pytest.approx(1.0 - (x - 0.3) ** 2 - 0.1 / 3)  # the last step is the best
