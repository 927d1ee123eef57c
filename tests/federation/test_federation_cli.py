"""The hub/site commands parse and do their local work (network parts run in the deploy tests)."""

from __future__ import annotations

from pathlib import Path

import typer
from cryptography.hazmat.primitives import serialization
from typer.testing import CliRunner

from hemafed.federation.cli import hub_app, site_app

app = typer.Typer()
app.add_typer(hub_app, name="hub")
app.add_typer(site_app, name="site")


def test_site_keygen_writes_a_loadable_pair(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["site", "keygen", str(tmp_path), "--name", "site-a"])
    assert result.exit_code == 0, result.output
    serialization.load_ssh_private_key((tmp_path / "site-a").read_bytes(), None)
    assert (tmp_path / "site-a.pub").read_text().startswith("ecdsa-sha2-nistp384 ")


def test_hub_start_refuses_missing_certificates(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["hub", "start", "--certs", str(tmp_path / "none")])
    assert result.exit_code != 0
    assert "ca.pem" in result.output


def test_hub_run_rejects_a_bad_study_spec_without_a_traceback(tmp_path: Path) -> None:
    ca, spec, manifest = tmp_path / "ca.pem", tmp_path / "study.yaml", tmp_path / "fed.json"
    ca.write_text("not used")
    manifest.write_text("{}")
    spec.write_text("study_id: x\nanalyses: [{kind: nope}]\n")
    result = CliRunner().invoke(app, ["hub", "run", str(spec), "--manifest", str(manifest),
                                      "--hub", "127.0.0.1:1", "--ca", str(ca)])
    assert result.exit_code == 1
    assert "Traceback" not in result.output and result.output.strip()


def test_the_installed_app_hash_is_what_a_hub_submits() -> None:
    """The pin is the hash of the FAB ``flwr run`` builds from the shipped app directory."""
    import hashlib

    from flwr.cli.build import build_fab_from_disk

    from hemafed.federation.flower.site_worker import APP_DIR, installed_app_sha256

    fab = build_fab_from_disk(APP_DIR)
    assert installed_app_sha256() == hashlib.sha256(fab).hexdigest()
    assert build_fab_from_disk(APP_DIR) == fab  # deterministic: the same bytes every build


def test_a_site_pins_app_hashes_in_site_yaml(tmp_path: Path) -> None:
    import pytest
    import yaml

    from hemafed.errors import InvalidInput
    from hemafed.federation.flower.site_worker import installed_app_sha256, pinned_app_hashes
    from hemafed.site.store import init_site

    site = init_site(tmp_path / "s", "hospital-a").root
    assert pinned_app_hashes(site) == {installed_app_sha256()}  # default: the installed app
    config = yaml.safe_load((site / "site.yaml").read_text())
    (site / "site.yaml").write_text(yaml.safe_dump({**config, "trusted_flower_apps": ["a" * 64]}))
    assert pinned_app_hashes(site) == {"a" * 64}  # explicit pins replace the default
    (site / "site.yaml").write_text(yaml.safe_dump({**config, "trusted_flower_apps": ["abc"]}))
    with pytest.raises(InvalidInput, match="trusted_flower_apps"):
        pinned_app_hashes(site)


def test_site_serve_with_an_unusable_superexec_secret_fails_before_starting(
        tmp_path: Path) -> None:
    from hemafed.site.store import init_site

    paths = init_site(tmp_path / "site", "site-a")
    paths.superexec_secret.unlink()
    paths.superexec_secret.mkdir()  # not a file: no SuperNode may start with it
    ca, key = tmp_path / "ca.pem", tmp_path / "node"
    ca.write_text("not used")
    key.write_text("not used")
    result = CliRunner().invoke(app, ["site", "serve", str(paths.root), "--hub", "127.0.0.1:1",
                                      "--ca", str(ca), "--key", str(key)])
    assert result.exit_code != 0
    assert "superexec.secret is not a non-empty regular file" in result.output
    assert "Traceback" not in result.output and "SuperNode pid" not in result.output
