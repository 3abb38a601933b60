"""The Helm chart, rendered by real helm (installed by scripts/install-tools.sh), every object validated
with kubernetes-validate --strict, and its config loaded by the controller's own loader."""

import json
import re
import shutil
import subprocess
from importlib import metadata

import kubernetes_validate
import pytest
import yaml
from support.paths import ROOT

from controller.kube.jobs import build_job
from controller.settings.config import settings_from_mapping

pytestmark = pytest.mark.e2e

HELM = ROOT / ".tools" / "bin" / "helm"
CHART = ROOT / "charts"

VALUE_SETS = {
    "default": [],
    "minio-existing-secret": ["--set", "store.endpoint=http://minio.minio:9000",
                              "--set", "store.existingSecret=s3-creds",
                              "--set", "store.bucket=hpo-bucket"],
    "cpu-only": ["--set", "trainer.gpu.count=0", "--set", "trainer.data=synthetic:5000", "--set", "trainer.epochs=3",
                 "--set", "store.accessKeyId=AKIAFAKE", "--set", "store.secretAccessKey=fake-secret"],
    "custom-space": ["--set-json", 'search.space={"lr_rate_mult": {"dist": "loguniform", "low": 0.5, "high": 2.0}, '
                                   '"batch_size": {"dist": "quniform", "low": 128, "high": 512, "q": 64}}',
                     "--set", "search.name=narrow", "--set-json", "search.goal=0.7"],
    "placement": ["--set-json", 'trainer.tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", '
                                '"effect": "NoSchedule"}]',
                  "--set-json", 'trainer.nodeSelector={"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}',
                  "--set-json", 'trainer.affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": '
                                '{"nodeSelectorTerms": [{"matchExpressions": [{"key": "gpu", "operator": "In", '
                                '"values": ["h100"]}]}]}}}',
                  "--set", "trainer.priorityClassName=batch-low", "--set-json", 'imagePullSecrets=["regcred"]'],
}


def helm(*args, check=True):
    assert HELM.exists(), "helm is missing: run scripts/install-tools.sh (scripts/test.sh does)"
    p = subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=120)
    if check and p.returncode != 0:
        raise AssertionError(p.stderr)
    return p


def render(values):
    out = helm("template", "cifar-hpo", str(CHART), "--namespace", "ml", *values).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def _settings(docs):
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-search"))
    return settings_from_mapping(yaml.safe_load(cm["data"]["search.yaml"])).validate()


def test_lint_strict_passes():
    helm("lint", "--strict", str(CHART))
    for values in VALUE_SETS.values():
        helm("lint", "--strict", str(CHART), *values)


@pytest.mark.parametrize("name", VALUE_SETS)
def test_rendered_objects_are_valid_for_1_29_and_1_33(name):
    docs = render(VALUE_SETS[name])
    kinds = sorted(d["kind"] for d in docs)
    assert {"ConfigMap", "Deployment", "Role", "RoleBinding", "ServiceAccount"} <= set(kinds)
    settings = _settings(docs)
    job = build_job(settings.kube, settings.search.name, 7, settings.trial.argv("s3://b/p/t/000007"), {},
                    {"x": 1}, {"apiVersion": "v1", "kind": "ConfigMap", "name": "cifar-hpo-search", "uid": "u"})
    crd = yaml.safe_load((CHART / "crds" / "searches.cifar-hpo.io.yaml").read_text())
    builtin = [d for d in docs if d["kind"] != "Search"]  # a Search is checked by the API server (test_operator.py)
    for version in ("1.29", "1.33"):
        for doc in [*builtin, job, crd]:
            kubernetes_validate.validate(doc, version, strict=True)
    for doc in docs:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "cifar-hpo" and labels["app.kubernetes.io/instance"] == "cifar-hpo"


def test_the_chart_and_the_controller_agree_on_the_config():
    s = _settings(render(VALUE_SETS["minio-existing-secret"]))
    assert s.store.uri == "s3://hpo-bucket/searches" and s.store.endpoint_url == "http://minio.minio:9000"
    assert s.kube.s3_secret_name == "s3-creds" and s.kube.namespace == "ml"
    assert s.kube.owner_config_map is None and s.kube.status_config_map is None  # the operator's Jobs: their Search's
    assert s.kube.lease_name == "cifar-hpo-controller"
    s = _settings(render(VALUE_SETS["custom-space"]))
    assert s.search.name == "narrow" and s.search.goal == 0.7
    assert sorted(s.space().spec) == ["batch_size", "lr_rate_mult"]
    s = _settings(render(VALUE_SETS["cpu-only"]))
    assert s.kube.gpu_count == 0 and s.trial.data == "synthetic:5000" and s.kube.s3_secret_name == "cifar-hpo-s3"
    s = _settings(render(VALUE_SETS["default"]))
    assert len(s.space().root.members) == 19


def test_rbac_is_namespaced_and_exactly_the_verbs_used():
    docs = render(VALUE_SETS["default"])
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    (role,) = [d for d in docs if d["kind"] == "Role"]
    rules = {(r["apiGroups"][0], r["resources"][0], tuple(r.get("resourceNames", []))): sorted(r["verbs"])
             for r in role["rules"]}
    assert rules == {
        ("batch", "jobs", ()): ["create", "delete", "get", "list", "patch", "watch"],
        ("", "pods", ()): ["list", "watch"],
        ("", "pods/log", ()): ["get"],
        ("", "events", ()): ["create"],
        ("", "secrets", ()): ["create", "patch"],  # trial grants: written, never read
        ("cifar-hpo.io", "searches", ()): ["get", "list", "watch"],
        ("cifar-hpo.io", "searches/status", ()): ["patch"],
        ("coordination.k8s.io", "leases", ()): ["create"],
        ("coordination.k8s.io", "leases", ("cifar-hpo-controller",)): ["get", "update"],
    }
    assert "*" not in json.dumps(role)
    trial_sa = next(d for d in docs if d["kind"] == "ServiceAccount" and d["metadata"]["name"].endswith("-trial"))
    assert trial_sa["automountServiceAccountToken"] is False
    binding = next(d for d in docs if d["kind"] == "RoleBinding")
    assert [s["name"] for s in binding["subjects"]] == ["cifar-hpo-controller"]


def _restricted(pod_spec):
    psc = pod_spec["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["seccompProfile"]["type"] == "RuntimeDefault"
    for c in pod_spec["containers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
        assert sc["readOnlyRootFilesystem"] is True and sc["runAsNonRoot"] is True
        assert sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert all("hostPath" not in v for v in pod_spec.get("volumes", []))
    assert not pod_spec.get("hostNetwork") and not pod_spec.get("hostPID")


def test_every_pod_is_restricted():
    docs = render(VALUE_SETS["placement"])
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
    _restricted(deployment["spec"]["template"]["spec"])
    s = _settings(docs)
    job = build_job(s.kube, s.search.name, 1, s.trial.argv("s3://b/t"), {}, {}, None)
    _restricted(job["spec"]["template"]["spec"])
    spec = job["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False and spec["serviceAccountName"] == "cifar-hpo-trial"
    assert spec["tolerations"][0]["key"] == "nvidia.com/gpu" and spec["priorityClassName"] == "batch-low"
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]


def test_credentials_only_come_from_secrets():
    docs = render(VALUE_SETS["cpu-only"])
    for d in docs:
        if d["kind"] == "ConfigMap":
            assert "fake-secret" not in json.dumps(d) and "AKIAFAKE" not in json.dumps(d)
    container = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "cifar-hpo-s3"
    no_secret = next(d for d in render(VALUE_SETS["default"]) if d["kind"] == "Deployment")
    assert "AWS_SECRET_ACCESS_KEY" not in json.dumps(no_secret)  # workload identity: nothing to mount


def test_a_new_budget_edits_the_search_not_the_operator():
    """helm upgrade --set search.maxTrials=N changes the Search object (the operator follows it live), not the
    operator's pod template: no restart."""
    before = next(d for d in render([]) if d["kind"] == "Deployment")
    after_docs = render(["--set", "search.maxTrials=50"])
    after = next(d for d in after_docs if d["kind"] == "Deployment")
    assert before["spec"]["template"] == after["spec"]["template"]
    (search,) = [d for d in after_docs if d["kind"] == "Search"]
    assert search["spec"]["search"]["maxTrials"] == 50 and search["metadata"]["name"] == "cifar100"


@pytest.mark.parametrize("values, pattern", [
    (["--set", "search.maxTrials=many"], r"maxTrials"),
    (["--set", "bogus=1"], r"bogus"),
    (["--set", "search.parallelism=0"], r"parallelism"),
    (["--set", "trainer.gpu.count=-1"], r"count"),
    (["--set", "tpe.pending=optimistic"], r"pending"),
    (["--set", "store.bucket=Not_A_Bucket"], r"bucket"),
    (["--set", "trainer.gpuCount=1"], r"gpuCount"),
])
def test_invalid_values_are_refused_naming_the_key(values, pattern):
    p = helm("template", "x", str(CHART), *values, check=False)
    assert p.returncode != 0
    assert re.search(pattern, p.stderr), p.stderr


def test_dockerfiles_pass_hadolint_and_run_as_non_root():
    hadolint = shutil.which("hadolint") or str(ROOT / ".venv" / "bin" / "hadolint")
    for name in ("Dockerfile.trainer", "Dockerfile.controller", "examples/digits/Dockerfile"):
        p = subprocess.run([hadolint, str(ROOT / name)], capture_output=True, text=True)
        assert p.returncode == 0, p.stdout + p.stderr
        users = re.findall(r"^USER\s+(\S+)", (ROOT / name).read_text(), re.M)
        assert users and not users[-1].startswith(("root", "0"))


def _closure(dist_name, extras=()):
    """Every distribution the package needs on this interpreter with these extras (and the extras its requirements
    name, its own included: cifar-hpo[controller] needs cifar-hpo[s3])."""
    from packaging.requirements import Requirement

    seen, names, todo = set(), set(), [(dist_name, frozenset(extras))]
    while todo:
        name, wanted = todo.pop()
        name = name.lower().replace("_", "-")
        if (name, wanted) in seen:
            continue
        seen.add((name, wanted))
        names.add(name)
        for line in metadata.requires(name) or []:
            req = Requirement(line)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in {"", *wanted}):
                todo.append((req.name, frozenset(req.extras)))
    return names


def test_the_base_install_needs_nothing_and_the_controllers_has_no_tensorflow():
    assert _closure("cifar-hpo") == {"cifar-hpo"}  # the trial library: the standard library only
    deps = _closure("cifar-hpo", {"controller"})
    assert {"hyperopt", "boto3", "kubernetes", "pyyaml"} <= deps
    assert not {d for d in deps if d.startswith(("tensorflow", "keras", "tf-"))}, deps
    runs = [line for line in (ROOT / "Dockerfile.controller").read_text().splitlines()
            if line.strip().startswith(("RUN", "FROM", "&&"))]
    assert not [line for line in runs if "tensorflow" in line.lower() or "[trainer" in line], runs


def test_an_independent_scan_finds_nothing_unreviewed():
    """checkov 3.3 over the rendered chart: every check passes, or is skipped on the object with its reason."""
    checkov = ROOT / ".tools" / "checkov" / "bin" / "checkov"
    assert checkov.exists(), "checkov is missing: run scripts/install-tools.sh (scripts/test.sh does)"
    # HELM_NAMESPACE: rendered into a namespace of its own, as installed (CKV_K8S_21 flags 'default').
    env = {"PATH": f"{HELM.parent}:/usr/bin:/bin", "HELM_NAMESPACE": "cifar-hpo", "HOME": str(ROOT / ".tools")}
    p = subprocess.run([str(checkov), "-d", str(CHART), "--framework", "helm", "--compact", "--skip-download",
                        "-o", "json"], capture_output=True, text=True, timeout=600, env=env)
    report = json.loads(p.stdout)
    report = report[0] if isinstance(report, list) else report
    failed = [f"{c['check_id']} {c['resource']}" for c in report["results"]["failed_checks"]]
    assert not failed, failed
    assert report["summary"]["passed"] >= 100
    skipped = {c["check_id"]: c["check_result"].get("suppress_comment", "")
               for c in report["results"]["skipped_checks"]}
    assert set(skipped) == {"CKV_K8S_38", "CKV_K8S_43", "CKV_K8S_15"} and all(skipped.values()), skipped


def test_every_namespaced_object_names_the_release_namespace():
    for name, values in VALUE_SETS.items():
        for d in render(values):
            if d["kind"] not in ("CustomResourceDefinition",):
                assert d["metadata"].get("namespace") == "ml", (name, d["kind"], d["metadata"]["name"])


def test_the_chart_installs_the_operator_and_by_default_one_search():
    docs = render([])
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][0] == "operator"
    assert container["readinessProbe"]["httpGet"]["port"] == "metrics"
    assert all(v["emptyDir"].get("sizeLimit") for v in deployment["spec"]["template"]["spec"]["volumes"]
               if "emptyDir" in v)
    (search,) = [d for d in docs if d["kind"] == "Search"]
    assert search["apiVersion"] == "cifar-hpo.io/v1alpha1" and search["metadata"]["name"] == "cifar100"
    assert search["spec"]["search"]["maxTrials"] == 20
    from controller.settings.resource import settings_of

    s = settings_of(search, _settings(docs))
    assert s.search.name == "cifar100" and s.kube.image == _settings(docs).kube.image
    assert not [d for d in render(["--set", "createSearch=false"]) if d["kind"] == "Search"]
    assert (CHART / "crds" / "searches.cifar-hpo.io.yaml").exists()


def test_network_policies_and_image_digests():
    docs = render(["--set", "trainer.image.digest=sha256:" + "a" * 64])
    policies = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "NetworkPolicy"}
    assert policies["cifar-hpo-trials"]["ingress"] == []
    assert policies["cifar-hpo-controller"]["ingress"] == [{"ports": [{"port": "metrics", "protocol": "TCP"}]}]
    # The dashboard's port: closed to the cluster by default (port-forward needs no rule), open to allowFrom only.
    peer = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress"}}}
    opened = render(["--set-json", f"controller.dashboard.allowFrom=[{json.dumps(peer)}]"])
    ingress = next(d["spec"]["ingress"] for d in opened if d["metadata"]["name"] == "cifar-hpo-controller")
    assert ingress[1] == {"from": [peer], "ports": [{"port": "dashboard", "protocol": "TCP"}]}
    # The dashboard's off-switch closes its port, its Service and the operator's setting together.
    off = render(["--set", "controller.dashboard.enabled=false"])
    ingress = next(d["spec"]["ingress"] for d in off if d["metadata"]["name"] == "cifar-hpo-controller")
    assert ingress == [{"ports": [{"port": "metrics", "protocol": "TCP"}]}]
    assert not [d for d in off if d["kind"] == "Service" and d["metadata"]["name"].endswith("-dashboard")]
    assert _settings(off).controller.dashboard_port == 0 and _settings(docs).controller.dashboard_port == 8080
    assert _settings(docs).kube.image == "cifar-hpo-trainer@sha256:" + "a" * 64
    assert not [d for d in render(["--set", "networkPolicy.enabled=false"]) if d["kind"] == "NetworkPolicy"]
    assert helm("template", "x", str(CHART), "--set", "trainer.image.digest=latest", check=False).returncode != 0


def _egress_allows(spec: dict, ip: str, port: int, protocol: str = "TCP") -> bool:
    """What a NetworkPolicy-enforcing plugin decides for one connection of a selected pod (ipBlock rules)."""
    import ipaddress

    if "Egress" not in spec["policyTypes"]:
        return True
    addr = ipaddress.ip_address(ip)
    for rule in spec.get("egress", []):
        ports = rule.get("ports")
        if ports and not any(p.get("port") == port and p.get("protocol", "TCP") == protocol for p in ports):
            continue
        peers = rule.get("to")
        if not peers:
            return True
        for peer in peers:
            block = peer["ipBlock"]
            net = ipaddress.ip_network(block["cidr"])
            if addr.version == net.version and addr in net and not any(
                    addr in ipaddress.ip_network(e) for e in block.get("except", [])
                    if ipaddress.ip_network(e).version == addr.version):
                return True
    return False


def test_egress_trials_reach_dns_and_the_store_never_metadata_and_the_operator_no_metadata():
    policies = {d["metadata"]["name"]: d["spec"] for d in render(["--set", "networkPolicy.storeCIDRs={10.1.2.0/24}",
                                                                   "--set", "networkPolicy.storePorts={9000}"])
                if d["kind"] == "NetworkPolicy"}
    trials, operator = policies["cifar-hpo-trials"], policies["cifar-hpo-controller"]
    assert _egress_allows(trials, "10.96.0.10", 53, "UDP") and _egress_allows(trials, "10.96.0.10", 53)
    assert _egress_allows(trials, "10.1.2.3", 9000)  # the store
    for ip, port in (("169.254.169.254", 80), ("10.96.0.1", 443), ("8.8.8.8", 443), ("10.1.2.3", 22),
                     ("10.244.0.7", 8080)):
        assert not _egress_allows(trials, ip, port), (ip, port)  # metadata, API server, internet, other pods
    assert _egress_allows(operator, "10.96.0.1", 443) and _egress_allows(operator, "10.1.2.3", 9000)
    assert _egress_allows(operator, "151.101.1.1", 443)  # a dataset's https origin
    assert not _egress_allows(operator, "169.254.169.254", 80) and not _egress_allows(operator, "192.168.1.5", 80)
    default = {d["metadata"]["name"]: d["spec"] for d in render([]) if d["kind"] == "NetworkPolicy"}
    assert not _egress_allows(default["cifar-hpo-trials"], "169.254.169.254", 80)
    assert not _egress_allows(default["cifar-hpo-trials"], "fd00:ec2::254", 80)


def test_workload_identity_annotations_reach_the_service_accounts():
    arn = "arn:aws:iam::123456789012:role/cifar-hpo"
    docs = render(["--set", f"controller.serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn={arn}",
                   "--set", "trainer.serviceAccount.annotations.iam\\.gke\\.io/gcp-service-account=t@p.iam"])
    accounts = {d["metadata"]["name"]: d["metadata"].get("annotations") for d in docs if d["kind"] == "ServiceAccount"}
    assert accounts["cifar-hpo-controller"] == {"eks.amazonaws.com/role-arn": arn}
    assert accounts["cifar-hpo-trial"] == {"iam.gke.io/gcp-service-account": "t@p.iam"}
    assert all(v is None for v in {d["metadata"]["name"]: d["metadata"].get("annotations")
                                   for d in render([]) if d["kind"] == "ServiceAccount"}.values())


def _quantity(text: str) -> float:
    """CPU in cores, memory in GiB, from a Kubernetes quantity."""
    units = {"m": 1e-3, "Ki": 2**-20, "Mi": 2**-10, "Gi": 1.0, "Ti": 2**10}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def test_the_default_trial_requests_fit_the_common_single_gpu_nodes():
    """values.yaml's table of node types: every row marked "defaults" has room for the default requests after an
    allowance for DaemonSets; a 4-CPU/16-GiB request (the old default) fits none of them."""
    import re

    rows = [m.groups() for m in re.finditer(r"^  #   (.+?)\s+\d+\s+\d+ GiB\s+(\d+m)\s+([\d.]+Gi)\s+defaults$",
                                            (CHART / "values.yaml").read_text(), re.MULTILINE)]
    assert len(rows) >= 4, rows
    requests = _settings(render([])).kube.requests
    cpu, memory = _quantity(requests["cpu"]), _quantity(requests["memory"])
    daemonsets_cpu, daemonsets_memory = 0.5, 1.0
    for node, alloc_cpu, alloc_memory in rows:
        assert cpu <= _quantity(alloc_cpu) - daemonsets_cpu, (node, requests)
        assert memory <= _quantity(alloc_memory) - daemonsets_memory, (node, requests)
    assert not [n for n, c, m in rows if 4 <= _quantity(c) - daemonsets_cpu and 16 <= _quantity(m) - 1]


def test_store_settings_for_s3_compatible_servers_reach_the_operator_its_client_and_the_trials():
    """Addressing style, checksum mode and a private CA (MinIO, Ceph): rendered into the config, applied to the S3
    client, and the CA mounted into the operator and every trial pod, whose grant and boto3 read it."""
    from controller.store.uri import open_store

    docs = render(["--set", "store.addressingStyle=path", "--set", "store.checksums=when_required",
                   "--set", "store.caBundle.configMap=store-ca", "--set", "store.endpoint=https://minio.minio:9000"])
    s = _settings(docs)
    assert (s.store.addressing_style, s.store.checksums) == ("path", "when_required")
    assert s.store.ca_bundle == "/etc/cifar-hpo/ca/ca.crt" and s.kube.ca_config_map == "store-ca"
    pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    assert {"name": "store-ca", "configMap": {"name": "store-ca"}} in pod["volumes"]
    assert {"name": "store-ca", "mountPath": "/etc/cifar-hpo/ca", "readOnly": True} in pod["containers"][0][
        "volumeMounts"]
    job = build_job(s.kube, s.search.name, 1, s.trial.argv("s3://b/t"), s.trial_env(), {}, None)
    trial = job["spec"]["template"]["spec"]
    assert {"name": "store-ca", "mountPath": "/etc/cifar-hpo/ca", "readOnly": True} in trial["containers"][0][
        "volumeMounts"]
    assert {"name": "AWS_CA_BUNDLE", "value": "/etc/cifar-hpo/ca/ca.crt"} in trial["containers"][0]["env"]
    client = open_store("s3://b/p", endpoint_url=s.store.endpoint_url, region="us-east-1",
                        addressing_style=s.store.addressing_style, checksums=s.store.checksums).client
    assert client.meta.config.s3 == {"addressing_style": "path"}
    assert client.meta.config.request_checksum_calculation == "when_required"
    default = _settings(render([]))
    assert default.store.ca_bundle is None and default.kube.ca_config_map is None
