"""Test certificates and SuperNode authentication keys for a Flower deployment.

* :func:`make_test_ca_and_server_cert` writes a self-signed CA and a SuperLink server certificate
  for ``127.0.0.1``/``localhost`` (TLS on the SuperLink's Fleet/Control/Runtime HTTP API). For a
  real network use certificates from the hospital's PKI; these are for tests and pilots.
* :func:`make_node_auth_keys` writes a SuperNode authentication key pair as Flower 1.42 expects
  it: an EC key on a NIST curve (P-384 here), private key in OpenSSH format (given to
  ``flower-supernode --auth-supernode-private-key``), public key as an OpenSSH line (registered at
  the SuperLink with ``flwr supernode register <public key file>``).

Private keys are written with mode 0600.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hemafed import atomic


@dataclass(frozen=True)
class ServerCertificates:
    """Paths of the CA certificate and the SuperLink's certificate and key (PEM)."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


@dataclass(frozen=True)
class NodeAuthKeys:
    """Paths of one SuperNode's authentication key pair (OpenSSH formats)."""

    private_key: Path
    public_key: Path


def _write_secret(path: Path, data: bytes) -> None:
    atomic.write_bytes(path, data)
    os.chmod(path, 0o600)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hemafed test"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_test_ca_and_server_cert(directory: str | os.PathLike[str], *,
                                 hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
                                 days: int = 30) -> ServerCertificates:
    """Write ``ca.pem``, ``server.pem``, ``server.key`` into ``directory`` and return their paths."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_cert = (
        x509.CertificateBuilder().subject_name(_name("hemafed test CA"))
        .issuer_name(_name("hemafed test CA")).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA384())
    )
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = (
        x509.CertificateBuilder().subject_name(_name(hosts[0]))
        .issuer_name(ca_cert.subject).public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    paths = ServerCertificates(out / "ca.pem", out / "server.pem", out / "server.key")
    atomic.write_bytes(paths.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM))
    atomic.write_bytes(paths.server_cert, server_cert.public_bytes(serialization.Encoding.PEM))
    _write_secret(paths.server_key, server_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return paths


def make_node_auth_keys(directory: str | os.PathLike[str], name: str) -> NodeAuthKeys:
    """Write ``<name>`` (private, OpenSSH) and ``<name>.pub`` into ``directory``."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    paths = NodeAuthKeys(out / name, out / f"{name}.pub")
    _write_secret(paths.private_key, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption()))
    atomic.write_bytes(paths.public_key, key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH) + b"\n")
    return paths
