"""P3: time from a trial's result landing (result.json written) to the next trial's Job being created, over a
50-trial run on the local cluster (real kube-apiserver, Job controller and scheduler; the real kubelet with
containerd runs the stand-in trial tests/objective.py from the test image), moto's S3 server as the store,
parallelism 1 so each Job answers one result. The Job's creation time is the controller's own log line (ms);
TPE's proposal time is shown apart."""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import boto3
import yaml
from common import ROOT, MotoServer, machine
from realkube import Kube, start_cluster

N = 50


def main() -> None:
    print(f"P3 result → next Job, {N} trials, local control plane + moto S3 — {machine()}")
    with MotoServer("node") as s3url, tempfile.TemporaryDirectory() as tmp:
        os.environ["AWS_ENDPOINT_URL_S3"] = s3url
        boto3.client("s3").create_bucket(Bucket="p3-bench")
        up = start_cluster(Path(tmp) / "cluster")
        try:
            kube = Kube(Path(tmp) / "cluster")
            ns = kube.namespace("p3")
            creds = {k: os.environ.setdefault(k, "bench") for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
            config = kube.install_rbac(ns, "p3", ["--set", "store.bucket=p3-bench", "--set", f"store.endpoint={s3url}",
                                                  "--set", "store.accessKeyId=x", "--set", "store.secretAccessKey=y"])
            kube.secret(ns, "p3-cifar-hpo-s3", creds)  # what the chart makes of store.accessKeyId/secretAccessKey
            config["search"].update(maxTrials=N, parallelism=1)
            config["trial"].update(command=["env", "FAKE_TRIAL_SLEEP=0.05", "python", "tests/objective.py"], epochs=1,
                                   data="synthetic:200")
            image = next(ref for ref in kube.info["images"] if "cifar-hpo-objective:" in ref)
            config["kube"].update(gpuCount=0, resyncSeconds=30, requests={"cpu": "100m"}, limits={}, image=image)
            cfg = Path(tmp) / "c.yaml"
            cfg.write_text(yaml.safe_dump(config))
            kc = kube.sa_kubeconfig(ns, "p3-cifar-hpo-controller", Path(tmp) / "kc")
            t0 = time.time()
            proc = subprocess.run([sys.executable, "-m", "controller", "run", "--config", str(cfg)], cwd=ROOT,
                                  env={**os.environ, "KUBECONFIG": str(kc)}, capture_output=True, text=True,
                                  timeout=1800)
            wall = time.time() - t0
            assert proc.returncode == 0, proc.stderr[-3000:]
        finally:
            up.terminate()
            up.wait(120)
        created = {}
        for line in proc.stderr.splitlines():
            m = re.match(r"(\S+ \S+) .*trial=(\d+) .*created Job", line)
            if m:
                created[int(m.group(2))] = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        s3 = boto3.client("s3")
        landed = {}
        for tid in range(N):
            key = f"searches/cifar100/trials/{tid:06d}/result.json"
            body = s3.get_object(Bucket="p3-bench", Key=key)["Body"].read()
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
