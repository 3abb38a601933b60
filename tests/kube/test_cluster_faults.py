"""Faults on real Kubernetes components (scripts/localkube, its node the real kubelet with containerd): the
controller pod killed -9, the controller killed at named points, the leader killed with a standby waiting, a
kube-apiserver restart, and API errors and dropped watches through a fault-injecting proxy. Same promise as
RELIABILITY.md: nothing lost, nothing run twice, the budget exact. Helpers: tests/support/clusterkit.py and
tests/support/realkube.py."""

from __future__ import annotations

import datetime
import json
import os
import random
import signal
import subprocess
import time

import pytest
import yaml
from support.clusterkit import Release, chart_values, finished_status
from support.figures import record_figure, search_figure
from support.paths import PY, ROOT
from support.realkube import JobRecorder, PodStarts, wait_for

pytestmark = pytest.mark.e2e


def _assert_exact(trials, n, started, jobs, failed=()):
    """The budget exact: ids 0..n-1, each ended (the planted ones failed, the rest ok), each trial's program started
    once by the kubelet's record, one Job per trial, none created twice."""
    assert [t["tid"] for t in trials] == list(range(n)), trials
    assert [t["tid"] for t in trials if t["state"] != "ok"] == list(failed), trials
    assert all(t["state"] == "failed" for t in trials if t["tid"] in failed), trials
    assert started == dict.fromkeys(range(n), 1), started
    assert len(jobs.created) == n and jobs.twice() == [], jobs.created


def _state(kube, ns, search="cifar100"):
    """The Search's .status.state (the chart runs the operator: Running, Succeeded, GoalReached, Failed)."""
    out = kube.kubectl("-n", ns, "get", "search", search, "-o", "jsonpath={.status.state}", check=False)
    return out.strip() or None


def test_the_controller_pod_killed_9_times_20_while_a_search_runs(kube, kube_ns, bucket, s3_endpoint, tmp_path):
    """kill -9 of the operator pod's process at 20 moments; the kubelet restarts the container in its pod
    (same POD_NAME: it takes its own Lease back at once). The test decides how far the search may get before each
    kill (a gate per trial), so neither a fast nor a slow machine changes where the kills land; within that, each
    kill comes at a random moment after the restarted controller loaded its ledger."""
    ns, n, kills = kube_ns, 24, 20
    shared = tmp_path / "shared"
    gate, faults = shared / "gate", shared / "faults.json"
    values = chart_values(kube, ns, tmp_path, bucket, s3_endpoint,
                     {"FAKE_TRIAL_GATE": str(gate), "FAKE_TRIAL_FAULTS": str(faults),
                      "FAKE_TRIAL_SLEEP": "0.05"}, shared=shared,
                     search={"maxTrials": n, "parallelism": 3, "maxFailedTrials": 50}, trainer={"backoffLimit": 0})
    gate.mkdir()
    faults.write_text(json.dumps({"2": "exit1", "9": "exit1"}))  # failures too, so that 'outcome' is written
    rng = random.Random(12)
    store = f"s3://{bucket}/searches"
    finished = lambda: finished_status(store, "cifar100")["trials"]
    done = lambda: sum(t["state"] in ("ok", "failed") for t in finished())
    def loaded(restarts: int) -> bool:
        """The container's start number `restarts` (0: the first) has loaded its ledger."""
        pods = kube.pods(ns, "app.kubernetes.io/component=controller")
        if not pods or (pods[0]["status"].get("containerStatuses") or [{}])[0].get("restartCount") != restarts:
            return False
        return "trials on record" in kube.kubectl("-n", ns, "logs", pods[0]["metadata"]["name"], check=False)

    done_at_kill = []
    with JobRecorder(kube, ns) as jobs, PodStarts(kube, ns) as starts:
        kube.helm("install", "cifar-hpo", "charts/", "-n", ns, "-f", str(values))
        for k in range(kills):
            opened = (k * (n - 3)) // kills  # trials below this may end before kill k; never all of them
            for tid in range(opened):
                (gate / str(tid)).touch()
            ended = max(0, opened - 3)
            wait_for(f"the controller's start {k + 1} to load its ledger", lambda k=k: loaded(k))
            wait_for(f"{ended} trials ended before kill {k}", lambda ended=ended: done() >= ended)
            time.sleep(rng.uniform(0.0, 0.5))
            pid = kube.container_pid(ns, "cifar-hpo-controller-")
            assert pid is not None and _state(kube, ns) not in ("Succeeded", "Failed")
            os.kill(pid, signal.SIGKILL)
            done_at_kill.append(done())
        (gate / "all").touch()
        wait_for("the search to succeed after 20 kills", lambda: _state(kube, ns) == "Succeeded", timeout=300)
        trials = finished()
        controller = kube.pods(ns, "app.kubernetes.io/component=controller")[0]
        restarts = controller["status"]["containerStatuses"][0]["restartCount"]
        started = starts.starts("cifar100")
    fig = search_figure(trials, n, started, planted=(2, 9), jobs=jobs.figure(), kills=len(done_at_kill),
                        container_restarts=restarts, trials_done_at_each_kill=done_at_kill)
    assert fig["kills"] == kills and restarts == kills, fig
    assert len(set(done_at_kill)) >= 5 and done_at_kill[-1] >= n // 2, fig  # spread over the whole search
    _assert_exact(trials, n, started, jobs, failed=[2, 9])
    record_figure("controller pod kill -9, real cluster", fig)


def test_an_apiserver_restart_mid_search_loses_and_doubles_nothing(tmp_path, bucket, s3_endpoint):
    """kube-apiserver stopped and started again while trials run (its own cluster: the restart must not disturb
    the tests sharing the session's). Watches break, calls fail for a while; the search ends exact."""
    from support.realkube import Kube, node_leftovers, start_cluster

    (tmp_path / "own").mkdir()
    up = start_cluster(tmp_path / "own" / "cluster", index=1)  # a second node beside the session's
    try:
        kube = Kube(tmp_path / "own" / "cluster")
        rel = Release(kube, kube.namespace(), bucket, s3_endpoint, tmp_path)
        gate, n = rel.shared / "gate", 8
        cfg = rel.config_file({"FAKE_TRIAL_GATE": str(gate)})
        gate.mkdir()
        with JobRecorder(kube, rel.ns) as jobs, PodStarts(kube, rel.ns) as starts:
            proc = rel.controller(cfg, "--max-trials", str(n), "--parallelism", "2")
            for tid in range(3):
                (gate / str(tid)).touch()
            wait_for("3 trials to end", lambda: sum(t["state"] == "ok" for t in rel.trials()) == 3, proc=proc)
            downs = [kube.restart_apiserver()]  # seconds seen not ready, one entry per restart
            (gate / "all").touch()
            out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        trials, started = rel.trials(), starts.starts("cifar100")
        _assert_exact(trials, n, started, jobs)
        record_figure("kube-apiserver restarted mid-search", search_figure(
            trials, n, started, jobs=jobs.figure(), apiserver_down_seconds=downs,
            controller_saw=sorted({line.split(": ", 2)[-1][:80] for line in err.splitlines()
                                   if "WARNING" in line or "re-listing" in line})[:10]))
    finally:
        up.terminate()
        up.wait(180)
    assert node_leftovers(1) == []  # the second node undid what it did to the host


def test_a_second_node_with_the_same_index_is_refused_and_the_first_runs_on(kube, tmp_path):
    """Two nodes of one index would share a containerd root, a bridge and cgroups: a test run started beside a
    developer's cluster waited 60 s for a containerd that could not start, then its stop removed the first node's
    socket folder and bridge. The second is refused at once, and touches nothing."""
    from support.realkube import node_leftovers, start_cluster

    # The running node's cgroup roots, socket folder and bridge (made at its first pod; its pods' processes and
    # rules come and go).
    host = lambda: sorted(x for x in node_leftovers(0) if x.split()[0] in ("link", "cgroup", "folder"))
    before = host()
    assert any(x.startswith("cgroup ") for x in before) and any(x.startswith("folder ") for x in before), before
    with pytest.raises(RuntimeError, match=r"a local node with --index 0 already runs on this host"):
        start_cluster(tmp_path / "cluster", index=0)
    assert set(before) <= set(host())  # nothing of the first undone (a pod elsewhere may make the bridge meanwhile)
    assert kube.ready()
    name = kube.info["node"]
    ready = {c.type: c.status for c in kube.core.read_node(name).status.conditions}
    assert ready["Ready"] == "True", ready


def test_api_faults_through_a_proxy_are_counted_where_they_land(release, tmp_path):
    """Faults between the controller and the real API server: 500s on Job creation (urllib3 retries them), 500s on
    the Lease beyond urllib3's retries (they reach the controller, which tries again), a Job creation whose answer
    is lost after it landed (the AlreadyExists path), the 410 ERROR event a watch from a compacted history gets,
    and dropped watches. Each is counted where it is served and where it lands."""
    from support.kubeproxy import ApiFaultProxy

    kube = release.kube
    with ApiFaultProxy(kube.info["server"], kube.dir / "pki") as proxy:
        doc = yaml.safe_load(release.kubeconfig.read_text())
        doc["clusters"][0]["cluster"]["server"] = proxy.url
        release.kubeconfig.write_text(yaml.safe_dump(doc))
        plan = [("GET", r"/leases/", "status:500", 10, None), ("POST", r"/jobs$", "status:500", 3, None),
                ("POST", r"/jobs$", "drop_after_forward", 1, None), ("GET", r"/jobs$", "gone", 1, True),
                ("GET", r"/jobs$", "drop_watch", 2, True)]
        for method, path, action, count, watch in plan:
            proxy.add(method, path, action, count, watch)
        with JobRecorder(kube, release.ns) as jobs, PodStarts(kube, release.ns) as starts:
            proc = release.controller(release.config_file(), "--max-trials", "6", "--parallelism", "2")
            out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        served, forwarded = dict(proxy.served), proxy.forwarded
    reached = {"lease 500 (after urllib3's retries)": err.count("reading Lease hpo-cifar-hpo-controller failed"),
               "watch ERROR 410": err.count("Job watch: ERROR 410"),
               "watch dropped": err.count("Job watch ended"),
               "create answered AlreadyExists (landed before its answer was lost)":
                   err.count("already exists; adopting")}
    planned = {"status:500": 13, "drop_after_forward": 1, "gone": 1, "drop_watch": 2}
    trials, started = release.trials(), starts.starts("cifar100")
    fig = search_figure(trials, 6, started, jobs=jobs.figure(), served=served, planned=planned, forwarded=forwarded,
                        reached_the_controller=reached)
    assert served == planned, fig  # each counted when it happened, not when its rule matched
    assert reached["watch ERROR 410"] == 1 and reached["watch dropped"] == 2, fig  # the ERROR branch ran
    assert reached["create answered AlreadyExists (landed before its answer was lost)"] == 1, fig
    assert 1 <= reached["lease 500 (after urllib3's retries)"] < 10, fig  # the rest absorbed by urllib3
    _assert_exact(trials, 6, started, jobs)
    record_figure("API faults through a proxy, real cluster", fig)


def test_lease_holder_dies_and_the_standby_takes_over_the_running_jobs(release, tmp_path):
    kube, ns = release.kube, release.ns
    gate, n = release.shared / "gate", 6
    cfg = release.config_file({"FAKE_TRIAL_GATE": str(gate)})
    gate.mkdir()
    lease = lambda: kube.lease(ns, f"{release.full}-controller")["spec"]
    with JobRecorder(kube, ns) as jobs, PodStarts(kube, ns) as starts:
        leader = release.controller(cfg, "--max-trials", str(n), "--parallelism", "2", pod_name="ctl-a")
        wait_for("two running Jobs", lambda: len([j for j in kube.jobs(ns) if j["status"].get("active")]) == 2,
                 proc=leader)
        standby = release.controller(cfg, "--max-trials", str(n), "--parallelism", "2", pod_name="ctl-b",
                                     log=tmp_path / "standby.log")
        wait_for("the standby to wait",
                 lambda: "another controller holds Lease" in (tmp_path / "standby.log").read_text(), proc=standby)
        leader.kill()
        leader.wait()
        killed_at, last = time.monotonic(), lease()  # the dead leader's last renewal
        wait_for("the standby to take the Lease", lambda: lease()["holderIdentity"] == "ctl-b", proc=standby)
        takeover = time.monotonic() - killed_at
        taken = lease()
        active_at_takeover = sorted(j["metadata"]["name"] for j in kube.jobs(ns) if j["status"].get("active"))
        (gate / "all").touch()
        standby.wait(240)
        assert standby.returncode == 0, (tmp_path / "standby.log").read_text()[-3000:]
        started = starts.starts("cifar100")
    when = lambda stamp: datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    # Taken only once the dead leader's last renewal had expired (both clocks are this machine's), as one transition.
    assert last["holderIdentity"] == "ctl-a" and taken["leaseTransitions"] == last["leaseTransitions"] + 1, taken
    assert when(taken["acquireTime"]) - when(last["renewTime"]) >= last["leaseDurationSeconds"], (last, taken)
    creators = release.job_creators()
    trials = release.trials()
    fig = search_figure(trials, n, started, jobs=jobs.figure(), lease_seconds=last["leaseDurationSeconds"],
                        takeover_seconds=round(takeover, 2), jobs_running_at_takeover=len(active_at_takeover),
                        created_by_the_dead_leader=sum(c == {"ctl-a"} for c in creators.values()))
    assert fig["jobs_running_at_takeover"] == 2 and fig["created_by_the_dead_leader"] == 2, fig  # adopted, not redone
    _assert_exact(trials, n, started, jobs)
    record_figure("leader SIGKILLed, standby takes over running Jobs", fig)


NAMED_POINTS = ("proposal:2", "outcome:1", "launch:3", "collect:2")


def test_the_controller_killed_at_each_named_point_on_the_real_cluster(release, tmp_path):
    """SIGKILL right after a proposal is written, right after an outcome is written, just before a Job is
    created, and just before a finished trial is collected; then a clean run finishes the search exactly."""
    kube, ns = release.kube, release.ns
    faults, n = release.shared / "faults.json", 8
    cfg = release.config_file({"FAKE_TRIAL_FAULTS": str(faults)})
    faults.write_text(json.dumps({"1": "exit1"}))  # a failure, so that `outcome` is reached
    env = {**os.environ, "KUBECONFIG": str(release.kubeconfig), "POD_NAME": "ctl-0"}
    args = ["run", "--config", str(cfg), "--max-trials", str(n), "--parallelism", "2"]
    with JobRecorder(kube, ns) as jobs, PodStarts(kube, ns) as starts:
        for point in NAMED_POINTS:
            p = subprocess.run([PY, str(ROOT / "tests" / "crashy_controller.py"), *args], cwd=ROOT,
                               env={**env, "CRASH_AT": point}, capture_output=True, text=True, timeout=180)
            assert p.returncode == -signal.SIGKILL, (point, p.stderr[-2000:])
        final = subprocess.run([PY, "-m", "controller", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                               timeout=300)
        assert final.returncode == 0, final.stderr[-3000:]
        started = starts.starts("cifar100")
    trials = release.trials()
    _assert_exact(trials, n, started, jobs, failed=[1])
    record_figure("controller killed at each named point, real cluster", search_figure(
        trials, n, started, planted=(1,), jobs=jobs.figure(), points=list(NAMED_POINTS)))
