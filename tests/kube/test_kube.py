"""The Job a trial becomes, checked against the published Kubernetes schemas for several versions. Everything
else about the Kubernetes side runs on real components: tests/kube/test_cluster.py."""

import json

import pytest

from controller.kube.jobs import build_job, job_name, job_prefix
from controller.kube.launcher import POD, KubernetesLauncher
from controller.settings.kube import KubeSettings

pytestmark = pytest.mark.pure


def test_job_bodies_validate_for_other_options():
    """CPU-only, tolerations, node selector, affinity, pull secrets, no Secret (workload identity)."""
    import kubernetes_validate

    s = KubeSettings(namespace="ml", release="a" * 40, gpu_count=0, node_selector={"pool": "gpu"},
                     tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                     affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                         "nodeSelectorTerms": [
                             {"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["a100", "h100"]}]}]}}},
                     image_pull_secrets=["regcred"], priority_class_name="batch-low")
    job = build_job(s, "cifar100", 123456, ["python", "-m", "trainer", "--trial", "s3://b/t"], {}, {"x": 1}, None)
    # The published schemas require onPodConditions in every podFailurePolicy rule up to 1.28.
    for version in ("1.29", "1.31", "1.33", "1.35", "1.37"):
        kubernetes_validate.validate(job, version, strict=True)
    assert len(job["metadata"]["name"]) <= 63
    assert "nvidia.com/gpu" not in json.dumps(job["spec"]["template"]["spec"]["containers"][0]["resources"])


def test_job_names_carry_the_search_and_stay_unique_within_63_characters():
    assert job_name(job_prefix(KubeSettings(release="hpo"), "cifar100"), 7) == "hpo-cifar100-t7"
    assert job_name(job_prefix(KubeSettings(job_prefix="my-search"), "cifar100"), 7) == "my-search-t7"
    a, b = (job_prefix(KubeSettings(release="r" * 40), s * 40) for s in "ab")
    long_a, long_b = job_name(a, 123456), job_name(b, 123456)
    assert len(long_a) <= 63 and len(long_b) <= 63 and long_a != long_b and long_a.endswith("-t123456")
    # Stable across restarts and releases (a restarted controller finds its Jobs by name): the value itself.
    assert job_name(a, 1) == "rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr-aaaaaaaaaaaa-1e3be4-t1"


def test_the_dataset_cache_can_be_a_claim_or_a_node_folder():
    import kubernetes_validate

    for extra, want in (({"data_cache_claim": "cifar-cache"}, {"persistentVolumeClaim": {"claimName": "cifar-cache"}}),
                        ({"data_cache_host_path": "/var/cache/cifar"},
                         {"hostPath": {"path": "/var/cache/cifar", "type": "DirectoryOrCreate"}})):
        job = build_job(KubeSettings(**extra), "s", 1, ["python", "-m", "trainer", "--trial", "s3://b/t"], {}, {}, None)
        kubernetes_validate.validate(job, "1.33", strict=True)
        volume = next(v for v in job["spec"]["template"]["spec"]["volumes"] if v["name"] == "cache")
        assert {k: v for k, v in volume.items() if k != "name"} == want
        env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["CIFAR_HPO_DATA_CACHE"] == "/cache/datasets"


def test_the_waiting_column_counts_trials_and_names_short_reasons():
    from controller.kube.search_status import waiting_summary

    assert waiting_summary({}) == ""
    assert waiting_summary({3: "ImagePullBackOff: Back-off pulling image \"x\""}) == "1 trial: ImagePullBackOff"
    assert waiting_summary({1: "ErrImagePull: not found", 2: "waiting for a node: 0/1 nodes are available",
                            4: "ErrImagePull: not found"}) == "3 trials: ErrImagePull, waiting for a node"


def test_a_searchs_completion_time_stays_when_its_end_is_told_again_and_clears_when_it_runs_again():
    from controller.kube.search_status import SearchStatusWriter

    class Kube:
        ns = "ns"

        def __init__(self):
            self.patches: list[dict] = []

        def patch_search_status(self, name, body):
            self.patches.append(body["status"])

    def doc(state: str) -> dict:
        return {"state": state, "reason": "", "counts": {}, "finished": 2, "budget_left": 0}

    ended = "2026-11-29T08:00:00Z"
    kube = Kube()
    obj = {"metadata": {"name": "s", "uid": "u", "generation": 1},
           "status": {"state": "Succeeded", "startTime": "2026-11-29T07:00:00Z", "completionTime": ended}}
    writer = SearchStatusWriter(kube, obj, "s3://b/s")  # an operator's restart, the Search had ended
    writer.status(doc("succeeded"))
    assert kube.patches[-1]["completionTime"] == ended
    writer.status(doc("running"))  # a raised budget
    assert kube.patches[-1]["completionTime"] is None
    writer.status(doc("succeeded"))
    assert kube.patches[-1]["completionTime"] not in (None, ended)


def test_an_event_told_once_is_named_by_its_key_and_recorded_once(caplog):
    from controller.kube.api import Conflict
    from controller.kube.search_status import SearchStatusWriter

    class Kube:
        ns = "ns"

        def __init__(self):
            self.names: list[str] = []

        def create_event(self, body):
            if body["metadata"]["name"] in self.names:
                raise Conflict("create Event: it exists already or changed meanwhile (409)")
            self.names.append(body["metadata"]["name"])

    kube = Kube()
    writer = SearchStatusWriter(kube, {"metadata": {"name": "s", "uid": "u"}}, "s3://b/s")
    writer.event("SearchFinished", "search s: succeeded", once="end-abc")
    with caplog.at_level("INFO"):
        writer.event("SearchFinished", "search s: succeeded", once="end-abc")  # a restarted operator's
    writer.event("TrialFinished", "trial 0 ok")
    writer.event("TrialFinished", "trial 1 ok")
    assert kube.names[0] == "s.end-abc" and len(kube.names) == 3 and len(set(kube.names)) == 3, kube.names
    assert "recorded before" in caplog.text and "could not record" not in caplog.text


def test_a_gpu_trial_is_told_its_gpu_count_and_a_cpu_trial_sees_no_gpu():
    def env(count):
        job = build_job(KubeSettings(gpu_count=count), "s", 1, ["python", "-m", "trainer", "--trial", "s3://b/t"],
                        {}, {}, None)
        return {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}

    assert env(2)["CIFAR_HPO_EXPECT_GPUS"] == "2" and "NVIDIA_VISIBLE_DEVICES" not in env(2)
    assert env(0)["NVIDIA_VISIBLE_DEVICES"] == "void" and "CIFAR_HPO_EXPECT_GPUS" not in env(0)


def test_the_trainer_command_leaves_the_images_entrypoint_in_charge_and_another_command_replaces_it():
    def container(argv):
        return build_job(KubeSettings(), "s", 1, argv, {}, {}, None)["spec"]["template"]["spec"]["containers"][0]

    trainer = container(["python", "-m", "trainer", "--trial", "s3://b/t", "--epochs", "3"])
    assert "command" not in trainer and trainer["args"] == ["--trial", "s3://b/t", "--epochs", "3"]
    other = container(["python", "train.py", "--trial", "s3://b/t"])
    assert other["command"] == ["python"] and other["args"] == ["train.py", "--trial", "s3://b/t"]


class _LeaseAPI:
    """The two calls a contender makes; the holder's record is whatever the test puts in `spec`."""

    def __init__(self, spec):
        self.spec, self.replaced = spec, 0
        self.ns = "ns"

    def read_lease(self, name):
        return {"metadata": {"resourceVersion": "1"}, "spec": dict(self.spec)}

    def replace_lease(self, body):
        self.replaced += 1
        return True


def test_a_lease_expires_by_the_contenders_own_clock_not_the_holders_timestamps():
    """The holder's renewTime is written by its clock. One an hour behind must not look expired while it renews
    (two leaders), one an hour ahead must not look alive for an hour after it died (no leader)."""
    from controller.kube.lease import LeaderLease

    now = [0.0]
    behind = {"holderIdentity": "a", "renewTime": "2020-01-01T00:00:00.000000Z", "leaseDurationSeconds": 15}
    api = _LeaseAPI(behind)
    lease = LeaderLease(api, "l", "b", 15, lambda: None, clock=lambda: now[0])
    for t in range(0, 60, 5):  # the holder renews every 5 s: its record changes each time
        now[0] = float(t)
        api.spec = {**behind, "renewTime": f"2020-01-01T00:00:{t:02d}.000000Z"}
        assert lease.try_acquire() is False
    ahead = {"holderIdentity": "a", "renewTime": "2999-01-01T00:00:00.000000Z", "leaseDurationSeconds": 15}
    api.spec = ahead  # the holder died; its last renewTime is far in the future
    now[0] = 100.0
    assert lease.try_acquire() is False
    now[0] = 114.0
    assert lease.try_acquire() is False
    now[0] = 116.0
    assert lease.try_acquire() is True and api.replaced == 1  # 16 s unchanged by our clock: taken over


POD_SEEN = f"{POD} MODIFIED"


class _PodsAndLogs:
    """The calls the launcher makes while it judges watch events: a Job's pods, a pod's log."""

    def pod_log(self, pod):
        return f"log of {pod}\n".encode()

    def list_pods(self, selector):
        return [_obj(2, {"containerStatuses": [{"state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]},
                     "s-t2-fghij")]


def _obj(tid, status, name="s-t1"):
    return {"metadata": {"name": name, "labels": {"cifar-hpo.io/trial": str(tid)}}, "status": status}


def _job(tid, condition, reason=None):
    return _obj(tid, {"conditions": [{"type": condition, "status": "True", "reason": reason}]})


def test_a_trial_ends_when_its_pod_succeeds_and_a_failing_pod_waits_for_its_jobs_verdict(caplog):
    """The next trial's slot frees at the pod's success, a Job-controller round trip before the Job's Complete; a pod
    that fails ends nothing (the Job may retry it, or its failure policy decide), and the Job's verdict counts then;
    a Job that fails after its pod succeeded is logged, not reported twice."""
    launcher = KubernetesLauncher(_PodsAndLogs(), KubeSettings(), "s")
    launcher._tracked.update({1, 2, 3})
    launcher._cancelled.add(3)
    (end,) = launcher._handle(POD_SEEN, _obj(1, {"phase": "Succeeded"}, "s-t1-abcde"))
    assert (end.tid, end.exit_code, end.reason, end.log) == (1, 0, None, b"log of s-t1-abcde\n")
    assert launcher._handle("MODIFIED", _job(1, "Complete")) == []  # its Job's verdict: no second end
    assert launcher.running() == {2, 3}

    assert launcher._handle(POD_SEEN, _obj(2, {"phase": "Failed"})) == []  # a retry may follow
    assert launcher._handle(POD_SEEN, _obj(2, {"phase": "Running"})) == []
    assert launcher._handle(POD_SEEN, _obj(3, {"phase": "Succeeded"})) == []  # stopped: its Job's deletion says so
    (end,) = launcher._handle("MODIFIED", _job(2, "Failed", "BackoffLimitExceeded"))
    assert (end.tid, end.exit_code, end.reason) == (2, 1, "BackoffLimitExceeded; Error")

    # The kubelet reports the container's exit a pod teardown before the phase: that is the end already.
    launcher._tracked.update({5, 6})
    exited = {"phase": "Running", "containerStatuses": [{"name": "trainer", "state": {"terminated": {"exitCode": 0}}}]}
    assert [e.tid for e in launcher._handle(POD_SEEN, _obj(5, exited))] == [5]
    exited["containerStatuses"][0]["state"]["terminated"]["exitCode"] = 1
    assert launcher._handle(POD_SEEN, _obj(6, exited)) == []

    launcher._tracked.add(4)
    assert [e.tid for e in launcher._handle(POD_SEEN, _obj(4, {"phase": "Succeeded"}))] == [4]
    assert launcher._handle("MODIFIED", _job(4, "Failed", "DeadlineExceeded")) == []
    assert "trial 4: its Job failed after its pod succeeded (DeadlineExceeded" in caplog.text


class _NoListing(_PodsAndLogs):
    def list_pods(self, selector):
        raise AssertionError("waiting() listed pods: it reads what the pod watch showed")


def test_why_a_trial_waits_comes_from_the_pod_watch_and_its_newest_pod():
    """waiting() lists nothing (a list per Search every two seconds while trials wait grew with the Searches): it
    reads each trial's newest pod as the watch last showed it, and forgets a deleted or ended one."""
    launcher = KubernetesLauncher(_NoListing(), KubeSettings(), "s")
    launcher._ensure_watch = lambda: None  # the events are this test's
    launcher._tracked.update({1, 2})
    unschedulable = {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                                                         "message": "0/1 nodes are available: 1 Insufficient cpu."}]}
    pulling = {"phase": "Pending", "containerStatuses": [{"name": "trainer", "state": {"waiting": {
        "reason": "ImagePullBackOff", "message": "Back-off pulling image"}}}]}

    def pod(tid, status, uid, created):
        doc = _obj(tid, status, f"s-t{tid}-{uid}")
        doc["metadata"].update(uid=uid, creationTimestamp=created)
        return doc

    launcher._handle(POD_SEEN, pod(1, unschedulable, "a", "2026-11-30T10:00:00Z"))
    launcher._handle(POD_SEEN, pod(2, pulling, "b", "2026-11-30T10:00:01Z"))
    launcher._handle(POD_SEEN, pod(3, unschedulable, "c", "2026-11-30T10:00:01Z"))  # not this launcher's trial
    assert launcher.waiting() == {1: "waiting for a node: 0/1 nodes are available: 1 Insufficient cpu.",
                                  2: "ImagePullBackOff: Back-off pulling image"}
    # Trial 1's Job retries: an older pod's late event does not hide its newest pod's state.
    launcher._handle(POD_SEEN, pod(1, {"phase": "Running", "containerStatuses": [{"name": "trainer", "state": {
        "running": {"startedAt": "2026-11-30T10:05:02Z"}}}]}, "d", "2026-11-30T10:05:00Z"))
    launcher._handle(POD_SEEN, pod(1, unschedulable, "a", "2026-11-30T10:00:00Z"))
    launcher._handle(f"{POD} DELETED", pod(2, pulling, "b", "2026-11-30T10:00:01Z"))
    assert launcher.waiting() == {}
    assert launcher._started == {1}
