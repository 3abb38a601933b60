"""P9: what one operator costs as its Searches grow. On the local cluster (real kube-apiserver, Job controller,
scheduler, the real kubelet with containerd running the stand-in trial of the test image), moto's S3 server as the
store, one `controller operator` process (the chart's ServiceAccount and Role) with its default reportSeconds.

Phases add Searches (--searches 1,10,50: 1, then 10 more, then 50 more; the finished ones stay, as they do on a
cluster) of --trials trials each, parallelism --parallelism. Per phase: API requests per trial by verb and resource,
counted by the API server (its audit log: the operator's ServiceAccount only); S3 requests per trial by operation,
counted by the S3 server (moto's recorder: the operator's own requests apart from the trials' presigned ones);
operator CPU-seconds per trial (/proc); the operator's RSS and threads after the phase, against the Searches it
holds; result landed → next Job created, p50/p95 (the k-th result of a Search frees the slot the
(k+parallelism)-th Job fills), and the operator's own part of it (from its log line on seeing the container's
exit). Last, --resume Searches whose trials wait at a gate: the operator is killed -9 and a new one started;
the time until it has rebuilt every Search's state and adopted every running Job.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import boto3
import yaml
from common import ROOT, MotoServer, RecordCursor, machine, s3_operation
from support.realkube import Kube, start_cluster

BUCKET = "p9-bench"
CRD = ROOT / "charts" / "crds" / "searches.cifar-hpo.io.yaml"
TERMINAL = {"succeeded", "failed", "goal_reached"}
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


class Sampler:
    """The operator's RSS and threads, read from /proc once a second: the peak and the last."""

    def __init__(self, pid: int):
        self.pid = pid
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def read(self) -> tuple[int, int]:
        """(RSS MB, threads) now."""
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{self.pid}/status").read_text().splitlines())
        return int(fields["VmRSS"].split()[0]) // 1024, int(fields["Threads"])

    def cpu(self) -> float:
        stat = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.peak_rss = max(self.peak_rss, self.read()[0])
            except (OSError, KeyError):
                return

    def stop(self) -> None:
        self._stop.set()


def until(what: str, predicate, proc: subprocess.Popen, timeout: float = 7200) -> None:
    """Check every second (each check lists Searches or reads a log: not 20 times a second on a busy node)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"waiting for {what}: the operator exited ({proc.returncode})")
        if time.monotonic() > deadline:
            raise AssertionError(f"waiting for {what}: not reached in {timeout:.0f} s")
        time.sleep(1.0)


def search_doc(name: str, trials: int, parallelism: int, work: Path, gate: Path | None = None) -> dict:
    from support.clusterkit import trial_env

    env = {"FAKE_TRIAL_SLEEP": "0.05", **({"FAKE_TRIAL_GATE": str(gate)} if gate else {})}
    return {"apiVersion": "cifar-hpo.io/v1alpha1", "kind": "Search", "metadata": {"name": name},
            "spec": {"search": {"maxTrials": trials, "parallelism": parallelism, "seed": 1, "maxFailedTrials": 3},
                     "trial": {"command": ["env", *trial_env(env, work), "python", "tests/objective.py"],
                               "epochs": 1}}}


def apply(kube: Kube, ns: str, docs: list[dict], path: Path) -> None:
    path.write_text(yaml.safe_dump_all(docs))
    kube.kubectl("apply", "-n", ns, "-f", str(path))


def states(kube: Kube, ns: str) -> dict[str, str]:
    from kubernetes import client

    items = client.CustomObjectsApi(kube.api).list_namespaced_custom_object("cifar-hpo.io", "v1alpha1", ns,
                                                                            "searches")["items"]
    return {i["metadata"]["name"]: ((i.get("status") or {}).get("state") or "").lower() for i in items}


def ended(kube: Kube, ns: str, names: list[str]) -> bool:
    now = states(kube, ns)
    return all(now.get(name) in TERMINAL for name in names)


def log_times(log: Path, pattern: str) -> list[tuple[float, re.Match]]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        t, m = LOG_TIME.match(line), re.search(pattern, line)
        if t and m:
            out.append((datetime.strptime(t.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp(), m))
    return out


def p3(log: Path, names: list[str], parallelism: int) -> tuple[list[float], list[float], list[float]]:
    """result landed → the Job its freed slot got, for every result of these Searches that freed a slot; and its two
    parts: landed → the operator saw the container's exit (the kubelet, the watch), seen → that Job (the operator)."""
    created: dict[str, list[float]] = {n: [] for n in names}
    for t, m in log_times(log, r"created Job (\S+)-t\d+"):
        if m.group(1) in created:
            created[m.group(1)].append(t)
    seen: dict[str, dict[int, float]] = {n: {} for n in names}
    for t, m in log_times(log, r"trial (\d+): its container exited 0 \(pod (\S+)-t\d+-\w+\)"):
        if m.group(2) in seen:
            seen[m.group(2)][int(m.group(1))] = t
    s3 = boto3.client("s3")
    total, kubelet, operator = [], [], []
    for name in names:
        landed = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"searches/{name}/trials/"):
            for o in page.get("Contents", []):
                if o["Key"].endswith("/result.json"):
                    doc = json.loads(s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read())
                    landed[doc["tid"]] = doc["finished_at"]
        jobs = sorted(created[name])
        total += [jobs[k + parallelism] - t for k, t in enumerate(sorted(landed.values()))
                  if k + parallelism < len(jobs)]
        kubelet += [seen[name][tid] - t for tid, t in landed.items() if tid in seen[name]]
        operator += [jobs[k + parallelism] - t for k, t in enumerate(sorted(seen[name].values()))
                     if k + parallelism < len(jobs)]
    return total, kubelet, operator


def pct(xs: list[float], q: float) -> float:
    return sorted(xs)[int(q * (len(xs) - 1))] if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--searches", default="1,10,50", help="Searches added by each phase")
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--parallelism", type=int, default=2)
    ap.add_argument("--resume", type=int, default=50, help="running Searches a restarted operator picks up (0: skip)")
    ap.add_argument("--operator-commit", help="run the operator of this commit (a git worktree), not this checkout's")
    args = ap.parse_args()
    phases = [int(n) for n in args.searches.split(",")]
    print(f"P9 operator scale: phases {phases} Searches × {args.trials} trials, parallelism {args.parallelism}; "
          f"resume of {args.resume}; operator of {args.operator_commit or 'this checkout'} — {machine()}")
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        args.code = ROOT
        if args.operator_commit:
            args.code = tmp / "operator-code"
            subprocess.run(["git", "worktree", "add", "--detach", str(args.code), args.operator_commit], cwd=ROOT,
                           check=True, capture_output=True)
        recording = tmp / "s3-requests.jsonl"
        with MotoServer("node", record=recording) as s3url:
            os.environ["AWS_ENDPOINT_URL_S3"] = s3url
            boto3.client("s3").create_bucket(Bucket=BUCKET)
            given = os.environ.get("CIFAR_HPO_KUBE_DIR")
            up = None if given else start_cluster(tmp / "cluster")
            try:
                run(Kube(Path(given) if given else tmp / "cluster"), tmp, recording, phases, args)
            finally:
                if up is not None:
                    up.terminate()
                    up.wait(120)
                if args.operator_commit:
                    subprocess.run(["git", "worktree", "remove", "--force", str(args.code)], cwd=ROOT, check=False)


def run(kube: Kube, tmp: Path, recording: Path, phases: list[int], args: argparse.Namespace) -> None:
    from support.clusterkit import Release  # reads the store's credentials, which MotoServer set

    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    ns = kube.namespace("p9")
    release = Release(kube, ns, BUCKET, os.environ["AWS_ENDPOINT_URL_S3"], tmp)
    work = release.share()
    cfg = release.config_file(kube={"resyncSeconds": 30}, policy={"allowCustomCommand": True},
                              controller={"metricsPort": 0})
    who = f"system:serviceaccount:{ns}:{release.full}-controller"
    audit = RecordCursor(kube.dir / "logs" / "audit.log")
    s3_log = RecordCursor(recording)
    log = tmp / "operator.log"
    op = release.operator(cfg, log=log, code=args.code)
    until("the operator to watch Searches", lambda: log_times(log, r"operator: watching Searches"), op)
    sampler = Sampler(op.pid)
    rows = []
    total = 0
    try:
        for i, n in enumerate(phases):
            names = [f"p{i}-{k}" for k in range(n)]
            audit.read(), s3_log.read()
            cpu0, t0 = sampler.cpu(), time.time()
            sampler.peak_rss = 0
            apply(kube, ns, [search_doc(name, args.trials, args.parallelism, work) for name in names],
                  tmp / f"phase{i}.yaml")
            until(f"phase {i}'s {n} Searches to end", lambda names=names: ended(kube, ns, names), op)
            wall, cpu = time.time() - t0, sampler.cpu() - cpu0
            total += n
            api = Counter((e["verb"], e["objectRef"]["resource"] + ("/" + e["objectRef"]["subresource"]
                                                                      if e["objectRef"].get("subresource") else ""))
                          for e in audit.read() if e["user"]["username"] == who)
            served = s3_log.read()
            ours = Counter(s3_operation(e) for e in served if "authorization" in {h.lower() for h in e["headers"]})
            trials_s3 = len(served) - sum(ours.values())
            lat, kubelet, operator = p3(log, names, args.parallelism)
            s3_log.read()  # the benchmark's own reads of the results
            rss, threads = sampler.read()
            rows.append({"searches": n, "held": total, "trials": n * args.trials, "wall": wall, "cpu": cpu,
                         "rss": rss, "peak": max(rss, sampler.peak_rss), "threads": threads, "api": api, "s3": ours,
                         "trial_s3": trials_s3, "p50": pct(lat, 0.5), "p95": pct(lat, 0.95),
                         "kubelet": (pct(kubelet, 0.5), pct(kubelet, 0.95)),
                         "operator": (pct(operator, 0.5), pct(operator, 0.95))})
            print_row(rows[-1])
        if args.resume:
            resume(kube, ns, release, work, tmp, args, op, log, cfg)
            op = None
    finally:
        sampler.stop()
        if op is not None:
            op.send_signal(signal.SIGTERM)
            op.wait(120)
        kube.delete_namespace(ns)
    print_table(rows)


def resume(kube: Kube, ns: str, release, work: Path, tmp: Path, args: argparse.Namespace,
           op: subprocess.Popen, log: Path, cfg: Path) -> None:
    """--resume Searches of 2 trials at parallelism 1, each trial held at a gate; kill -9 the operator once every
    one has its Job; time a new operator until it has rebuilt each one's state and adopted each Job."""
    gate = work / "gate-resume"
    gate.mkdir()
    names = [f"r-{k}" for k in range(args.resume)]
    apply(kube, ns, [search_doc(name, 2, 1, work, gate) for name in names], tmp / "resume.yaml")
    wanted = {f"{name}-t0" for name in names}
    until(f"{args.resume} Jobs", lambda: wanted <= {j["metadata"]["name"] for j in kube.jobs(ns)}, op)
    op.send_signal(signal.SIGKILL)
    op.wait()
    log2 = tmp / "operator-2.log"
    t0 = time.time()
    op2 = release.operator(cfg, log=log2, code=args.code)
    try:
        until("every Search's state rebuilt and its Job adopted",
              lambda: {m.group(1) for _, m in log_times(log2, r"Search \S+/(\S+): starting")} >= set(names)
              and len(log_times(log2, r"trial 0: adopted Job r-\d+-t0")) >= len(names), op2)
        watching = log_times(log2, r"operator: watching Searches")[0][0]
        started = [t for t, m in log_times(log2, r"Search \S+/(\S+): starting")]
        rebuilt = [t for t, m in log_times(log2, r"search (r-\S+): \d+ trials on record")]
        adopted = [t for t, m in log_times(log2, r"trial 0: adopted Job r-\d+-t0")]
        print(f"\nresumed operator (killed -9, a new process started): it watched Searches after "
              f"{watching - t0:.1f} s; all {len(started)} Searches it holds ({args.resume} running) started "
              f"{max(started) - t0:.1f} s; the running ones' state rebuilt {max(rebuilt) - t0:.1f} s and every running "
              f"Job adopted {max(adopted) - t0:.1f} s after the start (median Job adopted at "
              f"{statistics.median(adopted) - t0:.1f} s)")
        (gate / "all").touch()
        until("the resumed Searches to end", lambda: ended(kube, ns, names), op2)
    finally:
        op2.send_signal(signal.SIGTERM)
        op2.wait(120)


def print_row(r: dict) -> None:
    n = r["trials"]
    print(f"\n+{r['searches']} Searches ({r['held']} held), {n} trials: {r['wall']:.0f} s; operator "
          f"{r['cpu'] / n:.2f} CPU-s/trial; RSS {r['rss']} MB after (peak {r['peak']}), {r['threads']} threads; "
          f"result → next Job p50 {r['p50']:.3f} s, p95 {r['p95']:.3f} s (landed → exit seen p50/p95 "
          f"{r['kubelet'][0]:.3f}/{r['kubelet'][1]:.3f} s; exit seen → next Job {r['operator'][0]:.3f}/"
          f"{r['operator'][1]:.3f} s)")
    print("  API requests per trial: " + ", ".join(f"{v} {res} {c / n:.2f}" for (v, res), c in sorted(
        r["api"].items(), key=lambda kv: -kv[1])))
    print("  S3 requests per trial (operator): " + ", ".join(f"{op} {c / n:.2f}" for op, c in sorted(
        r["s3"].items(), key=lambda kv: -kv[1])) + f"; trials' own (presigned): {r['trial_s3'] / n:.2f}")


def print_table(rows: list[dict]) -> None:
    print(f"\n{'+Searches':>9} {'held':>5} {'trials':>6} {'wall s':>7} {'API/trial':>9} {'S3/trial':>8} "
          f"{'CPU-s/trial':>11} {'RSS MB':>7} {'peak MB':>7} {'threads':>7} {'P3 p50':>7} {'P3 p95':>7} "
          f"{'op. p50':>7} {'op. p95':>7}")
    for r in rows:
        n = r["trials"]
        print(f"{r['searches']:>9} {r['held']:>5} {n:>6} {r['wall']:>7.0f} {sum(r['api'].values()) / n:>9.1f} "
              f"{sum(r['s3'].values()) / n:>8.1f} {r['cpu'] / n:>11.2f} {r['rss']:>7} {r['peak']:>7} "
              f"{r['threads']:>7} {r['p50']:>7.3f} {r['p95']:>7.3f} {r['operator'][0]:>7.3f} {r['operator'][1]:>7.3f}")


if __name__ == "__main__":
    main()
