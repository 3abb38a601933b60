"""Writes RELIABILITY.md from one test run's figures (.reliability/runs/<run id>/), which the tests record only once
their assertions have passed (tests/conftest.py: record_figure); the run's own record (run.json) says whether the
whole suite passed.

    ./scripts/test.sh && .venv/bin/python scripts/reliability_md.py            # the newest run
    .venv/bin/python scripts/reliability_md.py --run .reliability/runs/<id>    # a given one

A run that failed, did not finish, or lacks any figure below (a partial run: -k, a single file) is refused with
exit 2: the page never mixes runs, and every number on it, "lost" included, is computed from recorded counts.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / ".reliability" / "runs"
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


def load_run(run: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    record = run / "run.json"
    if not record.exists():
        raise Refused(f"{run}: no run.json: the run did not finish (or was not a pytest run of this suite)")
    meta = json.loads(record.read_text())
    if meta.get("exitstatus") != 0 or meta.get("failed"):
        raise Refused(f"{run}: the run failed (exit status {meta.get('exitstatus')}, {meta.get('failed')} failed "
                      "tests): its figures back nothing")
    figures = {}
    for f in sorted((run / "figures").glob("*.json")):
        doc = json.loads(f.read_text())
        figures[doc["name"]] = doc
    missing = [name for name in REQUIRED if name not in figures]
    if missing or not any(name.startswith("bad input: ") for name in figures):
        raise Refused(f"{run}: a partial run: no figure for {missing or ['bad input']}; run the whole suite")
    return meta, figures


def lost(fig: dict[str, Any]) -> str:
    """What the recorded counts say was lost or doubled; 'nothing' only when every count says so."""
    problems = []
    if fig.get("finished") != fig.get("budget"):
        problems.append(f"{fig.get('budget', 0) - fig.get('finished', 0)} trial(s) not finished")
    if fig.get("ids_exact") is False:
        problems.append("trial ids not exact")
    for key, what in (("ran_twice", "ran twice"), ("never_ran", "never ran"), ("jobs_created_twice", "Job twice")):
        if fig.get(key):
            problems.append(f"{what}: {fig[key]}")
    return "; ".join(problems) or "nothing"


def _v(fig: dict[str, Any], key: str) -> str:
    value = fig.get(key)
    return "n/a" if value is None else str(value)


def _op_lost(s: dict[str, Any]) -> str:
    problems = [f"{s['budget'] - s['ok']} not ok" if s["ok"] != s["budget"] else "",
                f"{s['ran'] - s['budget']} started twice" if s["ran"] > s["budget"] else ""]
    return "; ".join(p for p in problems if p) or "nothing"


def render(meta: dict[str, Any], figures: dict[str, dict[str, Any]]) -> str:
    f = {name: doc["figure"] for name, doc in figures.items()}
    kill_rows = "\n".join(
        f"| {name} | {_v(f[name], 'kills') if 'kills' in f[name] else len(f[name].get('points', []))} | "
        f"{f[name]['budget']} | {f[name]['finished']} | {f[name]['ran_twice']} | {_v(f[name], 'never_ran')} | "
        f"{_v(f[name], 'jobs_created_twice')} | **{lost(f[name])}** |" for name in KILLS)
    pod, local, named = f[KILLS[1]], f[KILLS[0]], f[KILLS[2]]
    s3, api, restart = f["S3 faults (500/503 bursts, slow, hung, restart)"], \
        f["API faults through a proxy, real cluster"], f["kube-apiserver restarted mid-search"]
    lease = f["leader SIGKILLed, standby takes over running Jobs"]
    watch = f["watch-driven: Job requests in a 6-trial search"]
    creds, corrupt, session = f["credentials grep"], f["corrupted records"], f["kubectl session, real cluster"]
    operator, refused = f[OPERATOR_KILLS], f["invalid Search refused by the API server"]
    policy_rows = "\n".join(f"| {name} | `{why[:200].replace('|', '/')}` |" for name, why in sorted(f[POLICY].items()))
    missing = f[STORE_MISSING]
    operator_rows = "\n".join(f"| {name} | {s['budget']} | {s['ok']} | {s['ran']} | **{_op_lost(s)}** |"
                               for name, s in sorted(operator["searches"].items()))
    api_rows = "\n".join(f"| {kind} | {count} |" for kind, count in sorted(api["served"].items()))
    reached_rows = "\n".join(f"| {kind} | {count} |" for kind, count in sorted(api["reached_the_controller"].items()))
    bad = sorted((doc["figure"] for name, doc in figures.items() if name.startswith("bad input: ")),
                 key=lambda b: b["case"])
    bad_rows = "\n".join(f"| {b['case']} | {b['exit']} | `{b['message'].split('error: ')[-1][:220].replace('|', '/')}` "
                         f"| {'YES' if b['records_changed'] else 'no'} |" for b in bad)
    sources = "\n".join(f"| {name} | `{doc['test']}` |" for name, doc in sorted(figures.items()))
    return f"""# Reliability and security: what was tried, and what was lost

Generated by `scripts/reliability_md.py` from test run `{meta['run_id']}` ({meta['finished_at']}, {meta['machine']}),
in which all {meta['collected']} tests passed. A figure is recorded by its test only after the test's assertions
passed; the generator refuses a failed or partial run. "Lost" is computed from the recorded counts: trials not
finished, trial ids not exact, a trial whose program started twice (`ran twice`, from a log each trial appends to
when it starts) or never, a Job created twice (a name with two uids, from a watch of the namespace).

The Kubernetes figures come from real components built from source (etcd 3.6.4, kube-apiserver,
kube-controller-manager, kube-scheduler, kubelet and kube-proxy 1.34.4; `scripts/localkube`), the node's containers
run by containerd and runc from the images our Dockerfiles build (the chart's operator from the controller image,
trials from the test image).

## Controller killed and restarted

| where | kills | budget | finished | ran twice | never ran | Jobs created twice | lost |
|---|---|---|---|---|---|---|---|
{kill_rows}

- Local mode: trials collected at each kill {local['collected_at_each_kill']}; every trial ended ok:
  {local['ended_ok']} of {local['budget']}.
- Real cluster: the chart's controller pod, kill -9 of its process; the real kubelet (containerd) restarted the
  container in its pod {pod['container_restarts']} times. Trials done at each kill:
  {pod['trials_done_at_each_kill']}; failed as planted: {pod['failed']}; {pod['jobs_created']} Jobs for
  {pod['budget']} trials.
- Named points (`tests/crashy_controller.py` SIGKILLs the real CLI the n-th time it reaches a point):
  {', '.join(f'`{p}`' for p in named['points'])}; failed as planted: {named['failed']}.
- In both kill tests the test decides how far the search may get before each kill (a gate per trial), so a faster
  or slower machine does not move the kills; within that, each kill lands at a random moment.

## API faults (a fault-injecting HTTPS proxy in front of the real kube-apiserver)

Served by the proxy ({api['forwarded']} requests forwarded to the API server):

| fault | served |
|---|---|
{api_rows}

What reached the controller (counted in its log; the rest urllib3's retries absorbed):

| fault | reached the controller |
|---|---|
{reached_rows}

Result: {api['ok']} of 6 trials ok, {api['jobs_created']} Jobs, created twice: {api['jobs_created_twice']}.

## kube-apiserver restarted mid-search

{restart['finished']}/{restart['budget']} trials finished ({restart['ok']} ok), {restart['jobs_created']} Jobs,
created twice: {restart['jobs_created_twice']}, ran twice: {restart['ran_twice']}. The controller logged:
{'; '.join(f'`{line}`' for line in restart['controller_saw']) or 'nothing'}.

## Leader killed, standby takes over

The leader was SIGKILLed while {lease['jobs_running_at_takeover']} Jobs ran; the standby took the Lease after
**{lease['takeover_seconds']} s** (lease {lease['lease_seconds']} s) and adopted them: of {lease['jobs_created']} Jobs,
{lease['created_by_the_dead_leader']} were created by the dead leader (from managedFields) and none again; ran
twice: {lease['ran_twice']}; {lease['ok']} trials ok.

## Watch-driven

A 6-trial search took {watch['seconds']} s with {watch['job_lists']} Job lists and {watch['job_watches']} Job
watches (resync 20 s; counted by the proxy).

## S3 faults (moto's server behind `tests/faultproxy.py`)

One local search of {s3['budget']} trials: {s3['injected'].get('error', 0)} error answers,
{s3['seconds'].get('slow')} s of +0.4 s latency, {s3['injected'].get('hang', 0)} hung requests,
{s3['injected'].get('down', 0)} connections refused during a {s3['seconds'].get('down')} s "restart"
({s3['injected'].get('forward', 0)} requests forwarded). Finished {s3['finished']}/{s3['budget']}, failed trials
{s3['failed_trials']}, records checked {s3['records_checked']}, torn {s3['torn_records']}; lost: **{lost(s3)}**.

## Bad input

Each case runs `controller run` against a copy of a finished search; every file is compared before and after.

| case | exit | message | stored records changed |
|---|---|---|---|
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

Three Searches applied at once, one operator process killed -9 {operator['kills']} times (each kill after more
trials had ended, at a random moment past that point) and started again; Jobs created twice:
{operator['jobs_created_twice']}.

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
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, help="a run folder (default: the newest under .reliability/runs)")
    ap.add_argument("--out", type=Path, default=ROOT / "RELIABILITY.md")
    args = ap.parse_args(argv)
    run = args.run or max(RUNS.iterdir(), key=lambda p: p.name, default=None)
    try:
        if run is None:
            raise Refused(f"no run under {RUNS}: run ./scripts/test.sh first")
        meta, figures = load_run(run)
    except Refused as e:
        sys.stderr.write(f"refused: {e}\n")
        return 2
    args.out.write_text(render(meta, figures))
    print(f"{args.out} written from run {meta['run_id']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
