"""RELIABILITY.md can only say what a passing, complete run recorded (scripts/reliability_md.py), every verdict on it
is computed from the counts, and the committed page is its committed record rendered."""

import json
import subprocess

import pytest
import reliability_checks
import reliability_md
from support.paths import ROOT

pytestmark = pytest.mark.pure


def _search(n=6, planted=(), jobs=True, **more):
    return {"budget": n, "states": {str(t): "failed" if t in planted else "ok" for t in range(n)},
            "planted": list(planted), "starts": {str(t): 1 for t in range(n)},
            "jobs": {"created": n, "twice": []} if jobs else None, **more}


FIGURES = {
    reliability_md.KILLS[0]: _search(32, jobs=False, kills=20, collected_at_each_kill=[0, 3], ended_while_down=[0, 4]),
    reliability_md.KILLS[1]: _search(24, planted=(2, 9), kills=20, container_restarts=20,
                                     trials_done_at_each_kill=[0, 5]),
    reliability_md.KILLS[2]: _search(8, planted=(1,), points=["proposal:2"]),
    reliability_checks.S3_FAULTS: _search(8, jobs=False, injected={"error": 8, "hang": 2, "down": 3},
                                          seconds={"slow": 4.0}, records_checked=48,
                                          torn_records=[]),
    "API faults through a proxy, real cluster": _search(6, served={"gone": 1}, planned={"gone": 1}, forwarded=60,
                                                        reached_the_controller={"watch ERROR 410": 1}),
    "kube-apiserver restarted mid-search": _search(8, controller_saw=[], apiserver_down_seconds=[2.5]),
    "leader SIGKILLed, standby takes over running Jobs": _search(6, jobs_running_at_takeover=2, takeover_seconds=5.2,
                                                                 lease_seconds=5, created_by_the_dead_leader=2),
    "watch-driven: Job requests in a 6-trial search": {"seconds": 9.0, "job_lists": 2, "job_watches": 1},
    "credentials grep": {"places_checked": 40, "leaks": []},
    "corrupted records": {"trials_before": 42, "trials_after": 42, "corrupt_proposal": ["failed", "corrupt"],
                          "corrupt_result": ["pending", "not valid JSON"]},
    "kubectl session, real cluster": {"get jobs": "NAME\n", "logs": "trial 0\n", "events": "LAST SEEN\n",
                                      "get searches": "NAME STATE\n"},
    reliability_md.OPERATOR_KILLS: {"kills": 5, "searches_running_at_each_kill": [3, 3, 2, 1, 1],
                                    "jobs": {"created": 4, "twice": []}, "kubectl get searches (during)": "NAME\n",
                                    "kubectl get searches (after)": "NAME\n", "searches": {"alpha": _search(4)}},
    "invalid Search refused by the API server": {"message": "spec.search.maxTrials: Invalid value"},
    reliability_md.POLICY: {"two-gpus": "spec.trial.gpuCount: 2 GPUs per trial; at most 1"},
    reliability_md.STORE_MISSING: {"row": "NAME STATE\nearly store: missing\n", "message": "does not exist"},
    **{f"bad input: {c}": {"case": c, "exit": 2, "message": "error: x", "compared": "all", "files_compared": 9,
                           "digest_before": "d1", "digest_after": "d1"} for c in reliability_md.BAD_INPUT_CASES},
}
WHOLE = {"markexpr": "", "keyword": "", "deselect": None, "ignore": None, "ignore_glob": None, "lf": False,
         "failedfirst": False, "stepwise": False}
ALL_RAN = {"passed": 200, "skipped": 0, "xfailed": 0, "xpassed": 0, "error": 0, "deselected": 0}


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


HEAD = _git("rev-parse", "--short", "HEAD")
# A commit whose product code is not HEAD's: the parent of the last commit that changed controller/.
OLDER_CODE = _git("rev-parse", "--short", _git("log", "-1", "--format=%H", "--", "controller") + "~1")


def _mutations(commit=HEAD):
    return [{"claim": "c", "file": "controller/loop.py", "mutation": "m", "test": "t", "caught": True,
             "outcome": "failed", "commit": commit}]


def _run(tmp_path, exitstatus=0, failed=0, figures=FIGURES, finished=True, options=WHOLE, paths=("tests",),
         outcomes=ALL_RAN, commit=HEAD, mutations_at=HEAD, failed_tests=()):
    run = tmp_path / "run"
    (run / "figures").mkdir(parents=True)
    for i, (name, fig) in enumerate(figures.items()):
        (run / "figures" / f"{i}.json").write_text(json.dumps({"name": name, "test": f"tests/x.py::t{i}",
                                                               "figure": fig}))
    if finished:
        (run / "run.json").write_text(json.dumps({
            "run_id": "r1", "finished_at": "2026-11-28", "exitstatus": exitstatus, "failed": failed,
            "collected": 200, "machine": "vm, 2 cores", "options": options, "paths": list(paths),
            "outcomes": outcomes, "commit": commit, "failed_tests": list(failed_tests)}))
    (tmp_path / "mutations.json").write_text(json.dumps(_mutations(mutations_at)))
    return run


def _page(tmp_path, capsys=None, **kwargs) -> tuple[int, str]:
    out = tmp_path / "page.md"
    code = reliability_md.main(["--run", str(_run(tmp_path, **kwargs)), "--out", str(out), "--mutations",
                                str(tmp_path / "mutations.json")])
    return code, out.read_text() if out.exists() else (capsys.readouterr().err if capsys else "")


@pytest.fixture(autouse=True)
def _no_record_written(tmp_path, monkeypatch):
    monkeypatch.setattr(reliability_md, "RECORD", tmp_path / "record")  # taking a run writes here, not the repo's


GATE = [
    ("failed run", {"exitstatus": 1, "failed": 1}, "the run failed"),
    ("another test failed", {"exitstatus": 1, "failed": 1, "failed_tests": ["tests/x.py::t"],
                             "outcomes": {**ALL_RAN, "passed": 199}}, "the run failed"),
    ("the page's check and another failed", {"exitstatus": 1, "failed": 2, "outcomes": {**ALL_RAN, "passed": 198},
                                             "failed_tests": [reliability_checks.PAGE_TEST, "tests/x.py::t"]},
     "the run failed"),
    ("unfinished run", {"finished": False}, "did not finish"),
    ("partial run", {"figures": {k: v for k, v in FIGURES.items() if k != "credentials grep"}}, "a partial run"),
    ("one bad-input case missing", {"figures": {k: v for k, v in FIGURES.items() if k != "bad input: wrong type"}},
     "a partial run"),
    ("-m e2e", {"options": {**WHOLE, "markexpr": "e2e"}}, "selected its tests"),
    ("-k", {"options": {**WHOLE, "keyword": "kill"}}, "selected its tests"),
    ("--deselect", {"options": {**WHOLE, "deselect": ["tests/loop/test_loop.py::x"]}}, "selected its tests"),
    ("one file", {"paths": ["tests/loop/test_loop.py"]}, "selected its tests"),
    ("options not recorded", {"options": None}, "selected its tests"),
    ("--ignore", {"options": {**WHOLE, "ignore": ["tests/kube"]}}, "selected its tests"),
    ("--ignore-glob", {"options": {**WHOLE, "ignore_glob": ["*kube*"]}}, "selected its tests"),
    ("a skipped test", {"outcomes": {**ALL_RAN, "passed": 199, "skipped": 1}}, "199 of 200 tests passed"),
    ("fewer passed than collected", {"outcomes": {**ALL_RAN, "passed": 26}}, "26 of 200 tests passed"),
    ("outcomes not recorded", {"outcomes": None}, "outcomes (passed, skipped, ...) were not recorded"),
    ("mutations run on other product code", {"mutations_at": OLDER_CODE}, "stale: mutations run at"),
    ("a run with no commit", {"commit": None}, "recorded no commit"),
    ("a count missing", {"figures": {**FIGURES, reliability_md.KILLS[1]: {
        k: v for k, v in FIGURES[reliability_md.KILLS[1]].items() if k != "starts"}}}, "lacks ['starts']"),
]


@pytest.mark.parametrize("case, kwargs, says", GATE, ids=[g[0] for g in GATE])
def test_the_page_generator_refuses_a_failed_partial_or_selected_run(tmp_path, capsys, case, kwargs, says):
    if kwargs.get("options", WHOLE) is None:
        kwargs["options"] = {}
        kwargs["paths"] = ()
    code, err = _page(tmp_path, capsys, **kwargs)
    assert code == 2 and says in err, f"exit {code}: {err[:300]}"
    assert not (tmp_path / "page.md").exists() and not (tmp_path / "record").exists()


DOCTORED = [
    ("a torn record", "S3 faults (500/503 bursts, slow, hung, restart)", {"torn_records": ["a/result.json"]},
     "torn records: ['a/result.json']"),
    ("a failed trial nobody planted", reliability_md.KILLS[0], {"states": {**FIGURES[reliability_md.KILLS[0]][
        "states"], "7": "failed"}}, "ended other than ok: [7], planted failures: []"),
    ("30 of 32 ok", reliability_md.KILLS[0], {"states": {str(t): "ok" for t in range(30)}},
     "trial ids: missing [30, 31]"),
    ("a planted failure that ended ok", reliability_md.KILLS[1], {"planted": [2, 9, 11]},
     "planted failures: [2, 9, 11]"),
    ("3 of 4 programs started", reliability_md.KILLS[2], {"starts": {"0": 1, "1": 1, "2": 1}},
     "never started: [3, 4, 5, 6, 7]"),
    ("a program started twice", "kube-apiserver restarted mid-search", {"starts": {**{str(t): 1 for t in range(8)},
                                                                                  "5": 2}}, "started twice: [5]"),
    ("a Job created twice", "API faults through a proxy, real cluster", {"jobs": {"created": 6, "twice": ["t-3"]}},
     "Job created twice: ['t-3']"),
    ("fewer Jobs than trials", reliability_md.KILLS[1], {"jobs": {"created": 23, "twice": []}}, "23 Jobs for 24"),
    ("a fault planned but not served", "API faults through a proxy, real cluster", {"served": {}},
     "faults served {}, planned {'gone': 1}"),
    ("nothing adopted at the takeover", "leader SIGKILLed, standby takes over running Jobs",
     {"jobs_running_at_takeover": 0}, "no Job ran at the takeover"),
    ("a kill with no Search running", reliability_md.OPERATOR_KILLS, {"searches_running_at_each_kill": [3, 0, 1, 1, 1]},
     "a kill with no Search running"),
    ("an operator Search with 3 of 4 started and a Job twice", reliability_md.OPERATOR_KILLS,
     {"searches": {"alpha": {**_search(4), "starts": {"0": 1, "1": 1, "2": 1},
                             "jobs": {"created": 5, "twice": ["alpha-t1"]}}}},
     "never started: [3]; Job created twice: ['alpha-t1']; 5 Jobs for 4 trials"),
    ("a Job twice among the three Searches", reliability_md.OPERATOR_KILLS, {"jobs": {"created": 4, "twice": ["a-t0"]}},
     "Job created twice: ['a-t0']"),
    ("one Job too many among the three Searches", reliability_md.OPERATOR_KILLS,
     {"jobs": {"created": 5, "twice": []}}, "5 Jobs for 4 trials"),
    ("an operator that was never killed", reliability_md.OPERATOR_KILLS,
     {"kills": 0, "searches_running_at_each_kill": []}, "no kill happened"),
    ("fewer kills than recorded moments", reliability_md.OPERATOR_KILLS, {"kills": 4},
     "a kill with no Search running: [3, 3, 2, 1, 1]"),
    ("a local search never killed", reliability_md.KILLS[0], {"kills": 0}, "no kill happened"),
    ("no named point reached", reliability_md.KILLS[2], {"points": []}, "no kill happened"),
    ("no S3 fault served", reliability_checks.S3_FAULTS, {"injected": {"forward": 90}},
     "no error, no hang, no down fault was served"),
    ("no hung request", reliability_checks.S3_FAULTS, {"injected": {"error": 8, "down": 3}},
     "no hang fault was served"),
    ("no API fault served", reliability_checks.API_FAULTS, {"served": {"gone": 0}, "planned": {"gone": 0}},
     "no fault was served"),
    ("the 410 never reached the controller", reliability_checks.API_FAULTS, {"reached_the_controller": {}},
     "the 410 never reached the controller"),
    ("no API server restart", reliability_checks.RESTART, {"apiserver_down_seconds": []},
     "the API server was never restarted"),
    ("a running Job created by the standby", reliability_checks.LEASE, {"created_by_the_dead_leader": 1},
     "only 1 of the 2 running Jobs kept the dead leader"),
    ("an extra trial", reliability_md.KILLS[1], {"states": {**FIGURES[reliability_md.KILLS[1]]["states"], "24": "ok"}},
     "trial ids: missing [], extra [24]"),
    ("a trial still running", reliability_md.KILLS[2], {"states": {**FIGURES[reliability_md.KILLS[2]]["states"],
                                                                  "3": "running"}}, "not ended: [3]"),
]


@pytest.mark.parametrize("case, name, change, says", DOCTORED, ids=[d[0] for d in DOCTORED])
def test_doctored_figures_are_never_called_nothing_lost(tmp_path, case, name, change, says):
    code, page = _page(tmp_path, figures={**FIGURES, name: {**FIGURES[name], **change}})
    lost = [line for line in page.splitlines() if "LOST" in line]
    assert code == 0 and says in page, f"{says!r} is not on the page: {lost}"
    assert page.count("**nothing**") == 8  # the untouched verdicts stay


@pytest.mark.parametrize("change, row", [
    ({"digest_after": "d2"}, "| wrong type | 2 | `x` | all: 9 | **YES** |"),
    ({"files_compared": 0}, "| wrong type | 2 | `x` | all: 0 | **YES** |"),  # nothing compared is no evidence
    ({"exit": 0}, "| wrong type | **0: NOT REFUSED** | `x` | all: 9 | no |"),
    ({"exit": 1}, "| wrong type | **1: NOT REFUSED** | `x` | all: 9 | no |"),
])
def test_a_bad_input_that_changed_records_or_was_not_refused_is_flagged(tmp_path, change, row):
    name = "bad input: wrong type"
    code, page = _page(tmp_path, figures={**FIGURES, name: {**FIGURES[name], **change}})
    assert code == 0 and row in page, [line for line in page.splitlines() if "wrong type" in line]


def test_every_verdict_of_an_intact_run_is_nothing_and_each_figure_names_its_test(tmp_path):
    code, page = _page(tmp_path)
    assert code == 0 and page.count("**nothing**") == 9 and "LOST" not in page
    assert "`tests/x.py::t0`" in page and (tmp_path / "record" / "run.json").exists()


def test_a_run_whose_only_failure_is_the_check_of_the_page_it_replaces_backs_a_page_that_says_so(tmp_path):
    """The generator changed and needs counts the committed record lacks: the committed-page check then fails in the
    one run that produces the new record. That run, and only that failure, is taken, and the page says so."""
    code, page = _page(tmp_path, exitstatus=1, failed=1, failed_tests=[reliability_checks.PAGE_TEST],
                       outcomes={**ALL_RAN, "passed": 199})
    assert code == 0 and "ran and passed but one: the check that the page committed before this run" in page
    (tmp_path / "again").mkdir()
    code, page = _page(tmp_path / "again", exitstatus=1, failed=1, failed_tests=[reliability_checks.PAGE_TEST])
    assert code == 2  # 200 passed and one failed of 200 collected: counts that do not add up


def test_the_generator_knows_every_bad_input_case_the_test_runs():
    from test_reliability import BAD_INPUTS

    assert sorted(c[0] for c in BAD_INPUTS) == sorted(reliability_md.BAD_INPUT_CASES)


def test_the_committed_page_is_its_committed_run_rendered(tmp_path):
    """RELIABILITY.md is exactly what reliability/ (the run's record and the mutation results) renders to, and that
    record is a whole, passed run."""
    out = tmp_path / "page.md"
    assert reliability_md.main(["--run", str(ROOT / "reliability"), "--out", str(out), "--mutations",
                                str(ROOT / "reliability" / "mutations.json")]) == 0
    assert out.read_text() == (ROOT / "RELIABILITY.md").read_text()
    mutations = json.loads((ROOT / "reliability" / "mutations.json").read_text())
    assert mutations and all(m["caught"] for m in mutations), [m for m in mutations if not m["caught"]]
