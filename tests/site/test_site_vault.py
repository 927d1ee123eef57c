"""Tests of the Crypt4GH vault: large round trips, header-only re-encryption, wrong keys."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import crypt4gh.header
import pytest

from hemafed.errors import CryptoError, InvalidInput
from hemafed.site.vault import Vault, generate_keypair, load_public_key, load_secret_key


def _vault(tmp_path: Path, who: str = "site") -> Vault:
    keys = tmp_path / f"{who}-keys"
    generate_keypair(keys / "c4gh.sec", keys / "c4gh.pub")
    return Vault(tmp_path / f"{who}-vault", keys / "c4gh.sec", keys / "c4gh.pub")


def _big_file(tmp_path: Path, size: int = 300 * 1024 + 123) -> Path:
    # several 64 KiB Crypt4GH segments plus a partial one, with content that differs per segment
    data = os.urandom(size)
    path = tmp_path / "sample.vcf"
    path.write_bytes(data)
    return path


def test_keys_are_private_and_readable_by_crypt4gh(tmp_path: Path) -> None:
    v = _vault(tmp_path)
    assert stat.S_IMODE(v.seckey_path.stat().st_mode) == 0o600
    assert len(load_secret_key(v.seckey_path)) == 32 and len(load_public_key(v.pubkey_path)) == 32


def test_large_file_round_trips(tmp_path: Path) -> None:
    v = _vault(tmp_path)
    src = _big_file(tmp_path)
    name = v.add(src)
    stored = v.directory / f"{name}.c4gh"
    assert stored.read_bytes()[:8] == b"crypt4gh" and src.read_bytes()[:64] not in stored.read_bytes()
    assert v.get_bytes(name) == src.read_bytes()
    out = v.get(name, tmp_path / "out" / "back.vcf")
    assert out.read_bytes() == src.read_bytes()
    assert v.names() == ["sample.vcf"]
    with pytest.raises(InvalidInput, match="already holds"):
        v.add(src)


def test_reencrypt_changes_only_the_header(tmp_path: Path) -> None:
    site, researcher = _vault(tmp_path), _vault(tmp_path, "researcher")
    src = _big_file(tmp_path)
    site.add(src, "s1")
    out = site.reencrypt("s1", researcher.pubkey_path, tmp_path / "for-researcher.c4gh")

    def split(path: Path) -> tuple[bytes, bytes]:
        with open(path, "rb") as fh:
            list(crypt4gh.header.parse(fh))
            cut = fh.tell()
        raw = path.read_bytes()
        return raw[:cut], raw[cut:]

    old_header, old_body = split(site.directory / "s1.c4gh")
    new_header, new_body = split(out)
    assert new_body == old_body and new_header != old_header
    # the recipient can read it, the site cannot (the header holds only the recipient's packet)
    researcher_view = Vault(out.parent, researcher.seckey_path, researcher.pubkey_path)
    assert researcher_view.get_bytes("for-researcher") == src.read_bytes()
    site_view = Vault(out.parent, site.seckey_path, site.pubkey_path)
    with pytest.raises(CryptoError, match="another key"):
        site_view.get_bytes("for-researcher")


def test_wrong_key_and_tampering_raise_crypto_error(tmp_path: Path) -> None:
    site, other = _vault(tmp_path), _vault(tmp_path, "other")
    site.add(_big_file(tmp_path, 5000), "s1")
    thief = Vault(site.directory, other.seckey_path, other.pubkey_path)
    with pytest.raises(CryptoError, match="encrypted for another key"):
        thief.get("s1", tmp_path / "stolen.vcf")
    assert not (tmp_path / "stolen.vcf").exists()
    stored = site.directory / "s1.c4gh"
    raw = bytearray(stored.read_bytes())
    raw[-10] ^= 0xFF
    stored.write_bytes(bytes(raw))
    with pytest.raises(CryptoError, match="corrupted or was tampered"):
        site.get_bytes("s1")
    with pytest.raises(CryptoError, match="not a readable"):
        load_secret_key(site.pubkey_path)
