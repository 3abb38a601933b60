"""ProcessLauncher (local mode): each trial a local process under a small supervisor (controller.launch.supervise)
that survives a controller crash: it holds a lock for the trial's lifetime and leaves the exit status in a
file. A restarted controller therefore adopts running trials (lock held), collects finished ones (exit file)
and relaunches only trials that left no trace — never a second copy of a live one.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from controller.launch.protocol import TrialExit, TrialLaunch, log_tail, read_log
from controller.launch.supervise import DEFAULT_GRACE_SECONDS

log = logging.getLogger(__name__)


class ProcessLauncher:
    """Trials as local processes. workdir/<tid>/ holds lock, exit.json, trial.log (every attempt's output, in
    turn) and attempt (which attempt runs or last ran)."""

    relaunches = True

    def __init__(self, workdir: str | os.PathLike[str], poll_seconds: float = 0.2,
                 grace_seconds: float = DEFAULT_GRACE_SECONDS):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.poll_seconds = poll_seconds
        self.grace_seconds = grace_seconds
        self._tracked: set[int] = set()
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    def _dir(self, tid: int) -> Path:
        return self.workdir / f"{tid:06d}"

    def _attempt(self, tid: int) -> int:
        try:
            return int((self._dir(tid) / "attempt").read_text())
        except (OSError, ValueError):
            return 1

    def _locked(self, tid: int) -> bool:
        """True while a supervisor holds the trial's lock (it is alive)."""
        path = self._dir(tid) / "lock"
        if not path.exists():
            return False
        with open(path, "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
            return False

    def launch(self, trial: TrialLaunch) -> None:
        tid = trial.tid
        if tid in self._tracked and (self._locked(tid) or tid in self._children):
            return
        if self._locked(tid) or (self._unreleased_end(tid) and self._attempt(tid) >= trial.attempt):
            # Left by an earlier controller: its process still runs, or its end was never released. Adopted, so a
            # caller that launches what it should have adopted still never runs the trial twice.
            self._tracked.add(tid)
            log.info("trial %d: already running or ended unreleased; adopted, not started again", tid)
            return
        d = self._dir(tid)
        d.mkdir(parents=True, exist_ok=True)
        # A relaunch (the first attempt left no trace) starts from a clean slate.
        (d / "exit.json").unlink(missing_ok=True)
        (d / "released").unlink(missing_ok=True)
        (d / "attempt").write_text(str(trial.attempt))
        cmd = [sys.executable, "-m", "controller.launch.supervise", str(d), "--grace", str(self.grace_seconds), "--",
               *trial.argv]
        with open(d / "trial.log", "ab") as logf:
            child = subprocess.Popen(cmd, env={**os.environ, **trial.env}, stdin=subprocess.DEVNULL, stdout=logf,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self._children[tid] = child
        self._tracked.add(tid)
        log.info("trial %d: started process %d: %s", tid, child.pid, " ".join(trial.argv))

    def adopt(self, tids: Iterable[int]) -> set[int]:
        found = set()
        for tid in tids:
            if self._locked(tid) or (self._dir(tid) / "exit.json").exists():
                found.add(tid)
                self._tracked.add(tid)
                log.info("trial %d: adopted its running or finished process", tid)
        for exit_file in self.workdir.glob("*/exit.json"):
            if exit_file.parent.name.isdigit() and self._unreleased_end(int(exit_file.parent.name)):
                self._tracked.add(int(exit_file.parent.name))
        return found

    def _unreleased_end(self, tid: int) -> bool:
        return (self._dir(tid) / "exit.json").exists() and not (self._dir(tid) / "released").exists()

    def release(self, tid: int) -> None:
        (self._dir(tid) / "released").touch()
        # Its output is in the store now (trials/<tid>/trial.log): a second copy here would double what it costs.
        (self._dir(tid) / "trial.log").unlink(missing_ok=True)

    def cancel(self, tid: int) -> None:
        """SIGTERM to the trial's supervisor, which passes it on and kills the trial after its grace; to the trial
        itself when the supervisor is gone (killed: nothing is left to kill it later)."""
        if not self._locked(tid):
            log.info("trial %d: nothing to cancel (its process has ended)", tid)
            return
        for name in ("supervisor.pid", "child.pid"):
            try:
                pid = int((self._dir(tid) / name).read_text())
                os.kill(pid, signal.SIGTERM)
                log.info("trial %d: sent SIGTERM to process %d (%s)", tid, pid, name.split(".")[0])
                return
            except (OSError, ValueError) as e:
                log.info("trial %d: no %s to signal (%s)", tid, name.split(".")[0], e)

    def waiting(self) -> dict[int, str]:
        return {}  # a local process starts at once

    def running(self) -> set[int]:
        return set(self._tracked)

    def _ended(self, tid: int) -> TrialExit | None:
        d = self._dir(tid)
        child = self._children.get(tid)
        if not (d / "exit.json").exists():
            if (child is not None and child.poll() is None) or self._locked(tid):
                return None
            # The supervisor may have written exit.json and released the lock since the first look.
            if not (d / "exit.json").exists():
                return self._exit(tid, None, "the trial's process vanished without an exit status")
        try:
            info = json.loads((d / "exit.json").read_text())
        except ValueError:
            return self._exit(tid, None, "exit.json of the trial's supervisor is unreadable")
        return self._exit(tid, info.get("exit_code"), info.get("reason"))

    def _exit(self, tid: int, code: int | None, reason: str | None) -> TrialExit:
        data = read_log(self._dir(tid) / "trial.log")
        return TrialExit(tid, code, reason, log_tail(data), data, self._attempt(tid))

    def wait(self, timeout: float) -> list[TrialExit]:
        deadline = time.monotonic() + timeout
        while True:
            done = [e for e in (self._ended(t) for t in sorted(self._tracked)) if e is not None]
            for e in done:
                self._tracked.discard(e.tid)
                self._children.pop(e.tid, None)
            if done or time.monotonic() >= deadline:
                return done
            time.sleep(min(self.poll_seconds, max(0.0, deadline - time.monotonic())))

    def close(self) -> None:
        """Leave trials running: a restarted controller adopts them."""
        self._children.clear()
