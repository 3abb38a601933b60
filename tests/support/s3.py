"""versitygw: the S3 server of the tests that checks signatures (moto's, the other, accepts any)."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

from support.net import host_ip
from support.paths import ROOT


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


