"""Writes RELIABILITY.md from one test run's figures (.reliability/runs/<run id>/), which the tests record only once
their assertions have passed (tests/support/figures.py: record_figure); the run's own record (run.json) says whether the
whole suite passed.

    ./scripts/test.sh && .venv/bin/python scripts/reliability_md.py --run .reliability/runs/<id>   # take a run
    .venv/bin/python scripts/reliability_md.py      # the page again from the committed record (reliability/)

A run that failed, did not finish, selected or deselected tests (-m, -k, --deselect, a file, --lf), or lacks any
figure or count below is refused with exit 2: the page never mixes runs, and every verdict on it, "lost" included,
is computed here from recorded counts.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OPERATOR_KILLS = "three Searches, one operator killed -9 five times"
POLICY = "Searches refused by the operator's policy"
STORE_MISSING = "a missing bucket, shown on the Search"
KILLS = ("controller SIGKILL, local mode", "controller pod kill -9, real cluster",
         "controller killed at each named point, real cluster")
REQUIRED = (*KILLS, "S3 faults (500/503 bursts, slow, hung, restart)", "API faults through a proxy, real cluster",
            "kube-apiserver restarted mid-search", "leader SIGKILLed, standby takes over running Jobs",
            "watch-driven: Job requests in a 6-trial search", "credentials grep", "corrupted records",
            "kubectl session, real cluster", OPERATOR_KILLS, "invalid Search refused by the API server",
            POLICY, STORE_MISSING)


class Refused(Exception):
    """The run cannot back a page; the message says why."""


# A run that chose its tests (a marker, a keyword, a deselection, a file, the last failures) backs nothing: the page
# speaks for the whole suite.
SELECTING = ("markexpr", "keyword", "deselect", "lf", "failedfirst", "stepwise")
BAD_INPUT_CASES = ("unknown config key", "wrong type", "out of range", "invalid space",
                   "another space for an existing search", "another seed for an existing search",
                   "store that is a file", "bucket that does not exist", "unknown store scheme")
RECORD = ROOT / "reliability"
"""The page's run, committed beside it (run.json, figures/), and the mutations run against its claims."""


def load_run(run: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    record = run / "run.json"
    if not record.exists():
        raise Refused(f"{run}: no run.json: the run did not finish (or was not a pytest run of this suite)")
    meta = json.loads(record.read_text())
    if meta.get("exitstatus") != 0 or meta.get("failed") != 0:
        raise Refused(f"{run}: the run failed (exit status {meta.get('exitstatus')}, {meta.get('failed')} failed "
                      "tests): its figures back nothing")
    chose = {k: meta.get("options", {}).get(k) for k in SELECTING if meta.get("options", {}).get(k)}
    if "options" not in meta or chose or meta.get("paths") != ["tests"]:
        raise Refused(f"{run}: the run selected its tests ({chose or meta.get('paths') or 'options not recorded'}): "
                      "run the whole suite (./scripts/test.sh, no -m, -k, --deselect, file or node id)")
    figures = {}
    for f in sorted((run / "figures").glob("*.json")):
        doc = json.loads(f.read_text())
        figures[doc["name"]] = doc
    missing = [name for name in (*REQUIRED, *(f"bad input: {c}" for c in BAD_INPUT_CASES)) if name not in figures]
    if missing:
        raise Refused(f"{run}: a partial run: no figure for {missing}; run the whole suite")
    return meta, figures


def _need(fig: dict[str, Any], *keys: str) -> list[Any]:
    """The figure's counts; a count it lacks refuses the page (a missing count is never read as 'fine')."""
    absent = [k for k in keys if k not in fig]
    if absent:
        raise Refused(f"a figure lacks {absent}: {sorted(fig)}")
    return [fig[k] for k in keys]


def search_problems(fig: dict[str, Any]) -> list[str]:
    """What a search's recorded counts say was lost or doubled: trials missing or extra, not ended, failed but not
    planted (or planted but not failed), a trial program started twice or never (started counts are taken outside
    the program: the launcher's command wrapper or the kubelet's container starts), a Job created twice or a Job
    count other than the budget, a torn record."""
    budget, states, planted, starts, jobs = _need(fig, "budget", "states", "planted", "starts", "jobs")
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
    if jobs is not None:
        if jobs["twice"]:
            problems.append(f"Job created twice: {jobs['twice']}")
        if jobs["created"] != budget:
            problems.append(f"{jobs['created']} Jobs for {budget} trials")
    if fig.get("torn_records", []):
        problems.append(f"torn records: {fig['torn_records']}")
    return problems


def verdict(problems: list[str]) -> str:
    return "**nothing**" if not problems else "**LOST: " + "; ".join(problems) + "**"


def _started(fig: dict[str, Any]) -> str:
    starts, budget = _need(fig, "starts", "budget")
    return f"{sum(starts.values())} starts of {budget} trials"


def api_problems(fig: dict[str, Any]) -> list[str]:
    served, planned, reached = _need(fig, "served", "planned", "reached_the_controller")
    problems = search_problems(fig)
    if served != planned:
        problems.append(f"faults served {served}, planned {planned}")
    if not reached.get("watch ERROR 410"):
        problems.append("the 410 never reached the controller")
    return problems


def lease_problems(fig: dict[str, Any]) -> list[str]:
    running, by_dead = _need(fig, "jobs_running_at_takeover", "created_by_the_dead_leader")
    problems = search_problems(fig)
    if running == 0:
        problems.append("no Job ran at the takeover (nothing was adopted)")
    if by_dead < running:
        problems.append(f"only {by_dead} of the {running} running Jobs kept the dead leader as creator")
    return problems


def operator_problems(fig: dict[str, Any]) -> list[str]:
    kills, running = _need(fig, "kills", "searches_running_at_each_kill")
    problems = []
    if kills != len(running) or not all(running):
        problems.append(f"a kill with no Search running: {running}")
    return problems


def bad_input_changed(b: dict[str, Any]) -> bool:
    before, after, compared = _need(b, "digest_before", "digest_after", "files_compared")
    return before != after or compared == 0


def _jobs(fig: dict[str, Any]) -> str:
    (jobs,) = _need(fig, "jobs")
    return "n/a (no Jobs)" if jobs is None else f"{jobs['created']} (twice: {jobs['twice'] or 'none'})"


def _ok(fig: dict[str, Any]) -> int:
    (states,) = _need(fig, "states")
    return sum(s == "ok" for s in states.values())


def render(meta: dict[str, Any], figures: dict[str, dict[str, Any]], mutations: list[dict[str, Any]]) -> str:
    f = {name: doc["figure"] for name, doc in figures.items()}
    kill_rows = "\n".join(
        f"| {name} | {f[name]['kills'] if 'kills' in f[name] else len(f[name]['points'])} | {f[name]['budget']} | "
        f"{_ok(f[name])} | {sorted(f[name]['planted']) or 'none'} | {_started(f[name])} | {_jobs(f[name])} | "
        f"{verdict(search_problems(f[name]))} |" for name in KILLS)
    pod, local, named = f[KILLS[1]], f[KILLS[0]], f[KILLS[2]]
    s3, api, restart = f["S3 faults (500/503 bursts, slow, hung, restart)"], \
        f["API faults through a proxy, real cluster"], f["kube-apiserver restarted mid-search"]
    lease = f["leader SIGKILLed, standby takes over running Jobs"]
    watch = f["watch-driven: Job requests in a 6-trial search"]
    creds, corrupt, session = f["credentials grep"], f["corrupted records"], f["kubectl session, real cluster"]
    operator, refused = f[OPERATOR_KILLS], f["invalid Search refused by the API server"]
    policy_rows = "\n".join(f"| {name} | `{why[:200].replace('|', '/')}` |" for name, why in sorted(f[POLICY].items()))
    missing = f[STORE_MISSING]
    operator_rows = "\n".join(f"| {name} | {s['budget']} | {_ok(s)} | {_started(s)} | {verdict(search_problems(s))} |"
                               for name, s in sorted(operator["searches"].items()))
    api_rows = "\n".join(f"| {kind} | {api['planned'].get(kind, 0)} | {count} |"
                          for kind, count in sorted(api["served"].items()))
    reached_rows = "\n".join(f"| {kind} | {count} |" for kind, count in sorted(api["reached_the_controller"].items()))
    bad = [f[f"bad input: {c}"] for c in sorted(BAD_INPUT_CASES)]
    bad_rows = "\n".join(f"| {b['case']} | {b['exit']} | `{b['message'].split('error: ')[-1][:220].replace('|', '/')}` "
                         f"| {b['compared']}: {b['files_compared']} | "
                         f"{'**YES**' if bad_input_changed(b) else 'no'} |" for b in bad)
    sources = "\n".join(f"| {name} | `{doc['test']}` |" for name, doc in sorted(figures.items()))
    mutation_rows = "\n".join(f"| {m['claim']} | `{m['file']}`: {m['mutation']} | `{m['test']}` | "
                               f"{'caught' if m['caught'] else '**NOT CAUGHT**'} ({m['outcome'].replace('|', '/')}) |"
                               for m in mutations)
    return f"""# Reliability and security: what was tried, and what was lost

Generated by `scripts/reliability_md.py` from test run `{meta['run_id']}` ({meta['finished_at']}, {meta['machine']},
commit {meta.get('commit', 'n/a')}), in which all {meta['collected']} tests of the whole suite passed (the generator
refuses a failed run, a run that selected or deselected tests, and one that lacks a figure). The run's record is
committed in `reliability/` (run.json, one file per figure); `tests/reliability/test_reliability_page.py` renders it
again and compares. A figure is recorded by its test only after the test's assertions passed, and every verdict below is
computed here from the recorded counts, never taken from the test: "lost" lists trials missing or extra, not ended,
failed but not planted (or planted but not failed), a trial program started twice or never, a Job created twice
or a Job count other than the budget, and torn records. Program starts are counted outside the program: in local
mode by a wrapper the launcher executes before the trial program (`tests/startlog.sh`), on the cluster from the
kubelet's container statuses of every trial pod (a watch of the namespace's pods).

The Kubernetes figures come from real components built from source (etcd 3.6.4, kube-apiserver,
kube-controller-manager, kube-scheduler, kubelet and kube-proxy 1.34.4; `scripts/localkube`), the node's containers
run by containerd and runc from the images our Dockerfiles build (the chart's operator from the controller image,
trials from the test image).

## Controller killed and restarted

| where | kills | budget | ended ok | planted failures | program starts | Jobs created | lost |
|---|---|---|---|---|---|---|---|
{kill_rows}

- Local mode: trials collected at each kill {local['collected_at_each_kill']}; after each kill, one trial was let
  end while no controller ran (the next one had to adopt it, not run it again): {_need(local, 'ended_while_down')[0]}.
- Real cluster: the chart's controller pod, kill -9 of its process; the real kubelet (containerd) restarted the
  container in its pod {pod['container_restarts']} times. Trials done at each kill:
  {pod['trials_done_at_each_kill']}.
- Named points (`tests/crashy_controller.py` SIGKILLs the real CLI the n-th time it reaches a point):
  {', '.join(f'`{p}`' for p in named['points'])}.
- In both kill tests the test decides how far the search may get before each kill (a gate per trial), so a faster
  or slower machine does not move the kills; within that, each kill lands at a random moment.

## API faults (a fault-injecting HTTPS proxy in front of the real kube-apiserver)

Served by the proxy, each counted when the fault happened ({api['forwarded']} requests forwarded to the API server):

| fault | planned | served |
|---|---|---|
{api_rows}

What reached the controller (counted in its log; the rest urllib3's retries absorbed):

| fault | reached the controller |
|---|---|
{reached_rows}

{_ok(api)} of {api['budget']} trials ok, {_started(api)}, Jobs {_jobs(api)}; lost: {verdict(api_problems(api))}.

## kube-apiserver restarted mid-search

{_ok(restart)} of {restart['budget']} trials ok, {_started(restart)}, Jobs {_jobs(restart)}; lost:
{verdict(search_problems(restart))}. The controller logged:
{'; '.join(f'`{line}`' for line in restart['controller_saw']) or 'nothing'}.

## Leader killed, standby takes over

The leader was SIGKILLed while {lease['jobs_running_at_takeover']} Jobs ran; the standby took the Lease
{lease['takeover_seconds']} s later (lease {lease['lease_seconds']} s; the Lease itself shows it was taken only after
the dead leader's last renewal had expired by the standby's clock). Of {lease['jobs']['created']} Jobs,
{lease['created_by_the_dead_leader']} kept the dead leader as their creator (from managedFields);
{_ok(lease)} of {lease['budget']} trials ok, {_started(lease)}; lost: {verdict(lease_problems(lease))}.

## Watch-driven

A 6-trial search took {watch['seconds']} s with {watch['job_lists']} Job lists and {watch['job_watches']} Job
watches (resync 20 s; counted by the proxy).

## S3 faults (moto's server behind `tests/support/faultproxy.py`)

One local search of {s3['budget']} trials, its trials held at a gate until every fault phase had met its traffic:
{s3['injected'].get('error', 0)} error answers, {s3['seconds'].get('slow')} s of +0.4 s latency,
{s3['injected'].get('hang', 0)} hung requests, {s3['injected'].get('down', 0)} connections refused during a
{s3['seconds'].get('down')} s "restart" ({s3['injected'].get('forward', 0)} requests forwarded). {_ok(s3)} of
{s3['budget']} ok, {_started(s3)}, records checked {s3['records_checked']}, torn {s3['torn_records'] or 'none'};
lost: {verdict(search_problems(s3))}.

## Bad input

Each case runs `controller run` against a copy of a finished search; everything the command pointed at (the
search's folder, the file in the way, every bucket of the S3 server) is hashed before and after, and the page
compares the two digests.

| case | exit | message | compared: files | stored records changed |
|---|---|---|---|---|
{bad_rows}

## Corrupted records

The 42 original results imported, then a torn proposal.json, a result.json with NaN and a garbage checkpoint:
status lists {corrupt['trials_after']} of {corrupt['trials_before']} trials; the torn proposal is
`{corrupt['corrupt_proposal'][0]}` (`{corrupt['corrupt_proposal'][1][:80]}`), the NaN result
`{corrupt['corrupt_result'][0]}` (`{corrupt['corrupt_result'][1][:70]}`).

## Credentials

{creds['places_checked']} places grepped for the fake credentials (controller output, every ConfigMap, Event,
Job, Pod and Lease of the namespace, every trial pod's log, every object in the bucket): leaks {creds['leaks']}
(the secret key anywhere; the key id anywhere but as the signer of a trial's presigned grant).

## Untrusted Searches (SECURITY.md)

Each Search asked for one thing beyond the chart's default policy; each was refused before any Job, with this
reason on its status, while a Search within the policy finished beside them:

| Search | reason |
|---|---|
{policy_rows}

A release whose bucket did not exist: the operator stayed up and the Search said so (`kubectl get search`):

```
{missing['row'].rstrip()}
```

## Searches as custom resources: one operator, three searches, killed -9

Three Searches applied at once, their trials held at gates so that each kill comes after more trials have ended and
while Searches still run (Searches running at each kill: {operator['searches_running_at_each_kill']}); one operator
process killed -9 {operator['kills']} times, each at a random moment past that point, and started again; Jobs
{_jobs(operator)}; a kill that found no Search running: {verdict(operator_problems(operator))}.

| Search | budget | ok | trial programs started | lost |
|---|---|---|---|---|
{operator_rows}

```
$ kubectl get searches          # during
{operator['kubectl get searches (during)'].rstrip()}
$ kubectl get searches          # after
{operator['kubectl get searches (after)'].rstrip()}
```

A Search with `maxTrials: 0` (and one with a typo'd field, and one that pins a checksum on generated data) is refused
by the API server itself, from the generated CRD schema: `{refused['message'][:200]}`

## A session on the local cluster (`helm install`, then kubectl)

```
$ kubectl get searches
{session['get searches'].rstrip()}
$ kubectl get jobs -l app.kubernetes.io/component=trial
{session['get jobs'].rstrip()}
$ kubectl logs job/cifar100-t0
{session['logs'].rstrip()}
$ kubectl get events --field-selector involvedObject.name=cifar100
{session['events'].rstrip()}
```

## Every figure and the test behind it

| figure | test |
|---|---|
{sources}

## Appendix: mutations, and the test that catches each

Each claim above has a mutation of the product code, or of the figures,
that its test or this generator must catch. `scripts/mutations.py` applies each to a scratch copy of the checkout,
runs the named test there, and records whether it failed ({len(mutations)} mutations from
`reliability/mutations.json`, run at commit {mutations[0]['commit'] if mutations else 'n/a'}).

| claim | mutation | test | result |
|---|---|---|---|
{mutation_rows}
"""


def load_mutations(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        raise Refused(f"{path}: no mutation results: run scripts/mutations.py")
    mutations = json.loads(path.read_text())
    if not mutations or not all(m.get("caught") is not None for m in mutations):
        raise Refused(f"{path}: empty or unfinished; run scripts/mutations.py again")
    return mutations


def keep_record(run: Path, meta: dict[str, Any]) -> None:
    """The run's record, committed beside the page: its figures can then be checked against what the page says."""
    figures = RECORD / "figures"
    if figures.exists():
        shutil.rmtree(figures)
    shutil.copytree(run / "figures", figures)
    (RECORD / "run.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, help="a run folder to take (its record is copied to reliability/); without "
                                             "it the page is rendered again from the committed record")
    ap.add_argument("--out", type=Path, default=ROOT / "RELIABILITY.md")
    ap.add_argument("--mutations", type=Path, default=RECORD / "mutations.json")
    args = ap.parse_args(argv)
    try:
        meta, figures = load_run(args.run or RECORD)
        page = render(meta, figures, load_mutations(args.mutations))
    except Refused as e:
        sys.stderr.write(f"refused: {e}\n")
        return 2
    if args.run is not None and args.run.resolve() != RECORD.resolve():
        keep_record(args.run, meta)
    args.out.write_text(page)
    print(f"{args.out} written from run {meta['run_id']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
