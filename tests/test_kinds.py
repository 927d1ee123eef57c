"""One registration per analysis kind: the study tables are views of it and cannot disagree."""

from __future__ import annotations

import pytest

from hemafed.kinds import AnalysisKind, get_kind, register_kind, registered_kinds
from hemafed.study.plan import KIND_CAPS, KIND_QUERIES, StudyPlan
from hemafed.study.queries import QUERIES_OF_KIND
from hemafed.study.runner import RUNNERS
from hemafed.study.spec import KINDS, StudySpec


def test_every_table_is_read_from_the_registrations() -> None:
    names = [k.name for k in registered_kinds()]
    assert list(KINDS) == names
    assert set(RUNNERS) == set(names)  # every kind the spec admits can run
    for k in registered_kinds():
        assert KINDS[k.name] == (set(k.required), set(k.optional))
        if k.queries:
            assert KIND_QUERIES[k.name] == k.queries
            assert QUERIES_OF_KIND[k.name] == k.sends
        if k.caps and not callable(k.caps):
            assert KIND_CAPS[k.name] == dict(k.caps)


def test_the_policy_list_is_inside_the_plan_except_synthesis() -> None:
    # a synthesis also sends the real KM sums, which only a KM analysis of the study permits
    outside = {name for name, sends in QUERIES_OF_KIND.items()
               if not set(sends) <= KIND_QUERIES[name]}
    assert outside == {"synth"}


def test_a_plan_follows_a_changed_registration_caps() -> None:
    spec = StudySpec.from_mapping({"study_id": "s", "analyses": [
        {"id": "c", "kind": "cox", "duration": "os_time", "event": "os_status",
         "formula": "age"}]})
    plan = StudyPlan.from_spec(spec)
    assert plan.cap("cox_risk_set_sums") == get_kind("cox").caps_for(spec.analyses[0])[
        "cox_risk_set_sums"] == 60


def test_a_kind_is_registered_once() -> None:
    with pytest.raises(ValueError, match="already registered differently"):
        register_kind(AnalysisKind("cox", {"duration"}))
    assert register_kind(get_kind("cox")) is get_kind("cox")


@pytest.mark.parametrize(("kind", "entry"), [
    ("gbdt", {"duration": "os_time", "event": "os_status", "features": "age"}),
    ("quantile", {"column": "plt", "bounds": {"plt": [0, 1500]}})])
def test_an_exact_release_needs_the_kinds_exact_option(kind: str, entry: dict) -> None:
    k = get_kind(kind)
    assert k.exact_option in k.optional and k.exact_queries

    def dp_only(*exact: object) -> frozenset[str]:
        analyses = [{"id": f"a{i}", "kind": kind, **entry} for i in range(len(exact))]
        for a, e in zip(analyses, exact, strict=True):
            if e is not None:
                a[k.exact_option] = e
        spec = StudySpec.from_mapping({"study_id": "s", "analyses": analyses})
        plan = StudyPlan.from_spec(spec)
        kind_ = get_kind(kind)
        # the queries the plan refuses without DP for the last analysis of the spec
        last = spec.analyses[-1]
        sent = kind_.requests(last) if kind_.requests else [(q, {}) for q in k.exact_queries]
        return frozenset(q for q, p in sent if q in k.exact_queries
                         and (q in plan.dp_required or plan.check(q, p, False) == (
                             "dp", f"query {q!r} is planned only as a differentially "
                                   f"private release")))

    assert dp_only(None) == dp_only("yes") == k.exact_queries  # only a literal true opts out
    assert dp_only(True) == frozenset()
    # one analysis approved exact does not release another analysis of the kind exactly
    assert dp_only(True, None) == k.exact_queries


def test_an_exact_option_must_be_a_spec_option() -> None:
    with pytest.raises(ValueError, match="exact_option"):
        AnalysisKind("demo_exact", {"column"}, exact_option="exact",
                     exact_queries={"numeric_summary"})
