"""The secret a site's SuperNode and site worker share (``keys/superexec.secret``)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from hemafed import atomic
from hemafed.errors import InvalidInput
from hemafed.site.store import init_site, superexec_secret


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_site_init_makes_it_private_and_serving_keeps_it(tmp_path: Path) -> None:
    paths = init_site(tmp_path / "site", "site-a")
    secret = paths.superexec_secret
    assert secret == tmp_path / "site" / "keys" / "superexec.secret"
    first = secret.read_bytes()
    assert len(first) == 32 and _mode(secret) == 0o600
    assert superexec_secret(paths.root) == secret
    assert secret.read_bytes() == first  # never overwritten: a running SuperNode keeps it
    assert not list(paths.keys.glob(".superexec.secret.*"))  # no temporary file left


def test_concurrent_first_serves_agree_on_one_secret(tmp_path: Path) -> None:
    with ThreadPoolExecutor(8) as pool:
        paths = list(pool.map(lambda _: superexec_secret(tmp_path), range(16)))
    assert {p.read_bytes() for p in paths} == {(tmp_path / "keys" / "superexec.secret")
                                               .read_bytes()}
    assert _mode(tmp_path / "keys") == 0o700
    assert atomic.create_bytes(paths[0], b"other") is False  # the no-clobber create
    assert len(paths[0].read_bytes()) == 32


def test_a_secret_other_accounts_could_read_is_replaced(tmp_path: Path) -> None:
    secret = superexec_secret(tmp_path)
    old = secret.read_bytes()
    os.chmod(secret, 0o644)
    assert superexec_secret(tmp_path) == secret
    assert _mode(secret) == 0o600 and secret.read_bytes() != old


@pytest.mark.parametrize("bad", ["empty", "directory"])
def test_an_unusable_secret_file_is_a_clear_error(tmp_path: Path, bad: str) -> None:
    target = tmp_path / "keys" / "superexec.secret"
    target.parent.mkdir()
    if bad == "empty":
        target.touch(mode=0o600)
    else:
        target.mkdir()
    with pytest.raises(InvalidInput, match="not a non-empty regular file; remove it"):
        superexec_secret(tmp_path)
