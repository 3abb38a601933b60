"""RELIABILITY.md can only say what a passing, complete run recorded (scripts/reliability_md.py)."""

import json
import sys

import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import reliability_md

pytestmark = pytest.mark.pure

KILL = {"kills": 20, "budget": 24, "finished": 24, "ids_exact": True, "ran_twice": [], "never_ran": [],
        "jobs_created_twice": [], "jobs_created": 24, "container_restarts": 20, "trials_done_at_each_kill": [0, 5],
        "failed": [2, 9], "collected_at_each_kill": [0, 3], "ended_ok": 24, "points": ["proposal:2"]}
FIGURES = {
    **dict.fromkeys(reliability_md.KILLS, KILL),
    "S3 faults (500/503 bursts, slow, hung, restart)": {**KILL, "injected": {"error": 8}, "seconds": {"slow": 4.0},
                                                        "failed_trials": [], "records_checked": 48, "torn_records": []},
    "API faults through a proxy, real cluster": {"served": {"gone": 1},
                                                 "reached_the_controller": {"watch ERROR 410": 1},
                                                 "forwarded": 60, "ok": 6, "jobs_created": 6, "jobs_created_twice": []},
    "kube-apiserver restarted mid-search": {"finished": 8, "budget": 8, "ok": 8, "jobs_created": 8,
                                            "jobs_created_twice": [], "ran_twice": [], "controller_saw": []},
    "leader SIGKILLed, standby takes over running Jobs": {"jobs_running_at_takeover": 2, "takeover_seconds": 5.0,
                                                         "lease_seconds": 5, "jobs_created": 6,
                                                         "created_by_the_dead_leader": 2, "ran_twice": [], "ok": 6},
    "watch-driven: Job requests in a 6-trial search": {"seconds": 9.0, "job_lists": 2, "job_watches": 1},
    "credentials grep": {"places_checked": 40, "leaks": []},
    "corrupted records": {"trials_before": 42, "trials_after": 42, "corrupt_proposal": ["failed", "corrupt"],
                          "corrupt_result": ["pending", "not valid JSON"]},
    "kubectl session, real cluster": {"get jobs": "NAME\n", "logs": "trial 0\n", "events": "LAST SEEN\n",
                                      "get searches": "NAME STATE\n"},
    reliability_md.OPERATOR_KILLS: {"kills": 5, "jobs_created_twice": [], "kubectl get searches (during)": "NAME\n",
                                    "kubectl get searches (after)": "NAME\n",
                                    "searches": {"alpha": {"budget": 4, "ok": 4, "ran": 4}}},
    "invalid Search refused by the API server": {"message": "spec.search.maxTrials: Invalid value"},
    reliability_md.POLICY: {"two-gpus": "spec.trial.gpuCount: 2 GPUs per trial; at most 1"},
    reliability_md.STORE_MISSING: {"row": "NAME STATE\nearly store: missing\n", "message": "does not exist"},
    "bad input: wrong type": {"case": "wrong type", "exit": 2, "message": "error: x", "records_changed": False},
}


def _run(tmp_path, exitstatus=0, failed=0, figures=FIGURES, finished=True):
    run = tmp_path / "run"
    (run / "figures").mkdir(parents=True)
    for i, (name, fig) in enumerate(figures.items()):
        (run / "figures" / f"{i}.json").write_text(json.dumps({"name": name, "test": f"tests/x.py::t{i}",
                                                               "figure": fig}))
    if finished:
        (run / "run.json").write_text(json.dumps({"run_id": "r1", "finished_at": "2026-11-28", "exitstatus": exitstatus,
                                                  "failed": failed, "collected": 200, "machine": "vm, 2 cores"}))
    return run


@pytest.mark.parametrize("case, kwargs, says", [
    ("failed run", {"exitstatus": 1, "failed": 1}, "the run failed"),
    ("unfinished run", {"finished": False}, "did not finish"),
    ("partial run", {"figures": {k: v for k, v in FIGURES.items() if k != "credentials grep"}}, "a partial run"),
])
def test_the_page_generator_refuses_a_failed_or_partial_run(tmp_path, capsys, case, kwargs, says):
    out = tmp_path / "page.md"
    assert reliability_md.main(["--run", str(_run(tmp_path, **kwargs)), "--out", str(out)]) == 2
    assert says in capsys.readouterr().err and not out.exists()


def test_every_lost_on_the_page_is_computed_from_the_counts(tmp_path):
    doubled = {**KILL, "ran_twice": [3], "finished": 23}
    out = tmp_path / "page.md"
    assert reliability_md.main(["--run", str(_run(tmp_path, figures={**FIGURES, reliability_md.KILLS[1]: doubled})),
                                "--out", str(out)]) == 0
    page = out.read_text()
    assert "**1 trial(s) not finished; ran twice: [3]**" in page and page.count("**nothing**") == 4
    assert "`tests/x.py::t0`" in page  # every figure is listed with the test behind it
