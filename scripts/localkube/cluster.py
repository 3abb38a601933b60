"""Start etcd, kube-apiserver, kube-controller-manager and kube-scheduler (the apiserver also on the node's
address, which it advertises) and write an admin kubeconfig. Every component is the real binary; flags follow
envtest's defaults plus what a Job-running cluster needs (RBAC, Pod Security admission, ServiceAccount tokens)."""

from __future__ import annotations

import logging
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from localkube.pki import make_pki

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
CONTROLLERS = ",".join([
    "job-controller", "deployment-controller", "replicaset-controller", "garbage-collector-controller",
    "ttl-after-finished-controller", "serviceaccount-controller", "serviceaccount-token-controller",
    "namespace-controller", "root-ca-certificate-publisher-controller", "pod-garbage-collector-controller",
    "persistentvolume-binder-controller",
    # A deleted claim keeps its protection finalizer until this removes it: without it a namespace with a claim
    # stays Terminating for good (the tests' shared dataset claim; P9's).
    "persistentvolumeclaim-protection-controller", "persistentvolume-protection-controller",
])


_GIVEN: set[int] = set()


def free_port() -> int:
    """A port for a server that binds it itself, later. Port 0 would hand out one of the kernel's ephemeral range,
    which any outgoing connection may take before that server binds it: so a random port between 20000 (past
    Kubernetes' own 10250-10259) and the start of the ephemeral range, checked free on every address."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            ephemeral = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral = 32768
    rng = secrets.SystemRandom()
    for _ in range(200):
        port = rng.randrange(20000, max(ephemeral, 20001))
        if port in _GIVEN:  # free still, but promised to a server of ours that has not bound it yet
            continue
        with socket.socket() as s:
            try:
                s.bind(("", port))
            except OSError:
                continue
            _GIVEN.add(port)
            return port
    raise RuntimeError(f"no free port between 20000 and {ephemeral}")


def terminate(proc: subprocess.Popen | None, grace: float) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; nothing if it has already ended."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def kubeconfig_doc(server: str, ca: Path, user: str, creds: dict[str, str]) -> dict[str, Any]:
    """A kubeconfig with one cluster, one user (creds: a token or a client certificate and key) and its context."""
    return {"apiVersion": "v1", "kind": "Config", "current-context": "local",
            "clusters": [{"name": "local", "cluster": {"server": server, "certificate-authority": str(ca)}}],
            "users": [{"name": user, "user": creds}],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": user}}]}


def binaries() -> Path:
    """The pinned binaries, built from source the first time (scripts/build-kube.sh)."""
    out = subprocess.run([str(ROOT / "scripts" / "build-kube.sh")], check=True, stdout=subprocess.PIPE, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


@dataclass
class ControlPlane:
    """The running components. `dir` holds pki/, etcd/, logs/ and kubeconfig."""

    dir: Path
    bin: Path
    # A real node's address: the apiserver then also listens there and advertises it, so that the `kubernetes`
    # Service gets an endpoint pods can reach (it refuses a loopback one). Empty: loopback only.
    node_ip: str = ""
    api_port: int = 0
    admin_token: str = ""
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    # -- start ----------------------------------------------------------------------------------------
    def start(self, ready_timeout: float = 300.0) -> None:
        pki, logs = self.dir / "pki", self.dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        make_pki(pki)
        self.admin_token = secrets.token_hex(16)
        (pki / "tokens.csv").write_text(f'{self.admin_token},admin,admin-uid,"system:masters"\n')
        self.api_port = free_port()
        self.kubeconfig.write_text(yaml.safe_dump(kubeconfig_doc(self.server, pki / "ca.crt", "admin",
                                                                 {"token": self.admin_token})))
        self.kubeconfig.chmod(0o600)
        etcd_port, peer_port = free_port(), free_port()
        self._spawn("etcd", [
            "--name=local", f"--data-dir={self.dir / 'etcd'}", f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
            f"--advertise-client-urls=http://127.0.0.1:{etcd_port}", f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-cluster=local=http://127.0.0.1:{peer_port}", "--unsafe-no-fsync", "--log-level=warn",
            "--listen-metrics-urls=", "--quota-backend-bytes=4294967296"])
        self._spawn("kube-apiserver", [
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            f"--bind-address={'0.0.0.0' if self.node_ip else '127.0.0.1'}",
            f"--advertise-address={self.node_ip or '127.0.0.1'}",
            f"--secure-port={self.api_port}", f"--tls-cert-file={pki / 'serving.crt'}",
            f"--tls-private-key-file={pki / 'serving.key'}", f"--client-ca-file={pki / 'ca.crt'}",
            f"--token-auth-file={pki / 'tokens.csv'}", "--authorization-mode=Node,RBAC",
            f"--service-account-issuer=https://127.0.0.1:{self.api_port}",
            f"--service-account-key-file={pki / 'sa.pub'}", f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-cluster-ip-range=10.0.0.0/24", "--allow-privileged=true",
            "--kubelet-preferred-address-types=InternalIP",
            f"--kubelet-client-certificate={pki / 'kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'kubelet-client.key'}",
            # Watches of a Job history get a 410 when etcd compacts; often enough to be met in tests.
            "--etcd-compaction-interval=1m", "--profiling=false", "--v=1",
            # What service accounts (the controller's, the operator's) ask, counted by the server: logs/audit.log.
            f"--audit-policy-file={self._audit_policy()}", f"--audit-log-path={logs / 'audit.log'}",
            "--audit-log-format=json", "--audit-log-maxsize=500", "--audit-log-maxbackup=1"])
        self._wait_ready(ready_timeout)
        kc = str(self.kubeconfig)
        common = [f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
                  "--leader-elect=false", "--bind-address=127.0.0.1", "--profiling=false", "--v=1"]
        self._spawn("kube-controller-manager", [
            *common, f"--secure-port={free_port()}", f"--controllers={CONTROLLERS}",
            f"--service-account-private-key-file={pki / 'sa.key'}", f"--root-ca-file={pki / 'ca.crt'}",
            "--use-service-account-credentials=false", "--concurrent-job-syncs=10"])
        self._spawn("kube-scheduler", [*common, f"--secure-port={free_port()}"])

    def _audit_policy(self) -> Path:
        policy = self.dir / "audit-policy.yaml"
        policy.write_text(yaml.safe_dump({"apiVersion": "audit.k8s.io/v1", "kind": "Policy",
                                          "omitStages": ["RequestReceived", "ResponseStarted"], "rules": [
                                              {"level": "Metadata", "userGroups": ["system:serviceaccounts"]},
                                              {"level": "None"}]}))
        return policy

    def _spawn(self, name: str, args: list[str]) -> None:
        out = open(self.dir / "logs" / f"{name}.log", "ab")
        # A process group of its own: Ctrl-C on a terminal reaches us, and we stop them in order.
        self.procs[name] = subprocess.Popen([str(self.bin / name), *args], stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        out.close()

    def _wait_ready(self, timeout: float) -> None:
        ctx = ssl.create_default_context(cafile=str(self.dir / "pki" / "ca.crt"))
        req = urllib.request.Request(f"{self.server}/readyz", headers={"Authorization": f"Bearer {self.admin_token}"})
        deadline = time.monotonic() + timeout
        while True:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    tail = (self.dir / "logs" / f"{name}.log").read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")
            try:
                with urllib.request.urlopen(req, context=ctx, timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"kube-apiserver not ready after {timeout:.0f} s (see {self.dir / 'logs'})")
            time.sleep(0.5)

    # -- stop -----------------------------------------------------------------------------------------
    def stop(self, names: tuple[str, ...] = ("kube-scheduler", "kube-controller-manager", "kube-apiserver",
                                             "etcd")) -> None:
        for name in names:
            terminate(self.procs.pop(name, None), 15)

    def restart_apiserver(self) -> None:
        """Stop kube-apiserver and start it again with the same flags (a fault the tests inject)."""
        proc = self.procs["kube-apiserver"]
        args = proc.args[1:]
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)  # open watches hold a graceful stop up to a minute: an abrupt end is the fault wanted
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self._spawn("kube-apiserver", list(args))
        self._wait_ready(300)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
