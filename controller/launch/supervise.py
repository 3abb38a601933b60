"""Runs one trial's command and records how it ended: `python -m controller.launch.supervise DIR -- CMD...`.

It outlives a crashed controller (its own session), holds DIR/lock for the trial's lifetime (the trial
inherits the lock, so it stays held even if this supervisor is killed) and writes DIR/exit.json when the
trial ends. A second supervisor for the same trial finds the lock taken, or exit.json present, and runs
nothing: one trial never runs twice at once.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def _describe(code: int) -> tuple[int, str | None]:
    if code < 0:
        sig = -code
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        hint = " (out of memory, or kill -9)" if sig == signal.SIGKILL else ""
        return 128 + sig, f"killed by {name}{hint}"
    return code, None


def main(argv: list[str]) -> int:
    """Runs the command under the trial folder's lock and records its exit code and output there; returns 2 for a bad
    command line."""
    if len(argv) < 3 or argv[1] != "--":
        sys.stderr.write("usage: python -m controller.launch.supervise DIR -- COMMAND [ARGS...]\n")
        return 2
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
    child = subprocess.Popen(argv[2:], pass_fds=(lock,), stdin=subprocess.DEVNULL)
    (d / "child.pid").write_text(str(child.pid))

    def forward(signum: int, _frame: object) -> None:
        child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = child.wait()
    exit_code, reason = _describe(code)
    tmp = d / ".exit.json.tmp"
    tmp.write_text(json.dumps({"exit_code": exit_code, "reason": reason, "started_at": started,
                               "ended_at": time.time()}))
    os.replace(tmp, d / "exit.json")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
