"""Shared fixtures: a real HTTP S3 (moto's server on this machine's address, where pods reach it too) and stores on
both backends."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SEED_RESULTS = ROOT / "examples" / "seed-results"
sys.path.insert(0, str(ROOT / "scripts"))  # localkube: the local cluster's own helpers
PY = sys.executable
FIGURES_DIR = ROOT / ".reliability" / "runs"
# One id per test run, set by the first process (pytest-xdist's workers inherit it): figures of one run stay
# together, and the page generator takes a run only if its record says the whole suite passed.
RUN_ID = os.environ.setdefault("CIFAR_HPO_TEST_RUN", f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}")


def record_figure(name: str, figure: dict) -> None:
    """Keep a figure for RELIABILITY.md. Call it after the test's assertions: a failing test records nothing."""
    out = FIGURES_DIR / RUN_ID / "figures"
    out.mkdir(parents=True, exist_ok=True)
    slug = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
    test = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0]
    (out / f"{slug}.json").write_text(json.dumps({"name": name, "test": test, "recorded_at": time.time(),
                                                  "figure": figure}, indent=1, sort_keys=True))


def search_figure(trials: list[dict], budget: int, starts: dict[int, int], planted: tuple[int, ...] = (),
                  jobs: dict | None = None, **more) -> dict:
    """A search's raw counts for RELIABILITY.md, whose generator computes what was lost from them: each trial's
    state, the failures planted on purpose, how often each trial's program started (counted outside the program)
    and, on a cluster, the Jobs created (JobRecorder.figure())."""
    return {"budget": budget, "states": {str(t["tid"]): t["state"] for t in trials}, "planted": sorted(planted),
            "starts": {str(t): n for t, n in sorted(starts.items())}, "jobs": jobs, **more}


def local_starts(startlog: Path) -> dict[int, int]:
    """Trial program starts in local mode, from tests/startlog.sh's lines (each names the trial's folder)."""
    import re
    from collections import Counter

    lines = startlog.read_text().splitlines() if startlog.exists() else []
    return dict(Counter(int(m.group(1)) for line in lines if (m := re.search(r"trials/(\d{6})\b", line))))


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
    options = {k: getattr(option, k, None) for k in ("markexpr", "keyword", "deselect", "lf", "failedfirst",
                                                     "stepwise")}
    paths = [os.path.relpath(a.split("::")[0], ROOT) + ("::" if "::" in a else "") for a in session.config.args]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    (out / "run.json").write_text(json.dumps({
        "run_id": RUN_ID, "finished_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "exitstatus": int(exitstatus),
        "collected": session.testscollected, "failed": session.testsfailed, "options": options, "paths": paths,
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


def host_ip() -> str:
    """This machine's own address on its default route (the local cluster's node address): pods reach servers of
    the tests there, not on loopback. 127.0.0.1 where there is none."""
    from localkube.node import host_ip as node_ip

    return node_ip(fallback="127.0.0.1")


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


class Versitygw:
    """A second real S3 server (versitygw, posix backend) that checks every signature and refuses anonymous requests,
    as AWS does; moto accepts a request whatever its signature. Built by scripts/install-tools.sh."""

    def __init__(self, folder: Path):
        import socket

        binary = ROOT / ".tools" / "bin" / "versitygw"
        if not binary.exists():
            raise RuntimeError(f"{binary} is missing: run scripts/install-tools.sh")
        from localkube.cluster import free_port

        port = free_port()
        self.endpoint = f"http://{host_ip()}:{port}"
        self.keys = {"aws_access_key_id": "vgw-root-" + uuid.uuid4().hex[:8],
                     "aws_secret_access_key": uuid.uuid4().hex}
        (folder / "data").mkdir(parents=True)
        self.log = open(folder / "versitygw.log", "w")
        self.proc = subprocess.Popen(
            [str(binary), "--port", f"{host_ip()}:{port}", "posix", str(folder / "data")],
            env={**os.environ, "ROOT_ACCESS_KEY": self.keys["aws_access_key_id"],
                 "ROOT_SECRET_KEY": self.keys["aws_secret_access_key"]},
            stdout=self.log, stderr=subprocess.STDOUT)
        while True:  # ready when it answers; a server that exits fails at once
            if self.proc.poll() is not None:
                raise RuntimeError(f"versitygw exited {self.proc.returncode}: {(folder / 'versitygw.log').read_text()}")
            try:
                socket.create_connection((host_ip(), port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            config=Config(signature_version="s3v4"), **self.keys)

    def bucket(self) -> str:
        name = f"v-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


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


def run_cli(*args: str, env: dict[str, str] | None = None, check: bool = True,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([PY, "-m", "controller", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"controller {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def kube(tmp_path_factory):
    """The local cluster (real etcd, kube-apiserver, kube-controller-manager, kube-scheduler; a node run by the
    real kubelet with containerd). scripts/test.sh starts one for the whole run (CIFAR_HPO_KUBE_DIR), shared by the
    xdist workers; without it, a worker that needs one starts its own."""
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


@pytest.fixture
def release(kube, kube_ns, bucket, s3_endpoint, tmp_path):
    """The chart's RBAC, ConfigMaps and S3 Secret in a fresh namespace; the test runs the controller itself."""
    from clusterkit import Release

    return Release(kube, kube_ns, bucket, s3_endpoint, tmp_path)
