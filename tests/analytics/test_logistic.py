"""Federated logistic regression against statsmodels Logit on the pooled data."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from noisy_federation import NoisyFederation

from hemafed.analytics.logistic import SUMMARY_COLUMNS, FederatedLogisticRegression
from hemafed.cohort import validate_cohort
from hemafed.cohort.model import Cohort
from hemafed.errors import ConvergenceError, InvalidInput
from hemafed.federation.api import AggregateResult, DPRequest

LEVELS = ["Very Good", "Good", "Intermediate", "Poor", "Very Poor"]


def _frame(n: int = 3000, seed: int = 11) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = rng.normal(70, 10, n).clip(20, 100)
    hb = rng.normal(10, 1.8, n).clip(3, 20)
    plt = rng.lognormal(4.8, 0.8, n).clip(1, 2500)
    sex = rng.choice(["M", "F"], n)
    cyto = rng.choice(LEVELS, n, p=[0.05, 0.6, 0.2, 0.1, 0.05])
    eta = (-1.0 - 0.04 * (age - 70) + 0.15 * (hb - 10) + 0.002 * (plt - 120)
           + 0.4 * (sex == "F") + np.select([cyto == "Poor", cyto == "Very Poor"], [0.7, 1.2], 0))
    y = rng.random(n) < 1 / (1 + np.exp(-eta))
    df = pd.DataFrame({"patient_id": [f"p{i}" for i in range(n)], "disease": "MDS",
                       "sex": sex, "age": age, "hb": hb, "plt": plt, "cyto_ipssr": cyto,
                       "transplant": y,
                       "response": np.where(y, "CR", rng.choice(["PR", "SD", "NR"], n))})
    df.loc[rng.random(n) < 0.04, "hb"] = np.nan
    return df


def _split(df: pd.DataFrame, k: int = 10, seed: int = 3) -> list[Cohort]:
    site = np.random.default_rng(seed).integers(0, k, len(df))
    return [validate_cohort(df[site == s]) for s in range(k)]


def _statsmodels(df: pd.DataFrame, y: pd.Series, numeric: list[str], categorical: dict):
    x = df[numeric].astype(float)
    for col, levels in categorical.items():
        for lv in levels[1:]:
            x[f"{col}[{lv}]"] = (df[col] == lv).astype(float)
    ok = x.notna().all(axis=1) & y.notna()
    return sm.Logit(y[ok].astype(float), sm.add_constant(x[ok])).fit(disp=0, tol=1e-12)


@pytest.fixture(scope="module")
def pooled() -> pd.DataFrame:
    return _frame()


def test_matches_statsmodels_on_pooled_data(make_federation, pooled) -> None:
    fed = make_federation(_split(pooled))
    model = FederatedLogisticRegression().fit(fed, "transplant",
                                              "age + hb + plt + sex + cyto_ipssr")
    ref = _statsmodels(pooled, pooled["transplant"], ["age", "hb", "plt"],
                       {"sex": ["M", "F"], "cyto_ipssr": LEVELS})
    s = model.summary
    assert list(s.columns) == list(SUMMARY_COLUMNS)
    assert list(s.index) == list(ref.params.index)
    np.testing.assert_allclose(s["coef"], ref.params, rtol=1e-6)
    np.testing.assert_allclose(s["std err"], ref.bse, rtol=1e-6)
    np.testing.assert_allclose(s["P>|z|"], ref.pvalues, rtol=1e-5)
    ci = ref.conf_int()
    np.testing.assert_allclose(s["[0.025"], ci[0], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(model.llf, ref.llf, rtol=1e-9)
    np.testing.assert_allclose(model.llnull, ref.llnull, rtol=1e-9)
    assert model.nobs == ref.nobs and model.excluded == pooled["hb"].isna().sum()
    assert model.converged and 3 <= model.rounds <= 12
    new = pooled.iloc[:5][["age", "hb", "plt", "sex", "cyto_ipssr"]]
    proba = model.predict_proba(new)
    assert proba.shape == (5, 2)
    exog = sm.add_constant(_design_rows(new), has_constant="add")
    expected = ref.predict(exog)
    ok = new["hb"].notna().to_numpy()
    np.testing.assert_allclose(proba[ok, 1], np.asarray(expected)[ok], rtol=1e-6)
    assert json.loads(model.to_json())["kind"] == "logistic_regression"


def _design_rows(df: pd.DataFrame) -> pd.DataFrame:
    x = df[["age", "hb", "plt"]].astype(float)
    x["sex[F]"] = (df["sex"] == "F").astype(float)
    for lv in LEVELS[1:]:
        x[f"cyto_ipssr[{lv}]"] = (df["cyto_ipssr"] == lv).astype(float)
    return x


def test_categorical_outcome_with_positive_levels(make_federation, pooled) -> None:
    fed = make_federation(_split(pooled))
    model = FederatedLogisticRegression().fit(fed, "response", ["age", "plt"],
                                              positive=["CR", "PR"])
    y = pooled["response"].isin(["CR", "PR"])
    ref = _statsmodels(pooled, y, ["age", "plt"], {})
    np.testing.assert_allclose(model.params_, ref.params, rtol=1e-6)
    np.testing.assert_allclose(model.summary["std err"], ref.bse, rtol=1e-6)


def test_bad_requests(make_federation, pooled) -> None:
    fed = make_federation(_split(pooled.iloc[:400], k=3))
    with pytest.raises(InvalidInput, match="positive"):
        FederatedLogisticRegression().fit(fed, "response", ["age"])
    with pytest.raises(InvalidInput, match="not binary"):
        FederatedLogisticRegression().fit(fed, "age", ["hb"])
    with pytest.raises(InvalidInput, match="'weight'"):
        FederatedLogisticRegression().fit(fed, "transplant", ["weight"])
    with pytest.raises(InvalidInput, match="'icd10'"):
        FederatedLogisticRegression().fit(fed, "transplant", ["icd10"])
    with pytest.raises(InvalidInput, match="not fitted"):
        _ = FederatedLogisticRegression().summary


def test_separation_names_the_covariate(make_federation, pooled) -> None:
    df = pooled.iloc[:600].copy()
    df["transplant"] = df["age"] < 65  # age separates the outcome perfectly
    with pytest.raises(ConvergenceError, match="'age'"):
        FederatedLogisticRegression().fit(make_federation(_split(df, k=4)), "transplant",
                                          ["age", "hb"])


def test_collinear_covariate_names_it(make_federation, pooled) -> None:
    df = pooled.iloc[:600].copy()
    df["anc"] = df["plt"] / 20.0  # exactly collinear with plt
    with pytest.raises(ConvergenceError, match="collinear"):
        FederatedLogisticRegression().fit(make_federation(_split(df, k=4)), "transplant",
                                          ["plt", "anc", "age"])


@pytest.mark.realdata
def test_real_mds_cohort_amlt_status(make_federation, shared_data) -> None:
    raw = pd.read_csv(shared_data / "mds-ipssm-cohort" / "df_clinical.tsv", sep="\t")
    df = pd.DataFrame({"patient_id": raw["ID"], "disease": "MDS", "age": raw["AGE"],
                       "hb": raw["HB"], "plt": raw["PLT"], "bm_blast": raw["BM_BLAST"],
                       "amlt_time": raw["AMLt_YEARS"], "amlt_status": raw["AMLt_STATUS"]})
    cohorts = _split(df, k=10, seed=2022)
    model = FederatedLogisticRegression().fit(make_federation(cohorts), "amlt_status",
                                              "age + hb + plt + bm_blast")
    ref = _statsmodels(df, df["amlt_status"], ["age", "hb", "plt", "bm_blast"], {})
    np.testing.assert_allclose(model.params_, ref.params, rtol=1e-6)
    np.testing.assert_allclose(model.summary["std err"], ref.bse, rtol=1e-6)
    assert model.nobs == ref.nobs
    assert model.summary.loc["bm_blast", "coef"] > 0  # more blasts, more transformation



def test_dp_fit_spends_fixed_rounds_and_stays_close(make_federation, pooled) -> None:
    fed = NoisyFederation(make_federation(_split(pooled)), std=1.0, seed=4)
    model = FederatedLogisticRegression().fit(fed, "transplant", ["age", "hb"], max_iter=6,
                                              dp=DPRequest(1.0, 1e-6))
    ref = _statsmodels(pooled, pooled["transplant"], ["age", "hb"], {})
    assert model.rounds == 7 and not model.converged
    assert model.noise.epsilon == 1.0 and model.noise.noise_std["logistic_newton.hessian"] == 1.0
    # noise of sd 1 on sums over ~2900 patients moves estimates by far less than one SE
    assert np.all(np.abs(model.params_ - ref.params) < 0.5 * ref.bse)


class _FixedPointFederation:
    """Sums sites' values through the secure-aggregation fixed-point codec (no masks needed to
    test precision: masks cancel exactly in the modular sum)."""

    def __init__(self, cohorts: list[Cohort]) -> None:
        self.cohorts = cohorts
        self.encoding = pytest.importorskip("hemafed.secure.encoding")

    @property
    def site_ids(self):
        return tuple(f"site{i}" for i in range(len(self.cohorts)))

    def secure_sum(self, query, params, *, study="default", dp=None):
        from hemafed.federation.queries import get_query

        q = get_query(query)
        layout = self.encoding.FixedPointLayout.from_specs(q.declare(params), len(self.cohorts))
        total = np.zeros(layout.size, dtype=np.uint64)
        for c in self.cohorts:
            total += layout.encode(q.run(c, params))  # uint64 arithmetic wraps modulo 2**64
        return AggregateResult(layout.decode_sum(total, len(self.cohorts)), self.site_ids)


def test_fixed_point_codec_keeps_statsmodels_precision(pooled) -> None:
    fed = _FixedPointFederation(_split(pooled))
    model = FederatedLogisticRegression().fit(fed, "transplant", "age + hb + plt + sex")
    ref = _statsmodels(pooled, pooled["transplant"], ["age", "hb", "plt"], {"sex": ["M", "F"]})
    np.testing.assert_allclose(model.params_, ref.params, rtol=1e-6)
    np.testing.assert_allclose(model.summary["std err"], ref.bse, rtol=1e-6)
