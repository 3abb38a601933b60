"""P3: time from a trial's result landing (result.json written) to the next trial's Job being created, over a
50-trial run on the local cluster (real kube-apiserver, Job controller and scheduler; the real kubelet with
containerd runs the stand-in trial tests/objective.py from the test image), moto's S3 server as the store,
parallelism 1 so each Job answers one result. The Job's creation time is the controller's own log line (ms);
TPE's proposal time is shown apart. Two controllers in one run, on the same cluster and store: the one of
--before (a git worktree of that commit) and this checkout's. CIFAR_HPO_KUBE_DIR: a running cluster to use."""

from __future__ import annotations

import argparse
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
from typing import Any

import boto3
import yaml
from common import ROOT, MotoServer, machine
from support.realkube import Kube, start_cluster

N = 50
BEFORE = "b5eeef6"  # the last commit before issue 27: a trial ended with its Job's Complete condition


def measure(kube: Kube, tmp: Path, s3url: str, code: Path, label: str) -> tuple[Any, ...]:
    """One 50-trial search with the controller of checkout `code`, in a namespace of its own: (result → next Job
    latencies, TPE proposal times, wall seconds, and where the controller logs seeing the container's exit: (landed →
    seen, seen → next Job) per trial)."""
    bucket = f"p3-{label}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    ns = kube.namespace(f"p3-{label}")
    creds = {k: os.environ.setdefault(k, "bench") for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    config = kube.install_rbac(ns, "p3", ["--set", f"store.bucket={bucket}", "--set", f"store.endpoint={s3url}",
                                          "--set", "store.accessKeyId=x", "--set", "store.secretAccessKey=y"])
    kube.secret(ns, "p3-cifar-hpo-s3", creds)  # what the chart makes of store.accessKeyId/secretAccessKey
    config["search"].update(maxTrials=N, parallelism=1)
    config["trial"].update(command=["env", "FAKE_TRIAL_SLEEP=0.05", "python", "tests/objective.py"], epochs=1,
                           data="synthetic:200")
    image = next(ref for ref in kube.info["images"] if "cifar-hpo-objective:" in ref)
    config["kube"].update(gpuCount=0, resyncSeconds=30, requests={"cpu": "100m"}, limits={}, image=image)
    cfg = tmp / f"{label}.yaml"
    cfg.write_text(yaml.safe_dump(config))
    kc = kube.sa_kubeconfig(ns, "p3-cifar-hpo-controller", tmp / f"{label}.kc")
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "controller", "run", "--config", str(cfg)], cwd=code,
                          env={**os.environ, "KUBECONFIG": str(kc), "PYTHONPATH": str(code)}, capture_output=True,
                          text=True, timeout=1800)
    wall = time.time() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    kube.delete_namespace(ns)
    created, seen = {}, {}
    for line in proc.stderr.splitlines():
        m = re.match(r"(\S+ \S+) .*trial=(\d+) .*(created Job|its container exited 0)", line)
        if m:
            at = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            (created if m.group(3) == "created Job" else seen)[int(m.group(2))] = at
    s3 = boto3.client("s3")
    landed = {}
    for tid in range(N):
        body = s3.get_object(Bucket=bucket, Key=f"searches/cifar100/trials/{tid:06d}/result.json")["Body"].read()
        landed[tid] = json.loads(body)["finished_at"]
    proposals = [float(x) for x in re.findall(r"proposed 1 trial\(s\) in ([\d.]+) s", proc.stderr)]
    split = [(seen[t] - landed[t], created[t + 1] - seen[t]) for t in range(N - 1) if t in seen]
    # The first proposal answers no result.
    return [created[t + 1] - landed[t] for t in range(N - 1)], proposals[1:], wall, split


def p95(xs: list[float]) -> float:
    return sorted(xs)[int(0.95 * (len(xs) - 1))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", default=BEFORE, help="the commit whose controller is measured first")
    args = ap.parse_args()
    print(f"P3 result → next Job, {N} trials, local control plane + moto S3 — {machine()}")
    with MotoServer("node") as s3url, tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        os.environ["AWS_ENDPOINT_URL_S3"] = s3url
        before = tmp / "before"
        subprocess.run(["git", "worktree", "add", "--detach", str(before), args.before], cwd=ROOT, check=True,
                       capture_output=True)
        given = os.environ.get("CIFAR_HPO_KUBE_DIR")
        up = None if given else start_cluster(tmp / "cluster")
        try:
            kube = Kube(Path(given) if given else tmp / "cluster")
            runs = [(f"before ({args.before[:7]}: waits for the Job's Complete)", measure(kube, tmp, s3url, before,
                                                                                        "before")),
                    ("after (ends at the container's exit 0)", measure(kube, tmp, s3url, ROOT, "after"))]
        finally:
            if up is not None:
                up.terminate()
                up.wait(120)
            subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=ROOT, check=False)
    for name, (lat, prop, wall, split) in runs:
        rest = [a - b for a, b in zip(lat, prop)]
        print(f"\n{name}: whole run {wall:.1f} s for {N} trials")
        print(f"{'':<40} {'median s':>9} {'p95 s':>7}")
        rows = [("result landed → next Job created", lat), ("  of which TPE proposal", prop),
                ("  the rest (watch, collect, create)", rest)]
        if split:
            rows += [("  landed → the exit seen (kubelet, watch)", [a for a, _ in split]),
                     ("  exit seen → next Job (controller)", [b for _, b in split])]
        for what, xs in rows:
            print(f"{what:<40} {statistics.median(xs):>9.3f} {p95(xs):>7.3f}")


if __name__ == "__main__":
    main()
