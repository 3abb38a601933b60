"""python -m localkube up --dir DIR [--gpus N]   (scripts/kube-up.sh runs it; PYTHONPATH=scripts)

Starts the control plane, one Node with N nvidia.com/gpu and the process kubelet; writes DIR/kubeconfig (admin)
and DIR/cluster.json; prints `ready` once kubectl works; stays in the foreground until Ctrl-C or SIGTERM, then
stops everything it started. SIGUSR1 restarts kube-apiserver (a fault the tests inject): `apiserver restarted`
is printed once it is ready again.
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m localkube")
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start a local cluster in the foreground")
    up.add_argument("--dir", type=Path, required=True, help="state folder (wiped at start)")
    up.add_argument("--gpus", type=int, default=2, help="nvidia.com/gpu capacity of the Node")
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
    plane = ControlPlane(d, binaries())
    kubelet = None
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
        (d / "cluster.json").write_text(json.dumps({
            "server": plane.server, "kubeconfig": str(plane.kubeconfig), "node": node.name, "gpus": node.gpus,
            "pid": os.getpid(), "kubelet_dir": str(d / "kubelet"), "logs": str(d / "logs")}, indent=1))
        print("ready", flush=True)
        while not stop.is_set():
            if restart.wait(0.5):
                restart.clear()
                plane.restart_apiserver()
                print("apiserver restarted", flush=True)
    finally:
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
