"""The site vault: raw genomic files (VCF ...) kept Crypt4GH-encrypted at rest.

Files are encrypted for the site's own X25519 key pair (GA4GH Crypt4GH, via the ``crypt4gh``
package). To hand a file to an authorised recipient, only the header is re-encrypted for the
recipient's public key; the encrypted data blocks are copied byte for byte.

Decryption always streams the whole file from its start: ``crypt4gh`` returns wrong bytes when
asked to start at an offset of 64 KiB or more, so that path is never used here.

Keys are written in the Crypt4GH key format (readable by the ``crypt4gh`` command) without a
passphrase, so the site node can use them unattended; they are protected by 0600 permissions.
"""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
from pathlib import Path
from typing import BinaryIO

import crypt4gh.header
import crypt4gh.keys
import crypt4gh.lib
from crypt4gh.keys import c4gh
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from hemafed import atomic
from hemafed.errors import CryptoError, InvalidInput

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,200}$")
SUFFIX = ".c4gh"


def generate_keypair(seckey_path: str | Path, pubkey_path: str | Path,
                     comment: str = "hemafed site key") -> None:
    """Write a new X25519 key pair in Crypt4GH format; the secret key gets 0600 permissions."""
    sk = X25519PrivateKey.generate()
    sk_bytes = sk.private_bytes_raw()
    pk_bytes = sk.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    encoded = (c4gh.MAGIC_WORD + c4gh.encode_string(b"none") + c4gh.encode_string(b"none")
               + c4gh.encode_string(sk_bytes) + c4gh.encode_string(comment.encode()))
    sec_pem = (b"-----BEGIN CRYPT4GH PRIVATE KEY-----\n" + base64.b64encode(encoded)
               + b"\n-----END CRYPT4GH PRIVATE KEY-----\n")
    pub_pem = (b"-----BEGIN CRYPT4GH PUBLIC KEY-----\n" + base64.b64encode(pk_bytes)
               + b"\n-----END CRYPT4GH PUBLIC KEY-----\n")
    seckey_path, pubkey_path = Path(seckey_path), Path(pubkey_path)
    atomic.write_bytes(seckey_path, sec_pem)
    os.chmod(seckey_path, 0o600)
    atomic.write_bytes(pubkey_path, pub_pem)
    os.chmod(pubkey_path, 0o644)


def load_secret_key(path: str | Path) -> bytes:
    """The raw 32-byte secret key from a Crypt4GH key file; ``CryptoError`` if unreadable."""
    try:
        # crypt4gh exits the process on a bad key; catch that and say which file
        key = crypt4gh.keys.get_private_key(str(path), lambda: "")
    except (SystemExit, ValueError, OSError, NotImplementedError) as exc:
        raise CryptoError(f"{path}: not a readable unencrypted Crypt4GH secret key ({exc!r})") from None
    if not isinstance(key, bytes | bytearray) or len(key) != 32:
        raise CryptoError(f"{path}: not a 32-byte X25519 secret key")
    return bytes(key)


def load_public_key(path: str | Path) -> bytes:
    """The raw 32-byte public key from a Crypt4GH (or OpenSSH ed25519) public key file."""
    try:
        key = crypt4gh.keys.get_public_key(str(path))
    except (ValueError, OSError, NotImplementedError) as exc:
        raise CryptoError(f"{path}: not a readable Crypt4GH public key ({exc!r})") from None
    if len(key) != 32:
        raise CryptoError(f"{path}: not a 32-byte X25519 public key")
    return bytes(key)


def encrypt_stream(source: BinaryIO, dest: BinaryIO, sender_seckey: bytes,
                   recipient_pubkey: bytes) -> None:
    """Crypt4GH-encrypt ``source`` into ``dest`` for one recipient."""
    crypt4gh.lib.encrypt([(0, sender_seckey, recipient_pubkey)], source, dest)


def decrypt_stream(source: BinaryIO, dest: BinaryIO, seckey: bytes, what: str = "file") -> None:
    """Decrypt a whole Crypt4GH stream (from offset 0 only); ``CryptoError`` on wrong key/tampering."""
    try:
        crypt4gh.lib.decrypt([(0, seckey, None)], source, dest)
    except ValueError as exc:
        if "No supported encryption method" in str(exc):
            raise CryptoError(f"{what}: cannot be decrypted with this key: it was encrypted for "
                              f"another key (or is not a Crypt4GH file)") from None
        raise CryptoError(f"{what}: decryption failed, the file is corrupted or was tampered "
                          f"with ({exc})") from None
    except (AssertionError, OSError) as exc:
        raise CryptoError(f"{what}: not a valid Crypt4GH file ({exc!r})") from None


def reencrypt_header(source: BinaryIO, dest: BinaryIO, seckey: bytes, recipient_pubkey: bytes,
                     what: str = "file") -> None:
    """Re-encrypt only the header for ``recipient_pubkey`` (only they can read the result);
    the encrypted data blocks are copied unchanged."""
    try:
        packets = crypt4gh.header.parse(source)
        new = crypt4gh.header.reencrypt(packets, [(0, seckey, None)],
                                        [(0, seckey, recipient_pubkey)], trim=True)
    except ValueError as exc:
        raise CryptoError(f"{what}: cannot re-encrypt the header with this key: it was encrypted "
                          f"for another key (or is not a Crypt4GH file) ({exc})") from None
    dest.write(crypt4gh.header.serialize(new))
    shutil.copyfileobj(source, dest)


class Vault:
    """Encrypted files in ``directory``, for the key pair ``seckey_path``/``pubkey_path``."""

    def __init__(self, directory: str | Path, seckey_path: str | Path,
                 pubkey_path: str | Path) -> None:
        self.directory = Path(directory)
        self.seckey_path = Path(seckey_path)
        self.pubkey_path = Path(pubkey_path)

    def _path(self, name: str) -> Path:
        if not _NAME.match(name) or name.endswith(SUFFIX):
            raise InvalidInput(f"vault name {name!r}: use letters, digits and '_.-' (no path, "
                               f"no {SUFFIX} suffix)")
        return self.directory / (name + SUFFIX)

    def names(self) -> list[str]:
        """Names of the files in the vault."""
        if not self.directory.exists():
            return []
        return sorted(p.name[: -len(SUFFIX)] for p in self.directory.glob("*" + SUFFIX))

    def add(self, source: str | Path, name: str | None = None, *, overwrite: bool = False) -> str:
        """Encrypt ``source`` into the vault (atomically) and return its name."""
        source = Path(source)
        if not source.is_file():
            raise InvalidInput(f"{source}: no such file")
        name = name or source.name
        target = self._path(name)
        if target.exists() and not overwrite:
            raise InvalidInput(f"vault already holds {name!r}; choose another name")
        seckey = load_secret_key(self.seckey_path)
        pubkey = load_public_key(self.pubkey_path)
        with atomic.atomic_path(target) as tmp, open(source, "rb") as src, open(tmp, "wb") as dst:
            encrypt_stream(src, dst, seckey, pubkey)
        os.chmod(target, 0o600)
        return name

    def add_bytes(self, data: bytes, name: str, *, overwrite: bool = False) -> str:
        """Encrypt ``data`` into the vault as ``name`` (atomically): no plain copy on disk."""
        target = self._path(name)
        if target.exists() and not overwrite:
            raise InvalidInput(f"vault already holds {name!r}; choose another name")
        seckey = load_secret_key(self.seckey_path)
        pubkey = load_public_key(self.pubkey_path)
        with atomic.atomic_path(target) as tmp, open(tmp, "wb") as dst:
            encrypt_stream(io.BytesIO(data), dst, seckey, pubkey)
        os.chmod(target, 0o600)
        return name

    def remove(self, name: str) -> None:
        """Delete ``name`` from the vault (nothing if absent)."""
        self._path(name).unlink(missing_ok=True)

    def get_bytes(self, name: str) -> bytes:
        """The decrypted content of ``name``."""
        out = io.BytesIO()
        self._decrypt(name, out)
        return out.getvalue()

    def get(self, name: str, dest: str | Path) -> Path:
        """Decrypt ``name`` to ``dest`` (atomically: a failed decryption writes nothing)."""
        dest = Path(dest)
        with atomic.atomic_path(dest) as tmp:
            with open(tmp, "wb") as out:
                self._decrypt(name, out)
            os.chmod(tmp, 0o600)
        return dest

    def _decrypt(self, name: str, out: BinaryIO) -> None:
        path = self._path(name)
        if not path.is_file():
            raise InvalidInput(f"vault holds no {name!r}; it has: {', '.join(self.names()) or 'nothing'}")
        seckey = load_secret_key(self.seckey_path)
        with open(path, "rb") as src:
            decrypt_stream(src, out, seckey, what=str(path))

    def reencrypt(self, name: str, recipient_pubkey: str | Path, dest: str | Path) -> Path:
        """Write ``name`` for an authorised recipient: new header, same encrypted data blocks."""
        path = self._path(name)
        if not path.is_file():
            raise InvalidInput(f"vault holds no {name!r}")
        seckey = load_secret_key(self.seckey_path)
        recipient = load_public_key(recipient_pubkey)
        dest = Path(dest)
        with atomic.atomic_path(dest) as tmp, open(path, "rb") as src, open(tmp, "wb") as dst:
            reencrypt_header(src, dst, seckey, recipient, what=str(path))
        return dest
