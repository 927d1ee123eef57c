"""Federated Cox against R's ``survival::coxph`` on R's own datasets over uneven federations.

lung, veteran, colon (deaths), pbc, myeloid and mgus2 (see ``r_datasets``) are split into 2, 5
and 10 sites of very unequal sizes, one holding a single patient and one holding no event, and
fitted through the exact fixed-point arithmetic of secure aggregation with the *schema's* wide
covariate bounds (what a formula string gives: the case that used to refuse with "coefficient
of 'wbc' diverges", "'loglik' has values outside its declared bounds" and "the Hessian is
singular"). Every coefficient and standard error must equal R's pooled fit within 1e-6
relative (R run with a tight ``coxph.control(eps = 1e-13)``; its default 1e-9 stops ~6e-7 short
on mgus2). Missing values follow one rule on both sides: complete cases (R's ``na.omit``).

A logistic model of death per dataset (factors by declared levels) is fitted through the same
real secure aggregation over the same 2, 5 and 10 sites and equals R's ``glm(family =
binomial)`` within 1e-6 relative; separation, where R's ``glm`` only warns, is refused and named.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fixed_point_federation import FixedPointFederation
from r_datasets import (
    DATASETS,
    LEVELS,
    MODELS,
    STEPS_PER_UNIT,
    needs_r,
    r_frames,
    run_r,
    run_r_batch,
)
from r_datasets import split_uneven as split

from hemafed.analytics.cox import FederatedCoxPH
from hemafed.analytics.design import DesignSpec, parse_formula
from hemafed.cohort.validate import validate_cohort
from hemafed.errors import ConvergenceError

pytestmark = [needs_r, pytest.mark.slow]


def levels(name: str, formula: str | None = None) -> dict[str, list[str]]:
    """The declared levels of the model's categorical column (those the data hold)."""
    terms = {t.strip() for t in (formula or MODELS[name]).split("+")}
    return {c: list(LEVELS[name]) for c in ("cyto_ipssr", "response")
            if c in terms and name in LEVELS}


def design(name: str, formula: str | None = None) -> DesignSpec:
    """The dataset's model with schema bounds; categorical columns take the declared levels."""
    return parse_formula(formula or MODELS[name], levels=levels(name, formula) or None)


def r_terms(name: str, formula: str | None = None) -> str:
    out = []
    for c in (t.strip() for t in (formula or MODELS[name]).split("+")):
        if c == "sex":
            out.append('factor(sex, levels = c("M", "F"))')
        elif c in ("cyto_ipssr", "response"):
            lv = ", ".join(f'"{v}"' for v in LEVELS[name])
            out.append(f"factor({c}, levels = c({lv}))")
        else:
            out.append(c)
    return " + ".join(out)


def pooled(sites: dict) -> pd.DataFrame:
    return pd.concat([c.patients.assign(site=s) for s, c in sites.items()], ignore_index=True)


def r_cox_script(name: str, ties: str = "efron") -> str:
    """R's fits, unstratified and stratified by site."""
    rhs = r_terms(name)
    return f"""
ctl <- coxph.control(eps = 1e-13, iter.max = 100)
fit <- function(f) {{ m <- coxph(f, data = d, ties = "{ties}", control = ctl)
  data.frame(coef = coef(m), se = sqrt(diag(vcov(m)))) }}
a <- fit(Surv(os_time, os_status) ~ {rhs})
b <- fit(Surv(os_time, os_status) ~ {rhs} + strata(site))
out <- rbind(cbind(a, strata = "none"), cbind(b, strata = "site"))
"""


def _by_strata(out: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return {str(k): g.drop(columns="strata") for k, g in out.groupby("strata", sort=False)}


def r_cox(name: str, frame: pd.DataFrame, ties: str = "efron") -> dict[str, pd.DataFrame]:
    return _by_strata(run_r(r_cox_script(name, ties), frame))


SPLITS = (2, 5, 10)


@pytest.fixture(scope="module")
def federations() -> dict[tuple[str, int], tuple[dict, dict[str, pd.DataFrame]]]:
    """Every dataset over 2, 5 and 10 sites with R's fits (one R process for all 18)."""
    sites = {(name, n): split(r_frames()[name], n) for name in DATASETS for n in SPLITS}
    refs = run_r_batch({f"{name}-{n}": (r_cox_script(name), pooled(s))
                        for (name, n), s in sites.items()})
    return {key: (s, _by_strata(refs[f"{key[0]}-{key[1]}"])) for key, s in sites.items()}


@pytest.mark.parametrize("name", DATASETS)
@pytest.mark.parametrize("n_sites", SPLITS)
def test_cox_equals_r_through_fixed_point_sums(name: str, n_sites: int, federations) -> None:
    sites, ref = federations[(name, n_sites)]
    assert min(len(c) for c in sites.values()) == 1
    assert any(not c.patients["os_status"].any() for c in sites.values())
    spec = design(name)
    for strata, key in ((None, "none"), ("site", "site")):
        cph = FederatedCoxPH(strata=strata).fit(
            FixedPointFederation(sites), "os_time", "os_status", spec,
            steps_per_unit=STEPS_PER_UNIT.get(name, 365.25), concordance=False)
        r = ref[key]
        assert len(r) == spec.width
        np.testing.assert_allclose(cph.params_.to_numpy(), r["coef"].to_numpy(), rtol=1e-6,
                                   err_msg=f"{name} {n_sites} sites strata={strata}")
        np.testing.assert_allclose(cph.standard_errors_.to_numpy(), r["se"].to_numpy(),
                                   rtol=1e-6, err_msg=f"{name} {n_sites} sites strata={strata}")
        frame = pooled(sites)
        complete = frame[[c for c in spec.columns] + ["os_time", "os_status"]].dropna()
        assert cph.n_ == len(complete) and cph.excluded_ == len(frame) - len(complete)


def test_breslow_on_pbc_with_schema_bounds_equals_r() -> None:
    """pbc's bilirubin in the ``wbc`` column (schema range 0-1000) once refused as diverging."""
    sites = split(r_frames()["pbc"], 5)
    ref = r_cox("pbc", pooled(sites), ties="breslow")
    cph = FederatedCoxPH(ties="breslow").fit(FixedPointFederation(sites), "os_time",
                                             "os_status", design("pbc"), concordance=False)
    np.testing.assert_allclose(cph.params_.to_numpy(), ref["none"]["coef"], rtol=1e-6)
    np.testing.assert_allclose(cph.standard_errors_.to_numpy(), ref["none"]["se"], rtol=1e-6)
    assert "wbc" in cph.params_.index


def test_collinear_covariate_r_cannot_estimate_is_named() -> None:
    """R gives NA for a covariate that is a copy of another; hemafed names it and refuses."""
    df = r_frames()["veteran"].copy()
    df["plt"] = df["age"]
    sites = split(df, 5)
    formula = "age + bm_blast + plt"
    ref = run_r(f"out <- data.frame(coef = coef(coxph(Surv(os_time, os_status) ~ "
                f"{r_terms('veteran', formula)}, data = d)))", pooled(sites))
    assert np.isnan(ref.loc["plt", "coef"])
    with pytest.raises(ConvergenceError, match=r"singular.*'(age|plt)'"):
        FederatedCoxPH().fit(FixedPointFederation(sites), "os_time", "os_status",
                             design("veteran", formula), concordance=False)


def test_covariate_constant_at_one_site_and_zero_event_site() -> None:
    """A site where a covariate never varies and another without events add what they hold."""
    df = r_frames()["myeloid"]
    sites = split(df, 5)
    big = max(sites, key=lambda s: len(sites[s]))
    p = sites[big].patients.copy()
    p["hma"] = True
    sites[big] = validate_cohort(p)
    assert not any(c.patients["os_status"].any() for s, c in sites.items() if s == "site01")
    ref = r_cox("myeloid", pooled(sites))
    cph = FederatedCoxPH().fit(FixedPointFederation(sites), "os_time", "os_status",
                               design("myeloid"), concordance=False)
    np.testing.assert_allclose(cph.params_.to_numpy(), ref["none"]["coef"], rtol=1e-6)
    np.testing.assert_allclose(cph.standard_errors_.to_numpy(), ref["none"]["se"], rtol=1e-6)


LOGISTIC = {"pbc": "age + wbc + anc + mono + ldh", "lung": "age + sex + bm_blast + ldh + mono",
            "mgus2": "age + sex + hb + anc + pb_blast"}


def test_logistic_with_schema_bounds_equals_r_glm() -> None:
    """Death as a binary outcome; pbc's AST (``ldh``, schema range 0-20000) once refused as
    "perfect or quasi-complete separation" at the first iteration."""
    from hemafed.analytics.logistic import FederatedLogisticRegression

    splits = {name: split(r_frames()[name], 5) for name in LOGISTIC}
    refs = run_r_batch({
        name: (f"f <- glm(os_status ~ {r_terms(name, f)}, family = binomial, data = d, "
               "control = glm.control(epsilon = 1e-14, maxit = 100))\n"
               "out <- data.frame(coef = coef(f), se = sqrt(diag(vcov(f))))", pooled(splits[name]))
        for name, f in LOGISTIC.items()})
    for name, f in LOGISTIC.items():
        m = FederatedLogisticRegression().fit(FixedPointFederation(splits[name]), "os_status",
                                              design(name, f))
        np.testing.assert_allclose(m.summary["coef"], refs[name]["coef"], rtol=1e-6,
                                   err_msg=name)
        np.testing.assert_allclose(m.summary["std err"], refs[name]["se"], rtol=1e-6,
                                   err_msg=name)


# --- logistic regression (R's glm, binomial) through the real secure aggregation ---------------

LOGISTIC_MODELS = {
    "lung": MODELS["lung"],
    "veteran": MODELS["veteran"],
    "colon": MODELS["colon"],
    "pbc": "age + sex + ring_sideroblasts + wbc + anc + mono + ldh",
    "myeloid": MODELS["myeloid"],
    "mgus2": MODELS["mgus2"],
}
"""Death (``os_status``) on each dataset's covariates, factors included (sex as M/F; veteran's
cell type and colon's treatment arm by declared levels). In every split ``split_uneven``'s
one-patient site and its site without events are a one-patient site and a site without cases."""

GLM = ("f <- glm(os_status ~ {rhs}, family = binomial, data = d, "
       "control = glm.control(epsilon = 1e-14, maxit = 100))\n"
       "out <- data.frame(coef = coef(f), se = sqrt(diag(vcov(f))))")
"""R's fit with a tight criterion (its default epsilon is 1e-8 on the relative deviance change).
``vcov`` takes the weights of the iteration before the last update, so R's SEs lag its
coefficients by that step: up to ~5e-8 relative here (pbc), well inside the tolerance."""

SEPARATED = "hma + sex + hb"
"""myeloid with a haemoglobin that separates death perfectly (see :func:`separated_myeloid`)."""

SEPARATION_R = """
w <- character(0)
f <- withCallingHandlers(
  glm(os_status ~ {rhs}, family = binomial, data = d, control = glm.control(maxit = 100)),
  warning = function(x) {{ w <<- c(w, conditionMessage(x)); invokeRestart("muffleWarning") }})
out <- data.frame(warning = paste(c(w, ""), collapse = "; "), converged = f$converged,
                  hb = coef(f)[["hb"]])
"""
"""R's glm on the separated data: it warns and gives an estimate without meaning."""


def separated_myeloid() -> pd.DataFrame:
    """myeloid with ``hb`` 12-13 g/dL for patients who died and 9-10 for the others."""
    df = r_frames()["myeloid"].copy()
    u = np.random.default_rng(1).uniform(0.0, 1.0, len(df))
    df["hb"] = np.where(df["os_status"] == 1, 12.0, 9.0) + u
    return df


@pytest.fixture(scope="module")
def glm_refs() -> dict[str, pd.DataFrame]:
    """R's glm per dataset on the pooled (validated) rows, and the separated case: one R run."""
    jobs = {name: (GLM.format(rhs=r_terms(name, f)), pooled(split(r_frames()[name], 2)))
            for name, f in LOGISTIC_MODELS.items()}
    jobs["separated"] = (SEPARATION_R.format(rhs=r_terms("myeloid", SEPARATED)),
                         pooled(split(separated_myeloid(), 2)))
    return run_r_batch(jobs)


def logistic_analysis(name: str, formula: str) -> dict[str, Any]:
    """The spec's analysis of death on ``formula`` (declared levels of its factors)."""
    a: dict[str, Any] = {"id": "death", "kind": "logistic", "outcome": "os_status",
                         "formula": formula}
    if levels(name, formula):
        a["levels"] = levels(name, formula)
    return a


def study_spec(name: str, n_sites: int) -> Any:
    """The study a site approves for the dataset's models: Cox unstratified and by site, and
    the logistic model of death (:data:`LOGISTIC_MODELS`)."""
    from hemafed.study.spec import StudySpec

    base: dict[str, Any] = {"kind": "cox", "duration": "os_time", "event": "os_status",
                            "formula": MODELS[name]}
    if levels(name):
        base["levels"] = levels(name)
    return StudySpec.from_mapping({
        "study_id": f"r-{name}-{n_sites}", "requester": "tester",
        "analyses": [{"id": "plain", **base}, {"id": "by_site", **base, "strata": "site"},
                     logistic_analysis(name, LOGISTIC_MODELS[name])]})


SECURE_DATASETS = DATASETS
"""veteran's cell type (in ``cyto_ipssr``, four of the schema's five levels) and colon's
treatment arm (in ``response``, three levels) enter through the spec's declared ``levels``: the
site's plan permits exactly that design, and each site expands the column into R's treatment
coding (a level absent at a site, e.g. at its one-patient site, is a zero column there)."""

_SECURE: dict[tuple[str, int], dict[str, Any]] = {}


def secure_fits(name: str, n_sites: int, sites: dict, tmp_path_factory: Any) -> dict[str, Any]:
    """Cox (unstratified and by site) and logistic fits of one federation through real site
    directories (intake, policy, the study's plan) and the real secure-aggregation protocol
    (pairwise masks, in-process transport). Built once per federation for the Cox and the
    logistic test: the site intake, not the fit, is most of the time."""
    key = (name, n_sites)
    if key in _SECURE:
        return _SECURE[key]
    from hemafed.analytics.logistic import FederatedLogisticRegression
    from hemafed.demo import build_sites
    from hemafed.federation.inprocess import run_in_process
    from hemafed.federation.runtime import SecureFederation
    from hemafed.study.site_runtime import site_handler

    spec = study_spec(name, n_sites)
    local = build_sites(tmp_path_factory.mktemp(f"{name}-{n_sites}"), sites, spec)

    def hub(exchange: Any, site_ids: list[str], config: dict[str, Any]) -> Any:
        def federation() -> SecureFederation:
            return SecureFederation(exchange, local.manifest, spec_sha256=spec.sha256,
                                    requester="tester")
        out = {}
        for strata in (None, "site"):
            fed = federation()
            cph = FederatedCoxPH(strata=strata).fit(
                fed, "os_time", "os_status", design(name),
                steps_per_unit=STEPS_PER_UNIT.get(name, 365.25), concordance=False,
                study=spec.study_id)
            out[strata or "none"] = {"coef": cph.params_.tolist(),
                                     "se": cph.standard_errors_.tolist(),
                                     "sites": list(fed.contributors or ())}
        fed = federation()
        m = FederatedLogisticRegression().fit(fed, "os_status",
                                              design(name, LOGISTIC_MODELS[name]),
                                              study=spec.study_id)
        out["logistic"] = {"coef": m.summary["coef"].tolist(),
                           "se": m.summary["std err"].tolist(), "n": m.nobs,
                           "sites": list(fed.contributors or ())}
        return out

    _SECURE[key] = run_in_process(hub, site_handler, local.site_configs(), {},
                                  raise_errors=True)
    return _SECURE[key]


@pytest.mark.parametrize("name", SECURE_DATASETS)
@pytest.mark.parametrize("n_sites", SPLITS)
def test_cox_equals_r_through_secure_aggregation(name: str, n_sites: int, federations,
                                                 tmp_path_factory) -> None:
    """The same fits through real site directories and secure aggregation (:func:`secure_fits`)."""
    sites, ref = federations[(name, n_sites)]
    secure = secure_fits(name, n_sites, sites, tmp_path_factory)
    for key in ("none", "site"):
        r = ref[key]
        assert secure[key]["sites"] == sorted(sites)
        np.testing.assert_allclose(secure[key]["coef"], r["coef"].to_numpy(), rtol=1e-6,
                                   err_msg=f"{name} {n_sites} sites strata={key}")
        np.testing.assert_allclose(secure[key]["se"], r["se"].to_numpy(), rtol=1e-6,
                                   err_msg=f"{name} {n_sites} sites strata={key}")


@pytest.mark.parametrize("name", SECURE_DATASETS)
@pytest.mark.parametrize("n_sites", SPLITS)
def test_logistic_equals_r_glm_through_secure_aggregation(name: str, n_sites: int, federations,
                                                          glm_refs, tmp_path_factory) -> None:
    """Every dataset's logistic model of death over 2, 5 and 10 uneven sites (one with a single
    patient, one without cases), through secure aggregation, equals R's ``glm``."""
    sites, _ = federations[(name, n_sites)]
    assert min(len(c) for c in sites.values()) == 1
    assert any(not c.patients["os_status"].any() for c in sites.values())
    secure = secure_fits(name, n_sites, sites, tmp_path_factory)["logistic"]
    d = design(name, LOGISTIC_MODELS[name])
    r = glm_refs[name]
    assert len(r) == d.width + 1
    assert secure["sites"] == sorted(sites)
    assert secure["n"] == len(pooled(sites)[[*d.columns, "os_status"]].dropna())
    np.testing.assert_allclose(secure["coef"], r["coef"].to_numpy(), rtol=1e-6,
                               err_msg=f"{name} {n_sites} sites")
    np.testing.assert_allclose(secure["se"], r["se"].to_numpy(), rtol=1e-6,
                               err_msg=f"{name} {n_sites} sites")


def test_logistic_separation_r_cannot_fit_is_named(glm_refs, tmp_path: Path) -> None:
    """Where R's glm only warns (fitted probabilities 0 or 1) and returns a meaningless
    estimate, the secure fit refuses and names the separating covariate."""
    r = glm_refs["separated"]
    assert "fitted probabilities numerically 0 or 1" in str(r["warning"].iloc[0])
    assert abs(float(r["hb"].iloc[0])) > 10  # R's "estimate" runs off with the separation
    from hemafed.analytics.logistic import FederatedLogisticRegression
    from hemafed.demo import build_sites
    from hemafed.federation.inprocess import run_in_process
    from hemafed.federation.runtime import SecureFederation
    from hemafed.study.site_runtime import site_handler
    from hemafed.study.spec import StudySpec

    spec = StudySpec.from_mapping({"study_id": "r-separated", "requester": "tester",
                                   "analyses": [logistic_analysis("myeloid", SEPARATED)]})
    local = build_sites(tmp_path / "sites", split(separated_myeloid(), 5), spec)

    def hub(exchange: Any, site_ids: list[str], config: dict[str, Any]) -> Any:
        fed = SecureFederation(exchange, local.manifest, spec_sha256=spec.sha256,
                               requester="tester")
        return FederatedLogisticRegression().fit(fed, "os_status", design("myeloid", SEPARATED),
                                                 study=spec.study_id)

    with pytest.raises(ConvergenceError) as err:
        run_in_process(hub, site_handler, local.site_configs(), {}, raise_errors=True)
    assert "'hb'" in str(err.value) and "separation" in str(err.value)
