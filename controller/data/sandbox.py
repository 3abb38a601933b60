"""An untrusted archive read in a child process with hard limits, so that what it costs is its own Search's.

The unpickler and tarfile are bounded where they can be (controller/data/safepickle.py, cifar.py), but a pickle can
still make a single C call run for exponential time holding the GIL (hashing a tuple that shares itself level by
level), and every search of the operator shares its one process, GIL and memory limit. So the archive is converted
in a child: it gets the archive on stdin, sets its own CPU-time and address-space limits before it reads a byte,
offers itself first to the OOM killer, and writes the .npz to stdout; the parent kills it at a wall-clock limit.
Its death, for whatever reason, is a ConfigError naming the source: the Search fails, the operator goes on.
"""

from __future__ import annotations

import logging
import os
import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from controller.errors import ConfigError

log = logging.getLogger(__name__)

EXIT_REFUSED, EXIT_MEMORY, EXIT_CRASH = 2, 3, 4
MAX_MESSAGE = 2000


@dataclass(frozen=True)
class SandboxLimits:
    """What reading one archive may cost (policy.stagingMemoryBytes, policy.stagingSeconds)."""
    memory_bytes: int
    """The child's address space (RLIMIT_AS): numpy and Python themselves take ~0.3 GiB of it."""
    seconds: int
    """Its CPU time (RLIMIT_CPU) and, doubled, its wall-clock time."""


def archive_to_npz_isolated(archive: bytes, where: str, limits: SandboxLimits) -> bytes:
    """controller.data.cifar.archive_to_npz run in a child process within `limits`; a ConfigError naming `where`
    when the archive is refused or the child dies."""
    package_root = str(Path(__file__).resolve().parents[2])  # the parent's own code, whatever is installed
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])),
           "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "controller.data.sandbox", where, str(limits.memory_bytes), str(limits.seconds)]
    try:
        proc = subprocess.run(command, input=archive, capture_output=True, env=env, timeout=2 * limits.seconds + 5,
                              check=False)
    except subprocess.TimeoutExpired as e:
        raise ConfigError(f"{where}: reading the archive took over {2 * limits.seconds + 5} s and was stopped "
                          "(policy.stagingSeconds); not a CIFAR-100 archive, or raise the limit") from e
    message = proc.stderr.decode("utf-8", "replace").strip()[-MAX_MESSAGE:]
    if proc.returncode == 0:
        return proc.stdout
    if proc.returncode == EXIT_REFUSED and message:
        raise ConfigError(message.splitlines()[-1])
    if proc.returncode == EXIT_MEMORY or proc.returncode == -9:
        raise ConfigError(f"{where}: reading the archive needed more than {limits.memory_bytes} bytes of memory "
                          "and was stopped (policy.stagingMemoryBytes); not a CIFAR-100 archive, or raise the limit")
    if proc.returncode in (-24, -30) or proc.returncode == 128 + 24:  # SIGXCPU
        raise ConfigError(f"{where}: reading the archive used more than {limits.seconds} s of CPU and was stopped "
                          "(policy.stagingSeconds); not a CIFAR-100 archive, or raise the limit")
    log.warning("reading %s: the child exited %s: %s", where, proc.returncode, message)
    raise ConfigError(f"{where}: reading the archive failed (exit {proc.returncode}): "
                      f"{message.splitlines()[-1] if message else 'no message'}")


def _limit_self(memory_bytes: int, seconds: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds + 5))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    try:  # the OOM killer of a shared memory limit (the operator's pod) takes this process, not the operator
        Path("/proc/self/oom_score_adj").write_text("1000")
    except OSError:
        log.debug("oom_score_adj not writable here")


def _main(argv: list[str]) -> int:
    where, memory_bytes, seconds = argv[0], int(argv[1]), int(argv[2])
    _limit_self(memory_bytes, seconds)
    try:
        from controller.data.cifar import archive_to_npz

        out = archive_to_npz(sys.stdin.buffer.read(), where)
    except ConfigError as e:
        sys.stderr.write(f"{e}"[:MAX_MESSAGE].replace("\n", " ") + "\n")
        return EXIT_REFUSED
    except MemoryError:
        return EXIT_MEMORY
    sys.stdout.buffer.write(out)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
