"""Typed parameters of the five ``iptw_*`` site queries (:mod:`hemafed.analytics.weighting_queries`).

A hand-checked six-patient cohort pins the weights and sums; the hub's mapping, the typed object
and its wire form give identical numbers; a bad parameter is refused at the site by its name
before anything is computed, and the refusal the hub reads carries no patient data; the study
plan compares the typed request (the spec's weight cap pinned).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from hemafed.analytics.design import parse_formula
from hemafed.analytics.weighting import weight_request
from hemafed.analytics.weighting_queries import (
    BalanceParams,
    WeightedCoxParams,
    WeightedCoxRobustParams,
    WeightedKMInfluenceParams,
    WeightedKMParams,
    WeightedOutcomeParams,
    WeightParams,
    residual_terms,
    weight_bound,
    weighted_rows,
)
from hemafed.cohort import validate_cohort
from hemafed.cohort.model import Cohort
from hemafed.errors import InvalidInput
from hemafed.federation.queries import Query, get_query
from hemafed.privacy.refusal import refusal_of
from hemafed.site.audit import AuditLog
from hemafed.site.ledger import PrivacyLedger
from hemafed.site.node import SiteNode, SiteRequest
from hemafed.site.policy import ApprovedStudy, Budget, SitePolicy
from hemafed.study.plan import StudyPlan
from hemafed.study.spec import StudySpec

NOW = dt.datetime(2026, 6, 1, 9, 0, tzinfo=dt.UTC)
CAP = 20.0
DESIGN = parse_formula("age", None)
GRID = [1.0, 2.0, 3.0]
SPEC = StudySpec.from_mapping({"study_id": "W1", "requester": "tester", "analyses": [
    {"id": "hma", "kind": "iptw", "treatment": "hma", "formula": "age", "max_weight": CAP}]})
QUERIES = ("iptw_balance", "iptw_km_table", "iptw_km_influence", "iptw_cox_sums",
           "iptw_cox_robust")


def _cohort() -> Cohort:
    # treated: A (event at 1), B (censored at 2.5), C (event at 3); control: D (event at 2),
    # E (event at 3), F (missing time: in the balance without an outcome only)
    return validate_cohort(pd.DataFrame({
        "patient_id": list("ABCDEF"), "disease": ["MDS"] * 6,
        "age": [60.0, 70.0, 80.0, 65.0, 75.0, 55.0],
        "hma": [1, 1, 1, 0, 0, 0],
        "os_time": [1.0, 2.5, 3.0, 2.0, 3.0, None],
        "os_status": [1, 0, 1, 1, 1, None]}))


# gamma zero: e(x) = 1/2 for everyone, so stabilised weights (marginal 0.4) are 0.8 for the
# treated and 1.2 for the controls
BASE = weight_request(DESIGN, "hma", [0.0, 0.0], 0.4, "os_time", "os_status", GRID)


def _requests(cohort: Cohort) -> dict[str, dict[str, Any]]:
    km = get_query("iptw_km_table").run(cohort, BASE)
    cox = {**BASE, "beta": [0.0]}
    sums = get_query("iptw_cox_sums").run(cohort, cox)
    return {"iptw_balance": BASE, "iptw_km_table": BASE,
            "iptw_km_influence": {**BASE, "w_events": km["w_events"].tolist(),
                                  "w_at_risk": km["w_at_risk"].tolist()},
            "iptw_cox_sums": cox,
            "iptw_cox_robust": {**cox, **residual_terms(sums, 0.0, True)}}


def test_hand_checked_weights_and_sums() -> None:
    cohort = _cohort()
    rows = weighted_rows(cohort, BalanceParams.from_mapping(BASE))
    assert rows.weight.tolist() == pytest.approx([0.8, 0.8, 0.8, 1.2, 1.2])
    bal = get_query("iptw_balance").run(cohort, BASE)
    assert bal["n"].tolist() == [2.0, 3.0]
    assert bal["sw"] == pytest.approx([2.4, 2.4])
    assert bal["sww"] == pytest.approx([2 * 1.44, 3 * 0.64])
    assert bal["swx"][:, 0] == pytest.approx([1.2 * 140.0, 0.8 * 210.0])
    # without the outcome the balance also weights F (missing time)
    no_outcome = {k: v for k, v in BASE.items() if k not in ("duration_col", "event_col", "grid")}
    assert get_query("iptw_balance").run(cohort, no_outcome)["n"].tolist() == [3.0, 3.0]
    km = get_query("iptw_km_table").run(cohort, BASE)
    assert km["events"].tolist() == [[0.0, 1.0, 1.0], [1.0, 0.0, 1.0]]
    assert km["at_risk"].tolist() == [[2.0, 2.0, 1.0], [3.0, 2.0, 1.0]]
    assert km["w_events"] == pytest.approx(np.array([[0.0, 1.2, 1.2], [0.8, 0.0, 0.8]]))
    assert km["w_at_risk"] == pytest.approx(np.array([[2.4, 2.4, 1.2], [2.4, 1.6, 0.8]]))
    cox = get_query("iptw_cox_sums").run(cohort, {**BASE, "beta": [0.0]})
    # at beta 0 the risk-set sums are the weights at risk over both arms
    assert cox["s0"] == pytest.approx([4.8, 4.0, 2.0])
    assert cox["s1"] == pytest.approx([2.4, 1.6, 0.8])
    assert cox["d"].tolist() == [1.0, 1.0, 2.0]
    assert cox["dw"] == pytest.approx([0.8, 1.2, 2.0])


def test_mapping_typed_and_wire_give_identical_numbers() -> None:
    cohort = _cohort()
    for name, mapping in _requests(cohort).items():
        q = get_query(name)
        typed = q.check(mapping)
        assert type(typed) is q.params_type
        by_mapping = q.run(cohort, mapping)
        by_typed = q.run_checked(cohort, typed)
        by_wire = q.run(cohort, typed.to_mapping())
        for key, value in by_mapping.items():
            assert np.array_equal(value, by_typed[key]) and np.array_equal(value, by_wire[key])
        assert q.declare(mapping) == q.declare(typed)
        assert weight_bound(mapping) == weight_bound(typed)


def test_one_base_and_its_defaults() -> None:
    for cls in (BalanceParams, WeightedKMParams, WeightedKMInfluenceParams, WeightedCoxParams,
                WeightedCoxRobustParams):
        assert issubclass(cls, WeightParams)
        assert {"design", "treatment", "gamma", "marginal", "max_weight"} <= set(cls.keys())
    for cls in (WeightedKMParams, WeightedKMInfluenceParams, WeightedCoxParams):
        assert issubclass(cls, WeightedOutcomeParams)
    assert issubclass(WeightedCoxRobustParams, WeightedCoxParams)
    p = WeightedCoxParams.from_mapping({**BASE, "beta": [0.1]})
    # the untyped code's defaults: unstabilised, no cap, exact times, efron, 1e-10 steps
    bare = WeightedCoxParams.from_mapping({k: v for k, v in p.to_mapping().items()
                                           if k not in ("marginal", "ties", "resolution",
                                                        "time_mapping")})
    assert (bare.marginal, bare.max_weight, bare.ties, bare.time_mapping, bare.resolution) \
        == (1.0, None, "efron", "exact", 1e-10)
    assert "max_weight" not in p.to_mapping()  # an absent cap stays absent on the wire
    assert dataclasses.replace(p, max_weight=CAP).to_mapping()["max_weight"] == CAP
    km = _requests(_cohort())["iptw_km_influence"]
    assert WeightedKMInfluenceParams.from_mapping(km).resolution == 1e-14


def test_the_outcome_is_required_by_the_outcome_queries_only() -> None:
    no_outcome = {k: v for k, v in BASE.items() if k not in ("duration_col", "event_col", "grid")}
    BalanceParams.from_mapping(no_outcome)
    with pytest.raises(InvalidInput, match="'grid'"):
        BalanceParams.from_mapping({**no_outcome, "duration_col": "os_time",
                                    "event_col": "os_status"})
    for name in ("iptw_km_table", "iptw_cox_sums"):
        with pytest.raises(InvalidInput, match="'duration_col'"):
            get_query(name).check({**no_outcome, "beta": [0.0]} if "cox" in name
                                  else no_outcome)
    # a key of another iptw query is not silently ignored
    with pytest.raises(InvalidInput, match="unknown parameter 'beta'"):
        get_query("iptw_km_table").check({**BASE, "beta": [0.0]})


# --- at the site ---------------------------------------------------------------------------

def _node(tmp_path: Path) -> SiteNode:
    policy = SitePolicy(
        site_id="hosp-a", allowed_queries=tuple(f"{q}@1" for q in QUERIES),
        study_budget=Budget(1.0, 1e-6), total_budget=Budget(3.0, 1e-6),
        studies=(ApprovedStudy("W1", SPEC.sha256, dt.date(2026, 12, 31), "IRB 12"),),
        enforce_min_cell=False, min_subgroup_size=0)
    ledger = PrivacyLedger.from_policy(tmp_path / "ledger.jsonl", policy, clock=lambda: NOW)
    audit = AuditLog(tmp_path / "audit.log", clock=lambda: NOW)
    return SiteNode(_cohort(), policy, ledger, audit, clock=lambda: NOW,
                    rng=np.random.default_rng(0), plans={"W1": StudyPlan.from_spec(SPEC)})


def _ask(node: SiteNode, query: str, params: dict[str, Any], rid: str = "r1") -> Any:
    return node.answer(SiteRequest(rid, "W1", SPEC.sha256, query, "1", params, "alice", None))


PLANNED = weight_request(DESIGN, "hma", [0.0, 0.0], 0.4, "os_time", "os_status",
                         [1 / 12, 1.0, 2.0], max_weight=CAP)
"""A request the plan admits: the spec's design, columns and cap, a grid on a public lattice."""


def test_a_bad_parameter_is_refused_at_the_site_by_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    node = _node(tmp_path)
    assert _ask(node, "iptw_cox_sums", {**PLANNED, "beta": [0.2]})["d"].tolist() == \
        [0.0, 1.0, 1.0]
    computed: list[Any] = []
    monkeypatch.setattr(Query, "run_checked", lambda *a, **k: computed.append(a))
    # within the plan's coefficient bound, beyond the query's: 500 x half-width 1/2 > 200
    for rid, (query, key, value) in enumerate((
            ("iptw_cox_sums", "beta", [500.0]),
            ("iptw_km_table", "marginal", 1.5),
            ("iptw_balance", "resolution", 0.0))):
        with pytest.raises(InvalidInput) as err:
            _ask(node, query, {**PLANNED, key: value}, f"bad{rid}")
        refusal = refusal_of(err.value)
        assert (refusal.code, refusal.name) == ("invalid_parameter", key)
        # what the hub reads names the key and nothing the site computed from its patients
        said = dataclasses.replace(refusal, audit_ref="").text("hosp-a")
        assert key in said and not any(d in said for d in "0123456789")
    assert computed == []


def test_the_plan_compares_the_typed_request(tmp_path: Path) -> None:
    plan = StudyPlan.from_spec(SPEC)
    cox = {**PLANNED, "beta": [0.2]}
    typed = WeightedCoxParams.from_mapping(cox)
    assert plan.check("iptw_cox_sums", cox, False) is None
    assert plan.check("iptw_cox_sums", typed, False) is None
    # the spec's weight cap is pinned: moved or dropped, typed or not, it is outside the plan
    for moved in (dataclasses.replace(typed, max_weight=CAP * 2),
                  dataclasses.replace(typed, max_weight=None)):
        assert plan.check("iptw_cox_sums", moved, False)[0] == "max_weight"
        assert plan.check("iptw_cox_sums", moved.to_mapping(), False)[0] == "max_weight"
    # the default spelt out is the same request as left out
    assert plan.check("iptw_cox_sums", {**cox, "ties": "efron", "time_mapping": "exact"},
                      False) is None
    node = _node(tmp_path)
    _ask(node, "iptw_cox_sums", cox, "r1")
    _ask(node, "iptw_cox_sums", {**cox, "ties": "efron"}, "r2")
    marks = [str(e["reason"]).rpartition("; params ")[2] for e in node.audit.entries()]
    assert marks[0] and marks[0] == marks[1]
