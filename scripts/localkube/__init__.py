"""A real Kubernetes control plane on one machine, no Docker: etcd, kube-apiserver, kube-controller-manager and
kube-scheduler built from source (scripts/build-kube.sh), one Node advertising nvidia.com/gpu, and a process
kubelet that runs each Pod bound to the Node as local processes. Only the kubelet is ours."""
