"""How trials run. The loop talks to a Launcher and does not know which one it drives: ProcessLauncher
(controller/launch/local.py) for local mode, KubernetesLauncher (controller/kube/launcher.py) on a cluster.
tests/loop/test_launcher_contract.py holds every launcher to the same contract.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
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


class Launcher(Protocol):
    """How the loop runs trials, whatever runs them: launch, adopt after a restart, wait for ends, cancel, and why a
    trial waits."""

    def launch(self, trial: TrialLaunch) -> None:
        """Start the trial; a no-op if it is already running."""

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
