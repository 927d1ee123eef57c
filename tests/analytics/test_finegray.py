"""Federated Fine-Gray against ``cmprsk::crr`` (estimates and its robust standard errors).

mgus2 (R's ``survival``): progression to a plasma-cell malignancy (``amlt_*`` columns here) with
death as the competing risk, over 2, 5 and 10 uneven sites (one site a single patient, one
without any event), through the exact fixed-point arithmetic of secure aggregation. R gets the
pooled complete cases with the same first-cause rule (``competing.first_cause``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fixed_point_federation import FixedPointFederation
from r_datasets import needs_r, r_frames, run_r_batch, split_uneven

from hemafed.analytics.competing import first_cause
from hemafed.analytics.finegray import FederatedFineGray, censoring_survival
from hemafed.errors import InvalidInput

CAUSES = [("amlt_time", "amlt_status"), ("os_time", "os_status")]
FORMULA = "age + sex + hb + anc"
COLUMNS = ["age", "sex", "hb", "anc", "amlt_time", "amlt_status", "os_time", "os_status"]
R_CRR = """
X <- model.matrix(~ age + factor(sex, levels = c("M", "F")) + hb + anc, d)[, -1]
f <- crr(d$ftime, d$fstatus, X, failcode = {cause}, gtol = 1e-13)
out <- data.frame(coef = f$coef, se = sqrt(diag(f$var)), n = f$n)
"""


def crr_frame(sites: dict) -> pd.DataFrame:
    pooled = pd.concat([c.patients for c in sites.values()], ignore_index=True)
    cc = pooled.dropna(subset=COLUMNS).copy()
    time, cause = first_cause(cc[["amlt_time", "os_time"]].to_numpy(float),
                              cc[["amlt_status", "os_status"]].astype(float).to_numpy())
    cc["ftime"], cc["fstatus"] = time, cause
    return cc


@needs_r
@pytest.mark.slow
def test_fine_gray_equals_crr_over_uneven_sites() -> None:
    df = r_frames()["mgus2"]
    splits = {n: split_uneven(df, n) for n in (2, 5, 10)}
    refs = run_r_batch({f"{n}-{k}": (R_CRR.replace("{cause}", str(k)), crr_frame(s))
                        for n, s in splits.items() for k in (1, 2)})
    for n, sites in splits.items():
        for k in (1, 2):  # progression, and death as the cause of interest
            ref = refs[f"{n}-{k}"]
            fg = FederatedFineGray().fit(FixedPointFederation(sites), FORMULA, CAUSES, cause=k,
                                         steps_per_unit=12.0)
            np.testing.assert_allclose(fg.params_.to_numpy(), ref["coef"], rtol=1e-6,
                                       err_msg=f"{n} sites cause {k}")
            np.testing.assert_allclose(fg.standard_errors_.to_numpy(), ref["se"], rtol=1e-6,
                                       err_msg=f"{n} sites cause {k}")
            assert fg.n_ == int(ref["n"].iloc[0]) and fg.n_ + fg.excluded_ == len(df)
            assert np.abs(fg.score_total_).max() < 1e-6 * fg.n_  # influence terms sum to ~0
    assert list(fg.summary.columns)[:2] == ["coef", "exp(coef)"]
    assert '"fine_gray"' in fg.to_json()


def test_censoring_survival_is_kaplan_meier_of_censoring() -> None:
    """Hand case: times 1..4, at 1 an event, at 2 a censoring (and an event), at 3 censored."""
    # exit histogram by number of grid points <= T: [before grid, t1, t2, t3, t4]
    exits = np.array([0.0, 1, 2, 1, 1])
    events = np.array([[1.0, 1, 0, 1], [0.0, 0, 0, 0]])
    g = censoring_survival(exits, events)
    # G(t-): 1 at t1, 1 at t2 (no censoring at t1), 1 - 1/4 at t3, (3/4)(1 - 1/2) at t4
    np.testing.assert_allclose(g, [1.0, 1.0, 0.75, 0.375])


@needs_r
def test_too_few_events_is_refused() -> None:
    sites = split_uneven(r_frames()["mgus2"].iloc[:40], 2)
    with pytest.raises(InvalidInput, match="too few events"):
        FederatedFineGray().fit(FixedPointFederation(sites), "age + sex + hb + anc + pb_blast",
                                CAUSES, steps_per_unit=12.0)


@needs_r
@pytest.mark.slow
@pytest.mark.realdata
def test_mds_aml_transformation_equals_crr(shared_data) -> None:
    """The real MDS cohort: AML transformation with death competing, 3 uneven sites."""
    from hemafed.demo import demo_cohorts

    sites = demo_cohorts("MDS", 0, 3, 7, real=shared_data / "mds-ipssm-cohort")
    formula = "age + sex + hb + bm_blast"
    fg = FederatedFineGray().fit(FixedPointFederation(sites), formula, CAUSES)
    pooled = pd.concat([c.patients for c in sites.values()], ignore_index=True)
    cc = pooled.dropna(subset=["age", "sex", "hb", "bm_blast"] + [c for p in CAUSES for c in p])
    time, cause = first_cause(cc[["amlt_time", "os_time"]].astype(float).to_numpy(),
                              cc[["amlt_status", "os_status"]].astype(float).to_numpy())
    frame = cc[["age", "sex", "hb", "bm_blast"]].assign(ftime=time, fstatus=cause)
    ref = run_r_batch({"mds": (
        'X <- model.matrix(~ age + factor(sex, levels = c("M", "F")) + hb + bm_blast, d)[, -1]\n'
        "f <- crr(d$ftime, d$fstatus, X, gtol = 1e-13)\n"
        "out <- data.frame(coef = f$coef, se = sqrt(diag(f$var)))", frame)})["mds"]
    np.testing.assert_allclose(fg.params_.to_numpy(), ref["coef"], rtol=1e-6)
    np.testing.assert_allclose(fg.standard_errors_.to_numpy(), ref["se"], rtol=1e-6)


def test_score_outer_contributions_stay_declared_for_any_hub_arrays() -> None:
    """``finegray_score_outer`` declares its DP sensitivity from the hub-sent ``events`` and
    arrays; a hub that undercounts ``events`` and inflates ``p0`` must not get per-patient
    terms above that declaration (the honest request gives the same answer as before)."""
    from hemafed.analytics.cox_math import BOUND_SLACK
    from hemafed.analytics.finegray import OuterParams, influence_bound
    from hemafed.cohort.demo import generate
    from hemafed.cohort.partition import split_sites
    from hemafed.federation.queries import get_query

    cohorts = split_sites(generate("MDS", 300, 7), 3, 7)
    fed = FixedPointFederation(cohorts)
    FederatedFineGray().fit(fed, "age + hb", CAUSES)
    params = next(p for q, p in fed.calls if q == "finegray_score_outer")
    query = get_query("finegray_score_outer")
    honest_b = influence_bound(OuterParams.from_mapping(params)) * (1.0 + BOUND_SLACK)
    hostile = {**params, "events": 0, "p0": (np.asarray(params["p0"]) * 1e6).tolist()}
    b = influence_bound(OuterParams.from_mapping(hostile)) * (1.0 + BOUND_SLACK)
    assert b < honest_b  # the undercount shrinks the declared bound
    for site_id, cohort in cohorts.items():
        honest = query.run(cohort, params, site_id=site_id)
        assert np.all(np.abs(np.diag(honest["outer"])) <= len(cohort) * honest_b ** 2)
        out = query.run(cohort, hostile, site_id=site_id)
        assert np.all(np.abs(out["total"]) <= len(cohort) * b * (1 + 1e-12))
        assert np.all(np.diag(out["outer"]) <= len(cohort) * b * b * (1 + 1e-12))


class _Dropping(FixedPointFederation):
    """A federation whose last site stops answering after ``keep`` secure sums."""

    def __init__(self, cohorts, keep: int) -> None:  # type: ignore[no-untyped-def]
        super().__init__(cohorts)
        self.keep = keep

    def secure_sum(self, query, params, *, study="default", dp=None):  # type: ignore[no-untyped-def]
        res = super().secure_sum(query, params, study=study, dp=dp)
        if len(self.calls) > self.keep:
            res = type(res)(res.values, res.sites[:-1])
        return res


def test_a_site_dropping_out_between_rounds_fails_clearly() -> None:
    """The table and every Newton round (and the robust variance) must cover the same sites:
    sums over another cohort do not belong to the same fit. The fit over stable sites records
    them."""
    from hemafed.cohort.demo import generate
    from hemafed.cohort.partition import split_sites
    from hemafed.errors import ConvergenceError

    cohorts = split_sites(generate("MDS", 300, 7), 3, 7)
    fg = FederatedFineGray().fit(FixedPointFederation(cohorts), "age + hb", CAUSES)
    assert fg.sites_ == tuple(sorted(cohorts)) and '"sites"' in fg.to_json()
    calls = 2 + 1 + fg.rounds  # two time histograms, the table, the Newton rounds
    for keep in (3, 4, calls):  # after the table, in Newton, before the robust variance
        with pytest.raises(ConvergenceError, match="sites changed between rounds"):
            FederatedFineGray().fit(_Dropping(cohorts, keep), "age + hb", CAUSES)
