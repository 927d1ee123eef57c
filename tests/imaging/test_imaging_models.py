"""Imaging + clinical models: federated screen and logistic/Cox equal their pooled references."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from hemafed.cohort.model import Cohort
from hemafed.federation.local import LocalSumFederation
from hemafed.imaging.combat import FederatedComBat, apply_harmonisation
from hemafed.imaging.demo import HARMONISED_FEATURES, ImagingSites
from hemafed.imaging.models import fit_infarct_model, fit_pfs_model, harmonised_bounds
from hemafed.imaging.site_features import imaging_cohort, imaging_table
from hemafed.site.store import load_cohort

FEATURES = list(HARMONISED_FEATURES)
H = ["h_" + f for f in FEATURES]


STUDY = "local-models"
"""The study the local-sum harmonisation below is stored for (harmonised features are per study)."""


def _cohorts(built: ImagingSites, study: str | None = None) -> dict[str, Cohort]:
    return {s: imaging_cohort(load_cohort(d), imaging_table(d, study=study))
            for s, d in built.sites.site_dirs.items()}


def _harmonise(built: ImagingSites, covariates: list[str]) -> tuple[dict[str, Cohort],
                                                                    dict[str, list[float]]]:
    cohorts = _cohorts(built)
    # the public bounds the virtual study's spec declares
    bounds = dict(built.spec.raw["imaging"]["bounds"])
    combat = FederatedComBat().fit(LocalSumFederation(cohorts), FEATURES, covariates, bounds)
    for d in built.sites.site_dirs.values():
        apply_harmonisation(d, {**combat.site_parameters(), "bounds": bounds}, study=STUDY)
    return _cohorts(built, STUDY), {k: list(v) for k, v in
                             harmonised_bounds(combat, bounds).items()}


@pytest.fixture(scope="module")
def scd(scd_sites: ImagingSites) -> tuple[dict[str, Cohort], dict[str, list[float]]]:
    return _harmonise(scd_sites, ["age", "hb"])


@pytest.fixture(scope="module")
def mm(mm_sites: ImagingSites) -> tuple[dict[str, Cohort], dict[str, list[float]]]:
    return _harmonise(mm_sites, ["age"])


def test_harmonised_columns_are_stored_at_each_site(scd: tuple[dict[str, Cohort], dict]) -> None:
    cohorts, _ = scd
    for c in cohorts.values():
        assert set(H) <= set(c.patients.columns)
        assert c.patients[H].notna().all().all()


def test_screen_equals_pooled_welch_t(scd: tuple[dict[str, Cohort], dict]) -> None:
    from hemafed.imaging.screen import federated_screen

    cohorts, bounds = scd
    table = federated_screen(LocalSumFederation(cohorts), H, "silent_infarct", bounds)
    pooled = pd.concat([c.patients for c in cohorts.values()], ignore_index=True)
    y = pooled["silent_infarct"].astype(float).to_numpy()
    for f, t in zip(table["feature"], table["t"], strict=True):
        x = pooled[f].astype(float).to_numpy()
        ref = stats.ttest_ind(x[y == 1], x[y == 0], equal_var=False).statistic
        assert t == pytest.approx(ref, rel=1e-9), f


def test_infarct_model_federated_equals_pooled_statsmodels(
        scd: tuple[dict[str, Cohort], dict]) -> None:
    import statsmodels.api as sm

    cohorts, bounds = scd
    fitted = fit_infarct_model(LocalSumFederation(cohorts), "silent_infarct", ["age", "hb"], H,
                               bounds, top_k=2)
    assert fitted.screen["feature"][0] in ("h_firstorder_maximum", "h_firstorder_kurtosis",
                                  "h_firstorder_skewness", "h_glrlm_grey_level_non_uniformity",
                                  "h_firstorder_variance", "h_glcm_contrast")
    pooled = pd.concat([c.patients for c in cohorts.values()], ignore_index=True)
    cols = ["age", "hb", *fitted.features]
    x = sm.add_constant(pooled[cols].astype(float).to_numpy())
    ref = sm.Logit(pooled["silent_infarct"].astype(float).to_numpy(), x).fit(disp=0, tol=1e-12)
    np.testing.assert_allclose(fitted.model.summary["coef"].to_numpy(), ref.params, rtol=1e-6)
    np.testing.assert_allclose(fitted.model.summary["std err"].to_numpy(), ref.bse, rtol=1e-6)


def test_pfs_model_federated_equals_pooled_lifelines(mm: tuple[dict[str, Cohort], dict]) -> None:
    from lifelines import CoxPHFitter

    cohorts, bounds = mm
    fitted = fit_pfs_model(LocalSumFederation(cohorts), "relapse_time", "relapse_status",
                           ["age", "b2m"], H, bounds, horizon=2.0, top_k=2)
    pooled = pd.concat([c.patients for c in cohorts.values()], ignore_index=True)
    cols = ["age", "b2m", *fitted.features]
    frame = pooled[cols].astype(float).assign(
        T=pooled["relapse_time"].astype(float), E=pooled["relapse_status"].astype(float))
    ref = CoxPHFitter().fit(frame, "T", "E", fit_options={"precision": 1e-14})
    np.testing.assert_allclose(fitted.model.params_.to_numpy(), ref.params_.to_numpy(),
                               rtol=1e-5)


def test_report_pages_render_per_site_distributions(scd_sites: ImagingSites,
                                                    scd: tuple[dict[str, Cohort], dict]) -> None:
    from hemafed.imaging.report import distribution_report, write_site_report

    cohorts, _ = scd
    before = {s: c.patients[FEATURES] for s, c in cohorts.items()}
    after = {s: c.patients[H].set_axis(FEATURES, axis=1) for s, c in cohorts.items()}
    html = distribution_report(before, after, FEATURES, plots=2).render()
    assert html.count('data-kind="plot"') == 2 and "site5" in html
    pooled = pd.concat([c.patients for c in cohorts.values()])
    bounds = {c: [float(pooled[c].min()) - 1e3, float(pooled[c].max()) + 1e3]
              for c in [*FEATURES, "age", "hb"]}
    combat = FederatedComBat().fit(LocalSumFederation(cohorts), FEATURES, ["age", "hb"], bounds)
    path = write_site_report(next(iter(scd_sites.sites.site_dirs.values())), combat,
                             study=STUDY)
    assert "pooled grand mean" in path.read_text()


def test_imaging_study_runs_in_process_under_the_plan_and_equals_local_sums(
        scd_sites: ImagingSites, scd: tuple[dict[str, Cohort], dict]) -> None:
    """`study run`'s path (standard site handler, stored plan): ComBat, screen and model over
    secure sums equal the same steps over local sums with the spec's bounds."""
    from hemafed.demo import run_study_on
    from hemafed.imaging.spec import ImagingSpec
    from hemafed.study.report import build_report
    from hemafed.study.runner import frame_from_json

    results = run_study_on("inprocess", scd_sites.spec, scd_sites.sites)
    doc = next(a for a in results["analyses"] if a["kind"] == "imaging")
    assert doc["status"] == "ok", doc.get("error")
    cohorts, _ = scd
    ispec = ImagingSpec.from_mapping(scd_sites.spec.raw["imaging"])
    local = fit_infarct_model(LocalSumFederation(cohorts), "silent_infarct", ["age", "hb"], H,
                              {**ispec.bounds, **ispec.harmonised_bounds()}, top_k=2)
    assert doc["stats"]["features chosen"] == ", ".join(local.features)
    assert doc["stats"]["patients harmonised"] == sum(len(c) for c in cohorts.values())
    np.testing.assert_allclose(frame_from_json(doc["tables"]["summary"])["coef"].to_numpy(),
                               local.model.summary["coef"].to_numpy(), rtol=1e-6)
    assert doc["provenance"]["sites covered"] == sorted(scd_sites.sites.site_dirs)
    html = build_report(results).render()
    assert "federated univariate screen" in html and "federated ComBat" in html


def test_plan_refuses_an_imaging_request_with_narrowed_bounds(scd_sites: ImagingSites) -> None:
    from hemafed.study.plan import StudyPlan

    plan = StudyPlan.from_spec(scd_sites.spec)
    raw = scd_sites.spec.raw["imaging"]
    params = {"features": list(FEATURES), "covariates": ["age", "hb"],
              "bounds": {c: list(b) for c, b in raw["bounds"].items()},
              "max_patients": 1_000_000}
    assert plan.check("combat_moments", params, False) is None
    narrowed = {**params, "bounds": {**params["bounds"], "age": [0.0, 1.0]}}
    assert plan.check("combat_moments", narrowed, False)[0] == "bounds"
    assert plan.check("combat_moments", {**params, "features": ["hb_x", *FEATURES]},
                      False)[0] == "column"
