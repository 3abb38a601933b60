"""P6: a trial's fixed start-up cost, per phase, as the trainer records it in result.json (`startup`): interpreter
and imports, dataset read, model build, first training step (tracing/compilation and the step itself). The second
step's duration (from the trainer's log) is the steady step; the fixed cost is the total minus one steady step.

Data: a CIFAR-sized generated dataset (50,000 + 10,000 images) in moto's S3, read two ways in the same run:
before — the standard cifar-100-python.tar.gz, fetched and unpickled by each trial (what trials did until
2026-11-28); after — the uint8 arrays the controller stages once per store (controller/data/staging.py), which trials
now read. One run of each, the seed's best point and a small point."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import boto3
from common import ROOT, MotoServer, best_seed_point, machine

BEST = best_seed_point()
SMALL = {**BEST, "nb_conv_pool_layers": 2, "residual": None, "conv_hiddn_units_mult": 0.6, "fc_units_1_mult": 0.6,
         "first_conv": None, "pooling_type": "max"}
LINE = re.compile(r"(first|second) training step done \(([\d.]+) s after the trainer started\)")
PHASES = ("interpreter_and_imports_s", "data_read_s", "model_build_s", "first_step_s")


def once(params: dict, data: str) -> tuple[dict, float]:
    """(the trainer's startup phases, the steady step's seconds)."""
    with tempfile.TemporaryDirectory() as d:
        Path(d, "proposal.json").write_text(json.dumps({"schema_version": 1, "tid": 0, "params": params}))
        proc = subprocess.Popen([sys.executable, "-m", "trainer", "--trial", d, "--data", data, "--epochs", "1"],
                                cwd=ROOT, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        first = None
        for line in proc.stderr:
            m = LINE.search(line)
            if m and m.group(1) == "first":
                first = float(m.group(2))
            elif m:
                # A stop the "controller" asked for, so that the trainer writes its result with the phases.
                Path(d, "stop.json").write_text(json.dumps({"schema_version": 1, "tid": 0, "reason": "P6"}))
                proc.send_signal(signal.SIGTERM)
                proc.communicate()
                result = json.loads(Path(d, "result.json").read_text())
                return result["startup"], float(m.group(2)) - first
        raise RuntimeError(f"the trainer ended without a second step (exit {proc.wait()})")


def main() -> None:
    from controller.data.cifar import synthetic, write_archive
    from controller.data.staging import stage
    from controller.store.uri import open_store

    print(f"P6 trial start-up per phase, data in moto S3, before (archive) / after (staged arrays) — {machine()}")
    with MotoServer() as s3url, tempfile.TemporaryDirectory() as tmp:
        os.environ["AWS_ENDPOINT_URL_S3"] = s3url
        boto3.client("s3").create_bucket(Bucket="p6-bench")
        ds = synthetic(50_000, seed=6)
        archive = Path(tmp) / "cifar-100-python.tar.gz"
        write_archive(archive, ds.train, ds.test)
        boto3.client("s3").upload_file(str(archive), "p6-bench", "cifar-100-python.tar.gz")
        staged = stage("s3://p6-bench/cifar-100-python.tar.gz", None, open_store("s3://p6-bench/runs"))
        print(f"archive {archive.stat().st_size / 1e6:.0f} MB; staged arrays at {staged.uri}")
        print(f"{'point':<20} {'data':<7} {'imports s':>9} {'data s':>7} {'build s':>8} {'1st step s':>10} "
              f"{'steady s':>9} {'fixed s':>8}")
        for name, params in (("small (2 blocks)", SMALL), ("seed's best (7.06 M)", BEST)):
            for way, data in (("before", "s3://p6-bench/cifar-100-python.tar.gz"), ("after", staged.uri)):
                phases, steady = once(params, data)
                total = sum(phases[k] for k in PHASES)
                print(f"{name:<20} {way:<7} {phases['interpreter_and_imports_s']:>9.2f} {phases['data_read_s']:>7.2f} "
                      f"{phases['model_build_s']:>8.2f} {phases['first_step_s']:>10.2f} {steady:>9.2f} "
                      f"{total - steady:>8.2f}")
                sys.stdout.flush()


if __name__ == "__main__":
    main()
