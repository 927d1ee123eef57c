"""Cryptographic building blocks of secure aggregation, all from the ``cryptography`` package.

- key agreement: X25519; every derived key goes through HKDF-SHA256 with the aggregation's
  session digest as salt and a purpose label (and the ordered pair of site ids) as info;
- share transport: ChaCha20-Poly1305 with a random 96-bit nonce and associated data binding
  the session digest, sender and recipient;
- masks: the AES-256-CTR keystream of a derived key, read as little-endian ``uint64`` words
  (a cryptographic PRG, expanded in one OpenSSL call, no Python loop per element);
- signatures: Ed25519 (see :mod:`hemafed.secure.identity`).
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from hemafed.errors import ProtocolError

KEY_BYTES = 32
NONCE_BYTES = 12


def sha256(*parts: bytes) -> bytes:
    """SHA-256 of length-prefixed parts (unambiguous concatenation)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "big"))
        h.update(p)
    return h.digest()


def hkdf(secret: bytes, salt: bytes, info: bytes, length: int = KEY_BYTES) -> bytes:
    """HKDF-SHA256."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(secret)


def new_x25519() -> tuple[bytes, bytes]:
    """A fresh X25519 key pair as raw ``(private, public)`` 32-byte strings."""
    sk = x25519.X25519PrivateKey.generate()
    raw_sk = sk.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return raw_sk, sk.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def load_x25519(private: bytes) -> x25519.X25519PrivateKey:
    """Load a raw X25519 private key once, for many agreements."""
    return x25519.X25519PrivateKey.from_private_bytes(private)


def x25519_public(private: bytes) -> bytes:
    """Public key of a raw X25519 private key."""
    sk = x25519.X25519PrivateKey.from_private_bytes(private)
    return sk.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def agree(private: bytes | x25519.X25519PrivateKey, peer_public: bytes) -> bytes:
    """X25519 shared secret; a malformed or low-order peer key raises ``ProtocolError``.

    ``private`` may be raw bytes or an already loaded key (faster when used many times).
    """
    try:
        sk = (private if isinstance(private, x25519.X25519PrivateKey)
              else x25519.X25519PrivateKey.from_private_bytes(private))
        return sk.exchange(x25519.X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as exc:
        raise ProtocolError(f"key agreement failed: {exc}") from None


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """ChaCha20-Poly1305 encryption; returns ``nonce || ciphertext+tag``."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + ChaCha20Poly1305(key).encrypt(nonce, plaintext, aad)


def open_sealed(key: bytes, sealed: bytes, aad: bytes, what: str) -> bytes:
    """Decrypt :func:`seal` output; a tampered or misaddressed ciphertext raises ``ProtocolError``."""
    if len(sealed) < NONCE_BYTES + 16:
        raise ProtocolError(f"{what}: ciphertext too short")
    try:
        return ChaCha20Poly1305(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], aad)
    except InvalidTag:
        raise ProtocolError(f"{what}: ciphertext failed authentication (tampered, replayed "
                            f"from another aggregation, or misaddressed)") from None


def mask(seed: bytes, length: int) -> np.ndarray:
    """``length`` pseudo-random ``uint64`` words: the AES-256-CTR keystream of ``seed``."""
    if len(seed) != KEY_BYTES:
        raise ValueError(f"mask seed must be {KEY_BYTES} bytes")
    encryptor = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()
    stream = encryptor.update(bytes(8 * length)) + encryptor.finalize()
    return np.frombuffer(stream, dtype="<u8").astype(np.uint64, copy=False)
