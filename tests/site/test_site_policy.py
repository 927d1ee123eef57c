"""Tests of the site policy: loading with precise errors, and every refusal rule."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml

from hemafed.errors import InvalidInput
from hemafed.site.policy import SitePolicy, write_default_policy
from hemafed.site.request import SiteRequest

SHA = "ab" * 32
OTHER = "cd" * 32
TODAY = dt.date(2026, 6, 1)


def _policy_yaml(tmp_path: Path, **over: object) -> Path:
    doc: dict[str, object] = {
        "site_id": "hosp-a",
        "allowed_queries": ["cohort_size@1", "moments@*"],
        "privacy_budget": {"total": {"epsilon": 5.0, "delta": 1e-5},
                           "per_study": {"epsilon": 1.0, "delta": 1e-6}},
        "studies": [
            {"study_id": "S1", "spec_sha256": SHA, "expires": "2026-12-31", "approved_by": "IRB"},
            {"study_id": "S2", "spec_sha256": SHA, "expires": dt.date(2027, 1, 1),
             "approved_by": "IRB", "budget": {"epsilon": 2.5, "delta": 1e-7},
             "allowed_queries": ["cohort_size@1"]},
        ],
        "synthetic_release": {"max_mia_auc": 0.6},
    }
    doc.update(over)
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _req(query: str = "cohort_size", version: str = "1", study: str = "S1", sha: str = SHA,
         secure: bool = True) -> SiteRequest:
    return SiteRequest("r1", study, sha, query, version, {}, "alice", secure=secure)


def test_load_reads_every_field(tmp_path: Path) -> None:
    p = SitePolicy.load(_policy_yaml(tmp_path))
    assert p.site_id == "hosp-a" and p.min_cell_size == 5 and p.allow_non_secure is False
    assert p.total_budget.epsilon == 5.0 and p.study_budget.delta == 1e-6
    assert p.budget_for("S2").epsilon == 2.5 and p.budget_for("S1").epsilon == 1.0
    assert p.study("S1") is not None and p.study("S1").expires == dt.date(2026, 12, 31)  # type: ignore[union-attr]
    assert p.synthetic_release == {"max_mia_auc": 0.6}
    assert SitePolicy.from_mapping(yaml.safe_load(yaml.safe_dump(p.to_mapping()))) == p


@pytest.mark.parametrize(("override", "needle"), [
    ({"min_cell_size": 0}, "'min_cell_size': expected an integer >= 1, got 0"),
    ({"allowed_queries": ["cohort_size"]}, "'allowed_queries[0]': expected 'name@version'"),
    ({"allow_non_secure": "yes"}, "'allow_non_secure': expected true or false"),
    ({"studies": [{"study_id": "S", "spec_sha256": "xyz", "expires": "2026-01-01",
                   "approved_by": "x"}]}, "'studies[0].spec_sha256': expected 64 lowercase hex"),
    ({"studies": [{"study_id": "S", "spec_sha256": SHA, "expires": "soon",
                   "approved_by": "x"}]}, "'studies[0].expires': expected a date YYYY-MM-DD"),
    ({"studies": [{"study_id": "S", "spec_sha256": SHA, "expires": "2026-01-01"}]},
     "missing key(s) studies[0].approved_by"),
    ({"privacy_budget": {"total": {"epsilon": 1, "delta": 2}, "per_study": {"epsilon": 1,
                                                                            "delta": 1e-6}}},
     "'privacy_budget.total.delta': expected a number in (0, 1)"),
    ({"min_cel_size": 3}, "unknown key(s) min_cel_size"),
    ({"synthetic_release": {"mia_auc": 0.6}}, "must be named max_... or min_..."),
])
def test_load_errors_name_file_key_and_expectation(tmp_path: Path, override: dict[str, object],
                                                   needle: str) -> None:
    path = _policy_yaml(tmp_path, **override)
    with pytest.raises(InvalidInput) as info:
        SitePolicy.load(path)
    assert str(path) in str(info.value)
    assert needle in str(info.value)


def test_duplicate_study_is_refused(tmp_path: Path) -> None:
    s = {"study_id": "S", "spec_sha256": SHA, "expires": "2026-01-01", "approved_by": "x"}
    with pytest.raises(InvalidInput, match="more than once: S"):
        SitePolicy.load(_policy_yaml(tmp_path, studies=[s, s]))


@pytest.mark.parametrize(("request_", "rule"), [
    (_req(), "ok"),
    (_req("moments", "7"), "ok"),
    (_req("category_counts", "1"), "query_not_allowed"),
    (_req("cohort_size", "2"), "query_not_allowed"),
    (_req(study="S9"), "study_not_approved"),
    (_req(sha=OTHER), "spec_hash_mismatch"),
    (_req("moments", "1", study="S2"), "query_not_allowed"),
    (_req(secure=False), "non_secure_refused"),
])
def test_check_rules(tmp_path: Path, request_: SiteRequest, rule: str) -> None:
    decision = SitePolicy.load(_policy_yaml(tmp_path)).check(request_, TODAY)
    assert decision.rule == rule
    assert decision.allowed is (rule == "ok")
    assert decision.reason


def test_expiry_is_inclusive_of_the_last_day(tmp_path: Path) -> None:
    p = SitePolicy.load(_policy_yaml(tmp_path))
    assert p.check(_req(), dt.date(2026, 12, 31)).allowed
    late = p.check(_req(), dt.date(2027, 1, 1))
    assert late.rule == "study_expired" and "2026-12-31" in late.reason


def test_non_secure_allowed_when_policy_says_so(tmp_path: Path) -> None:
    p = SitePolicy.load(_policy_yaml(tmp_path, allow_non_secure=True))
    assert p.check(_req(secure=False), TODAY).allowed


def test_default_policy_template_loads_and_refuses_everything_until_studies_added(
        tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    written = write_default_policy(path, "hosp-b")
    text = path.read_text()
    assert text.startswith("#") and "max_mia_auc" in text
    loaded = SitePolicy.load(path)
    assert loaded == written and loaded.site_id == "hosp-b" and loaded.studies == ()
    assert loaded.check(_req(), TODAY).rule == "study_not_approved"
