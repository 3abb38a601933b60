"""python -m localkube up --dir DIR --images IMAGES [--gpus N] [--index I]   (scripts/kube-up.sh; PYTHONPATH=scripts)

Starts the control plane and one node: the real kubelet with containerd, running the images listed in IMAGES
(scripts/build-images.sh's output, `<reference> <archive>` per line), with N nvidia.com/gpu from our device plugin.
--index 1 starts a second cluster beside a first (its own node name, ports, bridge, cgroups and containerd; no
kube-proxy, whose iptables chains are host-wide). Writes DIR/kubeconfig (admin) and DIR/cluster.json; prints
`ready` once kubectl works; stays in the foreground until Ctrl-C or SIGTERM, then stops everything it started and
undoes what the node changed on the host. SIGUSR1 restarts kube-apiserver (a fault the tests inject): `apiserver
restarted` is printed once it is ready again. Needs root.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import sys
import threading
from pathlib import Path

from localkube.cluster import ControlPlane, binaries
from localkube.node import RealNode, host_ip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m localkube")
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start a local cluster in the foreground")
    up.add_argument("--dir", type=Path, required=True, help="state folder (wiped at start)")
    up.add_argument("--images", type=Path, required=True, help="scripts/build-images.sh's output")
    up.add_argument("--gpus", type=int, default=2, help="nvidia.com/gpu devices of the node's device plugin")
    up.add_argument("--index", type=int, default=0, choices=range(8), help="a second cluster beside a first: 1")
    up.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("urllib3", "kubernetes"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    d = args.dir.resolve()
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    stop = threading.Event()
    restart = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGUSR1, lambda *_: restart.set())
    plane = ControlPlane(d, binaries(), node_ip=host_ip())
    node = None
    api = None
    try:
        plane.start()
        from kubernetes import client, config

        api = config.new_client_from_config(str(plane.kubeconfig))
        images = [(ref, Path(path)) for ref, path in
                  (line.split() for line in args.images.read_text().splitlines() if line.strip())]
        node = RealNode(d / "node", binaries(), plane.server, d / "pki", images, index=args.index, gpus=args.gpus,
                        ip=plane.node_ip, abort=stop)
        node.start()
        _wait_for_default_serviceaccount(client.CoreV1Api(api), stop)
        (d / "cluster.json").write_text(json.dumps({
            "server": plane.server, "kubeconfig": str(plane.kubeconfig), "pid": os.getpid(), "logs": str(d / "logs"),
            "node": node.name, "ip": node.ip, "gpus": node.gpus, "images": {ref: str(a) for ref, a in node.images},
            "node_dir": str(node.dir), "containerd": str(node.sock), "pod_logs": str(node.private("/var/log/pods")),
            "device_plugins": str(node.private("/var/lib/kubelet") / "device-plugins")}, indent=1))
        print("ready", flush=True)
        while not stop.is_set():
            if restart.wait(0.5):
                restart.clear()
                plane.restart_apiserver()
                print("apiserver restarted", flush=True)
    finally:
        # No controller may replace the pods the node's stop deletes (a Deployment's would come back).
        plane.stop(("kube-scheduler", "kube-controller-manager"))
        if node is not None:
            node.stop(api)
        plane.stop()
    return 0


def _wait_for_default_serviceaccount(core, stop: threading.Event) -> None:
    """Pods need the namespace's `default` ServiceAccount, which the controller-manager creates."""
    from kubernetes.client.exceptions import ApiException

    while not stop.is_set():
        try:
            core.read_namespaced_service_account("default", "default")
            return
        except ApiException:
            stop.wait(0.3)


if __name__ == "__main__":
    sys.exit(main())
