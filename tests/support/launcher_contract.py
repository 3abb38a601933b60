"""The Launcher contract (controller/launch/protocol.py) as a class a launcher's tests inherit, with the harness that
drives any launcher: new instances of it (a restarted controller), trials, gates, run counts. tests/loop/
test_launcher_contract.py holds every launcher of this project to it.

Each trial is a small program that counts its runs and then waits for a gate file, so the test decides when
it ends, whatever the machine's speed.
"""


from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.launch.protocol import Launcher, TrialExit, TrialLaunch
from controller.store.local import MemoryStore
from support.realkube import wait_for
from support.scripted import Plan, Platform, ScriptedLauncher

# Runs once per start: appends to its runs file, waits for its gate, exits with the code it is given.
TRIAL = ("import os, sys, time\n"
         "gate, runs, code = sys.argv[1:4]\n"
         "with open(runs, 'a') as f: f.write('x')\n"
         "while not os.path.exists(gate): time.sleep(0.05)\n"
         "sys.exit(int(code))\n")


class Harness:
    """One kind of launcher: new instances of it (a restarted controller), trials, gates, run counts."""

    def __init__(self, kind: str, folder: Path, kube: Any = None, ns: str | None = None):
        self.kind, self.folder, self.kube, self.ns = kind, folder, kube, ns
        self.claim = kube.shared_dir(ns, folder) if kube is not None and ns is not None else None
        self.root = MemoryStore()
        self.platform = Platform()  # the scripted launcher's trials: what a restarted controller finds
        self.codes: dict[int, int] = {}
        self.made: list[Launcher] = []

    def launcher(self, unplaceable: bool = False) -> Launcher:
        """A new instance (a restarted controller). unplaceable: its trials ask for more than the node has."""
        made: Launcher
        if self.kind == "process":
            from controller.launch.local import ProcessLauncher

            made = ProcessLauncher(self.folder / "work", poll_seconds=0.05)
        elif self.kind == "kubernetes":
            from kubernetes import config

            from controller.kube.api import KubeClient
            from controller.kube.launcher import KubernetesLauncher
            from controller.settings.kube import KubeSettings

            api = config.new_client_from_config(str(self.kube.kubeconfig))
            # The test image (it has python), the folder at /cache through a claim.
            settings = KubeSettings(namespace=self.ns, release="c", gpu_count=0, backoff_limit=0,
                                    image=next(r for r in self.kube.info["images"] if "cifar-hpo-objective:" in r),
                                    data_cache_claim=self.claim,
                                    requests={"cpu": "1000" if unplaceable else "10m", "memory": "32Mi"},
                                    limits={}, termination_grace_seconds=5, resync_seconds=5)
            made = KubernetesLauncher(KubeClient(api, self.ns), settings, "contract")
        else:
            made = ScriptedLauncher(self.root, lambda tid, p: Plan(exit_code=self.codes[tid], result=False,
                                                                   wait_reason="gate closed"), self.platform)
        self.made.append(made)
        return made

    def trial(self, tid: int, code: int = 0) -> TrialLaunch:
        self.codes[tid] = code
        (self.folder / "runs").mkdir(exist_ok=True)
        (self.folder / "runs").chmod(0o777)  # a pod's trial runs as UID 10002
        where = "/cache" if self.claim else str(self.folder)  # the folder as the trial sees it
        argv = ["python", "-c", TRIAL, f"{where}/gate-{tid}", f"{where}/runs/{tid}",
                str(code), "--trial", f"memory://trials/{tid:06d}"]
        return TrialLaunch(tid, argv, {"PYTHONUNBUFFERED": "1"}, {"x": tid})

    def open(self, tid: int) -> None:
        (self.folder / f"gate-{tid}").touch()
        if tid in self.platform.live:
            self.platform.live[tid].held = False

    def runs(self, tid: int) -> int:
        """Starts of the trial's program: its own count of its runs, or (scripted) the platform's record."""
        if self.kind == "scripted":
            return self.platform.starts.get(tid, 0)
        path = self.folder / "runs" / str(tid)
        return len(path.read_text()) if path.exists() else 0

    def started(self, tid: int) -> bool:
        return self.runs(tid) > 0



def harness_of(kind: str, request: pytest.FixtureRequest) -> Iterator[Harness]:
    """A harness of one kind, its trials ended and its folder removed at the end of the test."""
    folder = Path.home() / ".cache" / "cifar-hpo" / "contract" / uuid.uuid4().hex[:10]
    folder.mkdir(parents=True)
    kube = ns = None
    if kind == "kubernetes":
        kube, ns = request.getfixturevalue("kube"), request.getfixturevalue("kube_ns")
    h = Harness(kind, folder, kube, ns)
    yield h
    for launcher in h.made:
        for tid in list(h.codes):
            launcher.cancel(tid)  # nothing is left waiting on its gate once the folder is gone
    for tid in list(h.codes):
        h.open(tid)
    for launcher in h.made:
        launcher.close()
    shutil.rmtree(folder, ignore_errors=True)


def _end_of(launcher: Launcher, tid: int) -> TrialExit:
    got: list[TrialExit] = []

    def reported() -> bool:
        got.extend(e for e in launcher.wait(0.5) if e.tid == tid)
        return bool(got)

    wait_for(f"trial {tid}'s end to be reported", reported)
    return got[0]



class LauncherContract:
    """What every Launcher does; a subclass provides a `harness` fixture (harness_of(kind, request))."""

    def test_a_trial_runs_once_however_often_it_is_launched(self, harness):
        launcher = harness.launcher()
        launcher.launch(harness.trial(1))
        launcher.launch(harness.trial(1))  # a restarted loop relaunching what it finds: a no-op
        assert 1 in launcher.running()
        wait_for("trial 1 to start", lambda: harness.started(1))
        harness.open(1)
        ended = _end_of(launcher, 1)
        assert (ended.tid, ended.exit_code) == (1, 0)
        launcher.release(1)
        assert 1 not in launcher.running()
        assert harness.runs(1) == 1


    def test_an_exit_code_reaches_the_caller(self, harness):
        launcher = harness.launcher()
        launcher.launch(harness.trial(2, code=1))
        harness.open(2)
        assert _end_of(launcher, 2).exit_code == 1


    def test_a_cancelled_trial_still_reports_its_end(self, harness):
        launcher = harness.launcher()
        launcher.launch(harness.trial(3))
        wait_for("trial 3 to start", lambda: harness.started(3))
        launcher.cancel(3)
        ended = _end_of(launcher, 3)
        assert ended.exit_code != 0  # stopped before its gate opened: not a success
        assert harness.runs(3) == 1


    def test_a_new_launcher_adopts_what_runs_and_hears_its_end(self, harness):
        first = harness.launcher()
        first.launch(harness.trial(4))
        wait_for("trial 4 to start", lambda: harness.started(4))
        second = harness.launcher()  # the controller restarted
        assert second.adopt([4, 5]) == {4}  # 5 was never launched: it is for the caller to launch
        harness.open(4)
        assert _end_of(second, 4).exit_code == 0
        assert harness.runs(4) == 1


    def test_an_end_never_released_is_reported_again_after_a_restart(self, harness):
        first = harness.launcher()
        first.launch(harness.trial(6))
        harness.open(6)
        _end_of(first, 6)  # heard, but the controller died before recording it (no release)
        second = harness.launcher()
        assert second.adopt([6]) == {6}
        assert _end_of(second, 6).exit_code == 0
        second.release(6)
        third = harness.launcher()  # once released, a trial is never reported again
        third.adopt([])
        assert 6 not in {e.tid for e in third.wait(0.5)}
        assert harness.runs(6) == 1


    def test_a_new_launcher_that_launches_instead_of_adopting_still_runs_nothing_twice(self, harness):
        """Where the three could differ: a restarted controller's launch() of a trial that still runs, or that ended
        and was heard but never released. A Job that exists is not created again; a live or unreleased local process is
        adopted; none is started a second time, and both ends are reported to the new launcher."""
        first = harness.launcher()
        first.launch(harness.trial(8))
        first.launch(harness.trial(9))
        wait_for("trials 8 and 9 to start", lambda: harness.started(8) and harness.started(9))
        harness.open(9)
        assert _end_of(first, 9).exit_code == 0  # heard, never released: the controller died
        second = harness.launcher()
        second.launch(harness.trial(8))
        second.launch(harness.trial(9))
        assert {8, 9} <= second.running()
        assert _end_of(second, 9).exit_code == 0
        harness.open(8)
        assert _end_of(second, 8).exit_code == 0
        assert (harness.runs(8), harness.runs(9)) == (1, 1)


    def test_waiting_names_the_reason_a_trial_cannot_start(self, harness):
        """A trial the platform cannot start yet is named with the platform's reason; a local process starts at once."""
        if harness.kind == "process":
            launcher = harness.launcher()
            launcher.launch(harness.trial(7))
            wait_for("trial 7 to start", lambda: harness.started(7))
            assert launcher.waiting() == {}
            return
        launcher = harness.launcher(unplaceable=True)  # scripted: held at its closed gate
        launcher.launch(harness.trial(7))
        expected = "gate closed" if harness.kind == "scripted" else "Insufficient cpu"
        wait_for("trial 7 to be waiting with its reason", lambda: expected in launcher.waiting().get(7, ""))
        assert set(launcher.waiting()) == {7}
        if harness.kind == "kubernetes":
            assert not harness.started(7)  # its pod was never placed: the program never ran
