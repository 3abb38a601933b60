"""The real controller CLI, SIGKILLed by itself at a chosen point: CRASH_AT=<point>:<n> kills it on the
n-th time it reaches <point>, in local mode or on a cluster. Points: proposal (proposal.json written),
launch (about to start the trial's process or create its Job), collect (a trial ended, its result not read
yet), outcome (outcome.json written, the controller's state not yet updated), attempt (an interrupted attempt
recorded, the next one not started yet)."""

import os
import signal
import sys

# A program run as a script (sys.path[0] is tests/): it must run the checkout it sits in, not the controller installed
# in the environment, or a test run on a copy of the tree (scripts/mutations.py does) would run another one's code.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from controller import cli, loop
from controller.kube.launcher import KubernetesLauncher
from controller.launch.local import ProcessLauncher
from controller.ledger.trials import Ledger
from controller.loop import SearchLoop

point, _, nth = os.environ.get("CRASH_AT", ":0").partition(":")
calls = {"n": 0}


def crash_before(cls, name, after=False):
    original = getattr(cls, name)

    def wrapper(*args, **kwargs):
        if not after:
            _tick()
        out = original(*args, **kwargs)
        if after:
            _tick()
        return out

    setattr(cls, name, wrapper)


def _tick():
    calls["n"] += 1
    if calls["n"] == int(nth):
        os.kill(os.getpid(), signal.SIGKILL)


if point == "launch":
    crash_before(ProcessLauncher, "launch")
    crash_before(KubernetesLauncher, "launch")
elif point == "collect":
    crash_before(SearchLoop, "_collect")
elif point == "outcome":
    crash_before(Ledger, "write_outcome", after=True)
elif point == "proposal":
    crash_before(Ledger, "write_proposal", after=True)
elif point == "attempt":
    recorded = loop.record_attempt

    def record_then_crash(*args, **kwargs):
        out = recorded(*args, **kwargs)
        _tick()
        return out

    loop.record_attempt = record_then_crash

sys.exit(cli.main())
