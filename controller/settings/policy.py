"""What a Search may ask of the operator: the `policy` section of the operator's settings (chart values `policy`).

Whoever can create a Search is not trusted with the operator's power (it creates Jobs, it holds the bucket's keys).
A Search gets the operator's own trial settings (the chart's image, command, Job bounds) and may change them only
within this policy; anything else is refused before a Job exists, naming the field and the rule. Data sources are
policy too: schemes, hosts, private addresses, a size cap and a pinned checksum. Pure: the DNS lookup that the
address rule needs is controller/data/fetch.py's.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from controller import limits
from controller.errors import ConfigError
from controller.limits import limit
from controller.settings.dataspec import DataSpec, parse_data_spec

# Fixed bounds (the CRD carries them too): presigned trial URLs cannot outlive 7 days (SigV4's limit).
MAX_DEADLINE_SECONDS = 604800
MAX_GPUS = 16
MAX_PARALLELISM = 64
# What the trial contract's argv carries (controller/settings/config.py TrialSection.argv): a Search's extraArgs
# come after them and would win (argparse: the last value, and any unambiguous prefix of the option's name).
RESERVED_OPTIONS = ("--trial", "--data", "--data-sha256", "--epochs")
# Cloud metadata services that are not link-local: AWS's IPv6 endpoint, Alibaba's, Azure's wire server.
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in ("fd00:ec2::254", "100.100.100.200",
                                                                  "168.63.129.16"))
RESOURCES = ("cpu", "memory", "ephemeral-storage")


class PolicyError(ConfigError):
    """A Search asks for more than the operator's policy allows; the message names the field and the rule."""


@dataclass(frozen=True)
class PolicySettings:
    """The operator's policy: what a Search may ask beyond the operator's own trial settings."""
    images: list[str] = field(default_factory=list)
    """Trial images a Search may name (exact references; a digest pins one build). The operator's own trial image
    (kube.image, the chart's trainer image) is always allowed; empty: only that one."""
    allow_custom_command: bool = False
    """Whether a Search may set spec.trial.command (a program of its own in the allowed images)."""
    max_gpus_per_trial: int = field(default=1, metadata=limit(minimum=0, maximum=MAX_GPUS))
    max_parallelism: int = field(default=8, metadata=limit(minimum=1, maximum=MAX_PARALLELISM))
    max_active_deadline_seconds: int = field(default=172800, metadata=limit(minimum=60,
                                                                            maximum=MAX_DEADLINE_SECONDS))
    """The longest spec.trial.activeDeadlineSeconds a Search may set (every trial Job has one)."""
    priority_class_names: list[str] = field(default_factory=list)
    """PriorityClasses a Search may name, besides the operator's own (kube.priorityClassName)."""
    node_selectors: list[str] = field(default_factory=list)
    """'key=value' node labels a Search may select, besides the operator's own."""
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    """Tolerations a Search may carry (each exactly one of these), besides the operator's own."""
    allow_affinity: bool = False
    """Whether a Search may set spec.trial.affinity."""
    data_schemes: list[str] = field(default_factory=lambda: ["https", "s3"])
    """Where a Search's dataset may come from: https, http, s3 (the store's own bucket only), path (a file the
    operator can read). cifar100 and synthetic are always allowed."""
    data_hosts: list[str] = field(default_factory=list)
    """http(s) hosts a dataset may come from; empty: any host with a public address."""
    allow_private_addresses: bool = False
    """Whether a dataset URL may resolve to a loopback, private or reserved address. Link-local ones (the cloud
    metadata service) never may."""
    max_data_bytes: int = field(default=512 * 2**20, metadata=limit(minimum=1))
    """The largest dataset archive the operator reads (CIFAR-100's is 169 MB); the read stops there."""
    require_data_sha256: bool = True
    """Whether a dataset other than cifar100 and synthetic must be pinned by spec.trial.dataSha256."""
    data_s3_prefix: str = "uploads/"
    """Where in the store's bucket an s3:// dataset may be: keys under this prefix only (never another search's
    records)."""
    staging_memory_bytes: int = field(default=1536 * 2**20, metadata=limit(minimum=256 * 2**20))
    """The memory (address space) of the child process that reads a dataset archive; CIFAR-100's needs ~1.5 GiB."""
    staging_seconds: int = field(default=300, metadata=limit(minimum=1, maximum=86400))
    """Its CPU time (twice this: wall-clock time). CIFAR-100's takes ~6 s."""
    min_check_seconds: float = field(default=5.0, metadata=limit(minimum=0.01, maximum=3600))
    """The shortest spec.earlyStopping.checkSeconds a Search may set (each check reads every running trial's
    progress from the store)."""
    max_termination_grace_seconds: int = field(default=300, metadata=limit(minimum=1, maximum=3600))
    """The longest spec.trial.terminationGraceSeconds a Search may set."""
    max_resources: dict[str, str] = field(default_factory=lambda: {"cpu": "64", "memory": "512Gi",
                                                                   "ephemeral-storage": "1Ti"})
    """The most of each of cpu, memory and ephemeral-storage a trial may request or be limited to."""

    def validate(self) -> None:
        limits.check(self, "policy")
        unknown = sorted(set(self.data_schemes) - {"https", "http", "s3", "path"})
        if unknown:
            raise ConfigError(f"policy.dataSchemes: {unknown[0]!r} is not one of https, http, s3, path")
        for pair in self.node_selectors:
            if "=" not in pair:
                raise ConfigError(f"policy.nodeSelectors: {pair!r} must be key=value")
        for name, value in self.max_resources.items():
            if name not in RESOURCES:
                raise ConfigError(f"policy.maxResources: {name!r} is not one of {', '.join(RESOURCES)}")
            quantity(value, f"policy.maxResources.{name}")


LOCAL = PolicySettings(data_schemes=["https", "http", "s3", "path"], allow_private_addresses=True,
                       require_data_sha256=False, max_data_bytes=4 * 2**30, data_s3_prefix="",
                       staging_memory_bytes=8 * 2**30, staging_seconds=3600)
"""Local mode: the person running it is the operator; their files and their network are theirs to read."""


def check_job(policy: PolicySettings, base: Any, wanted: Any, spec_trial: Mapping[str, Any],
              parallelism: int) -> None:
    """Raise PolicyError for the first of a Search's trial settings (wanted: its KubeSettings and TrialSection
    over base, the operator's) that the policy does not allow. spec_trial: the Search's spec.trial as written."""
    kube, trial = wanted.kube, wanted.trial
    if kube.image != base.kube.image and kube.image not in policy.images:
        _refuse("spec.trial.image", f"{kube.image!r} is not an allowed trial image",
                f"allowed: {', '.join([base.kube.image, *policy.images])} (policy.images)")
    if "command" in spec_trial and list(trial.command) != list(base.trial.command) \
            and not policy.allow_custom_command:
        _refuse("spec.trial.command", "a Search may not set its own command",
                "leave it out (the trainer runs), or ask for policy.allowCustomCommand")
    if kube.gpu_count > policy.max_gpus_per_trial:
        _refuse("spec.trial.gpuCount", f"{kube.gpu_count} GPUs per trial",
                f"at most {policy.max_gpus_per_trial} (policy.maxGpusPerTrial)")
    if kube.gpu_resource != base.kube.gpu_resource:
        _refuse("spec.trial.gpuResource", f"{kube.gpu_resource!r}", f"only {base.kube.gpu_resource!r}")
    for section in ("requests", "limits"):
        _check_resources(policy, getattr(kube, section), f"spec.trial.{section}")
    if kube.termination_grace_seconds > max(policy.max_termination_grace_seconds,
                                            base.kube.termination_grace_seconds):
        _refuse("spec.trial.terminationGraceSeconds", f"{kube.termination_grace_seconds} seconds",
                f"at most {policy.max_termination_grace_seconds} (policy.maxTerminationGraceSeconds)")
    check_seconds = wanted.early_stopping.check_seconds
    if wanted.early_stopping.rule != "none" and check_seconds < policy.min_check_seconds:
        _refuse("spec.earlyStopping.checkSeconds", f"{check_seconds:g} seconds",
                f"at least {policy.min_check_seconds:g} (policy.minCheckSeconds)")
    for arg in trial.extra_args:
        name = arg.partition("=")[0]
        if len(name) > 2 and any(option.startswith(name) for option in RESERVED_OPTIONS):
            _refuse("spec.trial.extraArgs", f"{arg!r} would override the operator's {', '.join(RESERVED_OPTIONS)}",
                    "set spec.trial.data, dataSha256 and epochs instead")
    if parallelism > policy.max_parallelism:
        _refuse("spec.search.parallelism", f"{parallelism} trials at once",
                f"at most {policy.max_parallelism} (policy.maxParallelism)")
    deadline = kube.active_deadline_seconds
    if deadline is None or deadline > policy.max_active_deadline_seconds:
        _refuse("spec.trial.activeDeadlineSeconds", f"{deadline} seconds",
                f"at most {policy.max_active_deadline_seconds} (policy.maxActiveDeadlineSeconds)")
    _check_placement(policy, base.kube, kube)


def _check_placement(policy: PolicySettings, base: Any, kube: Any) -> None:
    """Where a trial may run: priority class, node selector, tolerations, affinity (base: the operator's)."""
    name = kube.priority_class_name
    if name and name != base.priority_class_name and name not in policy.priority_class_names:
        _refuse("spec.trial.priorityClassName", f"{name!r}",
                f"one of {', '.join(policy.priority_class_names) or '(none)'} (policy.priorityClassNames)")
    for key, value in kube.node_selector.items():
        if base.node_selector.get(key) != value and f"{key}={value}" not in policy.node_selectors:
            _refuse("spec.trial.nodeSelector", f"{key}={value}",
                    f"one of {', '.join(policy.node_selectors) or '(none)'} (policy.nodeSelectors)")
    for toleration in kube.tolerations:
        if toleration not in base.tolerations and toleration not in policy.tolerations:
            _refuse("spec.trial.tolerations", f"{toleration}", "only those listed in policy.tolerations")
    if kube.affinity and kube.affinity != base.affinity and not policy.allow_affinity:
        _refuse("spec.trial.affinity", "a Search may not set affinity", "policy.allowAffinity is false")


def merged_job(base: Any, wanted: Any) -> Any:
    """wanted's KubeSettings with the operator's own placement and limits kept: a Search adds to nodeSelector,
    tolerations, affinity, requests and limits (within the policy), and never removes what the operator set."""
    return dataclasses.replace(
        wanted, node_selector={**wanted.node_selector, **base.node_selector},
        tolerations=[*base.tolerations, *(t for t in wanted.tolerations if t not in base.tolerations)],
        affinity={**wanted.affinity, **base.affinity}, requests={**base.requests, **wanted.requests},
        limits={**base.limits, **wanted.limits})


def _check_resources(policy: PolicySettings, wanted: Mapping[str, str], field_name: str) -> None:
    for name, value in wanted.items():
        if name not in RESOURCES:
            _refuse(field_name, f"names {name!r}", "only cpu, memory and ephemeral-storage (accelerators come from "
                    "gpuCount)")
        most = policy.max_resources.get(name)
        if most is not None and quantity(value, f"{field_name}.{name}") > quantity(most, "policy.maxResources"):
            _refuse(f"{field_name}.{name}", f"{value}", f"at most {most} (policy.maxResources.{name})")


_SUFFIX = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1), "k": Decimal(10**3),
           "M": Decimal(10**6), "G": Decimal(10**9), "T": Decimal(10**12), "P": Decimal(10**15),
           "E": Decimal(10**18), "Ki": Decimal(2**10), "Mi": Decimal(2**20), "Gi": Decimal(2**30),
           "Ti": Decimal(2**40), "Pi": Decimal(2**50), "Ei": Decimal(2**60)}
_QUANTITY = re.compile(r"([+]?[0-9]+(?:\.[0-9]*)?|[+]?\.[0-9]+)"
                       r"(?:([eE][+-]?[0-9]{1,2})|(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?)")


def quantity(text: Any, field_name: str) -> Decimal:
    """A Kubernetes resource quantity ('500m', '12Gi', '1e3') as a number, or a PolicyError naming the field."""
    match = _QUANTITY.fullmatch(str(text)) if isinstance(text, (str, int)) else None
    if match is None:
        raise PolicyError(f"{field_name}: {text!r} is not a resource quantity (e.g. 4, 500m, 12Gi)")
    number, exponent, suffix = match.groups()
    try:
        return Decimal(number + (exponent or "")) * _SUFFIX[suffix or ""]
    except InvalidOperation as e:
        raise PolicyError(f"{field_name}: {text!r} is not a resource quantity") from e


def check_data(policy: PolicySettings, data: str | None, sha256: str | None, store_bucket: str | None,
               field_name: str = "spec.trial.data") -> DataSpec:
    """The parsed data spec if the policy allows it as a source (the address rule is checked at fetch time)."""
    spec = parse_data_spec(data or "cifar100", field_name)
    if spec.kind in ("cifar100", "synthetic", "none"):
        return spec
    scheme = {"http": spec.spec.split("://", 1)[0], "s3": "s3", "path": "path"}.get(spec.kind, "s3")
    if spec.kind == "npz" and not spec.spec.startswith("s3://"):
        scheme = "path"
    if scheme not in policy.data_schemes:
        _refuse(field_name, f"{spec.spec!r}: {scheme} sources are not allowed",
                f"allowed: {', '.join(policy.data_schemes)} (policy.dataSchemes)")
    if scheme == "s3":
        bucket, _, key = spec.spec[len("s3://"):].partition("/")
        if bucket != store_bucket or not key.startswith(policy.data_s3_prefix) or "/../" in f"/{key}/":
            _refuse(field_name, f"{spec.spec!r} is not under s3://{store_bucket}/{policy.data_s3_prefix}",
                    f"s3:// data must be in s3://{store_bucket}/{policy.data_s3_prefix} (policy.dataS3Prefix; "
                    "copy it there)")
    if scheme in ("http", "https") and policy.data_hosts:
        host = host_of(spec.spec)
        if host not in policy.data_hosts:
            _refuse(field_name, f"host {host!r} is not allowed", f"one of {', '.join(policy.data_hosts)} "
                    "(policy.dataHosts)")
    if policy.require_data_sha256 and not sha256:
        _refuse("spec.trial.dataSha256", f"required for {spec.spec!r}",
                "pin the archive: dataSha256 = its `sha256sum`")
    return spec


def host_of(url: str) -> str:
    """The host of a URL, without user info, port or IPv6 brackets."""
    netloc = url.split("://", 1)[1].partition("/")[0].rpartition("@")[2]
    if netloc.startswith("["):
        return netloc[1:].partition("]")[0]
    return netloc.rpartition(":")[0] if netloc.count(":") == 1 else netloc


def address_refusal(policy: PolicySettings, host: str, addresses: Sequence[str]) -> str | None:
    """Why a host's resolved addresses may not be reached (loopback, link-local…), or None. Link-local addresses
    (the cloud metadata service, 169.254.169.254) never are, whatever the policy."""
    for text in addresses:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
        forms = _forms(ip)
        if any(form.is_link_local for form in forms):
            return f"{host} resolves to {ip}, a link-local address (the node's or the cloud's metadata service)"
        if any(form in METADATA_ADDRESSES for form in forms):
            return f"{host} resolves to {ip}, a cloud metadata service's address"
        if any(not form.is_global for form in forms) and not policy.allow_private_addresses:
            kind = next((k for k in ("loopback", "link_local", "private", "multicast", "reserved", "unspecified")
                         if getattr(ip, f"is_{k}")), "non-public")
            return (f"{host} resolves to {ip}, a {kind.replace('_', '-')} address (policy.allowPrivateAddresses "
                    "is false: cloud metadata and cluster services are not data sources)")
    return None


def _forms(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """An address and the IPv4 addresses it embeds (IPv4-mapped and -compatible, NAT64, 6to4, Teredo), each of
    which a connection may end up reaching."""
    forms: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        low = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        embedded = [ip.ipv4_mapped, ip.sixtofour, ip.teredo[1] if ip.teredo else None]
        if int(ip) >> 32 == 0 or ip in ipaddress.ip_network("64:ff9b::/96") \
                or ip in ipaddress.ip_network("64:ff9b:1::/48"):
            embedded.append(low)
        forms += [e for e in embedded if e is not None]
    return forms


def _refuse(field_name: str, what: str, rule: str) -> None:
    raise PolicyError(f"{field_name}: {what}; {rule}")
