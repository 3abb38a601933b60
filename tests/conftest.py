"""Shared fixtures and hooks: a real HTTP S3 (moto's server on this machine's address, where pods reach it too),
versitygw, buckets, the local cluster, a namespace and a release per test; every test in exactly one layer. Helpers:
tests/support/."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from support.figures import FIGURES_DIR, RUN_ID
from support.net import host_ip
from support.paths import PY, ROOT
from support.s3 import Versitygw

LAYERS = ("pure", "contract", "e2e")


def pytest_collection_modifyitems(config, items):
    """Every test is in exactly one layer (pyproject.toml describes them), so `pytest -m pure` is the whole fast
    layer and nothing falls between the layers."""
    wrong = [f"{item.nodeid}: {names or 'none'}" for item in items
             if len(names := sorted({m.name for m in item.iter_markers() if m.name in LAYERS})) != 1]
    if wrong:
        raise pytest.UsageError("tests need exactly one layer marker (pure, contract, e2e):\n  " + "\n  ".join(wrong))


def pytest_sessionfinish(session, exitstatus):
    if hasattr(session.config, "workerinput"):
        return  # a pytest-xdist worker: the controlling process writes the run's record
    out = FIGURES_DIR / RUN_ID
    if not out.exists():
        return  # no figure was recorded by this run
    option = session.config.option
    # What chose the tests: the page generator refuses a run that did (scripts/reliability_md.py: SELECTING).
    options = {k: getattr(option, k, None) for k in ("markexpr", "keyword", "deselect", "ignore", "ignore_glob", "lf",
                                                     "failedfirst", "stepwise")}
    # What ran: a skipped test is not a passed one (the generator refuses a run with any test that did not run).
    stats = session.config.pluginmanager.get_plugin("terminalreporter").stats
    outcomes = {k: len(stats.get(k, [])) for k in ("passed", "skipped", "xfailed", "xpassed", "error", "deselected")}
    failed_tests = sorted({r.nodeid for r in stats.get("failed", []) + stats.get("error", [])})
    paths = [os.path.relpath(a.split("::")[0], ROOT) + ("::" if "::" in a else "") for a in session.config.args]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    (out / "run.json").write_text(json.dumps({
        "run_id": RUN_ID, "finished_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "exitstatus": int(exitstatus),
        "collected": session.testscollected, "failed": session.testsfailed, "failed_tests": failed_tests,
        "outcomes": outcomes, "options": options,
        "paths": paths,
        "args": list(session.config.invocation_params.args), "commit": commit.stdout.strip() or None,
        "machine": f"{platform.node()}, {os.cpu_count()} cores",
    }, indent=1))

import logging  # noqa: E402

logging.getLogger("werkzeug").setLevel(logging.WARNING)

# Fake credentials: moto accepts any; real ones must never be needed by a test.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing-key-id")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing-secret")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.pop("AWS_PROFILE", None)


@pytest.fixture(scope="session")
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address=host_ip(), port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    old = os.environ.get("AWS_ENDPOINT_URL_S3")
    os.environ["AWS_ENDPOINT_URL_S3"] = url  # also reaches subprocesses (controller, trials)
    yield url
    if old is None:
        os.environ.pop("AWS_ENDPOINT_URL_S3", None)
    else:
        os.environ["AWS_ENDPOINT_URL_S3"] = old
    server.stop()


@pytest.fixture(scope="session")
def versitygw(tmp_path_factory):
    server = Versitygw(tmp_path_factory.mktemp("versitygw"))
    yield server
    server.stop()


@pytest.fixture
def bucket(s3_endpoint):
    import boto3

    name = f"t-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture(params=["memory", "local", "s3", "versitygw"])
def store(request, tmp_path):
    """The same contract on every backend (S3: moto's server, and versitygw's)."""
    from controller.store.local import MemoryStore
    from controller.store.s3 import S3Store
    from controller.store.uri import open_store

    if request.param == "memory":
        return MemoryStore("memory://some/prefix")
    if request.param == "local":
        return open_store(str(tmp_path / "store"))
    if request.param == "versitygw":
        vgw = request.getfixturevalue("versitygw")
        return S3Store(vgw.bucket(), "some/prefix", client=vgw.client())
    b = request.getfixturevalue("bucket")
    return open_store(f"s3://{b}/some/prefix")


@pytest.fixture
def fake_trial_config(tmp_path):
    """A config file whose trials run tests/objective.py (a fast stand-in for the trainer)."""

    def make(extra: str = "") -> Path:
        path = tmp_path / f"config-{uuid.uuid4().hex[:6]}.yaml"
        path.write_text(
            f"trial:\n  command: [sh, {ROOT / 'tests' / 'startlog.sh'}, {PY}, {ROOT / 'tests' / 'objective.py'}]\n"
            "  data: 'synthetic:200'\n"
            "local:\n  pollSeconds: 0.05\n" + extra
        )
        return path

    return make


@pytest.fixture(scope="session")
def kube(tmp_path_factory):
    """The local cluster (real etcd, kube-apiserver, kube-controller-manager, kube-scheduler; a node run by the
    real kubelet with containerd). scripts/test.sh starts one for the whole run (CIFAR_HPO_KUBE_DIR), shared by the
    xdist workers; without it, a worker that needs one starts its own."""
    from support.realkube import Kube, start_cluster

    shared = os.environ.get("CIFAR_HPO_KUBE_DIR")
    if shared:
        yield Kube(Path(shared))
        return
    state = tmp_path_factory.mktemp("localkube") / "cluster"
    proc = start_cluster(state)
    try:
        yield Kube(state)
    finally:
        proc.terminate()
        proc.wait(120)


@pytest.fixture
def kube_ns(kube):
    """A namespace of its own for each test, labelled for the restricted Pod Security Standard."""
    ns = kube.namespace()
    yield ns
    kube.delete_namespace(ns)


@pytest.fixture
def release(kube, kube_ns, bucket, s3_endpoint, tmp_path):
    """The chart's RBAC, ConfigMaps and S3 Secret in a fresh namespace; the test runs the controller itself."""
    from support.clusterkit import Release

    return Release(kube, kube_ns, bucket, s3_endpoint, tmp_path)
