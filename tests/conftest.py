"""Shared fixtures: a real HTTP S3 (moto's server on 127.0.0.1) and stores on both backends."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SEED_RESULTS = ROOT / "examples" / "seed-results"
PY = sys.executable

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

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
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


@pytest.fixture
def bucket(s3_endpoint):
    import boto3

    name = f"t-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    """The same contract on every backend."""
    from controller.store import open_store

    if request.param == "local":
        return open_store(str(tmp_path / "store"))
    b = request.getfixturevalue("bucket")
    return open_store(f"s3://{b}/some/prefix")


@pytest.fixture
def fake_trial_config(tmp_path):
    """A config file whose trials run tests/objective.py (a fast stand-in for the trainer)."""

    def make(extra: str = "") -> Path:
        path = tmp_path / f"config-{uuid.uuid4().hex[:6]}.yaml"
        path.write_text(
            f"trial:\n  command: [{PY}, {ROOT / 'tests' / 'objective.py'}]\n"
            "local:\n  pollSeconds: 0.05\n" + extra
        )
        return path

    return make


def run_cli(*args: str, env: dict | None = None, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([PY, "-m", "controller", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"controller {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def kube(tmp_path_factory):
    """The local control plane (real etcd, kube-apiserver, kube-controller-manager, kube-scheduler; our process
    kubelet). scripts/test.sh starts one for the whole run (CIFAR_HPO_KUBE_DIR), shared by the xdist workers;
    without it, a worker that needs one starts its own."""
    from realkube import Kube, start_cluster

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
