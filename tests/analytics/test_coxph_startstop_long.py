"""General long-format start-stop Cox against R's ``coxph(Surv(start, stop, event) ~ ...)``.

R's own ``survival::heart`` (Stanford heart transplant, 172 rows of 103 patients: age, year,
surgery and the time-varying transplant indicator) is exported by Rscript here; each site holds
the long table of its patients (never split across sites, one site of a single censored
patient, one without events) and the sums go through the fixed-point arithmetic of secure
aggregation. R fits the pooled rows as they are.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fixed_point_federation import FixedPointFederation
from r_datasets import HEART_COX_R, needs_r, r_heart, run_r_batch, split_uneven

from hemafed.analytics.coxph_startstop import (
    LONG_QUERY,
    CoxStartStopFitter,
    LongColumns,
    long_rows,
)
from hemafed.analytics.design import DesignSpec
from hemafed.analytics.mixed import LongitudinalCohort
from hemafed.cohort.validate import validate_cohort
from hemafed.errors import ConvergenceError, InvalidInput

pytestmark = needs_r
FORMULA = "age + year + surgery + transplant"
BOUNDS = {"age": [-50.0, 30.0], "year": [-1.0, 8.0], "surgery": [0.0, 1.0],
          "transplant": [0.0, 1.0]}
R_FIT = HEART_COX_R


@pytest.fixture(scope="module")
def heart() -> pd.DataFrame:
    return r_heart()


def sites_of(heart: pd.DataFrame, n_sites: int) -> dict[str, LongitudinalCohort]:
    """Patients split unevenly (split_uneven on one row per patient), each with its rows."""
    last = heart.groupby("patient_id", sort=True).tail(1)
    patients = pd.DataFrame({"patient_id": last["patient_id"].to_numpy(), "disease": "MDS",
                             "os_time": last["stop"].to_numpy() / 365.25,
                             "os_status": last["event"].to_numpy()})
    return {name: LongitudinalCohort.attach(
                c, heart[heart["patient_id"].isin(c.patients["patient_id"].astype(str))])
            for name, c in split_uneven(patients, n_sites).items()}


@pytest.mark.slow
def test_long_format_cox_equals_r_over_uneven_sites(heart: pd.DataFrame) -> None:
    refs = run_r_batch({ties: (R_FIT.replace("{ties}", ties), heart)
                        for ties in ("efron", "breslow")})
    assert np.all(refs["efron"]["coef"].to_numpy() != refs["breslow"]["coef"].to_numpy())
    for n in (2, 5):
        sites = sites_of(heart, n)
        assert sum(len(c.measurements) for c in sites.values()) == len(heart)
        for ties, ref in refs.items():
            fit = CoxStartStopFitter(ties=ties, tol=1e-9).fit(
                FixedPointFederation(sites), formula=FORMULA, bounds=BOUNDS,
                steps_per_unit=2.0, max_time=2000.0)
            assert list(fit.params_.index) == ["age", "year", "surgery", "transplant"]
            np.testing.assert_allclose(fit.params_.to_numpy(), ref["coef"], rtol=1e-6,
                                       err_msg=f"{n} sites {ties}")
            np.testing.assert_allclose(fit.standard_errors_.to_numpy(), ref["se"], rtol=1e-6,
                                       err_msg=f"{n} sites {ties}")
            assert fit.log_likelihood_ == pytest.approx(float(ref["loglik"].iloc[0]), rel=1e-8)
            assert fit.rows_ == len(heart) == int(ref["n"].iloc[0])  # R's n counts rows
            assert fit.events_ == int(ref["nevent"].iloc[0])
            assert fit.n_ == heart["patient_id"].nunique() and fit.excluded_ == 0
            assert fit.sites_ == tuple(sorted(sites))
    assert '"cox_start_stop"' in fit.to_json()


def test_incomplete_rows_are_left_out_as_r_na_omit(heart: pd.DataFrame) -> None:
    """A missing covariate drops that row only (R's na.omit); the fit equals R's on the rest."""
    holed = heart.copy()
    holed.loc[[3, 40, 41], "year"] = np.nan
    ref = run_r_batch({"efron": (R_FIT.replace("{ties}", "efron"), holed)})["efron"]
    fit = CoxStartStopFitter().fit(FixedPointFederation(sites_of(holed, 2)), formula=FORMULA,
                                   bounds=BOUNDS, steps_per_unit=2.0, max_time=2000.0)
    np.testing.assert_allclose(fit.params_.to_numpy(), ref["coef"], rtol=1e-6)
    assert fit.rows_ == len(heart) - 3 == int(ref["n"].iloc[0]) and fit.excluded_ == 3


def test_bad_long_tables_are_refused_without_naming_a_patient(heart: pd.DataFrame) -> None:
    params = {"design": [{"kind": "numeric", "column": c, "low": lo, "high": hi}
                         for c, (lo, hi) in BOUNDS.items()]}
    site = sites_of(heart, 2)["site01"]
    bad = site.measurements.copy()
    i = int(np.flatnonzero(bad["patient_id"].duplicated(keep="last"))[0])
    bad.loc[i, "event"] = 1  # an event on a patient's first of two rows
    with pytest.raises(InvalidInput, match="last interval") as err:
        long_rows(LongitudinalCohort.attach(site, bad), LongColumns(), None)
    assert "heart" not in str(err.value)
    wide = site.measurements.copy()
    wide.loc[0, "age"] = 99.0
    with pytest.raises(InvalidInput, match="'age' has values outside"):
        long_rows(LongitudinalCohort.attach(site, wide), LongColumns(),
                  DesignSpec.from_params(params["design"]))
    with pytest.raises(InvalidInput, match="max_rows_per_patient"):
        long_rows(site, LongColumns(max_rows_per_patient=1), None)
    with pytest.raises(InvalidInput, match="no long table"):
        long_rows(validate_cohort(site.patients), LongColumns(), None)
    with pytest.raises(InvalidInput, match="bounds"):
        CoxStartStopFitter().fit(FixedPointFederation({"a": site}), formula=FORMULA,
                                 bounds={"age": [-50, 30]})


class _Dropping(FixedPointFederation):
    """A federation whose last site stops answering after the first Newton sums."""

    def secure_sum(self, query, params, *, study="default", dp=None):  # type: ignore[no-untyped-def]
        res = super().secure_sum(query, params, study=study, dp=dp)
        if query == LONG_QUERY and len([q for q, _ in self.calls if q == LONG_QUERY]) > 1:
            res = type(res)(res.values, res.sites[:-1])
        return res


def test_a_site_dropping_out_between_rounds_fails_clearly(heart: pd.DataFrame) -> None:
    with pytest.raises(ConvergenceError, match="sites changed between rounds"):
        CoxStartStopFitter().fit(_Dropping(sites_of(heart, 2)), formula=FORMULA, bounds=BOUNDS,
                                 steps_per_unit=2.0, max_time=2000.0)


def test_the_queries_refuse_bad_parameters_by_name() -> None:
    from hemafed.federation.queries import get_query

    design = [{"kind": "numeric", "column": "age", "low": -50.0, "high": 30.0}]
    base = {"grid": [1.0, 2.0], "design": design}
    q = get_query(LONG_QUERY)
    q.check(base | {"beta": [1.0]})
    for params, name in ((base | {"beta": [6.0]}, "beta"),  # |6| x 40 > 200
                         (base | {"beta": ["x"]}, "beta"),
                         (base | {"beta": [0.0], "max_rows_per_patient": float("inf")},
                          "max_rows_per_patient"),
                         (base | {"beta": [0.0], "ties": "exact"}, "ties")):
        with pytest.raises(InvalidInput, match=f"parameter '{name}'"):
            q.check(params)
    with pytest.raises(InvalidInput, match="parameter 'max_time'"):
        get_query("cox_long_event_times").check({"steps_per_unit": 2.0, "max_time": 1e9})


def test_a_baseline_covariate_comes_from_the_patient_table(heart: pd.DataFrame) -> None:
    """age is constant per patient in heart: kept in the patient table only, the fit equals R's
    on the long table that holds it."""
    ref = run_r_batch({"efron": (R_FIT.replace("{ties}", "efron"), heart)})["efron"]
    sites = {}
    for name, c in sites_of(heart, 5).items():
        age = c.measurements.groupby("patient_id")["age"].first()
        patients = c.patients.assign(age=c.patients["patient_id"].astype(str).map(age))
        sites[name] = LongitudinalCohort(patients, c.mutations, c.panels,
                                         c.measurements.drop(columns="age"))
    fit = CoxStartStopFitter().fit(FixedPointFederation(sites), formula=FORMULA, bounds=BOUNDS,
                                   steps_per_unit=2.0, max_time=2000.0)
    np.testing.assert_allclose(fit.params_.to_numpy(), ref["coef"], rtol=1e-6)
    np.testing.assert_allclose(fit.standard_errors_.to_numpy(), ref["se"], rtol=1e-6)
