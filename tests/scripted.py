"""A scripted Launcher: trials that run in the test's own process, one epoch per wait(), on a MemoryStore.

It plays both the platform and the trainer: launch() starts a trial whose behaviour a Plan gives; each wait()
advances every running trial by one epoch (progress.json), and a trial that has run its epochs writes its
result.json as the trainer would and is reported. Nothing sleeps, so a whole search takes milliseconds and
every step is deterministic. Its state outlives a SearchLoop, so a test can drop a loop half-way (a crash) and
start another on the same launcher and store, as a restarted controller finds its processes or Jobs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from controller.launcher import TrialExit, TrialLaunch
from controller.records import SCHEMA_VERSION, VAL_FINE_ACC
from controller.store import MemoryStore, create_json, put_json


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


@dataclass
class _Run:
    launch: TrialLaunch
    plan: Plan
    epoch: int = 0
    cancelled: bool = False
    held: bool = False


class ScriptedLauncher:
    def __init__(self, root: MemoryStore, plan: Callable[[int, Mapping[str, Any]], Plan] = lambda tid, p: Plan()):
        self.root = root
        self.plan = plan
        self.live: dict[int, _Run] = {}
        self.ended: dict[int, TrialExit] = {}
        """Ended, not yet released: reported by the next wait() (of this launcher or of one that adopts them)."""
        self.reported: set[int] = set()
        self.released: set[int] = set()
        self.launches: dict[int, int] = {}
        """How many times each trial was started: a trial run twice shows up here."""
        self.waits = 0

    # -- the Launcher protocol ----------------------------------------------------------------------------
    def launch(self, trial: TrialLaunch) -> None:
        if trial.tid in self.live or (trial.tid in self.ended and trial.tid not in self.reported):
            return
        plan = self.plan(trial.tid, trial.params)
        self.live[trial.tid] = _Run(trial, plan, held=plan.wait_reason is not None)
        self.launches[trial.tid] = self.launches.get(trial.tid, 0) + 1
        self.reported.discard(trial.tid)

    def adopt(self, tids: Iterable[int]) -> set[int]:
        self.reported -= {t for t in self.ended if t not in self.released}  # a new controller hears of them again
        return {t for t in tids if t in self.live or (t in self.ended and t not in self.released)}

    def release(self, tid: int) -> None:
        self.released.add(tid)
        self.ended.pop(tid, None)

    def cancel(self, tid: int) -> None:
        if tid in self.live:
            self.live[tid].cancelled = True

    def running(self) -> set[int]:
        return set(self.live) | {t for t in self.ended if t not in self.reported}

    def waiting(self) -> dict[int, str]:
        return {t: r.plan.wait_reason for t, r in self.live.items() if r.held and r.plan.wait_reason}

    def wait(self, timeout: float) -> list[TrialExit]:
        self.waits += 1
        for tid in sorted(self.live):
            self._advance(tid)
        out = [e for t, e in sorted(self.ended.items()) if t not in self.reported]
        self.reported |= {e.tid for e in out}
        return out

    def close(self) -> None:
        pass

    # -- the script ------------------------------------------------------------------------------------------
    def start(self, tid: int) -> None:
        """A held trial gets its resources (the scheduler found a node)."""
        self.live[tid].held = False

    def _trial_store(self, run: _Run) -> MemoryStore:
        # The trial finds its folder from its command line, as the trainer does.
        uri = run.launch.argv[run.launch.argv.index("--trial") + 1]
        return MemoryStore(uri, self.root.data)

    def _advance(self, tid: int) -> None:
        run = self.live[tid]
        store = self._trial_store(run)
        if run.held and not run.cancelled:
            return
        if run.cancelled:
            stopped = store.exists("stop.json")
            if stopped and run.plan.result:
                self._result(store, tid, "stopped", run.plan.curve[:run.epoch])
            self._end(tid, 0 if stopped else 143, "stopped by the controller")
            return
        run.epoch += 1
        curve = run.plan.curve[:run.epoch]
        put_json(store, "progress.json", {"schema_version": SCHEMA_VERSION, "tid": tid, "epoch": run.epoch,
                                          "history": {VAL_FINE_ACC: curve}, "updated_at": time.time()})
        if run.epoch < len(run.plan.curve):
            return
        if run.plan.result:
            self._result(store, tid, run.plan.status, curve)
        self._end(tid, run.plan.exit_code, None if run.plan.exit_code == 0 else "Error")

    def _result(self, store: MemoryStore, tid: int, status: str, curve: list[float | None]) -> None:
        finite = [v for v in curve if v is not None]
        doc = {"schema_version": SCHEMA_VERSION, "tid": tid, "status": status, "finished_at": time.time(),
               "objective": max(finite) if finite else None, "history": {VAL_FINE_ACC: curve},
               "epochs_run": len(curve)}
        if status == "fail":
            doc["error"] = "the script failed it"
        create_json(store, "result.json", doc)

    def _end(self, tid: int, code: int, reason: str | None) -> None:
        del self.live[tid]
        self.ended[tid] = TrialExit(tid, code, reason, f"trial {tid} exit {code}\n", f"trial {tid} log\n".encode())
