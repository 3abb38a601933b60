"""The local control plane's node: the kubelet built from the same Kubernetes source, containerd (Debian's,
with runc) as its CRI, CNI bridge networking, kube-proxy for Services, and a device plugin of ours advertising
nvidia.com/gpu through the kubelet's device-plugin API. Images come from scripts/build-images.sh and are imported
into containerd; nothing is pulled.

containerd, the kubelet and the device plugin run in a mount namespace of their own, where the paths they insist
on (/var/lib/kubelet, /run/containerd, /var/log/pods, /var/log/containers, /run/netns) are bound to folders under
the node's directory: the host's file system never sees their mounts or files. What cannot be kept in that
namespace (sysctls the kubelet sets, iptables chains of the kubelet, kube-proxy and CNI, the bridge, the kubepods
cgroups) is recorded before the start and undone by stop(), which leaves the machine as it found it.

Needs root and Linux; see docs/development.md, "A real cluster on one machine".
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from localkube.cluster import free_port, kubeconfig_doc, terminate
from localkube.pki import make_node_pki

log = logging.getLogger(__name__)

SERVICE_CIDR = "10.0.0.0/24"
# The kubelet writes these three; stop() puts back what they were.
SYSCTLS = ("vm.overcommit_memory", "kernel.panic", "kernel.panic_on_oops")
# Paths the kubelet, containerd and CNI use whatever their flags say: bound to the node's folder in its namespace.
PRIVATE_PATHS = ("/var/lib/kubelet", "/run/containerd", "/var/log/pods", "/var/log/containers", "/run/netns")


def host_ip(fallback: str | None = None) -> str:
    """The address of the default route's interface: the kubelet refuses a loopback node IP, and pods reach the
    apiserver and the tests' servers there. Without one: `fallback`, or an error."""
    out = subprocess.run(["ip", "-4", "-o", "route", "get", "192.0.2.255"], capture_output=True, text=True).stdout
    m = re.search(r"\bsrc (\S+)", out)
    if m and not m.group(1).startswith("127."):
        return m.group(1)
    if fallback is not None:
        return fallback
    raise RuntimeError("the real node needs a non-loopback IPv4 address with a route (none found: `ip route`)")


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(list(argv), capture_output=True, text=True)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {p.returncode}: {p.stderr.strip()[-2000:]}")
    return p


def unwanted_images(listing: str, wanted: set[str]) -> list[str]:
    """The references in `ctr images ls` output to remove: all but the wanted ones and those naming the same
    content (the CRI plugin's `sha256:<config>` id for each image it has seen)."""
    rows = [line.split() for line in listing.splitlines()[1:] if line.strip()]
    kept = {row[2] for row in rows if len(row) > 2 and row[0] in wanted}
    return [row[0] for row in rows if row[0] not in wanted and (len(row) < 3 or row[2] not in kept)]


@dataclass
class RealNode:
    dir: Path
    bin: Path  # kubelet, kube-proxy, gpuplugin
    server: str  # the apiserver, https://127.0.0.1:<port>
    ca_dir: Path  # the control plane's pki/
    images: list[tuple[str, Path]]  # (reference, OCI archive) from scripts/build-images.sh
    # A second cluster's node beside a first (index 1): its own name, kubelet port, bridge, pod range, cgroup root
    # and containerd; kube-proxy only at index 0 (its iptables chains are host-wide).
    index: int = 0
    gpus: int = 2
    ip: str = ""
    abort: threading.Event | None = None  # set (SIGTERM to localkube): a start in progress gives up
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    _holder: subprocess.Popen | None = None
    _sysctls: dict[str, str] = field(default_factory=dict)
    _made_dirs: list[Path] = field(default_factory=list)
    _added_route: bool = False
    _lock: IO[bytes] | None = None

    @property
    def name(self) -> str:
        return f"real-{self.index}"

    @property
    def sock(self) -> Path:
        # Unix socket paths are limited to 108 bytes: under /run, not under a deep state folder.
        return Path(f"/run/cifar-hpo-node-{self.index}") / "containerd.sock"

    @property
    def bridge(self) -> str:
        return f"khpo{self.index}"

    @property
    def pod_cidr(self) -> str:
        return f"10.77.{self.index}.0/24"

    @property
    def network(self) -> str:
        return f"cifar-hpo-{self.index}"

    @property
    def cgroup_root(self) -> str:
        return f"cifar-hpo-{self.name}"

    @property
    def containerd_root(self) -> Path:
        """Kept across runs: images are imported once per build, not once per cluster."""
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        return cache / "cifar-hpo" / f"containerd-{self.index}"

    def private(self, path: str) -> Path:
        """Where one of PRIVATE_PATHS lives on the host."""
        return self.dir / "private" / str(PRIVATE_PATHS.index(path))

    # -- start ----------------------------------------------------------------------------------------
    def start(self, ready_timeout: float = 300.0) -> None:
        self._take_index()
        self.ip = self.ip or host_ip()
        for sub in ("logs", "pki", "state", "cni", "private"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self._sysctls = {k: _run("sysctl", "-n", k).stdout.strip() for k in SYSCTLS}
        # Packets for a Service address that kube-proxy has not translated (yet) go nowhere, not out of the host.
        if SERVICE_CIDR not in _run("ip", "route", "show", "type", "blackhole").stdout:
            _run("ip", "route", "add", "blackhole", SERVICE_CIDR)
            self._added_route = True
        self._cgroups()
        self._namespace()
        self._containerd()
        self._import_images()
        make_node_pki(self.ca_dir, self.dir / "pki", self.name, self.ip)
        self._kubelet()
        self._spawn("gpuplugin", [str(self.bin / "gpuplugin"), f"--count={self.gpus}"], private=True)
        if self.index == 0:
            self._kube_proxy()
        self._wait_ready(ready_timeout)

    def _take_index(self) -> None:
        """One node per index on a host: a second one would share the first's containerd root, bridge and cgroups,
        and its stop would undo them under the first. Held until stop(); the kernel lets go if we die."""
        lock = open(f"/run/cifar-hpo-node-{self.index}.lock", "ab")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            lock.close()
            raise RuntimeError(f"a local node with --index {self.index} already runs on this host (its `localkube "
                               "up` process holds it): stop that one, or give this one another --index") from e
        self._lock = lock

    def _cgroups(self) -> None:
        """The kubelet's cgroup root, in every v1 hierarchy: pods of two nodes on one host never share a parent
        (a kubelet removes pod cgroups it does not know under its own)."""
        for hierarchy in Path("/sys/fs/cgroup").iterdir():
            if not (hierarchy / "cgroup.procs").exists():
                continue
            root = hierarchy / self.cgroup_root
            root.mkdir(exist_ok=True)
            for knob in ("cpuset.cpus", "cpuset.mems"):  # an empty cpuset admits no task
                if (root / knob).exists() and not (root / knob).read_text().strip():
                    (root / knob).write_text((hierarchy / knob).read_text())

    def _namespace(self) -> None:
        self._holder = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sleep", "infinity"],
                                        start_new_session=True)
        time.sleep(0.1)
        for i, path in enumerate(PRIVATE_PATHS):
            target = Path(path)
            if not target.exists():
                target.mkdir(parents=True)
                self._made_dirs.append(target)
            src = self.dir / "private" / str(i)
            src.mkdir(exist_ok=True)
            self._nsenter("mount", "--bind", str(src), path)
            # The kubelet's volume mounts must reach the containers that containerd starts: shared below here.
            self._nsenter("mount", "--make-rshared", path)

    def _nsenter(self, *argv: str) -> None:
        assert self._holder is not None
        _run("nsenter", "-t", str(self._holder.pid), "-m", *argv)

    def _spawn(self, name: str, argv: list[str], private: bool) -> None:
        if private:
            assert self._holder is not None
            argv = ["nsenter", "-t", str(self._holder.pid), "-m", *argv]
        out = open(self.dir / "logs" / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
        out.close()

    def _containerd(self) -> None:
        self.containerd_root.mkdir(parents=True, exist_ok=True)
        cni = self.dir / "cni"
        (cni / "10-cifar-hpo.conflist").write_text(json.dumps({
            "cniVersion": "1.0.0", "name": self.network, "plugins": [
                {"type": "bridge", "bridge": self.bridge, "isGateway": True, "ipMasq": True, "hairpinMode": True,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": self.pod_cidr}]],
                          "routes": [{"dst": "0.0.0.0/0"}],
                          "dataDir": str(self.dir / "state" / "ipam")}},
                {"type": "portmap", "capabilities": {"portMappings": True}},
                {"type": "loopback"}]}))
        s = self.dir / "containerd"
        s.mkdir(exist_ok=True)
        self.sock.parent.mkdir(mode=0o700, exist_ok=True)
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        (self.dir / "containerd.toml").write_text(f"""version = 2
root = "{self.containerd_root}"
state = "{s / 'state'}"
[grpc]
  address = "{self.sock}"
[ttrpc]
  address = "{self.sock}.ttrpc"
[debug]
  address = "{self.sock.parent / 'debug.sock'}"
[{cri}]
  restrict_oom_score_adj = true
  sandbox_image = "registry.k8s.io/pause:3.10.1"
  [{cri}.cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
""")
        self._spawn("containerd", ["containerd", "--config", str(self.dir / "containerd.toml")], private=True)
        self._wait("containerd's socket", lambda: self.sock.exists() and self._ctr("version", check=False) == 0, 60)

    def _ctr(self, *args: str, check: bool = True) -> int:
        return _run("ctr", "-a", str(self.sock), "-n", "k8s.io", *args, check=check).returncode

    def _import_images(self) -> None:
        self._prune()
        have = set(_run("ctr", "-a", str(self.sock), "-n", "k8s.io", "images", "ls", "-q").stdout.split())
        for ref, archive in self.images:
            if ref in have:
                continue
            t0 = time.monotonic()
            self._ctr("images", "import", "--base-name", ref.rsplit(":", 1)[0], str(archive))
            log.info("imported %s in %.1f s", ref, time.monotonic() - t0)

    def _prune(self) -> None:
        """containerd's root is a cache kept across runs, and only what this node's images need may stay in it: the
        containers of earlier runs' pods (no kubelet is left to remove them; this run's starts with an empty root)
        and every image but this build's hold their layers. Left alone, one cache grew to 30 GB in a week of test
        runs and a node's start failed on a full disk. --sync: the space is freed before the imports need it."""
        containers = _run("ctr", "-a", str(self.sock), "-n", "k8s.io", "containers", "ls", "-q").stdout.split()
        if containers:
            self._ctr("containers", "rm", *containers, check=False)
        listing = _run("ctr", "-a", str(self.sock), "-n", "k8s.io", "images", "ls").stdout
        unwanted = unwanted_images(listing, {ref for ref, _ in self.images})
        if unwanted:
            t0 = time.monotonic()
            self._ctr("images", "rm", "--sync", *unwanted, check=False)
            log.info("removed %d containers and %d images of earlier runs in %.1f s", len(containers), len(unwanted),
                     time.monotonic() - t0)

    def _kubeconfig(self, stem: str) -> Path:
        pki = self.dir / "pki"
        path = self.dir / f"{stem}.kubeconfig"
        path.write_text(yaml.safe_dump(kubeconfig_doc(self.server, self.ca_dir / "ca.crt", stem, {
            "client-certificate": str(pki / f"{stem}.crt"), "client-key": str(pki / f"{stem}.key")})))
        return path

    def _kubelet(self) -> None:
        pki = self.dir / "pki"
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "containerRuntimeEndpoint": f"unix://{self.sock}", "imageServiceEndpoint": f"unix://{self.sock}",
            "cgroupDriver": "cgroupfs", "failCgroupV1": False, "failSwapOn": False, "cgroupsPerQOS": True,
            "enforceNodeAllocatable": ["pods"],
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                               "x509": {"clientCAFile": str(self.ca_dir / "ca.crt")}},
            "authorization": {"mode": "Webhook"},
            "tlsCertFile": str(pki / "kubelet-serving.crt"), "tlsPrivateKeyFile": str(pki / "kubelet-serving.key"),
            "serverTLSBootstrap": False, "rotateCertificates": False, "port": 10250 + self.index, "readOnlyPort": 0,
            "cgroupRoot": f"/{self.cgroup_root}",
            "healthzPort": 0, "protectKernelDefaults": False, "serializeImagePulls": False,
            # Only images imported from the local build: their disk use must never make the kubelet delete them.
            "imageGCHighThresholdPercent": 100, "evictionHard": {"nodefs.available": "1%", "imagefs.available": "1%"},
            "nodeStatusReportFrequency": "10s",
            # A crashed container comes back within 1 s, not after 10 s doubling to 5 min: tests kill containers
            # on purpose, many times (the kubelet's own setting, alpha since 1.32).
            "featureGates": {"KubeletCrashLoopBackOffMax": True},
            "crashLoopBackOff": {"maxContainerRestartPeriod": "1s"},
        }
        (self.dir / "kubelet.yaml").write_text(yaml.safe_dump(config))
        self._spawn("kubelet", [
            str(self.bin / "kubelet"), f"--config={self.dir / 'kubelet.yaml'}",
            f"--kubeconfig={self._kubeconfig('kubelet')}", "--root-dir=/var/lib/kubelet",
            f"--hostname-override={self.name}", f"--node-ip={self.ip}",
            "--node-labels=nvidia.com/gpu.present=true", "--v=1"], private=True)

    def _kube_proxy(self) -> None:
        self._spawn("kube-proxy", [
            str(self.bin / "kube-proxy"), f"--kubeconfig={self._kubeconfig('kube-proxy')}",
            f"--hostname-override={self.name}", "--proxy-mode=iptables", f"--cluster-cidr={self.pod_cidr}",
            # Zeros: kube-proxy leaves the host's conntrack sysctls alone.
            "--conntrack-max-per-core=0", "--conntrack-tcp-timeout-established=0",
            "--conntrack-tcp-timeout-close-wait=0", "--iptables-localhost-nodeports=false",
            f"--metrics-bind-address=127.0.0.1:{free_port()}", f"--healthz-bind-address=127.0.0.1:{free_port()}",
            "--v=1"], private=False)

    def _wait_ready(self, timeout: float) -> None:
        from kubernetes import client, config

        admin = client.CoreV1Api(config.new_client_from_config(str(self.ca_dir.parent / "kubeconfig")))

        def ready() -> bool:
            try:
                node = admin.read_node(self.name)
            except client.ApiException:
                return False
            conds = {c.type: c.status for c in node.status.conditions or []}
            gpus = (node.status.allocatable or {}).get("nvidia.com/gpu")
            if conds.get("Ready") != "True" or gpus != str(self.gpus):
                return False
            # TaintNodesByCondition puts node.kubernetes.io/not-ready on a new Node, and the node-lifecycle controller
            # that would lift it is not run: it would taint and evict on any heartbeat a loaded machine delays.
            taints = [t for t in node.spec.taints or [] if t.key != "node.kubernetes.io/not-ready"]
            if len(taints) != len(node.spec.taints or []):
                admin.patch_node(self.name, {"spec": {"taints": [
                    {"key": t.key, "value": t.value, "effect": t.effect} for t in taints] or None}})
                return False
            return True

        self._wait(f"node {self.name} Ready with {self.gpus} nvidia.com/gpu", ready, timeout)

    def _wait(self, what: str, predicate: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.abort is not None and self.abort.is_set():
                raise RuntimeError(f"stopped while waiting for {what}")
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    tail = (self.dir / "logs" / f"{name}.log").read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"{name} exited with {proc.returncode} while waiting for {what}:\n{tail}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no {what} after {timeout:.0f} s (see {self.dir / 'logs'})")
            time.sleep(0.3)

    # -- stop -----------------------------------------------------------------------------------------
    def stop(self, admin: Any = None, drain_timeout: float = 90.0) -> None:
        """Pods first (the kubelet tears down their sandboxes, so CNI removes veths, IPs and chains), then the
        daemons, then whatever the kubelet, kube-proxy and CNI left on the host. Nothing if it never took its index
        (another node holds it, and all of that is the other's)."""
        if self._lock is None:
            return
        if admin is not None and self.procs.get("kubelet") and self.procs["kubelet"].poll() is None:
            self._drain(admin, drain_timeout)
        proxied = "kube-proxy" in self.procs
        for name in ("kube-proxy", "gpuplugin", "kubelet", "containerd"):
            terminate(self.procs.pop(name, None), 20)
        self._kill_shims()
        if self._holder is not None:
            self._holder.kill()
            self._holder.wait()
            self._holder = None
        if proxied:
            _run(str(self.bin / "kube-proxy"), "--cleanup", check=False)
        self._clean_host()
        self._lock.close()
        self._lock = None

    def _drain(self, admin: Any, timeout: float) -> None:
        from kubernetes import client

        core = client.CoreV1Api(admin)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pods = core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={self.name}").items
            running = _run("ctr", "-a", str(self.sock), "-n", "k8s.io", "tasks", "ls", "-q", check=False).stdout.split()
            # Done once every pod is being deleted and no container or sandbox runs: a Job's pod object may stay,
            # held by its finalizer for the (stopped) Job controller; the node has torn it down all the same.
            if not running and all(p.metadata.deletion_timestamp is not None for p in pods):
                return
            for p in pods:
                if p.metadata.deletion_timestamp is None:
                    try:
                        core.delete_namespaced_pod(p.metadata.name, p.metadata.namespace, grace_period_seconds=5)
                    except client.ApiException:
                        pass
            time.sleep(0.5)
        log.warning("pods on %s still running after %.0f s; stopping anyway", self.name, timeout)


    def _kill_shims(self) -> None:
        """A container still running when containerd stopped keeps its shim: ours are the ones that name our socket."""
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                cmd = (Path("/proc") / pid / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmd and cmd[0].endswith(b"containerd-shim-runc-v2") and str(self.sock).encode() in cmd:
                os.kill(int(pid), signal.SIGKILL)

    def _clean_host(self) -> None:
        for ipt in ("iptables", "ip6tables"):
            for builtin in ("INPUT", "OUTPUT"):
                while _run(ipt, "-D", builtin, "-j", "KUBE-FIREWALL", check=False).returncode == 0:
                    pass
            for table, chain in (("filter", "KUBE-FIREWALL"), ("mangle", "KUBE-KUBELET-CANARY"),
                                 ("filter", "KUBE-KUBELET-CANARY"), ("nat", "KUBE-KUBELET-CANARY"),
                                 ("mangle", "KUBE-IPTABLES-HINT")):
                _run(ipt, "-t", table, "-F", chain, check=False)
                _run(ipt, "-t", table, "-X", chain, check=False)
        self._clean_cni_chains()
        _run("ip", "link", "del", self.bridge, check=False)
        if self._added_route:
            _run("ip", "route", "del", "blackhole", SERVICE_CIDR, check=False)
        self._kill_leftovers()
        for hierarchy in Path("/sys/fs/cgroup").iterdir():
            tree = hierarchy / self.cgroup_root
            if tree.is_dir():
                # Empty once the pods are gone; deepest first, since rmdir takes only an empty cgroup.
                for d in sorted((p for p in tree.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)) + [tree]:
                    try:
                        d.rmdir()
                    except OSError as e:
                        log.warning("cgroup %s left: %s", d, e)
        for k, v in self._sysctls.items():
            _run("sysctl", "-w", f"{k}={v}", check=False)
        shutil.rmtree(self.sock.parent, ignore_errors=True)
        for d in reversed(self._made_dirs):  # empty on the host: the files were in the namespace's binds
            try:
                d.rmdir()
            except OSError as e:
                log.warning("%s left: %s", d, e)
        self._made_dirs.clear()

    def _kill_leftovers(self) -> None:
        """Processes still in the node's cgroups once its daemons are gone (a container whose shim was killed):
        SIGKILL, and wait until the cgroups are empty, so that they can be removed."""
        procs = list(Path("/sys/fs/cgroup/pids", self.cgroup_root).rglob("cgroup.procs"))

        def pids() -> set[int]:
            out = set()
            for f in procs:
                try:
                    out |= {int(x) for x in f.read_text().split()}
                except OSError:
                    continue
            return out

        deadline = time.monotonic() + 10
        while (left := pids()) and time.monotonic() < deadline:
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)

    def _clean_cni_chains(self) -> None:
        """CNI's masquerade chains of pods whose DEL never ran (a node stopped with pods still on it): the rules that
        name our network, then the per-pod chains they jumped to."""
        for table in ("nat", "filter"):
            chains = set()
            for rule in _run("iptables", "-t", table, "-S", check=False).stdout.splitlines():
                args = shlex.split(rule)
                # CNI's comment names the network: name: "cifar-hpo-0" id: "…"
                if args[:1] != ["-A"] or not re.search(rf'"{re.escape(self.network)}\\?"', rule):
                    continue
                _run("iptables", "-t", table, "-D", *args[1:], check=False)
                target = args[args.index("-j") + 1] if "-j" in args else ""
                if target.startswith("CNI-") and not target.startswith("CNI-HOSTPORT"):
                    chains.add(target)
            for chain in chains:
                _run("iptables", "-t", table, "-F", chain, check=False)
                _run("iptables", "-t", table, "-X", chain, check=False)
