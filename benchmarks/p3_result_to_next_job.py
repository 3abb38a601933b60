"""P3: time from a trial's result landing (result.json written) to the next trial's Job being created,
over a 50-trial run against the fake cluster (tests/fakekube.py: real client over HTTP, every body
schema-validated), moto's S3 server as the store, parallelism 1 so each Job answers one result. TPE's
proposal time (from the controller's log) is shown apart."""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
import yaml
from common import ROOT, MotoServer, machine
from fakekube import FakeApiServer, Kubelet

N = 50


def main() -> None:
    print(f"P3 result → next Job, {N} trials, fake cluster + moto S3 — {machine()}")
    with MotoServer() as s3url, tempfile.TemporaryDirectory() as tmp:
        os.environ["AWS_ENDPOINT_URL_S3"] = s3url
        boto3.client("s3").create_bucket(Bucket="p3-bench")
        with FakeApiServer() as api, Kubelet(api.cluster, Path(tmp), base_env={**os.environ, "FAKE_TRIAL_SLEEP": "0.05"}):
            api.cluster.put("configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "data": {},
                                           "metadata": {"name": "p3-search", "namespace": "default", "uid": "u1"}},
                            "ADDED")
            cfg = Path(tmp) / "c.yaml"
            cfg.write_text(yaml.safe_dump({
                "store": {"uri": "s3://p3-bench/s"}, "search": {"maxTrials": N, "parallelism": 1},
                "trial": {"command": ["python", "tests/objective.py"], "epochs": 1},
                "kube": {"release": "p3", "ownerConfigMap": "p3-search", "statusConfigMap": "p3-status",
                         "leaseName": "p3-lease", "resyncSeconds": 30}}))
            t0 = time.time()
            proc = subprocess.run([sys.executable, "-m", "controller", "run", "--config", str(cfg)], cwd=ROOT,
                                  env={**os.environ, "KUBECONFIG": str(api.kubeconfig(Path(tmp) / "kc"))},
                                  capture_output=True, text=True, timeout=1800)
            wall = time.time() - t0
            assert proc.returncode == 0, proc.stderr[-3000:]
            created = {int(name.rsplit("-t", 1)[1]): t for plural, name, t in api.cluster.created if plural == "jobs"}
        s3 = boto3.client("s3")
        landed = {}
        for tid in range(N):
            body = s3.get_object(Bucket="p3-bench", Key=f"s/cifar100/trials/{tid:06d}/result.json")["Body"].read()
            landed[tid] = json.loads(body)["finished_at"]
    proposals = [float(x) for x in re.findall(r"proposed 1 trial\(s\) in ([\d.]+) s", proc.stderr)]
    lat = [created[t + 1] - landed[t] for t in range(N - 1)]
    prop = proposals[1:]  # the first proposal answers no result
    rest = [a - b for a, b in zip(lat, prop)]

    def p95(xs: list[float]) -> float:
        return sorted(xs)[int(0.95 * (len(xs) - 1))]

    print(f"{'':<34} {'median s':>9} {'p95 s':>7}")
    for name, xs in (("result landed → next Job created", lat), ("  of which TPE proposal", prop),
                     ("  the rest (watch, collect, create)", rest)):
        print(f"{name:<34} {statistics.median(xs):>9.3f} {p95(xs):>7.3f}")
    print(f"whole run: {wall:.1f} s for {N} trials")


if __name__ == "__main__":
    main()
