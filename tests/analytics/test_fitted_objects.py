"""Fitted models keep their numbers, not the federation, and speak lifelines/statsmodels:
confidence intervals equal the pooled fits', ``plot`` draws them, and a fitted model pickles."""

from __future__ import annotations

import pickle

import matplotlib
import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from hemafed.analytics.cox import FederatedCoxPH
from hemafed.analytics.logistic import FederatedLogisticRegression
from hemafed.cohort.demo import generate
from hemafed.cohort.partition import split_sites
from hemafed.federation.local import LocalSumFederation

matplotlib.use("Agg")
COVARIATES = ["age", "hb", "bm_blast"]


@pytest.fixture(scope="module")
def cohorts() -> dict:
    return split_sites(generate("MDS", 600, 5), 4, 5, size_skew=0.3)


@pytest.fixture(scope="module")
def pooled(cohorts: dict) -> pd.DataFrame:
    frame = pd.concat([c.patients for c in cohorts.values()], ignore_index=True)
    return frame[[*COVARIATES, "os_time", "os_status", "transplant"]].dropna()


def test_cox_intervals_equal_lifelines_and_the_fit_holds_no_federation(cohorts: dict,
                                                                       pooled: pd.DataFrame
                                                                       ) -> None:
    from lifelines import CoxPHFitter

    cox = FederatedCoxPH().fit(LocalSumFederation(cohorts), "os_time", "os_status", COVARIATES,
                               concordance=False)
    ref = CoxPHFitter().fit(pooled[[*COVARIATES, "os_time", "os_status"]].astype(float),
                            "os_time", "os_status",
                            fit_options={"precision": 1e-14, "r_precision": 1e-15})
    np.testing.assert_allclose(cox.confidence_intervals_.to_numpy(),
                               ref.confidence_intervals_.to_numpy(), rtol=1e-6)
    assert list(cox.confidence_intervals_.columns) == list(ref.confidence_intervals_.columns)
    assert cox._federation is None
    again = pickle.loads(pickle.dumps(cox))
    pd.testing.assert_frame_equal(again.summary, cox.summary)
    ax = cox.plot()
    assert [t.get_text() for t in ax.get_yticklabels()] == COVARIATES
    drawn = np.asarray(ax.containers[0].lines[0].get_xdata(), dtype=float)
    np.testing.assert_allclose(drawn, cox.params_.to_numpy())


def test_logistic_intervals_equal_statsmodels_and_plot(cohorts: dict, pooled: pd.DataFrame
                                                       ) -> None:
    model = FederatedLogisticRegression().fit(LocalSumFederation(cohorts), "transplant",
                                              COVARIATES)
    x = sm.add_constant(pooled[COVARIATES].astype(float))
    ref = sm.Logit(pooled["transplant"].astype(float), x).fit(disp=0, tol=1e-12)
    np.testing.assert_allclose(model.confidence_intervals_.to_numpy(),
                               ref.conf_int().to_numpy(), rtol=1e-6)
    ax = model.plot()
    assert len(ax.get_yticklabels()) == len(COVARIATES) + 1  # with the intercept
    pickle.loads(pickle.dumps(model))
