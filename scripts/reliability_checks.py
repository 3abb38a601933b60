"""What RELIABILITY.md may say, decided from a run's record alone: the gate a run must pass to back the page (whole,
passed, nothing skipped, every figure there, the mutation results taken on the same product code), and every verdict
the page prints, computed from recorded counts. A fault that never happened backs no "nothing lost"."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OPERATOR_KILLS = "three Searches, one operator killed -9 five times"
POLICY = "Searches refused by the operator's policy"
STORE_MISSING = "a missing bucket, shown on the Search"
S3_FAULTS = "S3 faults (500/503 bursts, slow, hung, restart)"
API_FAULTS = "API faults through a proxy, real cluster"
RESTART = "kube-apiserver restarted mid-search"
LEASE = "leader SIGKILLed, standby takes over running Jobs"
KILLS = ("controller SIGKILL, local mode", "controller pod kill -9, real cluster",
         "controller killed at each named point, real cluster")
REQUIRED = (*KILLS, S3_FAULTS, API_FAULTS, RESTART, LEASE, "watch-driven: Job requests in a 6-trial search",
            "credentials grep", "corrupted records", "kubectl session, real cluster", OPERATOR_KILLS,
            "invalid Search refused by the API server", POLICY, STORE_MISSING)
BAD_INPUT_CASES = ("unknown config key", "wrong type", "out of range", "invalid space",
                   "another space for an existing search", "another seed for an existing search",
                   "store that is a file", "bucket that does not exist", "unknown store scheme")
BAD_INPUT_EXIT = 2
"""What `controller run` answers bad input with (docs/operations.md: exit codes); anything else is flagged."""
# A run that chose its tests (a marker, a keyword, a deselection, an ignored path, a file, the last failures) backs
# nothing: the page speaks for the whole suite.
SELECTING = ("markexpr", "keyword", "deselect", "ignore", "ignore_glob", "lf", "failedfirst", "stepwise")
NOT_RUN = ("skipped", "xfailed", "xpassed", "error", "deselected")
PAGE_TEST = "tests/reliability/test_reliability_page.py::test_the_committed_page_is_its_committed_run_rendered"
"""The one failure a run may have and still back the page: the check of the page that the run replaces, which
fails once whenever the generator needs counts the committed record lacks (the page then says so)."""
PRODUCT = ("controller", "trainer", "charts", "scripts", "Dockerfile.controller", "Dockerfile.trainer",
           "pyproject.toml")
"""What the mutations change: their results back the page only if these are the same at the run's commit."""


class Refused(Exception):
    """The run cannot back a page; the message says why."""


def load_run(run: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    record = run / "run.json"
    if not record.exists():
        raise Refused(f"{run}: no run.json: the run did not finish (or was not a pytest run of this suite)")
    meta = json.loads(record.read_text())
    meta["replaces_a_stale_page"] = meta.get("failed") == 1 and meta.get("failed_tests") == [PAGE_TEST]
    if (meta.get("exitstatus") != 0 or meta.get("failed") != 0) and not meta["replaces_a_stale_page"]:
        raise Refused(f"{run}: the run failed (exit status {meta.get('exitstatus')}, {meta.get('failed')} failed "
                      f"tests: {meta.get('failed_tests', 'not recorded')}): its figures back nothing")
    chose = {k: meta.get("options", {}).get(k) for k in SELECTING if meta.get("options", {}).get(k)}
    if "options" not in meta or chose or meta.get("paths") != ["tests"]:
        raise Refused(f"{run}: the run selected its tests ({chose or meta.get('paths') or 'options not recorded'}): "
                      "run the whole suite (./scripts/test.sh, no -m, -k, --deselect, --ignore, file or node id)")
    outcomes = meta.get("outcomes")
    if not isinstance(outcomes, dict):
        raise Refused(f"{run}: the run's outcomes (passed, skipped, ...) were not recorded")
    not_run = {k: outcomes[k] for k in NOT_RUN if outcomes.get(k)}
    if not_run or outcomes.get("passed") != meta.get("collected") - meta["replaces_a_stale_page"]:
        raise Refused(f"{run}: {outcomes.get('passed')} of {meta.get('collected')} tests passed "
                      f"({not_run or 'the rest not recorded'}): the page counts only tests that ran and passed; run a "
                      "suite with none skipped")
    figures = {}
    for f in sorted((run / "figures").glob("*.json")):
        doc = json.loads(f.read_text())
        figures[doc["name"]] = doc
    missing = [name for name in (*REQUIRED, *(f"bad input: {c}" for c in BAD_INPUT_CASES)) if name not in figures]
    if missing:
        raise Refused(f"{run}: a partial run: no figure for {missing}; run the whole suite")
    return meta, figures


def _changed_between(a: str, b: str) -> list[str]:
    """The product files that differ between two commits (git decides; a commit git does not know refuses)."""
    diff = subprocess.run(["git", "diff", "--name-only", a, b, "--", *PRODUCT], cwd=ROOT, capture_output=True,
                          text=True)
    if diff.returncode != 0:
        raise Refused(f"cannot compare the mutations' commit {a} with the run's {b}: {diff.stderr.strip()[:200]} "
                      "(the page is rendered in a git checkout that holds both)")
    return diff.stdout.split()


def load_mutations(path: Path, run_commit: str | None) -> list[dict[str, Any]]:
    """The mutation results, refused if any was taken on product code other than the run's: a page's appendix must
    speak for the code its figures ran on."""
    if not path.exists():
        raise Refused(f"{path}: no mutation results: run scripts/mutations.py")
    mutations = json.loads(path.read_text())
    if not mutations or not all(m.get("caught") is not None for m in mutations):
        raise Refused(f"{path}: empty or unfinished; run scripts/mutations.py again")
    if not run_commit:
        raise Refused("the run recorded no commit: its mutation results cannot be matched to its code")
    for commit in sorted({m["commit"] for m in mutations}):
        changed = _changed_between(commit, run_commit)
        if changed:
            raise Refused(f"{path}: stale: mutations run at {commit}, the page's run at {run_commit}, and "
                          f"{len(changed)} product files differ ({changed[:5]}): run scripts/mutations.py at the "
                          "run's commit")
    return mutations


def need(fig: dict[str, Any], *keys: str) -> list[Any]:
    """The figure's counts; a count it lacks refuses the page (a missing count is never read as 'fine')."""
    absent = [k for k in keys if k not in fig]
    if absent:
        raise Refused(f"a figure lacks {absent}: {sorted(fig)}")
    return [fig[k] for k in keys]


def _job_problems(jobs: dict[str, Any] | None, budget: int) -> list[str]:
    if jobs is None:
        return []
    problems = [f"Job created twice: {jobs['twice']}"] if jobs["twice"] else []
    if jobs["created"] != budget:
        problems.append(f"{jobs['created']} Jobs for {budget} trials")
    return problems


def search_problems(fig: dict[str, Any]) -> list[str]:
    """What a search's recorded counts say was lost or doubled: trials missing or extra, not ended, failed but not
    planted (or planted but not failed), a trial program started twice or never (started counts are taken outside
    the program: the launcher's command wrapper or the kubelet's container starts), a Job created twice or a Job
    count other than the budget, a torn record."""
    budget, states, planted, starts, jobs = need(fig, "budget", "states", "planted", "starts", "jobs")
    tids = {int(t) for t in states}
    want = set(range(budget))
    problems = []
    if tids != want:
        problems.append(f"trial ids: missing {sorted(want - tids)}, extra {sorted(tids - want)}")
    unended = sorted(int(t) for t, s in states.items() if s not in ("ok", "failed", "stopped"))
    if unended:
        problems.append(f"not ended: {unended}")
    failed = sorted(int(t) for t, s in states.items() if s != "ok" and int(t) not in unended)
    if failed != sorted(planted):
        problems.append(f"ended other than ok: {failed}, planted failures: {sorted(planted)}")
    counts = {int(t): c for t, c in starts.items()}
    twice = sorted(t for t, c in counts.items() if c > 1)
    never = sorted(t for t in want if counts.get(t, 0) == 0)
    if twice:
        problems.append(f"started twice: {twice}")
    if never:
        problems.append(f"never started: {never}")
    problems += _job_problems(jobs, budget)
    if fig.get("torn_records", []):
        problems.append(f"torn records: {fig['torn_records']}")
    return problems


def kill_problems(fig: dict[str, Any]) -> list[str]:
    """A kill test's verdict: its search's, and a test that killed nothing says so."""
    kills = fig["kills"] if "kills" in fig else len(need(fig, "points")[0])
    return search_problems(fig) + ([] if kills else ["no kill happened"])


def s3_problems(fig: dict[str, Any]) -> list[str]:
    (injected,) = need(fig, "injected")
    never = [kind for kind in ("error", "hang", "down") if not injected.get(kind)]
    return search_problems(fig) + ([f"no {', no '.join(never)} fault was served"] if never else [])


def restart_problems(fig: dict[str, Any]) -> list[str]:
    (downs,) = need(fig, "apiserver_down_seconds")  # one entry per restart seen (down, then ready again)
    return search_problems(fig) + ([] if downs else ["the API server was never restarted"])


def api_problems(fig: dict[str, Any]) -> list[str]:
    served, planned, reached = need(fig, "served", "planned", "reached_the_controller")
    problems = search_problems(fig)
    if not sum(served.values()):
        problems.append("no fault was served")
    if served != planned:
        problems.append(f"faults served {served}, planned {planned}")
    if not reached.get("watch ERROR 410"):
        problems.append("the 410 never reached the controller")
    return problems


def lease_problems(fig: dict[str, Any]) -> list[str]:
    running, by_dead = need(fig, "jobs_running_at_takeover", "created_by_the_dead_leader")
    problems = search_problems(fig)
    if running == 0:
        problems.append("no Job ran at the takeover (nothing was adopted)")
    if by_dead < running:
        problems.append(f"only {by_dead} of the {running} running Jobs kept the dead leader as creator")
    return problems


def operator_problems(fig: dict[str, Any]) -> list[str]:
    """The operator figure's own counts: a kill while no Search ran, no kill at all, and the Jobs of all Searches
    together (one per trial of every Search, none twice)."""
    kills, running, jobs, searches = need(fig, "kills", "searches_running_at_each_kill", "jobs", "searches")
    problems = []
    if not kills:
        problems.append("no kill happened")
    if kills != len(running) or not all(running):
        problems.append(f"a kill with no Search running: {running}")
    return problems + _job_problems(jobs, sum(need(s, "budget")[0] for s in searches.values()))


def bad_input_changed(b: dict[str, Any]) -> bool:
    before, after, compared = need(b, "digest_before", "digest_after", "files_compared")
    return before != after or compared == 0


def bad_input_answer(b: dict[str, Any]) -> str:
    """The exit column: a bad input that was not refused with the documented exit status is flagged."""
    (code,) = need(b, "exit")
    return str(code) if code == BAD_INPUT_EXIT else f"**{code}: NOT REFUSED**"


def verdict(problems: list[str]) -> str:
    return "**nothing**" if not problems else "**LOST: " + "; ".join(problems) + "**"
