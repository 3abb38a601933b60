"""A real Kubernetes control plane and node on one machine, no Docker: etcd, kube-apiserver, kube-controller-manager
and kube-scheduler built from source (scripts/build-kube.sh; cluster.py), and a node (node.py) run by the real kubelet
with containerd and runc, CNI bridge networking, kube-proxy and a device plugin of ours advertising nvidia.com/gpu
(scripts/k8s/gpuplugin). pki.py makes its certificates; `python -m localkube up` (scripts/kube-up.sh) starts it. None
of Kubernetes' own parts are ours. docs/development.md describes it and what it differs in from a production node."""
