"""The chart and the controller on real Kubernetes components (scripts/localkube): the API server decides RBAC and
Pod Security admission, the real Job controller decides retries and failures, the real scheduler binds by GPU
count, the real garbage collector removes what an uninstall leaves, and the real kubelet with containerd runs our
images (the operator's, and the test image as the trials)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import boto3
import pytest
import yaml
from support.cli import run_cli
from support.clusterkit import CREDS, bucket_etags, chart_values, finished_status, status_config_map_data
from support.figures import record_figure
from support.paths import PY, ROOT
from support.realkube import JobRecorder, wait_for

pytestmark = pytest.mark.e2e


def _search_status(kube, ns, name):
    out = kube.kubectl("-n", ns, "get", "search", name, "-o", "json", check=False)
    return (json.loads(out).get("status") or {}) if out.strip() else {}


def test_helm_install_runs_a_search_upgrade_extends_it_a_second_search_shares_no_job_uninstall_collects(
        kube, kube_ns, bucket, s3_endpoint, tmp_path):
    """helm install: the CRD, the operator and one Search from the values; helm upgrade edits that Search (the
    operator follows it live) or replaces it (another name: another search); helm uninstall collects the Jobs."""
    ns, store = kube_ns, f"s3://{bucket}/searches"
    shared = tmp_path / "shared"
    runlog = shared / "runlog"
    values = chart_values(kube, ns, tmp_path, bucket, s3_endpoint, {"FAKE_TRIAL_RUNLOG": str(runlog)}, shared=shared)
    with JobRecorder(kube, ns) as jobs:
        kube.helm("install", "cifar-hpo", "charts/", "-n", ns, "-f", str(values))
        wait_for("the first search to succeed", lambda: _search_status(kube, ns, "cifar100").get("state")
                 == "Succeeded")
        session = {"get searches": kube.kubectl("-n", ns, "get", "searches"),
                   "get jobs": kube.kubectl("-n", ns, "get", "jobs", "-l", "app.kubernetes.io/component=trial"),
                   "logs": kube.kubectl("-n", ns, "logs", "job/cifar100-t0"),
                   "events": kube.kubectl("-n", ns, "get", "events", "--field-selector",
                                          "involvedObject.name=cifar100")}
        assert "trial 0: objective" in session["logs"]  # apiserver → kubelet → the trial's own output
        first = finished_status(store, "cifar100")
        assert [t["state"] for t in first["trials"]] == ["ok"] * 3

        # The operator ran as the chart's ServiceAccount (its pod's token), in a restricted namespace.
        operator = kube.pods(ns, "app.kubernetes.io/component=controller")[0]
        assert operator["spec"]["serviceAccountName"] == "cifar-hpo-controller"
        assert operator["spec"]["containers"][0]["args"][0] == "operator"
        lease = kube.lease(ns, "cifar-hpo-controller")["spec"]
        assert lease["holderIdentity"] in ("", operator["metadata"]["name"])
        wait_for("the SearchFinished Event (written after the status)",
                 lambda: "SearchFinished" in {e["reason"] for e in kube.events(ns)})
        reasons = {e["reason"] for e in kube.events(ns)}
        assert {"TrialCreated", "TrialFinished", "NewBest"} <= reasons

        kube.helm("upgrade", "cifar-hpo", "charts/", "-n", ns, "--reuse-values", "--set", "search.maxTrials=5")
        wait_for("the extended search to finish 5 trials", lambda: len(
            [t for t in finished_status(store, "cifar100")["trials"] if t["state"] == "ok"]) == 5)
        wait_for("the extended search to succeed", lambda: _search_status(kube, ns, "cifar100").get("budgetLeft")
                 == 0 and _search_status(kube, ns, "cifar100").get("state") == "Succeeded")
        restarts = kube.pods(ns, "app.kubernetes.io/component=controller")[0]["metadata"]["name"]
        assert restarts == operator["metadata"]["name"]  # followed live: the operator pod was not replaced

        # A new search name (the README's advice): another Search, its own Jobs, none adopted from the first.
        kube.helm("upgrade", "cifar-hpo", "charts/", "-n", ns, "--reuse-values", "--set", "search.name=second",
                  "--set", "search.maxTrials=2")
        wait_for("the second search to finish", lambda: [t["state"] for t in finished_status(store, "second")["trials"]]
                 == ["ok", "ok"])
        # Its last act (after best.json, status.json and the report): the bucket is final once this Event exists.
        wait_for("the second search's SearchFinished Event", lambda: any(
            e["reason"] == "SearchFinished" and "search second" in e["message"] for e in kube.events(ns)))
        names = sorted(jobs.created)
        assert names == [f"cifar100-t{i}" for i in range(5)] + ["second-t0", "second-t1"]
        assert jobs.twice() == []
        ran = sorted(runlog.read_text().split())
        assert len(ran) == 7  # 5 + 2 trial processes, each once

        before = bucket_etags(bucket)
        kube.helm("uninstall", "cifar-hpo", "-n", ns)
        wait_for("the garbage collector to delete the trial Jobs",
                 lambda: not kube.jobs(ns, "app.kubernetes.io/component=trial"))
        assert bucket_etags(bucket) == before  # the bucket is never touched by an uninstall
    record_figure("kubectl session, real cluster", session)


def test_the_controller_has_only_its_roles_rights(kube, kube_ns, bucket, s3_endpoint, tmp_path):
    """The controller talks as a ServiceAccount; one without the chart's Role is refused by RBAC and says so."""
    ns = kube_ns
    config = kube.install_rbac(ns, "rb", ["--set", f"store.bucket={bucket}", "--set", f"store.endpoint={s3_endpoint}"])
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    allowed = kube.sa_kubeconfig(ns, "rb-cifar-hpo-controller", tmp_path / "controller.kubeconfig")
    denied = kube.sa_kubeconfig(ns, "rb-cifar-hpo-trial", tmp_path / "trial.kubeconfig")  # no rights at all
    can = kube.kubectl("--kubeconfig", str(allowed), "auth", "can-i", "create", "jobs", "-n", ns, check=False)
    cannot = kube.kubectl("--kubeconfig", str(allowed), "auth", "can-i", "create", "jobs", "-n", "default", check=False)
    assert can.strip() == "yes" and cannot.strip() == "no"
    p = run_cli("run", "--config", str(cfg), env={"KUBECONFIG": str(denied)}, check=False, timeout=120)
    assert p.returncode == 2 and "refused (403)" in p.stderr and "RBAC" in p.stderr, p.stderr[-2000:]


def test_the_real_job_controller_decides_retries_deadlines_and_failure_policy(release, tmp_path):
    """exit 1 is retried up to backoffLimit; a trial over its memory limit is OOMKilled by the runtime;
    activeDeadlineSeconds fails a hung trial; the trainer's bad-input exit 3 fails the Job at once (podFailurePolicy
    FailJob)."""
    kube, ns = release.kube, release.ns
    release.shared.mkdir(exist_ok=True)
    faults = release.shared / "faults.json"
    faults.write_text(json.dumps({"0": "exit1", "1": "oom", "2": "hang", "3": "bad_params"}))
    cfg = release.config_file({"FAKE_TRIAL_FAULTS": str(faults)}, kube={"activeDeadlineSeconds": 20, "backoffLimit": 1})
    proc = release.controller(cfg, "--max-trials", "5", "--parallelism", "5")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    trials = release.trials()
    reasons = {t["tid"]: t["reason"] for t in trials}
    assert [t["state"] for t in trials] == ["failed"] * 4 + ["ok"], reasons
    assert "BackoffLimitExceeded" in reasons[0] and "exit code 1" in reasons[0]
    assert "OOMKilled" in reasons[1]
    assert "DeadlineExceeded" in reasons[2]
    assert "params.pooling_type" in reasons[3]  # the trainer's own 'fail' result names the parameter
    conditions = kube.batch.read_namespaced_job(f"{release.full}-cifar100-t3", ns).status.conditions
    assert any(c.type == "Failed" and c.reason == "PodFailurePolicy" for c in conditions), conditions
    pods = Counter(p["metadata"]["labels"]["job-name"] for p in kube.pods(ns, "app.kubernetes.io/component=trial"))
    assert pods[f"{release.full}-cifar100-t0"] == 2  # backoffLimit 1: one retry, decided by the Job controller
    assert pods[f"{release.full}-cifar100-t3"] == 1  # FailJob on exit 3: no retry burnt


def test_an_evicted_trial_is_retried_without_burning_a_retry(release, tmp_path):
    """Eviction (node drain) puts a DisruptionTarget condition on the pod; the Job's podFailurePolicy ignores
    it, so even with backoffLimit 0 the Job controller starts a new pod, and the trial ends ok once."""
    kube, ns = release.kube, release.ns
    gate, runlog = release.shared / "gate", release.shared / "runlog"
    cfg = release.config_file({"FAKE_TRIAL_GATE": str(gate), "FAKE_TRIAL_RUNLOG": str(runlog)},
                              kube={"backoffLimit": 0})
    gate.mkdir()
    proc = release.controller(cfg, "--max-trials", "1")
    job = f"{release.full}-cifar100-t0"
    running = lambda: [p for p in kube.pods(ns, f"job-name={job}")
                       if (p.get("status") or {}).get("phase") == "Running"]
    wait_for("the trial's pod to run", lambda: running() and runlog.exists(), proc=proc)
    first = running()[0]["metadata"]["name"]
    kube.core.create_namespaced_pod_eviction(first, ns, {"metadata": {"name": first, "namespace": ns}})
    wait_for("a second pod", lambda: any(p["metadata"]["name"] != first for p in running()), proc=proc)
    (gate / "all").touch()
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]
    trials = release.trials()
    assert [t["state"] for t in trials] == ["ok"], trials
    assert runlog.read_text().split() == ["0", "0"]  # the same trial, run again after the eviction
    job_status = kube.batch.read_namespaced_job(job, ns).status
    assert job_status.failed in (None, 0) and job_status.succeeded == 1


def test_a_trial_without_a_free_gpu_waits_pending_and_is_not_failed(release, tmp_path):
    """The Node has 2 nvidia.com/gpu; with parallelism 3 the scheduler leaves the third pod Pending. The search
    neither fails it nor launches more, and `status` says why it waits."""
    kube = release.kube
    assert kube.info["gpus"] == 2
    gate = release.shared / "gate"
    cfg = release.config_file({"FAKE_TRIAL_GATE": str(gate)}, kube={"gpuCount": 1})
    gate.mkdir()
    with kube.gpus():  # the node's two GPUs, to this test alone
        _third_trial_waits_for_a_gpu(release, gate, release.controller(cfg, "--max-trials", "3", "--parallelism", "3"))
        kube.free_gpus(release.ns)


def _third_trial_waits_for_a_gpu(release, gate, proc):
    kube, ns = release.kube, release.ns
    trial_pods = lambda: kube.pods(ns, "app.kubernetes.io/component=trial")

    def one_unschedulable():
        pending = [p for p in trial_pods() if p["status"].get("phase") == "Pending"]
        return len(trial_pods()) == 3 and len(pending) == 1 and any(
            "Insufficient nvidia.com/gpu" in (c.get("message") or "")
            for c in pending[0]["status"].get("conditions", []))

    wait_for("two trials running and one Pending for lack of a GPU", one_unschedulable, proc=proc)
    waiting_tid = next(int(p["metadata"]["labels"]["cifar-hpo.io/trial"]) for p in trial_pods()
                       if p["status"].get("phase") == "Pending")

    def status_says_why():
        trials = {t["tid"]: t for t in release.trials()}
        return "Insufficient nvidia.com/gpu" in (trials.get(waiting_tid, {}).get("reason") or "")

    wait_for("`status` to say why the trial waits", status_says_why, proc=proc)
    trials = release.trials()
    assert not [t for t in trials if t["state"] == "failed"] and len(kube.jobs(ns)) == 3 and len(trials) == 3
    assert any(e["reason"] == "TrialWaiting" and "nvidia.com/gpu" in e["message"] for e in kube.events(ns))
    (gate / "all").touch()  # the two running trials end, their GPUs free, the third is scheduled
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]
    assert [t["state"] for t in release.trials()] == ["ok"] * 3


def test_a_job_deleted_by_its_ttl_before_collection_is_still_one_recorded_trial(release, tmp_path):
    """The controller is SIGKILLed while its trial runs; the trial ends and the TTL controller deletes its Job
    before any controller saw it end. The restarted controller records it once, from its result, and runs
    nothing again."""
    kube, ns = release.kube, release.ns
    gate, runlog = release.shared / "gate", release.shared / "runlog"
    cfg = release.config_file({"FAKE_TRIAL_GATE": str(gate), "FAKE_TRIAL_RUNLOG": str(runlog)},
                              kube={"ttlSecondsAfterFinished": 0})
    gate.mkdir()
    with JobRecorder(kube, ns) as jobs:
        first = release.controller(cfg, "--max-trials", "1")
        wait_for("the trial to start", runlog.exists, proc=first)
        first.kill()
        first.wait()
        (gate / "all").touch()
        wait_for("the TTL controller to delete the finished Job", lambda: jobs.created and not kube.jobs(ns))
        second = release.controller(cfg, "--max-trials", "1")
        out, err = second.communicate(timeout=180)
        assert second.returncode == 0, err[-3000:]
        assert [t["state"] for t in release.trials()] == ["ok"]
        assert runlog.read_text().split() == ["0"] and sorted(jobs.created) == [f"{release.full}-cifar100-t0"]
        assert jobs.twice() == []


def test_a_search_runs_as_jobs_watch_driven_with_bodies_the_api_server_accepts(release, tmp_path):
    """What the controller sends is admitted by the real API server (restricted Pod Security, owner references,
    Secret references); completion comes from the Job watch: Job lists stay near one per resync period."""
    from support.kubeproxy import ApiFaultProxy

    kube, ns = release.kube, release.ns
    with ApiFaultProxy(kube.info["server"], kube.dir / "pki") as proxy:
        doc = yaml.safe_load(release.kubeconfig.read_text())
        doc["clusters"][0]["cluster"]["server"] = proxy.url
        release.kubeconfig.write_text(yaml.safe_dump(doc))
        started = time.monotonic()
        proc = release.controller(release.config_file(kube={"resyncSeconds": 20}), "--max-trials", "6",
                                  "--parallelism", "3", pod_name="ctl-a")
        out, err = proc.communicate(timeout=300)
        seconds = time.monotonic() - started
        requests = dict(proxy.requests)
    assert proc.returncode == 0, err[-3000:]
    assert [t["state"] for t in release.trials()] == ["ok"] * 6
    job = kube.jobs(ns)[0]
    spec = job["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert job["metadata"]["ownerReferences"][0]["name"] == f"{release.full}-search"
    env = {e["name"]: e for e in spec["containers"][0]["env"]}
    # Trials hold no store keys: their grant signs their own keys only (controller/kube/grant.py).
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(env) and "CIFAR_HPO_TRIAL_GRANT" in env
    # ...read from a Secret of its own (`view` reads Jobs, not Secrets), garbage-collected with its Job.
    ref = env["CIFAR_HPO_TRIAL_GRANT"]["valueFrom"]["secretKeyRef"]
    assert "value" not in env["CIFAR_HPO_TRIAL_GRANT"] and ref["name"] == f"{job['metadata']['name']}-grant", env
    secret = json.loads(kube.kubectl("-n", ns, "get", "secret", ref["name"], "-o", "json"))
    owner = secret["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"]) == ("Job", job["metadata"]["uid"]), owner
    assert "X-Amz-Signature" in __import__("base64").b64decode(secret["data"][ref["key"]]).decode()
    # Every trial's whole log is kept in the bucket, an ok one's too (the Job's TTL takes the pod's with it).
    out = json.loads(run_cli("best", "--store", release.store, "--download", str(tmp_path / "best")).stdout)
    assert "trial.log" in out["files"], out
    assert f"trial {out['tid']}: objective" in (tmp_path / "best" / "trial.log").read_text()
    reasons = Counter(e["reason"] for e in kube.events(ns) if e["involvedObject"]["kind"] == "ConfigMap")
    assert reasons["TrialCreated"] == 6 and reasons["TrialFinished"] == 6 and reasons["SearchFinished"] == 1
    status = status_config_map_data(kube, ns, release.full)
    assert status == {**status, "state": "succeeded", "budgetLeft": "0"}
    lease = kube.lease(ns, f"{release.full}-controller")["spec"]
    assert lease["holderIdentity"] == "" and lease["leaseTransitions"] == 0  # held once, handed back at exit
    assert set().union(*release.job_creators().values()) == {"ctl-a"}
    # One list per watch session (resync 20 s) plus the adoption list; a poller at 1/s would make `seconds` lists.
    fig = {"seconds": round(seconds, 1), "job_lists": requests.get("GET jobs", 0),
           "job_watches": requests.get("WATCH jobs", 0), "requests": requests}
    assert fig["job_watches"] >= 1 and fig["job_lists"] <= 3 + 2 * seconds / 20, fig
    record_figure("watch-driven: Job requests in a 6-trial search", fig)


def test_two_controllers_only_the_lease_holder_launches(release, tmp_path):
    gate = release.shared / "gate"
    cfg = release.config_file({"FAKE_TRIAL_GATE": str(gate)})
    gate.mkdir()
    a = release.controller(cfg, "--max-trials", "4", "--parallelism", "2", pod_name="ctl-a", log=tmp_path / "a.log")
    wait_for("a to hold the Lease", lambda: (release.kube.lease(release.ns, f"{release.full}-controller") or {})
             .get("spec", {}).get("holderIdentity") == "ctl-a", proc=a)
    b = release.controller(cfg, "--max-trials", "4", "--parallelism", "2", pod_name="ctl-b", log=tmp_path / "b.log")
    wait_for("b to find the Lease held", lambda: "another controller holds Lease" in (tmp_path / "b.log").read_text(),
             proc=b)
    (gate / "all").touch()
    a.wait(240)
    b.wait(240)
    assert a.returncode == 0 and b.returncode == 0, ((tmp_path / "a.log").read_text()[-2000:],
                                                     (tmp_path / "b.log").read_text()[-2000:])
    creators = release.job_creators()
    assert len(creators) == 4 and all(c == {"ctl-a"} for c in creators.values()), creators  # b created none
    assert [t["state"] for t in release.trials()] == ["ok"] * 4


def test_sigterm_hands_the_lease_back_and_an_ended_search_idles(release, tmp_path):
    """A rollout's SIGTERM mid-search: exit 143, Lease handed back, Jobs left running for the next controller.
    With --idle-when-done (the chart's Deployment) an ended search keeps the process up until SIGTERM."""
    kube, ns = release.kube, release.ns
    gate = release.shared / "gate"
    cfg = release.config_file({"FAKE_TRIAL_GATE": str(gate)})
    gate.mkdir()
    args = ("--max-trials", "4", "--parallelism", "2", "--idle-when-done")
    holder = lambda: kube.lease(ns, f"{release.full}-controller")["spec"]["holderIdentity"]
    first = release.controller(cfg, *args, pod_name="ctl-1")
    wait_for("the first Jobs", lambda: len(kube.jobs(ns)) == 2, proc=first)
    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=30)
    assert first.returncode == 143 and holder() == "", err[-2000:]
    running = [j["metadata"]["name"] for j in kube.jobs(ns) if j["status"].get("active")]
    assert len(running) == 2  # left running for the next controller
    second = release.controller(cfg, *args, pod_name="ctl-2", log=tmp_path / "second.log")
    wait_for("the second to take the Lease", lambda: holder() == "ctl-2", proc=second)
    (gate / "all").touch()
    wait_for("the search to end and the Lease to be handed back", lambda: holder() == "", proc=second)
    wait_for("the idle line", lambda: "idle until SIGTERM" in (tmp_path / "second.log").read_text(), proc=second)
    assert second.poll() is None, "an ended search must keep the controller up"
    second.send_signal(signal.SIGTERM)
    out, _ = second.communicate(timeout=30)
    assert second.returncode == 0 and json.loads(out)["state"] == "succeeded"
    creators = release.job_creators()
    assert {n: c for n, c in creators.items() if n in running} == {n: {"ctl-1"} for n in running}  # adopted
    assert len(creators) == 4 and [t["state"] for t in release.trials()] == ["ok"] * 4


def test_credentials_never_reach_configmaps_logs_records_or_events(release, tmp_path, bucket):
    kube, ns = release.kube, release.ns
    faults = release.shared / "faults.json"
    cfg = release.config_file({"FAKE_TRIAL_FAULTS": str(faults)})
    faults.write_text(json.dumps({"1": "exit1"}))
    p = subprocess.run([PY, "-m", "controller", "-v", "run", "--config", str(cfg), "--max-trials", "3"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "KUBECONFIG": str(release.kubeconfig)})
    assert p.returncode == 0, p.stderr[-2000:]
    places = {"controller output": p.stdout + p.stderr}
    for name, items in (("configmaps", kube.core.list_namespaced_config_map(ns, _preload_content=False)),
                        ("events", kube.core.list_namespaced_event(ns, _preload_content=False)),
                        ("jobs", kube.batch.list_namespaced_job(ns, _preload_content=False)),
                        ("pods", kube.core.list_namespaced_pod(ns, _preload_content=False)),
                        ("leases", kube.coord.list_namespaced_lease(ns, _preload_content=False))):
        places[name] = items.data.decode()
    for pod_log in Path(kube.info["pod_logs"]).glob(f"{ns}_*/*/*.log"):  # the kubelet's own files
        places[f"log of {pod_log.parent.parent.name}"] = pod_log.read_text(errors="replace")
    s3 = boto3.client("s3")
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for o in page.get("Contents", []):
            places[o["Key"]] = s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read().decode(errors="replace")
    secret, key_id = CREDS["AWS_SECRET_ACCESS_KEY"], CREDS["AWS_ACCESS_KEY_ID"]
    # The key id (not a secret: AWS prints it in every request) may appear only as the signer of a trial's
    # presigned URL; the secret key nowhere.
    leaks = sorted(where for where, text in places.items()
                   if secret in text or key_id in text.replace(f"X-Amz-Credential={key_id}", ""))
    assert len(places) > 10 and leaks == []
    # Trials: a grant, no keys; the grant's URLs in a Secret of the trial's own, not in the Job (`view` reads Jobs).
    refs = [e["valueFrom"]["secretKeyRef"]["name"] for job in json.loads(places["jobs"])["items"]
            for e in job["spec"]["template"]["spec"]["containers"][0]["env"] if "valueFrom" in e]
    assert refs and all(ref.endswith("-grant") for ref in refs) and "X-Amz-Signature" not in places["jobs"], refs
    record_figure("credentials grep", {"places_checked": len(places), "leaks": leaks})


def test_every_exit_path_of_the_controller_is_clean(release, tmp_path):
    """The Job watch thread is joined before the interpreter exits (a daemon thread inside an HTTP read or a log
    write at shutdown aborted the process with SIGABRT after a successful search). Run the exit path 10 times."""
    from kubernetes import config

    from controller.kube.api import KubeClient
    from controller.kube.launcher import KubernetesLauncher
    from controller.settings.kube import KubeSettings

    api = config.new_client_from_config(str(release.kubeconfig))
    launcher = KubernetesLauncher(KubeClient(api, release.ns), KubeSettings(namespace=release.ns, resync_seconds=60),
                                  "cifar100")
    launcher.adopt([])
    wait_for("the watch to be open", lambda: launcher.watch.streaming)
    launcher.close()
    assert not launcher.watch.alive()  # before the fix it sat in its read for up to a resync period
    cfg = release.config_file()
    first = release.controller(cfg, "--max-trials", "1")
    assert first.wait(180) == 0, first.stderr.read()[-2000:]
    codes = []
    for _ in range(10):  # each: Lease taken, Jobs listed, watch opened, search found ended, all shut down
        p = release.controller(cfg, "--max-trials", "1")
        out, err = p.communicate(timeout=120)
        codes.append(p.returncode)
        assert "Fatal Python error" not in err and "Traceback" not in err, err[-3000:]
    assert codes == [0] * 10, codes
