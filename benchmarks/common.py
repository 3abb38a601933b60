"""Helpers shared by the benchmark scripts (not imported by the product)."""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEED_RESULTS = ROOT / "examples" / "seed-results"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # support: the tests' helpers
sys.path.insert(0, str(ROOT / "scripts"))  # localkube, which support.realkube starts


def best_seed_point() -> dict:
    """The decoded point of the original project's best result (by its accuracy, not its file name)."""
    docs = [json.loads(f.read_text()) for f in SEED_RESULTS.glob("*.json")]
    return max(docs, key=lambda d: d["fine_best_accuracy"])["space"]


def machine() -> str:
    cpu = "unknown cpu"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{platform.node()}: {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}, "
            f"{time.strftime('%Y-%m-%d')}")


def random_history(n: int, seed: int = 0):
    """n finished observations of random points of the seed space, scored by the synthetic objective."""
    import numpy as np
    from hyperopt.pyll import stochastic
    from objective import synthetic_objective

    from controller.search.space import Space
    from controller.search.suggest import Observation, Proposal

    space = Space.default()
    rng = np.random.default_rng(seed)
    props = []
    for tid in range(n):
        params = stochastic.sample(space.hyperopt, rng=rng)
        props.append(Proposal(tid, params, space.encode(params), tid, "random"))
    return space, [Observation(p.tid, p.vals, -synthetic_objective(p.params)) for p in props], props


class MotoServer:
    """moto's S3 server as its own process (so it does not share the client's GIL). host: "node" for this machine's
    own address, where the local cluster's pods reach it."""

    def __init__(self, host: str = "127.0.0.1", record: Path | None = None):
        """record: the server appends every request it serves there (moto's recorder), for S3Counts."""
        if host == "node":
            from support.net import host_ip

            host = host_ip()
        self.host = host
        self.record = record

    def __enter__(self) -> str:
        s = socket.socket()
        s.bind((self.host, 0))
        port = s.getsockname()[1]
        s.close()
        env = dict(os.environ)
        if self.record is not None:
            env.update(MOTO_ENABLE_RECORDING="true", MOTO_RECORDER_FILEPATH=str(self.record))
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        url = f"http://{self.host}:{port}"
        for _ in range(100):
            try:
                socket.create_connection((self.host, port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        return url

    def __exit__(self, *exc) -> None:
        self.proc.kill()
        self.proc.wait()


def s3_operation(entry: dict) -> str:
    """The S3 operation of one request moto recorded: GET (object), LIST, HEAD, PUT, DELETE, ... by method and
    query."""
    from urllib.parse import parse_qs, urlparse

    url = urlparse(entry["url"])
    query = parse_qs(url.query)
    key = url.path.strip("/").partition("/")[2]
    if entry["method"] == "GET" and ("list-type" in query or not key):
        return "LIST"
    if entry["method"] == "POST" and "delete" in query:
        return "DELETE (batch)"
    return f"{entry['method']} object"


class RecordCursor:
    """Reads a file of JSON records (moto's recording, the API server's audit log) from where it was last read.
    Records, not lines: moto's threads write a record and its newline in two writes, so two records can share a
    line; each record is one write, so a record is whole once its last byte is there."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            text = f.read().decode()
        out, pos, decoder = [], 0, json.JSONDecoder()
        while True:
            while pos < len(text) and text[pos].isspace():
                pos += 1
            try:
                record, end = decoder.raw_decode(text, pos)
            except json.JSONDecodeError:
                break  # the end, or a record still being written: read next time
            out.append(record)
            pos = end
        self.offset += len(text[:pos].encode())
        return out
