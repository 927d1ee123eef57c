"""The plan pins a GWAS request's covariate list (with its trait and threshold).

The covariates decide which patients a GWAS request analyses (complete cases of the trait and
every covariate). Before this, the plan checked them only as columns some analysis of the spec
names, so a hub could send ``covariates: [age]`` and then ``[age, sex]`` (or any other column of
the spec) and difference the two nested complete-case sets: the null model's covariate sums of
the patients lacking one covariate, and, through which variants the site rule then leaves out,
their carrier status (docs/genomics.md, "Nested complete-case sets"). Now the list must be
exactly one gwas analysis's, in order, for that trait.
"""

from __future__ import annotations

from hemafed.study.plan import MAX_PATIENTS, StudyPlan
from hemafed.study.spec import StudySpec

BASE = {"study": "g", "variant_list": "0" * 64, "max_patients": MAX_PATIENTS}


def _plan(*analyses: dict) -> StudyPlan:
    return StudyPlan.from_spec(StudySpec.from_mapping({
        "study_id": "g", "analyses": [
            {"id": f"a{i}", "kind": "gwas", "variant_list": "v.tsv", **a}
            for i, a in enumerate(analyses)] + [
            # another analysis naming more columns (hb): columns of the plan, not covariates
            {"id": "d", "kind": "describe", "columns": ["hb", "age"]}]}))


def _request(trait: str, covariates: list[str], threshold: float | None = None) -> dict:
    return {**BASE, "trait": {"column": trait, "threshold": threshold},
            "covariates": covariates}


def test_gwas_covariates_must_be_the_analysis_list() -> None:
    plan = _plan({"trait": "hbf", "covariates": ["age", "sex"]},
                 {"trait": "tcd_velocity", "threshold": 200, "covariates": ["age"]})
    for query in ("gwas_null", "gwas_linear", "gwas_logistic", "gwas_firth"):
        assert plan.check(query, _request("hbf", ["age", "sex"]), False) is None, query
        assert plan.check(query, _request("tcd_velocity", ["age"], 200.0), False) is None
        # a nested set: one covariate fewer, one more (a column the spec names elsewhere),
        # another order, or another analysis's list for this trait
        for covs in (["age"], ["age", "sex", "hb"], ["sex", "age"], [], ["hb"]):
            assert plan.check(query, _request("hbf", covs), False)[0] == "covariates", covs
        assert plan.check(query, _request("tcd_velocity", ["age", "sex"], 200.0),
                          False)[0] == "covariates"
        # leaving the key out is the empty list (genomics.queries' default): refused too
        no_covs = {k: v for k, v in _request("hbf", []).items() if k != "covariates"}
        assert plan.check(query, no_covs, False)[0] == "covariates"
        # the trait rule is checked first and keeps its name
        assert plan.check(query, _request("hbf", ["age", "sex"], 5.0), False)[0] == "trait"


def test_a_gwas_without_covariates_pins_the_default_age_and_sex() -> None:
    plan = _plan({"trait": "hbf"})
    assert plan.check("gwas_null", _request("hbf", ["age", "sex"]), False) is None
    assert plan.check("gwas_null", _request("hbf", ["age"]), False)[0] == "covariates"
    # an explicitly empty list is its own (no covariates) analysed set
    empty = _plan({"trait": "hbf", "covariates": []})
    assert empty.check("gwas_null", _request("hbf", []), False) is None
    assert empty.check("gwas_null", _request("hbf", ["age"]), False)[0] == "covariates"


def test_queries_without_trait_or_covariates_are_unaffected() -> None:
    plan = _plan({"trait": "hbf"})
    assert plan.check("gwas_counts", {**BASE, "start": 0, "stop": 10}, False) is None


def test_the_genotype_store_is_the_specs() -> None:
    """``study`` (the genotype store a request reads) is the spec's ``genotypes`` (default the
    study id): under one approval a hub cannot read another store the site holds."""
    plan = _plan({"trait": "hbf"})
    assert plan.check("gwas_counts", {**BASE, "start": 0, "stop": 10}, False) is None
    other = {**BASE, "study": "another-study", "start": 0, "stop": 10}
    for query in ("gwas_counts", "gwas_pca_gram", "gwas_null", "gwas_linear"):
        assert plan.check(query, other, False)[0] == "study", query
    # the public store declaration may be asked of any store (sensitivity 0)
    assert plan.check("gwas_store", {"study": "another-study", "variant_list": "0" * 64,
                                     "build": "GRCh38", "sites": ["a"]}, False) is None
    named = _plan({"trait": "hbf", "genotypes": "scd-array"})
    assert named.check("gwas_counts", {**BASE, "study": "scd-array", "start": 0, "stop": 10},
                       False) is None
    assert named.check("gwas_counts", {**BASE, "start": 0, "stop": 10}, False)[0] == "study"


def test_cox_tv_switch_columns_are_the_specs() -> None:
    """``switch`` ([time, status] of the event that switches the covariate on) names columns:
    before, the plan did not read it, so a hub could switch on at any column's event."""
    plan = StudyPlan.from_spec(StudySpec.from_mapping({"study_id": "tv", "analyses": [
        {"id": "tv", "kind": "cox_tv", "duration": "os_time", "event": "os_status",
         "formula": "age + hb", "switch": ["amlt_time", "amlt_status"]}]}))
    assert plan._columns({"switch": ["amlt_time", "amlt_status"]}) is None
    assert plan._columns({"switch": ["lfs_time", "lfs_status"]})[0] == "column"
