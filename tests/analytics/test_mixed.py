"""Federated REML linear mixed model against ``lme4::lmer(y ~ t + x + (1 + t | id),
REML = TRUE)`` on the pooled data: R's sleepstudy and a seeded myeloma M-protein trajectory
generator, over uneven federations of 2, 5 and 10 sites (a one-patient site, a site without
measurements), and through the secure runtime in process."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
from r_reference import r_dataset, require_r, run_r

from hemafed.analytics.mixed import (
    FederatedLinearMixedModel,
    LongitudinalCohort,
    RemlParams,
    patient_blocks,
    reml_criterion,
    reml_sums,
)
from hemafed.cohort.model import Cohort
from hemafed.cohort.validate import validate_cohort
from hemafed.errors import InvalidInput

R_LMER = """
library(lme4)
d <- read.csv("long.csv")
form <- as.formula(readLines("formula.txt"))
tight <- lmerControl(optimizer = "nloptwrap", calc.derivs = FALSE,
                     optCtrl = list(xtol_abs = 1e-14, ftol_abs = 1e-14, xtol_rel = 0,
                                    ftol_rel = 0, maxeval = 100000))
out <- list()
for (name in c("tight", "default")) {
  ctrl <- if (name == "tight") tight else lmerControl()
  fit <- lmer(form, data = d, REML = TRUE, control = ctrl)
  vc <- as.data.frame(VarCorr(fit))
  out[[paste0(name, "_theta")]] <- getME(fit, "theta")
  out[[paste0(name, "_beta")]] <- fixef(fit)
  out[[paste0(name, "_se")]] <- sqrt(diag(as.matrix(vcov(fit))))
  out[[paste0(name, "_sdcor")]] <- vc$sdcor
  out[[paste0(name, "_reml")]] <- REMLcrit(fit)
}
write_json(out, "out.json")
"""


def lmer_reference(long: pd.DataFrame, formula: str) -> dict[str, Any]:
    require_r("lme4")
    return run_r(R_LMER.replace('readLines("formula.txt")', repr(formula)), {"long": long})


def mprotein_trajectories(n: int = 60, seed: int = 17) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Seeded myeloma M-protein (g/L) under treatment: a patient-specific level and decline,
    visits every ~2 months for 3 to 10 visits, baseline age as a covariate."""
    rng = np.random.default_rng(seed)
    age = np.round(rng.normal(66, 9, n).clip(35, 90), 1)
    b0 = rng.normal(0, 8, n)
    b1 = rng.normal(0, 3, n)
    rows = []
    for i in range(n):
        visits = rng.integers(3, 11)
        t = np.round(np.cumsum(np.r_[0, rng.uniform(1, 3, visits - 1)]) / 12, 4)
        y = 35 + b0[i] + 0.15 * (age[i] - 66) + (-6.0 + b1[i]) * t + rng.normal(0, 2.5, t.size)
        rows += [(f"mm{i:03d}", tt, max(yy, 0.0)) for tt, yy in zip(t, y, strict=True)]
    long = pd.DataFrame(rows, columns=["patient_id", "time", "mprotein"])
    patients = pd.DataFrame({"patient_id": [f"mm{i:03d}" for i in range(n)], "disease": "MM",
                             "age": age})
    return patients, long


def sleepstudy() -> tuple[pd.DataFrame, pd.DataFrame]:
    s = r_dataset("sleepstudy", "lme4")
    long = pd.DataFrame({"patient_id": "s" + s["Subject"].astype(str),
                         "time": s["Days"].astype(float), "reaction": s["Reaction"]})
    patients = pd.DataFrame({"patient_id": sorted(long["patient_id"].unique()), "disease": "MM"})
    return patients, long


def uneven_longitudinal(patients: pd.DataFrame, long: pd.DataFrame, n_sites: int,
                        seed: int = 2) -> dict[str, LongitudinalCohort]:
    """A one-patient site, (for n_sites > 2) a site whose patients have no measurements, and
    Dirichlet-sized shares of the rest; no patient spans two sites."""
    rng = np.random.default_rng(seed)
    ids = list(rng.permutation(patients["patient_id"].to_numpy()))
    groups: list[list[str]] = [[ids.pop()]]
    if n_sites > 2:
        groups.append([])  # patients without measurements, added below
    k = n_sites - len(groups)
    cuts = (np.cumsum(rng.dirichlet(np.ones(k) * 1.5))[:-1] * len(ids)).astype(int)
    groups += [list(g) for g in np.split(np.array(ids), cuts)]
    sites = {}
    for i, g in enumerate(groups):
        pat = patients[patients["patient_id"].isin(g)]
        meas = long[long["patient_id"].isin(g)]
        if not g:
            pat = pd.DataFrame({"patient_id": ["nomeas1", "nomeas2"], "disease": "MM"})
            meas = long.iloc[:0]
        sites[f"site{i:02d}"] = LongitudinalCohort.attach(validate_cohort(pat), meas)
    return sites


MM_BOUNDS = {"mprotein": [0.0, 150.0], "time": [0.0, 10.0], "age": [0.0, 110.0]}
SLEEP_BOUNDS = {"reaction": [0.0, 1000.0], "time": [0.0, 30.0]}


def _compare(fit: FederatedLinearMixedModel, ref: dict[str, Any], which: str, rtol: float
             ) -> None:
    np.testing.assert_allclose(fit.params_.to_numpy(), ref[f"{which}_beta"], rtol=rtol)
    np.testing.assert_allclose(fit.standard_errors_.to_numpy(), ref[f"{which}_se"], rtol=rtol)
    vc = fit.variance_components
    ours = [vc["std_dev"].iloc[0], vc["std_dev"].iloc[1], vc["corr"].iloc[1],
            vc["std_dev"].iloc[2]]
    np.testing.assert_allclose(ours, ref[f"{which}_sdcor"], rtol=rtol)
    np.testing.assert_allclose(fit.theta_, ref[f"{which}_theta"], rtol=rtol, atol=rtol)


@pytest.fixture(scope="module")
def mm() -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    patients, long = mprotein_trajectories()
    pooled = long.merge(patients[["patient_id", "age"]], on="patient_id")
    pooled = pooled.rename(columns={"patient_id": "id", "mprotein": "y", "time": "t",
                                    "age": "x"})
    return patients, long, lmer_reference(pooled, "y ~ t + x + (1 + t | id)")


@pytest.mark.parametrize("n_sites", [2, 5, 10])
def test_mprotein_equals_lme4_pooled(mm, make_federation, n_sites: int) -> None:
    patients, long, ref = mm
    fed = make_federation(uneven_longitudinal(patients, long, n_sites))
    fit = FederatedLinearMixedModel().fit(fed, "mprotein", "time", ["age"], bounds=MM_BOUNDS)
    _compare(fit, ref, "tight", 1e-6)
    assert fit.reml_criterion_ == pytest.approx(ref["tight_reml"][0], rel=1e-10)
    # lme4's default stopping rule leaves its optimum ~1e-6 relative away; ours is tighter
    _compare(fit, ref, "default", 1e-4)
    assert fit.reml_criterion_ <= ref["default_reml"][0] + 1e-9
    assert fit.n_ == len(patients) and fit.rows_ == len(long)
    assert fit.sites_ == tuple(sorted(fed.site_ids))
    assert json.loads(fit.to_json())["n_obs"] == len(long)


def test_sleepstudy_equals_lme4_pooled(make_federation) -> None:
    require_r("lme4")
    patients, long = sleepstudy()
    pooled = long.rename(columns={"patient_id": "id", "reaction": "y", "time": "t"})
    ref = lmer_reference(pooled, "y ~ t + (1 + t | id)")
    fed = make_federation(uneven_longitudinal(patients, long, 5))
    fit = FederatedLinearMixedModel().fit(fed, "reaction", "time", bounds=SLEEP_BOUNDS)
    _compare(fit, ref, "tight", 1e-6)
    # the published sleepstudy fit (lme4 documentation): 251.405, 10.467; SDs 24.74, 5.92
    assert fit.params_.round(3).tolist() == [251.405, 10.467]
    assert fit.variance_components["std_dev"].round(2).tolist() == [24.74, 5.92, 25.59]


def test_gradient_is_exact(mm) -> None:
    patients, long, _ = mm
    cohort = LongitudinalCohort.attach(validate_cohort(patients), long)
    theta = np.array([2.0, -0.3, 1.1])
    params = RemlParams.from_mapping({"outcome": "mprotein", "time": "time",
                                      "covariates": ["age"], "bounds": MM_BOUNDS,
                                      "theta": theta.tolist()})
    blocks = patient_blocks(cohort, params)
    _, grad = reml_criterion(reml_sums(blocks, theta))
    for k in range(3):
        e = np.zeros(3)
        e[k] = 1e-6
        up = reml_criterion(reml_sums(blocks, theta + e))[0]
        down = reml_criterion(reml_sums(blocks, theta - e))[0]
        assert grad[k] == pytest.approx((up - down) / 2e-6, rel=1e-6)


def test_bad_input_is_refused(mm, make_federation) -> None:
    patients, long, _ = mm
    fed = make_federation(uneven_longitudinal(patients, long, 2))
    with pytest.raises(InvalidInput, match="outside its declared bounds"):
        FederatedLinearMixedModel().fit(fed, "mprotein", "time", ["age"],
                                        bounds={**MM_BOUNDS, "mprotein": [0.0, 10.0]})
    with pytest.raises(InvalidInput, match="bounds"):
        FederatedLinearMixedModel().fit(fed, "mprotein", "time", ["age"],
                                        bounds={"time": [0.0, 10.0]})
    with pytest.raises(InvalidInput, match="max_obs"):
        FederatedLinearMixedModel().fit(fed, "mprotein", "time", ["age"], bounds=MM_BOUNDS,
                                        max_obs=2)
    plain = make_federation({"a": validate_cohort(patients)})
    with pytest.raises(InvalidInput, match="measurement table"):
        FederatedLinearMixedModel().fit(plain, "mprotein", "time", bounds=MM_BOUNDS)
    constant = long.assign(dose=1.0)
    fed = make_federation({"a": LongitudinalCohort.attach(validate_cohort(patients), constant)})
    with pytest.raises(InvalidInput, match="singular"):
        FederatedLinearMixedModel().fit(fed, "mprotein", "time", ["dose"],
                                        bounds={**MM_BOUNDS, "dose": [0.0, 2.0]})


@pytest.mark.slow
def test_secure_runtime_equals_plain_sums(mm, make_federation, tmp_path_factory) -> None:
    from hemafed.analytics.mixed import import_measurements
    from hemafed.demo import build_sites
    from hemafed.federation.inprocess import run_in_process
    from hemafed.federation.runtime import SecureFederation
    from hemafed.study.site_runtime import longitudinal_site_handler
    from hemafed.study.spec import StudySpec

    patients, long, ref = mm
    spec = StudySpec.from_mapping({"study_id": "lmm-test", "requester": "tester",
                                   "analyses": [{"id": "lmm", "kind": "lmm",
                                                 "outcome": "mprotein", "time": "time",
                                                 "covariates": ["age"], "bounds": MM_BOUNDS}]})
    cohorts = uneven_longitudinal(patients, long, 5)
    plain_cohorts = {s: Cohort(c.patients, c.mutations, c.panels) for s, c in cohorts.items()}
    sites = build_sites(tmp_path_factory.mktemp("lmm-sites"), plain_cohorts, spec)
    for s, c in cohorts.items():
        import_measurements(sites.site_dirs[s], c.measurements, spec.study_id)

    def hub(exchange: Any, site_ids: list[str], config: dict[str, Any]) -> Any:
        fed = SecureFederation(exchange, sites.manifest, spec_sha256=spec.sha256,
                               requester="tester")
        fit = FederatedLinearMixedModel().fit(fed, "mprotein", "time", ["age"],
                                              bounds=MM_BOUNDS, study=spec.study_id)
        return {"beta": fit.params_.tolist(), "se": fit.standard_errors_.tolist(),
                "sd": fit.variance_components["std_dev"].tolist(), "rounds": fit.rounds,
                "sites": list(fit.sites_)}

    out = run_in_process(hub, longitudinal_site_handler, sites.site_configs(), {})
    assert out["sites"] == sorted(cohorts)
    np.testing.assert_allclose(out["beta"], ref["tight_beta"], rtol=1e-6)
    np.testing.assert_allclose(out["se"], ref["tight_se"], rtol=1e-6)
    np.testing.assert_allclose(out["sd"][:2] + out["sd"][2:], np.asarray(ref["tight_sdcor"])[
        [0, 1, 3]], rtol=1e-6)
