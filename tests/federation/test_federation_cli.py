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


def test_hub_run_rejects_bad_config_json(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not used")
    result = CliRunner().invoke(app, ["hub", "run", "--hub", "127.0.0.1:1", "--ca", str(ca),
                                      "--config", "{nope"])
    assert result.exit_code != 0
    assert "not JSON" in result.output
