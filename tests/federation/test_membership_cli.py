"""`hemafed hub manifest`: pins the sites' keys, and refuses a threshold a malicious hub can beat."""

from __future__ import annotations

import base64
from pathlib import Path

from typer.testing import CliRunner

from hemafed.cli import app
from hemafed.secure import FederationManifest, SiteIdentity


def _identity_files(tmp_path: Path, n: int) -> list[str]:
    args = []
    for i in range(n):
        ident = SiteIdentity.generate(f"site{i}")
        path = tmp_path / f"site{i}.pub"
        path.write_text(f"site{i} {base64.b64encode(ident.public_bytes).decode()}\n")
        args += ["--identity", str(path)]
    return args


def test_manifest_pins_every_key_and_refuses_a_threshold_of_half(tmp_path: Path) -> None:
    ids = _identity_files(tmp_path, 4)
    out = tmp_path / "federation.json"
    runner = CliRunner()
    # 2t <= n: a malicious hub could get two survivor lists each signed by t sites
    refused = runner.invoke(app, ["hub", "manifest", "net", *ids, "--threshold", "2",
                                  "--out", str(out)])
    assert refused.exit_code == 1 and not out.exists()
    assert "too low against a malicious hub" in refused.output
    assert "--threshold 3" in refused.output
    # the same threshold is accepted when the sites trust the hub to follow the protocol
    ok = runner.invoke(app, ["hub", "manifest", "net", *ids, "--threshold", "2",
                             "--hub-model", "semi-honest", "--out", str(out)])
    assert ok.exit_code == 0, ok.output
    assert FederationManifest.load(out).hub_model == "semi-honest"
    ok = runner.invoke(app, ["hub", "manifest", "net", *ids, "--threshold", "3",
                             "--out", str(out)])
    assert ok.exit_code == 0, ok.output
    manifest = FederationManifest.load(out)
    assert manifest.threshold == 3 and sorted(manifest.sites) == [f"site{i}" for i in range(4)]
