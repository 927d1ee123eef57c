"""Tests of SiteNode.answer: policy, audit, ledger and noise, in that order, releasing nothing on refusal."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hemafed.cohort import validate_cohort
from hemafed.errors import BudgetExhausted, InvalidInput, PolicyRefused
from hemafed.federation.api import DPRequest
from hemafed.site.audit import AuditLog
from hemafed.site.ledger import PrivacyLedger, composed_epsilon, gaussian_sigma
from hemafed.site.node import SiteNode, SiteRequest, release_sensitivity
from hemafed.site.policy import ApprovedStudy, Budget, SitePolicy

SHA = "ab" * 32
NOW = dt.datetime(2026, 6, 1, 9, 0, tzinfo=dt.UTC)
IDS = ["pat-0001", "pat-0002", "pat-0003", "pat-0004"]


def _node(tmp_path: Path, seed: int = 7, **policy_kw: object) -> SiteNode:
    cohort = validate_cohort(pd.DataFrame({
        "patient_id": IDS, "disease": ["MDS"] * 4, "hb": [8.0, 10.0, None, 12.5],
        "sex": ["M", "F", "M", "F"]}))
    studies = (ApprovedStudy("S1", SHA, dt.date(2026, 12, 31), "IRB 12"),
               ApprovedStudy("OLD", SHA, dt.date(2026, 5, 31), "IRB 3"))
    kw: dict[str, object] = {"site_id": "hosp-a",
                             "allowed_queries": ("cohort_size@1", "moments@1", "category_counts@*"),
                             "study_budget": Budget(1.0, 1e-6), "total_budget": Budget(3.0, 1e-6),
                             "studies": studies,
                             # a node without stored plans on a four-patient cohort: the
                             # protective defaults (plans, cells, subgroups) set off explicitly
                             "require_plan": False, "enforce_min_cell": False,
                             "min_subgroup_size": 0}
    kw.update(policy_kw)
    policy = SitePolicy(**kw)  # type: ignore[arg-type]
    ledger = PrivacyLedger.from_policy(tmp_path / "ledger.jsonl", policy, clock=lambda: NOW)
    audit = AuditLog(tmp_path / "audit.log", clock=lambda: NOW)
    return SiteNode(cohort, policy, ledger, audit, clock=lambda: NOW,
                    rng=np.random.default_rng(seed))


def _req(query: str = "cohort_size", version: str = "1", *, study: str = "S1", sha: str = SHA,
         params: dict[str, object] | None = None, dp: DPRequest | None = None, t: int = 1,
         secure: bool = True) -> SiteRequest:
    return SiteRequest("req-1", study, sha, query, version, params or {}, "alice@hub", dp, t, secure)


def test_allowed_request_without_dp_is_exact_and_audited(tmp_path: Path) -> None:
    node = _node(tmp_path)
    ans = node.answer(_req("category_counts", "1", params={"column": "sex", "levels": ["M", "F"]}))
    assert ans["counts"].tolist() == [2.0, 2.0] and ans["missing"].tolist() == [0.0]
    assert ans.min_cell_size == 5 and ans.noise_std == {"counts": 0.0, "missing": 0.0, "other": 0.0}
    (entry,) = node.audit.entries()
    assert entry["decision"] == "allowed" and entry["query"] == "category_counts@1"
    assert entry["requester"] == "alice@hub" and entry["epsilon"] == 0.0
    assert node.ledger.charges() == []


@pytest.mark.parametrize(("request_", "needle"), [
    (_req("moments", "2"), "moments@2 is not allowed"),
    (_req(study="S9"), "'S9' is not approved"),
    (_req(study="OLD"), "expired on 2026-05-31"),
    (_req(sha="cd" * 32), "does not match the approved"),
    (_req(secure=False, dp=DPRequest(0.5)), "only inside secure aggregation"),
])
def test_refusals_are_audited_and_release_nothing(tmp_path: Path, request_: SiteRequest,
                                                  needle: str) -> None:
    node = _node(tmp_path)
    state = node._rng.bit_generator.state
    with pytest.raises(PolicyRefused) as info:
        node.answer(request_)
    assert needle in str(info.value) and "hosp-a" in str(info.value)
    (entry,) = node.audit.entries()
    assert entry["decision"] == "refused" and needle in entry["reason"]
    assert node.ledger.charges() == [] and node._rng.bit_generator.state == state
    assert node.audit.verify().ok


def test_dp_noise_is_one_gaussian_on_the_concatenation(tmp_path: Path) -> None:
    node = _node(tmp_path, seed=11)
    params = {"column": "hb", "low": 0, "high": 20}
    dp = DPRequest(0.5, 1e-6)
    ans = node.answer(_req("moments", params=params, dp=dp, t=3), guaranteed_contributors=3)
    # hand-computed: n has sensitivity 1, sum 20, sum of squares 400
    sens = math.sqrt(1 + 20**2 + 400**2)
    assert release_sensitivity(ans.specs) == pytest.approx(sens)
    sigma = gaussian_sigma(0.5, 1e-6, sens)
    assert ans.noise_std == {"n": sigma, "sum": sigma, "sum_sq": sigma}
    assert ans.noise_share_std["sum"] == pytest.approx(sigma / math.sqrt(3))
    # the noise is exactly what the seeded generator draws, statistic by statistic
    expected_rng = np.random.default_rng(11)
    truth = {"n": 3.0, "sum": 30.5, "sum_sq": 64 + 100 + 156.25}
    for name in ("n", "sum", "sum_sq"):
        noise = expected_rng.normal(0.0, sigma / math.sqrt(3), size=(1,))
        np.testing.assert_allclose(ans[name], truth[name] + noise)
    # bounds widened so that the encoder accepts the noisy value
    assert ans.specs["n"].low == pytest.approx(-12 * sigma / math.sqrt(3))
    assert ans.specs["sum"].high == pytest.approx(20 * 1_000_000 + 12 * sigma / math.sqrt(3))
    (charge,) = node.ledger.charges()
    assert charge.study == "S1" and charge.epsilon == 0.5 and charge.request_id == "req-1"
    (entry,) = node.audit.entries()
    assert entry["decision"] == "allowed" and entry["epsilon"] == 0.5 and entry["delta"] == 1e-6


def test_noise_share_variance_matches_sigma_squared_over_t(tmp_path: Path) -> None:
    node = _node(tmp_path, seed=3)
    levels = [f"L{i}" for i in range(1000)]
    ans = node.answer(_req("category_counts", params={"column": "sex", "levels": levels},
                           dp=DPRequest(1.0, 1e-6), t=4), guaranteed_contributors=4)
    sigma = gaussian_sigma(1.0, 1e-6, math.sqrt(3))
    sample_sd = float(np.std(ans["counts"], ddof=1))  # true counts are 0 for every Lk
    assert sample_sd == pytest.approx(sigma / 2, rel=0.1)  # 4 standard errors


def test_budget_exhausted_is_audited_and_releases_nothing(tmp_path: Path) -> None:
    node = _node(tmp_path)
    node.answer(_req(dp=DPRequest(0.8, 1e-6)))
    state = node._rng.bit_generator.state
    with pytest.raises(BudgetExhausted) as info:
        node.answer(_req(dp=DPRequest(0.8, 1e-6)))
    assert "spent epsilon 0.8" in str(info.value)
    assert node._rng.bit_generator.state == state
    assert len(node.ledger.charges()) == 1
    last = node.audit.entries()[-1]
    assert last["decision"] == "refused" and "budget exhausted" in last["reason"]
    assert last["epsilon"] == 0.0 and node.audit.verify().ok


def test_non_secure_answer_carries_the_full_sigma(tmp_path: Path) -> None:
    node = _node(tmp_path, allow_non_secure=True)
    ans = node.answer(_req(dp=DPRequest(1.0, 1e-6), t=5, secure=False))
    assert ans.noise_share_std["n"] == pytest.approx(ans.noise_std["n"])


def test_invalid_parameters_are_audited(tmp_path: Path) -> None:
    node = _node(tmp_path)
    with pytest.raises(InvalidInput, match="levels"):
        node.answer(_req("category_counts", params={"column": "sex"}))
    assert node.audit.entries()[0]["decision"] == "refused"


def test_failed_query_audits_no_message_and_no_patient_data(tmp_path: Path) -> None:
    node = _node(tmp_path)
    with pytest.raises(InvalidInput, match="outside the declared bounds"):
        node.answer(_req("moments", params={"column": "hb", "low": 0, "high": 9}))
    node.answer(_req())
    text = node.audit.path.read_text()
    assert "[data_do_not_fit:- ref " in text and "outside the declared bounds" in text
    assert not any(pid in text for pid in IDS)
    assert len(node.ledger.charges()) == 0


def test_dp_by_noise_multiplier_charges_its_epsilon(tmp_path: Path) -> None:
    node = _node(tmp_path, seed=5)
    ans = node.answer(_req(dp=DPRequest(None, 1e-6, noise_multiplier=6.0), t=2),
                      guaranteed_contributors=2)
    assert ans.noise_std["n"] == 6.0 and ans.noise_share_std["n"] == pytest.approx(6.0 / math.sqrt(2))
    (charge,) = node.ledger.charges()
    assert charge.noise_multiplier == 6.0
    assert charge.epsilon == pytest.approx(composed_epsilon([(6.0, 1)], 1e-6))
    assert ans.epsilon_charged == charge.epsilon and 0.5 < charge.epsilon < 1.0


def test_noise_share_divisor_above_the_guaranteed_contributors_is_refused(tmp_path: Path) -> None:
    """A hub asking each site for 1/d of the variance when the protocol guarantees fewer than d
    contributors would get a sum with too little noise: refused, audited, nothing charged."""
    node = _node(tmp_path, seed=5)
    with pytest.raises(PolicyRefused, match=r"1/5 of the DP noise variance.*guarantees only 4"):
        node.answer(_req(dp=DPRequest(1.0, 1e-6), t=5), guaranteed_contributors=4)
    with pytest.raises(PolicyRefused, match="guarantees only 1"):
        node.answer(_req(dp=DPRequest(1.0, 1e-6), t=2))  # no secure-aggregation guarantee
    assert node.ledger.charges() == []
    assert [e["decision"] for e in node.audit.entries()] == ["refused", "refused"]
    ans = node.answer(_req(dp=DPRequest(1.0, 1e-6), t=4), guaranteed_contributors=4)
    assert ans.noise_share_std["n"] == pytest.approx(ans.noise_std["n"] / 2)
