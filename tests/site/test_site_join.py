"""`hemafed site join`: the officer sees the members and threshold; a manifest breaking the
malicious-hub bound (the Sybil manifest), or the policy's minimums, is refused; the approved
fingerprint is pinned and the site runs on no other manifest."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from hemafed.cli import app
from hemafed.errors import InvalidInput
from hemafed.secure import FederationManifest, SiteIdentity
from hemafed.site.membership import PIN_FILE
from hemafed.site.runtime import MANIFEST_FILE, ensure_identity
from hemafed.site.store import init_site
from hemafed.study.site_runtime import site_handler


def _site(tmp_path: Path) -> tuple[Path, SiteIdentity]:
    site_dir = tmp_path / "site00"
    init_site(site_dir, "site00")
    return site_dir, ensure_identity(site_dir, "site00")


def _manifest(tmp_path: Path, ours: SiteIdentity, n: int, t: int, name: str = "net",
              hub_model: str = "malicious") -> Path:
    # the other n - 1 keys are the hub's own (Sybil sites)
    others = [SiteIdentity.generate(f"sybil{i}") for i in range(n - 1)]
    m = FederationManifest.build(name, [ours, *others], threshold=t)
    if hub_model != "malicious":
        m = FederationManifest(m.name, m.threshold, m.sites, hub_model=hub_model)
    path = tmp_path / f"{name}-{n}-{t}-{hub_model}.json"
    m.save(path)
    return path


def test_the_sybil_manifest_is_refused_and_nothing_is_pinned(tmp_path: Path) -> None:
    site_dir, ours = _site(tmp_path)
    runner = CliRunner()
    for hub_model in ("malicious", "semi-honest"):
        sybil = _manifest(tmp_path, ours, 10, 2, hub_model=hub_model)
        res = runner.invoke(app, ["site", "join", str(site_dir), str(sybil)])
        assert res.exit_code == 1, res.output
        # the officer is shown the member list and the threshold before the refusal
        assert "10 member sites, threshold 2" in res.output and "member sybil8" in res.output
        assert not (site_dir / MANIFEST_FILE).exists() and not (site_dir / PIN_FILE).exists()
    assert "2t > n + c" in res.output or "semi-honest" in res.output


def test_the_policy_minimums_and_colluders_raise_the_bar(tmp_path: Path) -> None:
    site_dir, ours = _site(tmp_path)
    policy_path = site_dir / "policy.yaml"
    policy = yaml.safe_load(policy_path.read_text())
    policy["federation"] = {"colluding_sites": 2, "min_sites": 5}
    policy_path.write_text(yaml.safe_dump(policy))
    runner = CliRunner()
    # 2 * 6 > 10 + 0 but not > 10 + 2
    res = runner.invoke(app, ["site", "join", str(site_dir), str(_manifest(tmp_path, ours, 10, 6))])
    assert res.exit_code == 1 and "c = 2" in res.output
    res = runner.invoke(app, ["site", "join", str(site_dir), str(_manifest(tmp_path, ours, 4, 4))])
    assert res.exit_code == 1 and "min_sites 5" in res.output
    res = runner.invoke(app, ["site", "join", str(site_dir), str(_manifest(tmp_path, ours, 10, 7))])
    assert res.exit_code == 0, res.output


def test_a_later_manifest_needs_a_new_approval(tmp_path: Path) -> None:
    site_dir, ours = _site(tmp_path)
    runner = CliRunner()
    first = _manifest(tmp_path, ours, 5, 4, name="net-a")
    res = runner.invoke(app, ["site", "join", str(site_dir), str(first)])
    assert res.exit_code == 0, res.output
    assert FederationManifest.load(first).fingerprint.hex() in res.output
    site_handler({"site_dir": str(site_dir)})  # the approved manifest runs
    later = _manifest(tmp_path, ours, 7, 5, name="net-b")
    res = runner.invoke(app, ["site", "join", str(site_dir), str(later)])
    assert res.exit_code == 1 and "--replace" in res.output
    # a hub (or anyone) overwriting the manifest file does not change what the site runs on
    (site_dir / MANIFEST_FILE).write_bytes(later.read_bytes())
    with pytest.raises(InvalidInput, match="not the one the site officer approved"):
        site_handler({"site_dir": str(site_dir)})
    res = runner.invoke(app, ["site", "join", str(site_dir), str(later), "--replace"])
    assert res.exit_code == 0, res.output
    site_handler({"site_dir": str(site_dir)})


def test_identity_lines_round_trip(tmp_path: Path) -> None:
    site_dir, ours = _site(tmp_path)
    res = CliRunner().invoke(app, ["site", "identity", str(site_dir)])
    assert res.exit_code == 0
    assert base64.b64encode(ours.public_bytes).decode() in res.output
