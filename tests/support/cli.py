"""The controller's command line as a test runs it: a process of this interpreter in the checkout."""

from __future__ import annotations

import os
import subprocess

from support.paths import PY, ROOT


def run_cli(*args: str, env: dict[str, str] | None = None, check: bool = True,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([PY, "-m", "controller", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"controller {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


