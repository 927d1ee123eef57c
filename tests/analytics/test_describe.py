"""Federated descriptive statistics against pooled numpy/pandas/scipy references."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from noisy_federation import NoisyFederation
from scipy import stats

from hemafed.analytics.describe import crosstab, describe, histogram_quantiles, suppress
from hemafed.analytics.dp import monotone_nondecreasing, noise_record
from hemafed.cohort import validate_cohort
from hemafed.cohort.model import Cohort
from hemafed.errors import InvalidInput
from hemafed.federation.api import DPRequest


def _cohort_frame(n: int = 2000, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "patient_id": [f"p{i}" for i in range(n)],
        "disease": "MDS",
        "sex": rng.choice(["M", "F"], n, p=[0.6, 0.4]),
        "age": np.round(rng.normal(70, 10, n).clip(18, 100), 1),
        "hb": np.round(rng.normal(10, 1.8, n).clip(3, 20), 2),
        "plt": np.round(rng.lognormal(4.8, 0.8, n).clip(1, 2500), 0),
        "cyto_ipssr": rng.choice(["Very Good", "Good", "Intermediate", "Poor", "Very Poor"], n,
                                 p=[0.04, 0.6, 0.2, 0.1, 0.06]),
    })
    df.loc[rng.random(n) < 0.05, "hb"] = np.nan
    df.loc[rng.random(n) < 0.03, "cyto_ipssr"] = None
    # a rare level, so that suppression has something to do
    df.loc[: 2, "cyto_ipssr"] = "Very Good"
    return df


def _split(df: pd.DataFrame, k: int = 10, seed: int = 1) -> list[Cohort]:
    site = np.random.default_rng(seed).integers(0, k, len(df))
    return [validate_cohort(df[site == s]) for s in range(k)]


@pytest.fixture(scope="module")
def pooled() -> pd.DataFrame:
    return _cohort_frame()


def test_numeric_summary_matches_pooled(make_federation, pooled) -> None:
    fed = make_federation(_split(pooled))
    res = describe(fed, ["hb", "age", "plt"], bins={"hb": 92, "age": 110, "plt": 300})
    for col, width in (("hb", 23 / 92), ("age", 1.0), ("plt", 10.0)):
        x = pooled[col].dropna().to_numpy()
        row = res.summary.loc[col]
        assert row["count"] == x.size
        assert row["missing"] == pooled[col].isna().sum()
        np.testing.assert_allclose(row["mean"], x.mean(), rtol=1e-12)
        np.testing.assert_allclose(row["sd"], x.std(ddof=1), rtol=1e-9)
        for q in (0.25, 0.5, 0.75):
            exact = np.quantile(x, q, method="inverted_cdf")
            assert abs(row[f"q{q:g}"] - exact) <= width + 1e-12, (col, q)
            assert abs(row[f"q{q:g}"] - np.quantile(x, q)) <= width + 1e-12
    hist = res.histograms["plt"]
    assert hist["count"].sum(skipna=True) <= pooled["plt"].notna().sum()


def test_categorical_counts_and_suppression(make_federation, pooled) -> None:
    fed = make_federation(_split(pooled))
    res = describe(fed, ["cyto_ipssr", "sex"], min_cell=5)
    cat = res.categories.set_index(["column", "level"])["count"]
    ref = pooled["cyto_ipssr"].value_counts()
    for level in ("Good", "Intermediate", "Poor"):
        assert cat[("cyto_ipssr", level)] == ref[level]
    assert cat[("cyto_ipssr", "<missing>")] == pooled["cyto_ipssr"].isna().sum()
    assert cat[("sex", "M")] == (pooled["sex"] == "M").sum()
    assert cat[("sex", "<other>")] == 0  # a true zero is not suppressed
    # a count of 1..4 is suppressed: force one with a tiny sub-cohort
    small = pooled.iloc[:40].copy()
    small.loc[:, "sex"] = ["F"] * 3 + ["M"] * 37
    res2 = describe(make_federation(_split(small, k=3)), ["sex", "hb"], min_cell=5)
    cat2 = res2.categories.set_index(["column", "level"])["count"]
    assert np.isnan(cat2[("sex", "F")]) and cat2[("sex", "M")] == 37
    out = json.loads(res2.to_json())
    f_row = next(r for r in out["categorical"] if r["level"] == "F")
    assert f_row["count"] == "<5"


def test_tiny_column_statistics_are_suppressed(make_federation, pooled) -> None:
    tiny = pooled.iloc[:3]
    res = describe(make_federation(_split(tiny, k=2)), ["age"])
    assert np.isnan(res.summary.loc["age", "count"]) and np.isnan(res.summary.loc["age", "mean"])
    assert json.loads(res.to_json())["numeric"][0]["count"] == "<5"


def test_crosstab_chi_square_matches_scipy(make_federation, pooled) -> None:
    fed = make_federation(_split(pooled))
    res = crosstab(fed, "cyto_ipssr", "sex", min_cell=5)
    ok = pooled.dropna(subset=["cyto_ipssr", "sex"])
    table = pd.crosstab(ok["cyto_ipssr"], ok["sex"])
    chi2, p, dof, expected = stats.chi2_contingency(table.to_numpy(), correction=False)
    np.testing.assert_allclose(res.chi2, chi2, rtol=1e-10)
    np.testing.assert_allclose(res.p_value, p, rtol=1e-8)
    assert res.dof == dof and res.min_expected == pytest.approx(expected.min())
    assert res.table.loc["Poor", "F"] == table.loc["Poor", "F"]
    assert res.excluded == len(pooled) - len(ok)
    assert json.loads(res.to_json())["dof"] == dof


def test_histogram_quantiles_hand_case_and_suppress() -> None:
    edges = np.array([0.0, 10.0, 20.0, 30.0])
    # ranks: 4 in [0,10), 0 in [10,20), 6 in [20,30]; median target 5 -> 20 + (1/6)*10
    q = histogram_quantiles(np.array([4.0, 0.0, 6.0]), edges, [0.4, 0.5, 1.0])
    np.testing.assert_allclose(q, [10.0, 20 + 10 / 6, 30.0])
    np.testing.assert_array_equal(np.isnan(suppress(np.array([0, 1, 4, 5]), 5)),
                                  [False, True, True, False])


def test_bad_requests_are_named(make_federation, pooled) -> None:
    fed = make_federation(_split(pooled.iloc[:100], k=2))
    with pytest.raises(InvalidInput, match="'weight'"):
        describe(fed, ["weight"])
    with pytest.raises(InvalidInput, match="outside the declared bounds"):
        describe(fed, ["age"], bounds={"age": (0, 50)})
    with pytest.raises(InvalidInput, match="min_cell"):
        describe(fed, ["age"], min_cell=0)
    with pytest.raises(InvalidInput, match="levels"):
        crosstab(fed, "age", "sex")



def test_dp_release_is_post_processed_and_recorded(make_federation, pooled) -> None:
    fed = NoisyFederation(make_federation(_split(pooled)), std=3.0, seed=0)
    res = describe(fed, ["cyto_ipssr", "hb"], dp=DPRequest(1.0, 1e-6), min_cell=5)
    counts = res.categories["count"].dropna()
    assert (counts >= 0).all()
    assert res.noise.epsilon == 1.0 and res.noise.releases == 2
    assert res.noise.noise_std["numeric_summary[hb].hist"] == 3.0
    assert abs(res.summary.loc["hb", "mean"] - pooled["hb"].mean()) < 0.05
    assert json.loads(res.to_json())["dp"]["delta"] == 1e-6
    assert monotone_nondecreasing(np.array([0.1, 0.05, 0.2])).tolist() == [0.1, 0.1, 0.2]
    assert not noise_record([]).private


def test_declarations_fit_the_secure_codec(pooled) -> None:
    encoding = pytest.importorskip("hemafed.secure.encoding")
    from hemafed.federation.queries import get_query

    for col in ("age", "plt", "hb"):
        q = get_query("numeric_summary")
        params = {"column": col, "low": 0.0, "high": 3000.0, "bins": 50}
        layout = encoding.FixedPointLayout.from_specs(q.declare(params), n_sites=10)
        cohorts = _split(pooled, k=3)
        total = sum(layout.encode(q.run(c, params)) for c in cohorts)
        out = layout.decode_sum(total, 3)
        x = pooled[col].dropna().to_numpy()
        # each of 3 sites rounds to the declared (codec-coarsened) resolution
        res = q.declare(params)["sum_sq"].resolution
        assert res < 0.01
        assert abs(out["sum_sq"][0] - np.square(x).sum()) <= 1.5 * res
        assert out["n"][0] == x.size
