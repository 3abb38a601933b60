"""The certificates and keys a local control plane needs: a CA, the apiserver's serving certificate, the
apiserver's client certificate for kubelets, the kubelet's serving certificate and the ServiceAccount keys."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o600)


def make_pki(d: Path) -> None:
    """Write ca.crt, serving.crt/key, kubelet-client.crt/key, kubelet-serving.crt/key, sa.key/pub into d."""
    d.mkdir(parents=True, exist_ok=True)
    now, later = _validity()
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("cifar-hpo-local-ca")).issuer_name(_name("cifar-hpo-local-ca"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number()).not_valid_before(now)
          .not_valid_after(later).add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False,
                                       key_encipherment=False, data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    _write(d / "ca.crt", ca.public_bytes(serialization.Encoding.PEM))
    _write(d / "ca.key", _pem_key(ca_key))

    _leaf(d / "serving", ca, ca_key, "kube-apiserver", None, server=True)
    _leaf(d / "kubelet-client", ca, ca_key, "kube-apiserver-kubelet-client", "system:masters", server=False)
    _leaf(d / "kubelet-serving", ca, ca_key, "system:node:local", "system:nodes", server=True)
    sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write(d / "sa.key", _pem_key(sa))
    _write(d / "sa.pub", sa.public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo))


def _validity() -> tuple[datetime.datetime, datetime.datetime]:
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    return now, now + datetime.timedelta(days=365)


def _leaf(stem: Path, ca: x509.Certificate, ca_key, cn: str, org: str | None, server: bool,
          names: tuple[str, ...] = (), ips: tuple[str, ...] = ()) -> None:
    now, later = _validity()
    key = ec.generate_private_key(ec.SECP256R1())
    b = (x509.CertificateBuilder().subject_name(_name(cn, org)).issuer_name(ca.subject).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(later)
         .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH if server
                                               else x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
    if server:
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in ("localhost", "kubernetes", "kubernetes.default",
                                                                  "kubernetes.default.svc", *names)]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ("127.0.0.1", "10.0.0.1", *ips)]
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = b.sign(ca_key, hashes.SHA256())
    _write(stem.with_suffix(".crt"), cert.public_bytes(serialization.Encoding.PEM))
    _write(stem.with_suffix(".key"), _pem_key(key))


def make_node_pki(ca_dir: Path, d: Path, node: str, node_ip: str) -> None:
    """A real node's identities, signed by the control plane's CA in ca_dir: the kubelet's client certificate
    (system:node:<node>, so the Node authorizer scopes it to its own node), its serving certificate (the
    apiserver reaches it at node_ip for logs and exec) and kube-proxy's client certificate."""
    d.mkdir(parents=True, exist_ok=True)
    ca = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), password=None)
    _leaf(d / "kubelet", ca, ca_key, f"system:node:{node}", "system:nodes", server=False)
    _leaf(d / "kubelet-serving", ca, ca_key, node, None, server=True, names=(node,), ips=(node_ip,))
    _leaf(d / "kube-proxy", ca, ca_key, "system:kube-proxy", None, server=False)
