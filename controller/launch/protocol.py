"""How trials run. The loop talks to a Launcher and does not know which one it drives: ProcessLauncher
(controller/launch/local.py) for local mode, KubernetesLauncher (controller/kube/launcher.py) on a cluster.
tests/loop/test_launcher_contract.py holds every launcher to the same contract.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class TrialExit:
    """A trial's process/Job ended. exit_code None: unknown; reason: what the platform said
    (e.g. 'OOMKilled', 'killed by signal 9'); log_tail: the end of its output."""

    tid: int
    exit_code: int | None
    reason: str | None = None
    log_tail: str = ""
    log: bytes | None = None
    attempt: int = 1
    """Which attempt of the trial ended (a launcher that starts each trial once says 1)."""

    @property
    def interrupted(self) -> bool:
        """Ended by a signal from outside the program (SIGTERM, SIGKILL, SIGHUP, SIGINT: a preemption, an
        eviction, a laptop's kill), not by its own failure."""
        return self.exit_code in (129, 130, 137, 143) or (self.reason or "").startswith(
            ("killed by SIGTERM", "killed by SIGKILL", "killed by SIGHUP", "killed by SIGINT"))


# What is kept of a trial's output (its stdout and stderr): the last 16 MiB, as of a pod's log on a cluster (the
# kubelet's own limit of what kube/api.pod_log reads). A trial that prints without end costs its store no more.
MAX_LOG_BYTES = 16 * 2**20


def read_log(path: Path, limit: int = MAX_LOG_BYTES) -> bytes:
    """A trial's output file: whole, or its last `limit` bytes after a line saying how much was left out."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - limit))
            data = f.read()
    except OSError:
        return b""
    if size <= limit:
        return data
    return f"[... the first {size - limit} bytes of this trial's output left out ...]\n".encode() + data


def log_tail(data: bytes, lines: int = 40) -> str:
    """The end of a trial's output, for its failure record."""
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


@dataclass(frozen=True)
class TrialLaunch:
    """Everything a launcher needs to start one trial: its command, environment and point (a Job records the
    point in an annotation, so `kubectl describe job` shows what a trial tries)."""

    tid: int
    argv: list[str]
    env: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)
    attempt: int = 1
    """1, or the next attempt of a trial whose last one was interrupted (it resumes from its checkpoint)."""


class Launcher(Protocol):
    """How the loop runs trials, whatever runs them: launch, adopt after a restart, wait for ends, cancel, and why a
    trial waits."""

    relaunches: bool
    """Whether launch() starts a further attempt of a trial whose attempt ended (the loop then resumes interrupted
    trials from their checkpoints); False: each trial is started once, and the platform retries it."""

    def launch(self, trial: TrialLaunch) -> None:
        """Start the trial (attempt trial.attempt); a no-op if it is already running, or if that attempt has
        already run."""

    def adopt(self, tids: Iterable[int]) -> set[int]:
        """After a (re)start: which of these open trials still exist (running or ended but not yet
        reported). Ended ones are reported by the next wait(), and so is any other trial that ended
        but was never released (its end may already be on record, its log not yet)."""

    def release(self, tid: int) -> None:
        """The loop has recorded the trial's end: forget it for good."""

    def cancel(self, tid: int) -> None:
        """Ask the trial to stop (SIGTERM / delete the Job); it still reports its exit."""

    def wait(self, timeout: float) -> list[TrialExit]:
        """Trials that ended since the last call; returns early as soon as one ends."""

    def running(self) -> set[int]: ...

    def waiting(self) -> dict[int, str]:
        """Launched trials that have not started, with the platform's reason (e.g. no GPU free)."""

    def close(self) -> None: ...
