"""The site parses each request once, and the plan compares the typed request.

A typed query's parameters are compared with the plan with every default filled in: leaving a
default out and spelling it out are one request (one round, the same fixed request, the same
DP-only request), a key the query ignores is refused as an invalid parameter before any data
are read, and the plan check, the declaration and the computation take the one parsed object.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from hemafed.analytics.describe import NumericParams
from hemafed.analytics.quantile import quantile_params
from hemafed.analytics.quantile_query import QuantileParams
from hemafed.cohort import validate_cohort
from hemafed.errors import InvalidInput, PolicyRefused
from hemafed.federation.api import DPRequest
from hemafed.federation.queries import Query, SizeParams
from hemafed.site.audit import AuditLog
from hemafed.site.ledger import PrivacyLedger
from hemafed.site.node import SiteNode, SiteRequest
from hemafed.site.policy import ApprovedStudy, Budget, SitePolicy
from hemafed.study.plan import MAX_PATIENTS, StudyPlan
from hemafed.study.spec import StudySpec

NOW = dt.datetime(2026, 6, 1, 9, 0, tzinfo=dt.UTC)
BOUNDS = {"hb": [0.0, 20.0]}


def _spec(exact: bool) -> StudySpec:
    quantile: dict[str, Any] = {"id": "q", "kind": "quantile", "column": "hb", "bounds": BOUNDS,
                                "step": 0.5}
    if exact:
        quantile["exact"] = True
    return StudySpec.from_mapping({"study_id": "S1", "requester": "tester", "analyses": [
        {"id": "d", "kind": "describe", "columns": ["age"]}, quantile]})


SPEC = _spec(exact=True)
QUANTILE = quantile_params("hb", BOUNDS, 0.5)  # the hub step's request, max_patients left out
SUMMARY = {"column": "age", "low": 0.0, "high": 110.0, "bins": 20}


def _node(tmp_path: Path) -> SiteNode:
    cohort = validate_cohort(pd.DataFrame({
        "patient_id": [f"p{i:03d}" for i in range(6)], "disease": ["MDS"] * 6,
        "age": [61.0, 70.0, 55.0, 80.0, 66.0, 73.0], "hb": [8.0, 10.0, None, 12.5, 9.0, 11.0]}))
    policy = SitePolicy(
        site_id="hosp-a", allowed_queries=("cohort_size@1", "numeric_summary@1", "quantile_cdf@1"),
        study_budget=Budget(1.0, 1e-6), total_budget=Budget(3.0, 1e-6),
        studies=(ApprovedStudy("S1", SPEC.sha256, dt.date(2026, 12, 31), "IRB 12"),),
        enforce_min_cell=False, min_subgroup_size=0)
    ledger = PrivacyLedger.from_policy(tmp_path / "ledger.jsonl", policy, clock=lambda: NOW)
    audit = AuditLog(tmp_path / "audit.log", clock=lambda: NOW)
    return SiteNode(cohort, policy, ledger, audit, clock=lambda: NOW,
                    rng=np.random.default_rng(0), plans={"S1": StudyPlan.from_spec(SPEC)})


def _ask(node: SiteNode, query: str, params: dict[str, Any], rid: str = "r1",
         dp: DPRequest | None = None) -> Any:
    return node.answer(SiteRequest(rid, "S1", SPEC.sha256, query, "1", params, "alice", dp))


def _marks(node: SiteNode) -> list[str]:
    """The plan's distinct-request key of each audit entry ('' when it has none)."""
    return [str(e["reason"]).rpartition("; params ")[2] if "; params " in str(e["reason"])
            else "" for e in node.audit.entries()]


def test_spelling_a_fixed_requests_default_is_the_same_request(tmp_path: Path) -> None:
    node = _node(tmp_path)
    left_out = _ask(node, "quantile_cdf", QUANTILE, "r1")
    spelt = _ask(node, "quantile_cdf", {**QUANTILE, "max_patients": MAX_PATIENTS}, "r2")
    # hb 8, 9, 10, 11, 12.5 on the lattice 0, 0.5, ..., 20: 3 values at or below 10
    assert left_out["cdf"][20] == spelt["cdf"][20] == 3.0
    assert left_out["missing"].tolist() == spelt["missing"].tolist() == [1.0]
    # one distinct request of the plan, not two
    first, second = _marks(node)
    assert first and first == second


def test_a_default_spelt_out_is_not_a_new_round(tmp_path: Path) -> None:
    node = _node(tmp_path)
    _ask(node, "cohort_size", {}, "r1")
    _ask(node, "cohort_size", {"max_patients": MAX_PATIENTS}, "r2")
    assert len(set(_marks(node))) == 1


def test_a_pinned_default_cannot_be_dodged(tmp_path: Path) -> None:
    node = _node(tmp_path)
    with pytest.raises(PolicyRefused) as err:
        _ask(node, "quantile_cdf", {**QUANTILE, "max_patients": 7})
    assert (err.value.refusal.code, err.value.refusal.name) == ("outside_plan", "max_patients")
    with pytest.raises(PolicyRefused) as err:
        _ask(node, "quantile_cdf", {**QUANTILE, "step": 1.0}, "r2")
    assert (err.value.refusal.code, err.value.refusal.name) == ("outside_plan", "request")


def test_an_unknown_key_is_an_invalid_parameter_before_any_compute(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    node = _node(tmp_path)
    computed: list[Any] = []
    monkeypatch.setattr(Query, "run_checked", lambda *a, **k: computed.append(a))
    with pytest.raises(InvalidInput) as err:
        _ask(node, "numeric_summary", {**SUMMARY, "colunm": "hb"})
    assert err.value.refusal.code == "invalid_parameter"  # type: ignore[attr-defined]
    assert "colunm" in str(err.value)
    assert computed == []
    (entry,) = node.audit.entries()
    # refused by the parameters alone, before the plan's comparison: no plan round used
    assert entry["decision"] == "refused" and _marks(node) == [""]


def test_a_value_off_the_plan_names_the_rule_never_a_count(tmp_path: Path) -> None:
    node = _node(tmp_path)
    with pytest.raises(PolicyRefused) as err:
        _ask(node, "numeric_summary", {**SUMMARY, "high": 79.0})
    refusal = err.value.refusal  # type: ignore[attr-defined]
    assert (refusal.code, refusal.name) == ("outside_plan", "bounds")
    # what reaches the hub: the code, the rule's name, an audit reference; nothing computed
    # from the six patients (their count, their largest age)
    said = dataclasses.replace(refusal, audit_ref="").reason
    assert "bounds" in said and not any(d in said for d in "0123456789")
    assert node.audit.entries()[-1]["decision"] == "refused"


def test_compute_gets_the_object_the_plan_checked_parsed_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    node = _node(tmp_path)
    parsed: list[Any] = []
    planned: list[Any] = []
    computed: list[Any] = []
    from_mapping = NumericParams.from_mapping.__func__  # type: ignore[attr-defined]

    def counting(cls: type[NumericParams], params: Any) -> NumericParams:
        parsed.append(params)
        return from_mapping(cls, params)  # type: ignore[no-any-return]

    check, run_checked = StudyPlan.check, Query.run_checked

    def plan_check(self: StudyPlan, query: str, params: Any, *a: Any) -> Any:
        planned.append(params)
        return check(self, query, params, *a)

    def run(self: Query, cohort: Any, checked: Any, **kw: Any) -> Any:
        computed.append(checked)
        return run_checked(self, cohort, checked, **kw)

    monkeypatch.setattr(NumericParams, "from_mapping", classmethod(counting))
    monkeypatch.setattr(StudyPlan, "check", plan_check)
    monkeypatch.setattr(Query, "run_checked", run)
    ans = _ask(node, "numeric_summary", SUMMARY)
    assert ans["n"].tolist() == [6.0]
    assert len(parsed) == 1
    (typed,) = planned
    assert isinstance(typed, NumericParams) and computed == [typed] and computed[0] is typed


def test_the_plan_fills_the_defaults_of_a_fixed_dp_only_request() -> None:
    plan = StudyPlan.from_spec(_spec(exact=False))
    spelt = {**QUANTILE, "max_patients": MAX_PATIENTS}
    typed = QuantileParams.from_mapping(QUANTILE)
    for params in (QUANTILE, spelt, typed):
        assert plan.check("quantile_cdf", params, True) is None
        assert plan.check("quantile_cdf", params, False) == (
            "dp", "query 'quantile_cdf' is planned only as a differentially private release")
    assert plan.check("cohort_size", SizeParams(max_patients=5), False)[0] == "max_patients"


def test_a_typed_pinned_request_is_compared_with_its_defaults() -> None:
    """A pin (the iterated-request rule of e.g. the long-table Cox model) on a typed query:
    the pinned keys as the spec fixes them, the iterated ones free, every other key its
    default, however the request spells it."""
    pin = {"column": "hb", "low": 0.0, "high": 20.0, "iterated": ["step"]}
    plan = dataclasses.replace(StudyPlan.from_spec(SPEC), fixed={},
                               pinned={"quantile_cdf": frozenset({json.dumps(pin)})})
    base = {"column": "hb", "low": 0, "high": 20}
    assert plan.check("quantile_cdf", {**base, "step": 0.25}, False) is None
    assert plan.check("quantile_cdf", {**base, "step": 2.0, "max_patients": MAX_PATIENTS},
                      False) is None
    assert plan.check("quantile_cdf", QuantileParams("hb", 0.0, 20.0, 4.0), False) is None
    assert plan.check("quantile_cdf", {**base, "step": 2.0, "max_patients": 10}, False)[0] \
        == "max_patients"
    assert plan.check("quantile_cdf", {**base, "high": 10, "step": 1.0}, False)[0] == "request"
