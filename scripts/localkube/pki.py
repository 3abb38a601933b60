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
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    later = now + datetime.timedelta(days=365)
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

    def leaf(stem: str, cn: str, org: str | None, server: bool) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        b = (x509.CertificateBuilder().subject_name(_name(cn, org)).issuer_name(ca.subject).public_key(key.public_key())
             .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(later)
             .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH if server
                                                   else x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
        if server:
            b = b.add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.DNSName("kubernetes"), x509.DNSName("kubernetes.default"),
                x509.DNSName("kubernetes.default.svc"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.IPAddress(ipaddress.ip_address("10.0.0.1"))]), critical=False)
        cert = b.sign(ca_key, hashes.SHA256())
        _write(d / f"{stem}.crt", cert.public_bytes(serialization.Encoding.PEM))
        _write(d / f"{stem}.key", _pem_key(key))

    leaf("serving", "kube-apiserver", None, server=True)
    leaf("kubelet-client", "kube-apiserver-kubelet-client", "system:masters", server=False)
    leaf("kubelet-serving", "system:node:local", "system:nodes", server=True)
    sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write(d / "sa.key", _pem_key(sa))
    _write(d / "sa.pub", sa.public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo))
