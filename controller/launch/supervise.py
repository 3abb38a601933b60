"""Runs one trial's command and records how it ended: `python -m controller.launch.supervise DIR [--grace S] -- CMD...`.

It outlives a crashed controller (its own session), holds DIR/lock for the trial's lifetime (the trial
inherits the lock, so it stays held even if this supervisor is killed) and writes DIR/exit.json when the
trial ends. A second supervisor for the same trial finds the lock taken, or exit.json present, and runs
nothing: one trial never runs twice at once. A SIGTERM (the controller cancelling the trial) is passed on to the
trial, and a trial still running S seconds later is killed, as the kubelet does after a pod's grace period.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

DEFAULT_GRACE_SECONDS = 30.0
"""As Kubernetes' terminationGracePeriodSeconds default."""


def _describe(code: int) -> tuple[int, str | None]:
    if code < 0:
        sig = -code
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        hint = " (out of memory, or kill -9)" if sig == signal.SIGKILL else ""
        return 128 + sig, f"killed by {name}{hint}"
    return code, None


def _grace(argv: list[str]) -> tuple[float, list[str]] | None:
    """(grace seconds, the trial's command) from `DIR [--grace S] -- CMD...`; None when malformed."""
    grace, rest = DEFAULT_GRACE_SECONDS, argv[1:]
    if rest[:1] == ["--grace"] and len(rest) > 1:
        try:
            grace, rest = float(rest[1]), rest[2:]
        except ValueError:
            return None
    return (grace, rest[1:]) if len(rest) > 1 and rest[0] == "--" else None


def main(argv: list[str]) -> int:
    """Runs the command under the trial folder's lock and records its exit code and output there; returns 2 for a bad
    command line."""
    parsed = _grace(argv) if argv else None
    if parsed is None:
        sys.stderr.write("usage: python -m controller.launch.supervise DIR [--grace SECONDS] -- COMMAND [ARGS...]\n")
        return 2
    grace, command = parsed
    d = Path(argv[0])
    d.mkdir(parents=True, exist_ok=True)
    lock = os.open(d / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        sys.stderr.write("supervise: another supervisor runs this trial; nothing to do\n")
        return 0
    if (d / "exit.json").exists():
        sys.stderr.write("supervise: this trial already ran; nothing to do\n")
        return 0
    started = time.time()
    child = subprocess.Popen(command, pass_fds=(lock,), stdin=subprocess.DEVNULL)
    (d / "child.pid").write_text(str(child.pid))
    (d / "supervisor.pid").write_text(str(os.getpid()))
    overdue = threading.Event()

    def kill_if_still_running() -> None:
        if child.poll() is None:
            overdue.set()
            child.kill()

    def forward(signum: int, _frame: object) -> None:
        child.send_signal(signum)
        if signum == signal.SIGTERM and not overdue.is_set():
            timer = threading.Timer(grace, kill_if_still_running)
            timer.daemon = True
            timer.start()

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = child.wait()
    exit_code, reason = _describe(code)
    if overdue.is_set():
        reason = f"killed by SIGKILL: still running {grace:g} s after SIGTERM (local.graceSeconds)"
    tmp = d / ".exit.json.tmp"
    tmp.write_text(json.dumps({"exit_code": exit_code, "reason": reason, "started_at": started,
                               "ended_at": time.time()}))
    os.replace(tmp, d / "exit.json")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
