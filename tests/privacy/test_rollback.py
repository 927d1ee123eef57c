"""Rolling back a site's ledger or audit log is detected: locally by `site check` and
`site audit --verify`, and, even when the whole site directory is restored consistently, by
the audit head the hub last saw (the site refuses to answer and says why)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from hostile import HostileHub

from hemafed.cohort.demo import generate
from hemafed.cohort.partition import split_sites
from hemafed.demo import build_sites
from hemafed.errors import PolicyRefused, ProtocolError
from hemafed.federation.api import DPRequest
from hemafed.federation.inprocess import InProcessSites
from hemafed.federation.queries import get_query
from hemafed.federation.runtime import SecureFederation
from hemafed.privacy.anchors import Anchor, JsonAnchorStore
from hemafed.privacy.calibration import noisy_specs
from hemafed.site.store import audit_log, check_site
from hemafed.study.site_runtime import site_handler
from hemafed.study.spec import StudySpec

SPEC = {"study_id": "rollback", "requester": "tester", "analyses": [
    {"id": "d", "kind": "describe", "columns": ["age"]}]}
DP = DPRequest(0.5, 1e-6)


@pytest.fixture
def sites(tmp_path: Path) -> Any:
    cohorts = split_sites(generate("MDS", 150, 4), 3, 4)
    spec = StudySpec.from_mapping(SPEC)
    return build_sites(tmp_path / "sites", cohorts, spec), spec


def _release(hub: HostileHub, dp: DPRequest | None = DP) -> Any:
    specs = noisy_specs(get_query("cohort_size").declare({}), dp, 3)
    return hub.ask("cohort_size", {}, specs=specs, dp=dp, divisor=3 if dp else 1)


def _problems(site_dir: Path) -> str:
    report = check_site(site_dir)
    return "" if report.ok else " | ".join(report.problems)


def test_restoring_or_deleting_the_ledger_fails_the_site_check(sites: Any, tmp_path: Path) -> None:
    fed, spec = sites
    hub = HostileHub(fed, spec.study_id, spec.sha256)
    site = next(iter(fed.site_dirs.values()))
    assert not isinstance(_release(hub), Exception)
    shutil.copy(site / "ledger.jsonl", tmp_path / "old-ledger.jsonl")
    assert not isinstance(_release(hub), Exception)
    assert _problems(site) == ""
    shutil.copy(tmp_path / "old-ledger.jsonl", site / "ledger.jsonl")  # budget "reset"
    assert "restored from an older copy" in _problems(site)
    (site / "ledger.jsonl").unlink()
    assert "ledger is missing" in _problems(site)


def test_cutting_the_audit_log_and_rewriting_its_head_is_detected(sites: Any) -> None:
    fed, spec = sites
    hub = HostileHub(fed, spec.study_id, spec.sha256)
    for _ in range(2):
        assert not isinstance(_release(hub, None), Exception)
    site = next(iter(fed.site_dirs.values()))
    log = site / "audit.log"
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:-1]))
    import json
    last = json.loads(lines[-2])
    (site / "audit.log.head").write_text(json.dumps({"seq": last["seq"], "hash": last["hash"]}))
    assert not audit_log(site).verify()
    assert _problems(site)


def test_deleting_both_log_files_is_detected(sites: Any) -> None:
    fed, spec = sites
    hub = HostileHub(fed, spec.study_id, spec.sha256)
    assert not isinstance(_release(hub), Exception)
    site = next(iter(fed.site_dirs.values()))
    for name in ("audit.log", "audit.log.head", "ledger.jsonl"):
        (site / name).unlink()
    report = audit_log(site).verify()
    assert not report and "deleted" in str(report)
    assert _problems(site)


def test_a_consistently_restored_site_refuses_the_hub_that_saw_more(sites: Any,
                                                                     tmp_path: Path) -> None:
    fed, spec = sites
    hub = HostileHub(fed, spec.study_id, spec.sha256)
    site_id, site = next(iter(fed.site_dirs.items()))
    assert not isinstance(_release(hub), Exception)
    snapshot = tmp_path / "snapshot"
    shutil.copytree(site, snapshot)  # the whole directory: keys, anchor, ledger, log, head
    assert not isinstance(_release(hub), Exception)
    seen = hub.anchors.get(site_id)
    assert seen is not None and seen == Anchor(*audit_log(site).head())
    shutil.rmtree(site)
    shutil.copytree(snapshot, site)
    assert _problems(site) == ""  # locally consistent: only the hub's anchor can tell
    out = _release(hub)
    assert isinstance(out, PolicyRefused | ProtocolError)
    names = {(b["code"], b["name"]) for b in hub.refusal_bodies()}
    assert (b"rollback", b"audit_log") in names, (names, out)
    last = audit_log(site).entries()[-1]
    assert last["decision"] == "refused" and "the hub last saw entry" in last["reason"]
    # it keeps refusing after its log has grown past the hub's sequence number again
    for _ in range(3):
        _release(hub)
    assert audit_log(site).head()[0] > seen.seq
    assert isinstance(_release(hub), PolicyRefused | ProtocolError)
    assert "not the one the hub last saw" in audit_log(site).entries()[-1]["reason"]


def test_the_json_anchor_store_keeps_the_last_head(tmp_path: Path) -> None:
    store = JsonAnchorStore(tmp_path / "anchors.json")
    assert store.get("A") is None
    store.put("A", Anchor(2, "a" * 64))
    store.put("B", Anchor(5, "b" * 64))
    again = JsonAnchorStore(tmp_path / "anchors.json")
    assert again.get("A") == Anchor(2, "a" * 64) and again.get("B").seq == 5
    assert Anchor(1, "a" * 64).behind(Anchor(2, "a" * 64))
    assert Anchor(2, "c" * 64).behind(Anchor(2, "a" * 64))
    assert Anchor(3, "c" * 64).behind(Anchor(2, "a" * 64)) is None


def test_a_restart_on_the_survivors_keeps_the_audit_heads_the_hub_saw(sites: Any,
                                                                      tmp_path: Path) -> None:
    """A fit that restarts (``restricted_to``) is a new federation object; the audit heads the
    hub anchored before the restart must come with it, or a site restored to an older copy in
    between would answer the restarted fit."""
    fed, spec = sites
    site = next(iter(fed.site_dirs.values()))
    snapshot = tmp_path / "snapshot"
    shutil.copytree(site, snapshot)
    current = [InProcessSites(site_handler, fed.site_configs())]
    secure = SecureFederation(lambda m: current[0].exchange(m), fed.manifest,
                              site_ids=current[0].site_ids, spec_sha256=spec.sha256,
                              requester="tester")
    secure.secure_sum("cohort_size", {}, study=spec.study_id)
    shutil.rmtree(site)
    shutil.copytree(snapshot, site)  # consistently restored: only the hub's anchor can tell
    current[0] = InProcessSites(site_handler, fed.site_configs())
    restart = secure.restricted_to(current[0].site_ids)
    with pytest.raises((PolicyRefused, ProtocolError)):
        restart.secure_sum("cohort_size", {}, study=spec.study_id)
    last = audit_log(site).entries()[-1]
    assert last["decision"] == "refused" and "the hub last saw entry" in last["reason"]
