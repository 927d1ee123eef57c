"""Test CA, SuperLink certificate and SuperNode keys are what TLS and Flower 1.42 accept."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from hemafed.federation.flower.certificates import make_node_auth_keys, make_test_ca_and_server_cert


def test_server_certificate_is_signed_by_the_ca_for_loopback(tmp_path: Path) -> None:
    paths = make_test_ca_and_server_cert(tmp_path)
    ca = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(paths.server_cert.read_bytes())
    server.verify_directly_issued_by(ca)  # raises if the signature or issuer is wrong
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in sans.get_values_for_type(x509.IPAddress)
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    key = serialization.load_pem_private_key(paths.server_key.read_bytes(), None)
    assert key.public_key().public_bytes(  # the key belongs to the certificate
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == server.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert stat.S_IMODE(paths.server_key.stat().st_mode) == 0o600


def test_node_keys_are_openssh_p384_pairs(tmp_path: Path) -> None:
    keys = make_node_auth_keys(tmp_path, "site-a")
    private = serialization.load_ssh_private_key(keys.private_key.read_bytes(), None)
    public = serialization.load_ssh_public_key(keys.public_key.read_bytes())
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert public.curve.name == "secp384r1"
    signature = private.sign(b"hello", ec.ECDSA(hashes.SHA256()))
    public.verify(signature, b"hello", ec.ECDSA(hashes.SHA256()))
    assert keys.public_key.read_text().startswith("ecdsa-sha2-nistp384 ")
    assert stat.S_IMODE(keys.private_key.stat().st_mode) == 0o600
