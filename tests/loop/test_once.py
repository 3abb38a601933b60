"""`controller trial`: a trial program run once on a given point, with no search (controller/launch/once.py)."""

import json

import pytest
from support.cli import run_cli
from support.paths import ROOT

pytestmark = pytest.mark.e2e
DIGITS = str(ROOT / "examples" / "digits" / "config.yaml")


def test_a_point_runs_once_through_the_contract_and_says_how_it_ended(tmp_path):
    point = {"hidden": 32, "alpha": 0.001, "lr": 0.003, "batch": 32}
    (tmp_path / "params.json").write_text(json.dumps(point))  # as `best --download` writes it
    out = run_cli("trial", "--config", DIGITS, "--params", f"@{tmp_path / 'params.json'}", "--store",
                  str(tmp_path / "runs"), "--epochs", "3", "--seed", "4")
    summary = json.loads(out.stdout)
    assert summary["status"] == "ok" and summary["epochs_run"] == 3 and summary["model_file"] == "model.npz"
    assert 0.1 < summary["objective"] <= 1
    folder = tmp_path / "runs" / "once" / summary["trial"].rsplit("/", 1)[1]
    assert summary["trial"] == str(folder)
    proposal = json.loads((folder / "proposal.json").read_text())
    assert proposal["params"] == point and proposal["seed"] == 4 and proposal["model_file"] == "model.npz"
    assert {"result.json", "progress.json", "model.npz"} <= {p.name for p in folder.iterdir()}
    # not a search: status finds none in the store
    status = run_cli("status", "--store", str(tmp_path / "runs"), check=False)
    assert status.returncode != 0 and "once" not in status.stdout


def test_a_point_the_trainer_refuses_exits_3_with_its_reason(tmp_path):
    out = run_cli("trial", "--config", DIGITS, "--params", '{"hidden": 2, "alpha": 0.1, "lr": 0.01, "batch": 16}',
                  "--store", str(tmp_path / "runs"), check=False)
    assert out.returncode == 3, (out.stdout, out.stderr[-2000:])
    summary = json.loads(out.stdout)
    assert summary["status"] == "fail" and "hidden" in summary["error"]


@pytest.mark.parametrize("params, says", [
    ("[1, 2]", "--params: expected a JSON object of parameter names to values, got list"),
    ("{lr: 1}", "--params: not JSON"),
    ("@/nonexistent/params.json", "--params @/nonexistent/params.json: No such file or directory"),
])
def test_a_point_that_is_not_one_is_refused_naming_the_flag(tmp_path, params, says):
    out = run_cli("trial", "--config", DIGITS, "--params", params, "--store", str(tmp_path / "runs"), check=False)
    assert out.returncode == 2 and says in out.stderr, out.stderr[-2000:]
    assert not (tmp_path / "runs" / "once").exists()  # refused before anything was written


def test_names_outside_the_space_are_said_and_the_point_still_runs(tmp_path):
    out = run_cli("trial", "--config", DIGITS, "--params", '{"hidden": 16, "alpha": 0.001, "lr": 0.003, "batch": 8, '
                  '"momentum": 0.9}', "--store", str(tmp_path / "runs"), "--epochs", "1")
    assert "--params: ['momentum'] not in the search's space" in out.stderr
    assert json.loads(out.stdout)["status"] == "ok"


def test_a_space_parameter_left_out_is_said_and_the_trainer_decides(tmp_path):
    out = run_cli("trial", "--config", DIGITS, "--params", '{"hidden": 16, "alpha": 0.001, "lr": 0.003}',
                  "--store", str(tmp_path / "runs"), "--epochs", "1", check=False)
    assert "--params: the space's ['batch'] not given" in out.stderr
    assert out.returncode == 3 and "params.batch" in json.loads(out.stdout)["error"]  # the digits trainer needs it
