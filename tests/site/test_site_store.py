"""Tests of the site directory: init, pseudonymised imports that change nothing when invalid, checks."""

from __future__ import annotations

import datetime as dt
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import yaml
from site_trees import tree_digest

from hemafed.errors import InvalidInput, ValidationFailed
from hemafed.site.node import SiteRequest
from hemafed.site.pseudonym import Pseudonymiser
from hemafed.site.store import (
    check_site,
    import_into_site,
    init_site,
    load_cohort,
    open_node,
    site_secret,
)

NOW = dt.datetime(2026, 6, 1, 9, 0, tzinfo=dt.UTC)
SHA = "ab" * 32


def _csv(tmp_path: Path, name: str, rows: list[str]) -> Path:
    path = tmp_path / name
    path.write_text("\n".join(["patient_id,disease,hb,sex", *rows]) + "\n")
    return path


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    init_site(root, "hosp-a", clock=lambda: NOW)
    return root


def test_init_lays_out_the_site_with_private_keys(site: Path) -> None:
    for rel in ("site.yaml", "policy.yaml", "keys/site_secret", "keys/c4gh.sec", "keys/c4gh.pub",
                "vault", "cohort"):
        assert (site / rel).exists(), rel
    for rel in ("keys/site_secret", "keys/c4gh.sec"):
        assert stat.S_IMODE((site / rel).stat().st_mode) == 0o600
    assert yaml.safe_load((site / "site.yaml").read_text())["site_id"] == "hosp-a"
    assert len(load_cohort(site)) == 0
    report = check_site(site)
    assert report.ok, report.problems
    with pytest.raises(InvalidInput, match="already a site"):
        init_site(site, "hosp-a")


def test_import_pseudonymises_and_links_within_a_study(site: Path, tmp_path: Path) -> None:
    first = _csv(tmp_path, "a.csv", ["MRN1,MDS,8.5,M", "MRN2,AML,10,F"])
    mut = tmp_path / "m.csv"
    mut.write_text("patient_id,gene,vaf\nMRN1,TP53,0.4\n")
    rep = import_into_site(site, first, mutations=mut, study="S1", clock=lambda: NOW)
    assert (rep.patients_added, rep.mutations_added, rep.patients_total) == (2, 1, 2)
    cohort = load_cohort(site)
    p = Pseudonymiser(site_secret(site))
    assert sorted(cohort.ids) == sorted([p.pseudonym("MRN1", "S1"), p.pseudonym("MRN2", "S1")])
    assert not any("MRN" in i for i in cohort.ids)
    assert cohort.mutations["patient_id"].tolist() == [p.pseudonym("MRN1", "S1")]
    # same patient, same study: the same pseudonym, so the re-import is refused and changes nothing
    before = tree_digest(site)
    with pytest.raises(InvalidInput, match="1 patient"):
        import_into_site(site, _csv(tmp_path, "b.csv", ["MRN3,MDS,9,M", "MRN2,AML,10,F"]),
                         study="S1")
    assert tree_digest(site) == before
    # another study is another pseudonym domain
    import_into_site(site, _csv(tmp_path, "c.csv", ["MRN1,MDS,8.5,M"]), study="S2")
    ids = set(load_cohort(site).ids)
    assert len(ids) == 3 and p.pseudonym("MRN1", "S2") in ids
    assert p.pseudonym("MRN1", "S2") != p.pseudonym("MRN1", "S1")
    entries = [e for e in (site / "audit.log").read_text().splitlines()]
    assert len(entries) == 2 and "MRN" not in "".join(entries)
    assert check_site(site).ok


def test_pseudonyms_depend_on_the_site_secret() -> None:
    a, b = Pseudonymiser(b"a" * 32), Pseudonymiser(b"b" * 32)
    assert a.pseudonym("MRN1", "S1") != b.pseudonym("MRN1", "S1")
    assert a.pseudonym(" MRN1 ", "S1") == a.pseudonym("MRN1", "S1")
    assert a.pseudonym("MRN1", "S1").startswith("hf-") and len(a.pseudonym("MRN1", "S1")) == 27


def test_invalid_file_changes_nothing(site: Path, tmp_path: Path) -> None:
    import_into_site(site, _csv(tmp_path, "a.csv", ["MRN1,MDS,8.5,M"]))
    before = tree_digest(site)
    bad = _csv(tmp_path, "bad.csv", ["MRN5,MDS,150,M", "MRN6,XYZ,9,F"])
    with pytest.raises(ValidationFailed) as info:
        import_into_site(site, bad)
    assert "2 problem(s)" in str(info.value)
    with pytest.raises(InvalidInput, match="no such file"):
        import_into_site(site, tmp_path / "missing.csv")
    assert tree_digest(site) == before


def test_check_site_reports_tampering_and_loose_keys(site: Path, tmp_path: Path) -> None:
    import_into_site(site, _csv(tmp_path, "a.csv", ["MRN1,MDS,8.5,M"]))
    import_into_site(site, _csv(tmp_path, "b.csv", ["MRN2,MDS,8.5,M"]))
    log = site / "audit.log"
    log.write_text(log.read_text().replace("imported 1", "imported 9", 1))
    os.chmod(site / "keys" / "c4gh.sec", 0o644)
    report = check_site(site)
    assert not report.ok
    text = "\n".join(report.problems)
    assert "line 1" in text and "edited" in text and "chmod 600" in text


def test_open_node_answers_from_the_site_dir(site: Path, tmp_path: Path) -> None:
    import_into_site(site, _csv(tmp_path, "a.csv", ["MRN1,MDS,8.5,M", "MRN2,MDS,9,F"]))
    policy = yaml.safe_load((site / "policy.yaml").read_text())
    policy["studies"] = [{"study_id": "S1", "spec_sha256": SHA, "expires": "2027-01-01",
                          "approved_by": "IRB"}]
    # a hash-only approval (no stored spec, so no plan) and a two-patient cohort: the template's
    # require_plan and min_subgroup_size would refuse it (tests/privacy cover those)
    policy["require_plan"] = False
    policy["min_subgroup_size"] = 0
    (site / "policy.yaml").write_text(yaml.safe_dump(policy))
    node = open_node(site, clock=lambda: NOW, rng=np.random.default_rng(0))
    ans = node.answer(SiteRequest("r1", "S1", SHA, "cohort_size", "1", {}, "hub"))
    assert ans["n"].tolist() == [2.0]
    assert check_site(site).ok


def test_an_interrupted_cohort_swap_is_recovered(site: Path, tmp_path: Path) -> None:
    import_into_site(site, _csv(tmp_path, "a.csv", ["MRN1,MDS,8.5,M"]))
    # a crash between moving the old cohort aside and moving the new one in
    os.replace(site / "cohort", site / ".cohort.old-999")
    assert len(load_cohort(site)) == 1
    assert (site / "cohort" / "patients.parquet").exists()
