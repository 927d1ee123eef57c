"""IPTW against R on the pooled data: propensity model, stabilised weights, balance, weighted
Kaplan-Meier and weighted Cox with robust SEs (``coxph(..., weights=w, robust=TRUE)``), over
uneven federations of 2, 5 and 10 sites (a one-patient site, a site without events), the secure
runtime in process, and the real MDS cohort's hypomethylating-agent question."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
from r_reference import require_r, run_r, uneven_sites
from survival_frames import treated_frame

from hemafed.analytics.design import DesignSpec, term
from hemafed.analytics.weighting import FederatedIPTW
from hemafed.cohort.validate import validate_cohort
from hemafed.errors import InvalidInput
from hemafed.federation.queries import get_query

CONFOUNDERS = "age + hb + sex"


R_IPTW = """
library(survival)
d <- read.csv("pooled.csv")
d$sexF <- as.numeric(d$sex == "F")
d <- d[complete.cases(d[, c("age", "hb", "sexF", "hma", "os_time", "os_status")]), ]
ps <- glm(hma ~ age + hb + sexF, family = binomial, data = d,
          control = glm.control(epsilon = 1e-14, maxit = 100))
e <- fitted(ps)
pi1 <- mean(d$hma)
d$w <- ifelse(d$hma == 1, pi1 / e, (1 - pi1) / (1 - e))
out <- list(gamma = coef(ps), w = d$w, row = d$row)
for (ties in c("efron", "breslow")) {
  fit <- coxph(Surv(os_time, os_status) ~ hma, data = d, weights = w, robust = TRUE,
               ties = ties, control = coxph.control(eps = 1e-14, iter.max = 100))
  out[[paste0(ties, "_coef")]] <- coef(fit)
  out[[paste0(ties, "_robust_se")]] <- sqrt(diag(fit$var))
  out[[paste0(ties, "_naive_se")]] <- sqrt(diag(fit$naive.var))
}
km <- survfit(Surv(os_time, os_status) ~ hma, data = d, weights = w)
out$km_time <- km$time
out$km_surv <- km$surv
out$km_se <- km$std.err
out$km_strata <- km$strata
write_json(out, "out.json")
"""


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return treated_frame()


@pytest.fixture(scope="module")
def r_ref(frame: pd.DataFrame) -> dict[str, Any]:
    require_r("survival")
    return run_r(R_IPTW, {"pooled": frame.assign(row=np.arange(len(frame)))})


def _cohorts(frame: pd.DataFrame, n_sites: int) -> dict[str, Any]:
    parts = uneven_sites(frame, n_sites, "os_status")
    return {f"site{i:02d}": validate_cohort(p) for i, p in enumerate(parts)}


def _km_at(km: pd.DataFrame, arm: str, times: np.ndarray, before: float = 1.0) -> np.ndarray:
    grid = km.index.to_numpy()
    pos = np.searchsorted(grid, times + 1e-12, side="right") - 1
    values = km[arm].to_numpy()
    return np.where(pos >= 0, values[np.maximum(pos, 0)], before)


@pytest.mark.parametrize("n_sites", [2, 5, 10])
def test_iptw_equals_r_pooled(frame: pd.DataFrame, r_ref: dict[str, Any], make_federation,
                              n_sites: int) -> None:
    fed = make_federation(_cohorts(frame, n_sites))
    fit = FederatedIPTW(ties="efron").fit(fed, "hma", CONFOUNDERS)
    gamma = fit.propensity_.params_.to_numpy()
    # R codes sex with M as reference (sexF); the schema's first level is the reference here
    np.testing.assert_allclose(gamma, r_ref["gamma"], rtol=1e-8)
    assert fit.params_.iloc[0] == pytest.approx(r_ref["efron_coef"][0], rel=1e-8)
    assert fit.standard_errors_.iloc[0] == pytest.approx(r_ref["efron_robust_se"][0], rel=1e-7)
    assert fit.naive_standard_errors_.iloc[0] == pytest.approx(r_ref["efron_naive_se"][0],
                                                               rel=1e-7)
    assert abs(fit.score_residual_sum_) < 1e-8  # the score residuals sum to the score, 0
    assert fit.sites == tuple(sorted(fed.site_ids))
    # weighted KM per arm at R's times
    strata = np.asarray(r_ref["km_strata"], dtype=int)
    times, surv = np.asarray(r_ref["km_time"]), np.asarray(r_ref["km_surv"])
    cut = strata[0]
    for arm, sl in (("control", slice(0, cut)), ("treated", slice(cut, None))):
        np.testing.assert_allclose(_km_at(fit.km_, arm, times[sl]), surv[sl], rtol=1e-9)
        # R's std.err of a weighted curve is the infinitesimal-jackknife SE of S itself
        se = np.asarray(r_ref["km_se"], dtype=float)[sl]
        ok = ~np.isnan(se)
        np.testing.assert_allclose(_km_at(fit.km_se_, arm, times[sl], 0.0)[ok], se[ok],
                                   rtol=1e-8, atol=1e-14)


def test_breslow_and_balance_equal_pooled(frame: pd.DataFrame, r_ref: dict[str, Any],
                                          make_federation) -> None:
    fed = make_federation(_cohorts(frame, 5))
    fit = FederatedIPTW(ties="breslow").fit(fed, "hma", CONFOUNDERS)
    assert fit.params_.iloc[0] == pytest.approx(r_ref["breslow_coef"][0], rel=1e-8)
    assert fit.standard_errors_.iloc[0] == pytest.approx(r_ref["breslow_robust_se"][0], rel=1e-7)
    # balance against a pooled numpy computation with R's weights
    rows = np.asarray(r_ref["row"], dtype=int)
    d = frame.iloc[rows]
    w = np.asarray(r_ref["w"])
    a = d["hma"].to_numpy()
    for col, x in (("age", d["age"].to_numpy()), ("hb", d["hb"].to_numpy()),
                   ("sex[F]", (d["sex"] == "F").to_numpy(dtype=float))):
        m1, m0 = x[a == 1].mean(), x[a == 0].mean()
        smd = (m1 - m0) / np.sqrt((x[a == 1].var(ddof=1) + x[a == 0].var(ddof=1)) / 2)
        wm1 = np.average(x[a == 1], weights=w[a == 1])
        wm0 = np.average(x[a == 0], weights=w[a == 0])
        wv1 = np.average((x[a == 1] - wm1) ** 2, weights=w[a == 1])
        wv0 = np.average((x[a == 0] - wm0) ** 2, weights=w[a == 0])
        row = fit.balance_.loc[col]
        assert row["smd"] == pytest.approx(smd, rel=1e-9)
        assert row["weighted_smd"] == pytest.approx((wm1 - wm0) / np.sqrt((wv1 + wv0) / 2),
                                                    rel=1e-6, abs=1e-9)
        assert abs(row["weighted_smd"]) < abs(row["smd"])  # weighting improved balance
    ess = fit.effective_sample_size_
    assert ess["treated"] == pytest.approx(w[a == 1].sum() ** 2 / (w[a == 1] ** 2).sum(), rel=1e-9)
    out = json.loads(fit.to_json())
    assert out["kind"] == "iptw_cox" and len(out["sites"]) == 5
    # a public cap on the weights tightens every bound; a larger weight is truncated at it
    # (never refused: a site's refusal would tell the hub about its own largest weight)
    capped = FederatedIPTW(ties="breslow").fit(fed, "hma", CONFOUNDERS,
                                               max_weight=float(w.max()) * 1.01)
    assert capped.standard_errors_.iloc[0] == pytest.approx(fit.standard_errors_.iloc[0],
                                                            rel=1e-10)
    flat = FederatedIPTW(stabilized=False).fit(fed, "hma", CONFOUNDERS, max_weight=1.0)
    # unstabilised weights are >= 1: capped at 1 every weight is 1, the ESS each arm's size
    assert flat.effective_sample_size_["treated"] == pytest.approx((a == 1).sum(), rel=1e-12)
    assert flat.effective_sample_size_["control"] == pytest.approx((a == 0).sum(), rel=1e-12)
    assert "se(coef) naive" in fit.summary.columns


def test_declared_bounds_come_from_parameters(frame: pd.DataFrame) -> None:
    spec = DesignSpec((term("age"), term("hb")))
    params = {"design": spec.to_params(), "treatment": "hma", "gamma": [0.1, 0.02, -0.3],
              "marginal": 0.4, "duration_col": "os_time", "event_col": "os_status",
              "grid": [0.5, 1.0], "beta": [0.2]}
    q = get_query("iptw_cox_sums")
    declared = q.declare(params)
    assert set(declared) == {"s0", "s1", "d", "dw", "xdw", "e0", "e1"}
    # a bad coefficient vector is refused before anything runs
    with pytest.raises(InvalidInput, match="gamma"):
        q.check({**params, "gamma": [0.1]})
    with pytest.raises(InvalidInput, match="beta"):
        q.check({**params, "beta": [float("nan")]})


def test_single_arm_and_separation_are_clear_errors(frame: pd.DataFrame,
                                                    make_federation) -> None:
    from hemafed.errors import ConvergenceError

    fed = make_federation(_cohorts(frame.assign(hma=1), 2))
    with pytest.raises(InvalidInput, match="single class"):
        FederatedIPTW().fit(fed, "hma", "age")
    separated = frame.assign(hma=(frame["age"] > 70).astype(int))
    with pytest.raises(ConvergenceError, match="separation"):
        FederatedIPTW().fit(make_federation(_cohorts(separated, 2)), "hma", "age")


@pytest.mark.slow
def test_secure_runtime_equals_plain_sums(frame: pd.DataFrame, tmp_path_factory,
                                          make_federation) -> None:
    from hemafed.demo import build_sites
    from hemafed.federation.inprocess import run_in_process
    from hemafed.federation.runtime import SecureFederation
    from hemafed.study.site_runtime import site_handler
    from hemafed.study.spec import StudySpec

    spec = StudySpec.from_mapping({"study_id": "iptw-test", "requester": "tester",
                                   "analyses": [{"id": "hma", "kind": "iptw", "treatment": "hma",
                                                 "formula": CONFOUNDERS}]})
    cohorts = _cohorts(frame.iloc[:300].reset_index(drop=True), 5)
    sites = build_sites(tmp_path_factory.mktemp("iptw-sites"), cohorts, spec)

    def hub(exchange: Any, site_ids: list[str], config: dict[str, Any]) -> Any:
        fed = SecureFederation(exchange, sites.manifest, spec_sha256=spec.sha256,
                               requester="tester")
        fit = FederatedIPTW().fit(fed, "hma", CONFOUNDERS, study=spec.study_id)
        return {"coef": float(fit.params_.iloc[0]), "se": float(fit.standard_errors_.iloc[0]),
                "sites": list(fit.sites)}

    secure = run_in_process(hub, site_handler, sites.site_configs(), {})
    plain = FederatedIPTW().fit(make_federation(cohorts), "hma", CONFOUNDERS)
    assert secure["sites"] == sorted(cohorts)
    assert secure["coef"] == pytest.approx(plain.params_.iloc[0], rel=1e-8)
    assert secure["se"] == pytest.approx(plain.standard_errors_.iloc[0], rel=1e-8)


MDS_CONFOUNDERS = "age + sex + hb + plt + bm_blast + cyto_ipssr"

R_MDS = """
library(survival)
d <- read.csv("mds.csv")
x <- d[, setdiff(names(d), c("hma", "os_time", "os_status"))]
ps <- glm(d$hma ~ ., family = binomial, data = x,
          control = glm.control(epsilon = 1e-14, maxit = 100))
e <- fitted(ps)
pi1 <- mean(d$hma)
d$w <- ifelse(d$hma == 1, pi1 / e, (1 - pi1) / (1 - e))
fit <- coxph(Surv(os_time, os_status) ~ hma, data = d, weights = w, robust = TRUE,
             control = coxph.control(eps = 1e-14, iter.max = 100))
write_json(list(gamma = coef(ps), coef = coef(fit), robust_se = sqrt(diag(fit$var)),
                naive_se = sqrt(diag(fit$naive.var)), n = fit$n, events = fit$nevent),
           "out.json")
"""


def mds_pooled_design(patients: pd.DataFrame) -> pd.DataFrame:
    """The pooled complete cases of the MDS question, dummy-coded by pandas for R."""
    from hemafed.cohort.schema import CYTO_IPSSR

    cols = ["age", "sex", "hb", "plt", "bm_blast", "cyto_ipssr", "hma", "os_time", "os_status"]
    # the propensity model uses every row complete in treatment and confounders; the Cox model
    # the ones of them with an outcome
    d = patients[cols].dropna(subset=cols[:7]).reset_index(drop=True)
    out = pd.DataFrame({"age": d["age"].astype(float), "sexF": (d["sex"] == "F").astype(float),
                        "hb": d["hb"].astype(float), "plt": d["plt"].astype(float),
                        "bm_blast": d["bm_blast"].astype(float)})
    for k, level in enumerate(CYTO_IPSSR[1:]):
        out[f"cyto{k}"] = (d["cyto_ipssr"] == level).astype(float)
    out["hma"] = d["hma"].astype(int)
    out["os_time"] = d["os_time"].astype(float)
    out["os_status"] = d["os_status"].astype(float)
    return out


def test_mds_hypomethylating_agents_equal_r_pooled(shared_data, make_federation) -> None:
    """The real IPSS-M cohort (hma = treated with a hypomethylating agent), 5 uneven sites."""
    from hemafed.cohort.partition import split_sites
    from hemafed.cohort.public import read_mds_ipssm
    from hemafed.demo import on_day_lattice

    require_r("survival")
    cohort = on_day_lattice(read_mds_ipssm(shared_data / "mds-ipssm-cohort").cohort)
    ref = run_r(R_MDS, {"mds": mds_pooled_design(cohort.patients)})
    fed = make_federation(split_sites(cohort, 5, seed=4, size_skew=0.8))
    fit = FederatedIPTW().fit(fed, "hma", MDS_CONFOUNDERS)
    assert fit.n_ == ref["n"][0] and fit.events_ == ref["events"][0]
    np.testing.assert_allclose(fit.propensity_.params_.to_numpy(), ref["gamma"], rtol=1e-7)
    assert fit.params_.iloc[0] == pytest.approx(ref["coef"][0], rel=1e-7)
    assert fit.standard_errors_.iloc[0] == pytest.approx(ref["robust_se"][0], rel=1e-7)
    assert fit.naive_standard_errors_.iloc[0] == pytest.approx(ref["naive_se"][0], rel=1e-7)


def test_study_spec_runs_iptw_and_multistate(frame: pd.DataFrame, make_federation) -> None:
    from hemafed.study.runner import run_study
    from hemafed.study.spec import StudySpec

    spec = StudySpec.from_mapping({"study_id": "s17", "analyses": [
        {"id": "hma", "kind": "iptw", "treatment": "hma", "formula": CONFOUNDERS,
         "ties": "breslow"},
        {"id": "ms", "kind": "multistate"}]})
    steps = np.rint(frame["os_time"].to_numpy() * 365.25 / 30)
    ill = (np.arange(len(frame)) % 5 == 0) & (steps >= 2)
    df = frame.assign(amlt_time=np.where(ill, np.floor(steps / 2), steps) * 30 / 365.25,
                      amlt_status=ill.astype(int))
    fed = make_federation(_cohorts(df, 5))
    out = run_study(spec, fed)
    docs = {d["id"]: d for d in out["analyses"]}
    assert docs["hma"]["status"] == "ok", docs["hma"].get("error")
    direct = FederatedIPTW(ties="breslow").fit(make_federation(_cohorts(df, 5)), "hma",
                                               CONFOUNDERS)
    assert docs["hma"]["stats"]["hazard_ratio"] == pytest.approx(direct.hazard_ratio_, rel=1e-12)
    assert docs["ms"]["status"] == "ok", docs["ms"].get("error")
    with pytest.raises(InvalidInput, match="missing 'formula'"):
        StudySpec.from_mapping({"study_id": "x", "analyses": [{"kind": "iptw",
                                                               "treatment": "hma"}]})
