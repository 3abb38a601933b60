"""python -m localkube up --dir DIR [--gpus N] [--real-node IMAGES]   (scripts/kube-up.sh; PYTHONPATH=scripts)

Starts the control plane, one Node with N nvidia.com/gpu and the process kubelet; with --real-node, also node
real-0: the real kubelet with containerd, running the images listed in IMAGES (scripts/build-images.sh's output,
`<reference> <archive>` per line), tainted cifar-hpo.dev/containers so that only pods that tolerate it land
there. Writes DIR/kubeconfig (admin) and DIR/cluster.json; prints `ready` once kubectl works; stays in the
foreground until Ctrl-C or SIGTERM, then stops everything it started. SIGUSR1 restarts kube-apiserver (a fault
the tests inject): `apiserver restarted` is printed once it is ready again.
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

from localkube.cluster import ControlPlane, NodeSpec, binaries, register_node
from localkube.kubelet import ProcessKubelet
from localkube.node import TAINT, RealNode, host_ip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m localkube")
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start a local cluster in the foreground")
    up.add_argument("--dir", type=Path, required=True, help="state folder (wiped at start)")
    up.add_argument("--gpus", type=int, default=2, help="nvidia.com/gpu capacity of the Node")
    up.add_argument("--real-node", type=Path, metavar="IMAGES",
                    help="also run node real-0 (real kubelet + containerd) with these images (needs root)")
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
    plane = ControlPlane(d, binaries(), node_ip=host_ip() if args.real_node else "")
    kubelet = None
    real = None
    try:
        plane.start()
        from kubernetes import client, config

        api = config.new_client_from_config(str(plane.kubeconfig))
        node = NodeSpec(gpus=args.gpus)
        kubelet = ProcessKubelet(api, node.name, d / "kubelet", plane.server, d / "pki" / "ca.crt",
                                 (d / "pki" / "kubelet-serving.crt", d / "pki" / "kubelet-serving.key"))
        register_node(api, node, kubelet.serve_logs())
        kubelet.start()
        _wait_for_default_serviceaccount(client.CoreV1Api(api), stop)
        info = {"server": plane.server, "kubeconfig": str(plane.kubeconfig), "node": node.name, "gpus": node.gpus,
                "pid": os.getpid(), "kubelet_dir": str(d / "kubelet"), "logs": str(d / "logs")}
        if args.real_node:
            images = [(ref, Path(path)) for ref, path in
                      (line.split() for line in args.real_node.read_text().splitlines() if line.strip())]
            real = RealNode(d / "real-node", binaries(), plane.server, d / "pki", images, ip=plane.node_ip,
                            abort=stop)
            real.start()
            info["real_node"] = {"name": real.name, "ip": real.ip, "gpus": real.gpus, "images": dict(real.images),
                                 "logs": str(real.dir / "logs"), "taint": TAINT}
        (d / "cluster.json").write_text(json.dumps(info, indent=1, default=str))
        print("ready", flush=True)
        while not stop.is_set():
            if restart.wait(0.5):
                restart.clear()
                plane.restart_apiserver()
                print("apiserver restarted", flush=True)
    finally:
        if real is not None:
            real.stop(api)
        if kubelet is not None:
            kubelet.stop()
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
