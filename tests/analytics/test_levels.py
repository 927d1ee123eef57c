"""Declared levels of categorical covariates (a spec's ``levels``, ``parse_formula(levels=)``).

The secure Cox fits of veteran (cell type) and colon (treatment arm) against R are in
``test_r_reference.py``; here: a logistic model with a factor against R's ``glm``, the edge cases
(a level constant at one site, a level no site holds, dummies collinear with another covariate),
the spec's checks, and the refusal of a site holding a value outside the declared levels through
the real site stack and secure aggregation (naming the rule and column, never the value).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fixed_point_federation import FixedPointFederation
from r_datasets import LEVELS, needs_r, r_frames, run_r_batch
from r_datasets import split_uneven as split

from hemafed.analytics.cox import FederatedCoxPH
from hemafed.analytics.design import LevelsRefused, design_matrix, parse_formula
from hemafed.analytics.logistic import FederatedLogisticRegression
from hemafed.cohort.validate import validate_cohort
from hemafed.errors import ConvergenceError, HemafedError, InvalidInput
from hemafed.study.plan import StudyPlan
from hemafed.study.spec import StudySpec

VETERAN_LEVELS = {"cyto_ipssr": list(LEVELS["veteran"])}
R_CELLTYPE = 'factor(cyto_ipssr, levels = c("Very Good", "Good", "Intermediate", "Poor"))'


def pooled(sites: dict) -> pd.DataFrame:
    return pd.concat([c.patients.assign(site=s) for s, c in sites.items()], ignore_index=True)


def test_declared_levels_make_r_treatment_coding() -> None:
    spec = parse_formula("hma + cyto_ipssr + age", levels={"cyto_ipssr": ["Poor", "Good"]})
    assert spec.names == ("hma", "cyto_ipssr[Good]", "age")
    frame = pd.DataFrame({"patient_id": ["a", "b", "c"], "disease": "MDS", "hma": [True, False, True],
                          "cyto_ipssr": ["Poor", "Good", None], "age": [60.0, 70.0, 80.0]})
    x, names = design_matrix(validate_cohort(frame), spec)
    assert names == ["hma", "cyto_ipssr[Good]", "age"]
    np.testing.assert_array_equal(x, [[1.0, 0.0, 60.0], [0.0, 1.0, 70.0]])  # missing: dropped
    np.testing.assert_array_equal(spec.bounds[1], [0.0, 1.0])


def test_value_outside_declared_levels_names_rule_and_column_only() -> None:
    spec = parse_formula("cyto_ipssr", levels={"cyto_ipssr": ["Good", "Poor"]})
    frame = pd.DataFrame({"patient_id": ["a", "b"], "disease": "MDS",
                          "cyto_ipssr": ["Good", "Very Poor"]})
    with pytest.raises(LevelsRefused) as err:
        design_matrix(validate_cohort(frame), spec)
    assert err.value.refusal_name == "levels.cyto_ipssr"
    assert "Very Poor" not in str(err.value) and "1" not in str(err.value)


@pytest.mark.parametrize(("levels", "match"), [
    ({"age": ["a", "b"]}, "not a categorical column"),
    ({"sex": ["F", "M"]}, "does not use"),
    ({"cyto_ipssr": ["Good"]}, "at least two distinct levels"),
    ({"cyto_ipssr": ["Good", "Good"]}, "at least two distinct levels"),
    ({"cyto_ipssr": "Good"}, "list of level names"),
])
def test_bad_levels_are_clear_errors(levels: dict, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        parse_formula("age + cyto_ipssr", levels=levels)
    with pytest.raises(InvalidInput, match=match):
        StudySpec.from_mapping({"study_id": "s", "analyses": [
            {"id": "c", "kind": "cox", "duration": "os_time", "event": "os_status",
             "formula": "age + cyto_ipssr", "levels": levels}]})


def test_plan_permits_exactly_the_declared_design() -> None:
    spec = StudySpec.from_mapping({"study_id": "s", "analyses": [
        {"id": "c", "kind": "cox", "duration": "os_time", "event": "os_status",
         "formula": "age + cyto_ipssr", "levels": VETERAN_LEVELS}]})
    plan = StudyPlan.from_spec(spec)
    declared = parse_formula("age + cyto_ipssr", levels=VETERAN_LEVELS)
    base = {"duration_col": "os_time", "event_col": "os_status", "beta": [0.0] * 4}
    assert plan._designs("cox_risk_set_sums", {**base, "design": declared.to_params()}) is None
    schema = parse_formula("age + cyto_ipssr")  # the schema's five levels: not the approved one
    got = plan._designs("cox_risk_set_sums", {**base, "design": schema.to_params(),
                                              "beta": [0.0] * 5})
    assert got is not None and got[0] == "design"


@needs_r
def test_factor_models_and_edge_cases_equal_r() -> None:
    """Logistic with the cell-type factor (R ``glm``), Cox with a level constant at one site
    (R ``coxph``); a level no site holds and dummies collinear with another column refuse."""
    df = r_frames()["veteran"]
    sites = split(df, 5)
    big = max(sites, key=lambda s: len(sites[s]))
    p = sites[big].patients.copy()
    p["cyto_ipssr"] = "Good"  # constant at the largest site
    const = {**sites, big: validate_cohort(p)}
    formula = "hma + cyto_ipssr + bm_blast + age"
    rhs = f"hma + {R_CELLTYPE} + bm_blast + age"
    refs = run_r_batch({
        "glm": (f"f <- glm(os_status ~ {rhs}, family = binomial, data = d, "
                "control = glm.control(epsilon = 1e-14, maxit = 100))\n"
                "out <- data.frame(coef = coef(f), se = sqrt(diag(vcov(f))))", pooled(sites)),
        "cox": (f"m <- coxph(Surv(os_time, os_status) ~ {rhs}, data = d, "
                "control = coxph.control(eps = 1e-13, iter.max = 100))\n"
                "out <- data.frame(coef = coef(m), se = sqrt(diag(vcov(m))))", pooled(const))})
    lr = FederatedLogisticRegression().fit(FixedPointFederation(sites), "os_status", formula,
                                           levels=VETERAN_LEVELS)
    assert list(lr.summary.index)[2:5] == ["cyto_ipssr[Good]", "cyto_ipssr[Intermediate]",
                                          "cyto_ipssr[Poor]"]
    np.testing.assert_allclose(lr.summary["coef"], refs["glm"]["coef"], rtol=1e-6)
    np.testing.assert_allclose(lr.summary["std err"], refs["glm"]["se"], rtol=1e-6)
    cph = FederatedCoxPH().fit(FixedPointFederation(const), "os_time", "os_status", formula,
                               levels=VETERAN_LEVELS, concordance=False)
    np.testing.assert_allclose(cph.params_.to_numpy(), refs["cox"]["coef"], rtol=1e-6)
    np.testing.assert_allclose(cph.standard_errors_.to_numpy(), refs["cox"]["se"], rtol=1e-6)

    # a declared level no site holds: its column is zero everywhere (R gives NA)
    five = {"cyto_ipssr": [*LEVELS["veteran"], "Very Poor"]}
    with pytest.raises(ConvergenceError, match=r"singular.*'cyto_ipssr\[Very Poor\]'"):
        FederatedCoxPH().fit(FixedPointFederation(sites), "os_time", "os_status", formula,
                             levels=five, concordance=False)
    with pytest.raises(ConvergenceError, match=r"singular"):
        FederatedLogisticRegression().fit(FixedPointFederation(sites), "os_status", formula,
                                          levels=five)
    # dummies collinear with another covariate (a flag copying the 'Poor' dummy)
    coll = {}
    for s, c in sites.items():
        q = c.patients.copy()
        q["del5q"] = q["cyto_ipssr"] == "Poor"
        coll[s] = validate_cohort(q)
    with pytest.raises(ConvergenceError, match=r"singular.*'(cyto_ipssr\[Poor\]|del5q)'"):
        FederatedCoxPH().fit(FixedPointFederation(coll), "os_time", "os_status",
                             formula + " + del5q", levels=VETERAN_LEVELS, concordance=False)


@needs_r
@pytest.mark.slow
def test_site_outside_declared_levels_refuses_through_secure_aggregation(tmp_path: Path) -> None:
    """A site holding a level the spec does not declare refuses; the hub's error names the
    rule and the column, never the value or a count."""
    from hemafed.demo import build_sites
    from hemafed.federation.inprocess import run_in_process
    from hemafed.federation.runtime import SecureFederation
    from hemafed.study.site_runtime import site_handler

    df = r_frames()["veteran"]
    sites = split(df, 2)
    p = sites["site01"].patients.copy()
    p.loc[p.index[:3], "cyto_ipssr"] = "Very Poor"
    sites["site01"] = validate_cohort(p)
    spec = StudySpec.from_mapping({"study_id": "levels-refusal", "requester": "tester",
                                   "analyses": [{"id": "c", "kind": "cox", "duration": "os_time",
                                                 "event": "os_status",
                                                 "formula": "age + cyto_ipssr",
                                                 "levels": VETERAN_LEVELS}]})
    local = build_sites(tmp_path / "sites", sites, spec)

    def hub(exchange: Any, site_ids: list[str], config: dict[str, Any]) -> Any:
        fed = SecureFederation(exchange, local.manifest, spec_sha256=spec.sha256,
                               requester="tester")
        try:
            FederatedCoxPH().fit(fed, "os_time", "os_status", "age + cyto_ipssr",
                                 levels=VETERAN_LEVELS, concordance=False, study=spec.study_id)
        except HemafedError as exc:
            return {"error": str(exc)}
        return {"error": None}

    out = run_in_process(hub, site_handler, local.site_configs(), {}, raise_errors=True)
    assert out["error"] is not None
    assert "levels.cyto_ipssr" in out["error"] and "do not fit" in out["error"]
    # the refusal came through the secure sum: how many sites, not which; the request id is a
    # random hex digest, so a count could hide only outside it
    assert out["error"].startswith("1 of 2 sites refused: "), out["error"]
    text = re.sub(r"request [0-9a-f]+", "", out["error"][len("1 of 2"):])
    assert "Very Poor" not in text and not re.search(r"\d", text) and "site01" not in text


@needs_r
def test_km_standard_error_is_undefined_where_survival_reaches_zero() -> None:
    """veteran's curve reaches 0 (its longest follow-up is a death): from there R's survfit
    gives std.err NA and no interval; ours are NaN (None in a study's JSON)."""
    from hemafed.analytics.km import FederatedKaplanMeier

    sites = split(r_frames()["veteran"], 5)
    ref = run_r_batch({"km": (
        "s <- summary(survfit(Surv(os_time, os_status) ~ 1, data = d, conf.type = 'log-log'))\n"
        "out <- data.frame(time = s$time, surv = s$surv, se = s$std.err, lo = s$lower, "
        "hi = s$upper)", pooled(sites))})["km"]
    assert ref["surv"].iloc[-1] == 0 and np.isnan(ref["se"].iloc[-1])
    curve = FederatedKaplanMeier().fit(FixedPointFederation(sites), "os_time",
                                       "os_status").curve()
    at = curve.at(ref["time"].to_numpy() + 1e-9)
    np.testing.assert_allclose(at["survival"], ref["surv"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(at["std_err"], ref["se"], rtol=1e-7, equal_nan=True)
    np.testing.assert_allclose(at["lower"], ref["lo"], rtol=1e-7, equal_nan=True)
    np.testing.assert_allclose(at["upper"], ref["hi"], rtol=1e-7, equal_nan=True)
    assert np.isnan(at["std_err"].iloc[-1]) and np.isnan(at["lower"].iloc[-1])
    assert np.isfinite(at["std_err"].iloc[:-1]).all()
