"""A scripted Launcher: trials that run in the test's own process, one epoch per wait(), on a MemoryStore.

It plays both the platform and the trainer: launch() starts a trial whose behaviour a Plan gives; each wait()
advances every running trial by one epoch (progress.json), and a trial that has run its epochs writes its
result.json as the trainer would and is reported. Nothing sleeps, so a whole search takes milliseconds and
every step is deterministic. The trials live on a Platform that outlives a SearchLoop and its launcher, so a test can
drop a loop half-way (a crash) and start another on restarted(), a new launcher on the same platform and store, as a
restarted controller finds its processes or Jobs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from controller.launch.protocol import TrialExit, TrialLaunch
from controller.store.base import create_json, put_json
from controller.store.local import MemoryStore
from controller.trial.contract import SCHEMA_VERSION


@dataclass
class Plan:
    """What one trial does. curve: validation accuracy per epoch (its length is the trial's epochs); None in it
    is a diverged epoch. exit_code: the process's; result: False writes no result.json (a crash)."""

    curve: list[float | None] = field(default_factory=lambda: [0.5])
    exit_code: int = 0
    result: bool = True
    status: str = "ok"
    wait_reason: str | None = None
    """Held before its first epoch, for this reason, until start() is called (no GPU free, say)."""
    ignores_stop: bool = False
    """Told to stop, it runs on to its end and reports 'ok' (a trainer that never reads stop.json)."""


@dataclass
class _Run:
    launch: TrialLaunch
    plan: Plan
    epoch: int = 0
    cancelled: bool = False
    held: bool = False


@dataclass
class Platform:
    """What outlives a controller: its trials (running, or ended and not yet released) and the platform's own
    record of every program start (as the kubelet's container starts)."""

    live: dict[int, _Run] = field(default_factory=dict)
    ended: dict[int, TrialExit] = field(default_factory=dict)
    released: set[int] = field(default_factory=set)
    starts: dict[int, int] = field(default_factory=dict)
    """How many times each trial's program was started: a trial run twice shows up here."""


class ScriptedLauncher:
    """One controller's launcher on a Platform. A restarted controller is restarted(): a new instance on the same
    platform, which knows nothing until it adopts, as a new ProcessLauncher or KubernetesLauncher."""

    relaunches = False

    def __init__(self, root: MemoryStore, plan: Callable[[int, Mapping[str, Any]], Plan] = lambda tid, p: Plan(),
                 platform: Platform | None = None):
        self.root = root
        self.plan = plan
        self.platform = platform or Platform()
        self.known: set[int] = set()
        """Launched or adopted by this instance."""
        self.reported: set[int] = set()
        self.calls: dict[int, int] = {}
        """Every launch() call of this instance, per trial, whatever it did: a caller that launches what it should
        have adopted shows up here even where the platform would not start it again."""
        self.waits = 0

    def restarted(self) -> ScriptedLauncher:
        return ScriptedLauncher(self.root, self.plan, self.platform)

    @property
    def starts(self) -> dict[int, int]:
        return self.platform.starts

    def _unreleased(self, tid: int) -> bool:
        return tid in self.platform.live or (tid in self.platform.ended and tid not in self.platform.released)

    # -- the Launcher protocol ----------------------------------------------------------------------------
    def launch(self, trial: TrialLaunch) -> None:
        tid = trial.tid
        self.calls[tid] = self.calls.get(tid, 0) + 1
        first_here = tid not in self.known
        self.known.add(tid)
        if not first_here or self._unreleased(tid):
            return  # launched already, or still there from before a restart (a Job that exists, a live process)
        plan = self.plan(tid, trial.params)
        self.platform.live[tid] = _Run(trial, plan, held=plan.wait_reason is not None)
        self.platform.starts[tid] = self.platform.starts.get(tid, 0) + 1
        self.platform.released.discard(tid)

    def adopt(self, tids: Iterable[int]) -> set[int]:
        found = {t for t in tids if self._unreleased(t)}
        # As the process launcher: every end not yet released is heard (and released) by the new controller.
        self.known |= found | {t for t in self.platform.ended if t not in self.platform.released}
        return found

    def release(self, tid: int) -> None:
        self.platform.released.add(tid)
        self.platform.ended.pop(tid, None)

    def cancel(self, tid: int) -> None:
        if tid in self.platform.live:
            self.platform.live[tid].cancelled = True

    def running(self) -> set[int]:
        return {t for t in self.known if t in self.platform.live or
                (t in self.platform.ended and t not in self.reported)}

    def waiting(self) -> dict[int, str]:
        return {t: r.plan.wait_reason for t, r in self.platform.live.items()
                if t in self.known and r.held and r.plan.wait_reason}

    def wait(self, timeout: float) -> list[TrialExit]:
        self.waits += 1
        for tid in sorted(self.platform.live):  # every trial runs on, whoever watches it
            self._advance(tid)
        out = [e for t, e in sorted(self.platform.ended.items()) if t in self.known and t not in self.reported]
        self.reported |= {e.tid for e in out}
        return out

    def close(self) -> None:
        pass

    # -- the script ------------------------------------------------------------------------------------------
    def start(self, tid: int) -> None:
        """A held trial gets its resources (the scheduler found a node)."""
        self.platform.live[tid].held = False

    def _trial_store(self, run: _Run) -> MemoryStore:
        # The trial finds its folder from its command line, as the trainer does.
        uri = run.launch.argv[run.launch.argv.index("--trial") + 1]
        return MemoryStore(uri, self.root.data)

    def _advance(self, tid: int) -> None:
        run = self.platform.live[tid]
        store = self._trial_store(run)
        if run.held and not run.cancelled:
            return
        if run.cancelled and not run.plan.ignores_stop:
            stopped = store.exists("stop.json")
            if stopped and run.plan.result:
                self._result(store, tid, "stopped", run.plan.curve[:run.epoch])
            self._end(tid, 0 if stopped else 143, "stopped by the controller")
            return
        run.epoch += 1
        curve = run.plan.curve[:run.epoch]
        put_json(store, "progress.json", {"schema_version": SCHEMA_VERSION, "tid": tid, "epoch": run.epoch,
                                          "history": {"objective": curve}, "updated_at": time.time()})
        if run.epoch < len(run.plan.curve):
            return
        if run.plan.result:
            self._result(store, tid, run.plan.status, curve)
        self._end(tid, run.plan.exit_code, None if run.plan.exit_code == 0 else "Error")

    def _result(self, store: MemoryStore, tid: int, status: str, curve: list[float | None]) -> None:
        finite = [v for v in curve if v is not None]
        doc = {"schema_version": SCHEMA_VERSION, "tid": tid, "status": status, "finished_at": time.time(),
               "objective": max(finite) if finite else None, "history": {"objective": curve},
               "epochs_run": len(curve)}
        if status == "fail":
            doc["error"] = "the script failed it"
        create_json(store, "result.json", doc)

    def _end(self, tid: int, code: int, reason: str | None) -> None:
        del self.platform.live[tid]
        self.platform.ended[tid] = TrialExit(tid, code, reason, f"trial {tid} exit {code}\n",
                                             f"trial {tid} log\n".encode())
