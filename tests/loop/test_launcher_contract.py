"""The Launcher contract (tests/support/launcher_contract.py), held against every launcher: local processes, Jobs on
the real control plane, and the scripted launcher the in-process loop tests use (so what those tests assume is what
the real ones do).

Each trial is a small program that counts its runs and then waits for a gate file, so the test decides when
it ends, whatever the machine's speed.
"""

from __future__ import annotations

import pytest
from support.launcher_contract import LauncherContract, harness_of

pytestmark = pytest.mark.contract


class TestScriptedLauncher(LauncherContract):
    @pytest.fixture
    def harness(self, request):
        yield from harness_of("scripted", request)


class TestProcessLauncher(LauncherContract):
    @pytest.fixture
    def harness(self, request):
        yield from harness_of("process", request)


class TestKubernetesLauncher(LauncherContract):
    @pytest.fixture
    def harness(self, request):
        yield from harness_of("kubernetes", request)
