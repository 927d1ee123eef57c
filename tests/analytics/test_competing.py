"""Federated Aalen-Johansen cumulative incidence against lifelines and a pooled hand estimate."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from lifelines import AalenJohansenFitter, KaplanMeierFitter
from noisy_federation import NoisyFederation

from hemafed.analytics.competing import FederatedAalenJohansen, aalen_johansen, first_cause
from hemafed.cohort import validate_cohort
from hemafed.cohort.model import Cohort
from hemafed.errors import InvalidInput
from hemafed.federation.api import DPRequest


def _tie_free(n: int = 600, seed: int = 5) -> pd.DataFrame:
    """AML transformation vs death, whole days in years, every time distinct (no ties at all)."""
    rng = np.random.default_rng(seed)
    days = rng.choice(np.arange(1, 15 * 365), size=3 * n, replace=False).reshape(3, n)
    scale = np.array([[1.0], [0.7], [0.5]])  # make AML the rarer, death the commoner event
    t1, t2, c = (np.sort(days.ravel())[np.argsort(np.argsort(days * scale, axis=None))]
                 .reshape(3, n))
    aml = (t1 < t2) & (t1 < c)
    death_first = (t2 < t1) & (t2 < c)
    amlt_time = np.where(aml, t1, np.where(death_first, t2, c))
    os_status = np.where(aml, t2 < c, death_first)
    os_time = np.where(aml, np.where(t2 < c, t2, c), amlt_time)
    return pd.DataFrame({
        "patient_id": [f"p{i}" for i in range(n)], "disease": "MDS",
        "sex": rng.choice(["M", "F"], n),
        "amlt_time": amlt_time / 365.25, "amlt_status": aml.astype(int),
        "os_time": os_time / 365.25, "os_status": os_status.astype(int)})


def _split(df: pd.DataFrame, k: int = 10, seed: int = 9) -> list[Cohort]:
    site = np.random.default_rng(seed).integers(0, k, len(df))
    return [validate_cohort(df[site == s]) for s in range(k)]


def _pooled_events(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    times = df[["amlt_time", "os_time"]].to_numpy(float)
    status = df[["amlt_status", "os_status"]].to_numpy(float)
    return first_cause(times, status)


def _hand_cif(time: np.ndarray, cause: np.ndarray, k: int, at: np.ndarray) -> np.ndarray:
    """Textbook Aalen-Johansen by a loop over distinct event times (independent of the hub)."""
    s, f, out, prev = 1.0, 0.0, [], []
    for t in np.unique(time[cause > 0]):
        n = np.sum(time >= t - 1e-12)
        d = np.sum((np.abs(time - t) <= 1e-12) & (cause > 0))
        dk = np.sum((np.abs(time - t) <= 1e-12) & (cause == k))
        f += s * dk / n
        s *= 1 - d / n
        prev.append((t, f))
    ts = np.array([p[0] for p in prev])
    fs = np.array([p[1] for p in prev])
    for a in at:
        j = np.searchsorted(ts, a + 1e-12, side="right") - 1
        out.append(0.0 if j < 0 else fs[j])
    return np.array(out)


def _step_at(series: pd.Series, at: np.ndarray) -> np.ndarray:
    """Right-continuous step function value of ``series`` (indexed by time) at ``at``."""
    idx = np.searchsorted(series.index.to_numpy(float), at + 1e-9, side="right") - 1
    return series.to_numpy(float)[idx]


def test_matches_lifelines_on_tie_free_data(make_federation) -> None:
    df = _tie_free()
    fed = make_federation(_split(df))
    aj = FederatedAalenJohansen().fit(fed, event_of_interest=1)
    time, cause = _pooled_events(df)
    for k in (1, 2):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # lifelines must not need to jitter: data are tie-free
            ref = AalenJohansenFitter(calculate_variance=True).fit(time, cause, event_of_interest=k)
        grid = aj.grid_[1:]
        ours = aj.cumulative_incidence(k)
        ref_cif = _step_at(ref.cumulative_density_.iloc[:, 0], grid)
        np.testing.assert_allclose(ours.cif[1:], ref_cif, rtol=0, atol=1e-9)
        ref_var = _step_at(ref.variance_, grid)
        finite = np.isfinite(ref_var)
        np.testing.assert_allclose(ours.variance[1:][finite], ref_var[finite], rtol=1e-7,
                                   atol=1e-12)
    assert aj.cumulative_density_.shape == (aj.grid_.size, 1)
    assert aj.event_table["observed_1"].sum() == (cause == 1).sum()
    assert aj.event_table["at_risk"].iloc[0] == len(df)


def test_grouped_with_ties_matches_hand_estimate_and_km(make_federation) -> None:
    df = _tie_free(800, seed=6)
    # round to whole months: many ties, including between causes
    for col in ("amlt_time", "os_time"):
        df[col] = np.ceil(df[col] * 12) / 12
    fed = make_federation(_split(df))
    aj = FederatedAalenJohansen().fit(fed, group_col="sex", levels=["M", "F"],
                                      steps_per_unit=12)
    time, cause = _pooled_events(df)
    for sex in ("M", "F"):
        sel = (df["sex"] == sex).to_numpy()
        for k in (1, 2):
            expected = _hand_cif(time[sel], cause[sel], k, aj.grid_)
            np.testing.assert_allclose(aj.cumulative_incidence(k, sex).cif, expected, atol=1e-12)
        km = KaplanMeierFitter().fit(time[sel], cause[sel] > 0)
        s = km.survival_function_.iloc[:, 0].reindex(aj.grid_, method="ffill").to_numpy()
        total = aj.cumulative_incidence(1, sex).cif + aj.cumulative_incidence(2, sex).cif
        np.testing.assert_allclose(total, 1 - s, atol=1e-12)
    out = json.loads(aj.to_json())
    assert out["kind"] == "aalen_johansen" and "F|cause2" in out["curves"]
    assert set(aj.summary["group"]) == {"M", "F"}
    import matplotlib

    matplotlib.use("Agg")
    ax = aj.plot(cause=2)
    assert len(ax.get_lines()) == 2
    np.testing.assert_allclose(ax.get_lines()[1].get_ydata(), aj.cumulative_incidence(2, "F").cif)
    matplotlib.pyplot.close(ax.figure)


def test_hand_computed_case() -> None:
    # 4 patients at risk; t=1: one cause-1 event; t=2: one cause-2; t=3: one cause-1, one censored
    n = np.array([4.0, 3.0, 2.0])
    ev = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    ci = aalen_johansen(np.array([1.0, 2.0, 3.0]), n, ev, 1)
    np.testing.assert_allclose(ci.cif, [0.25, 0.25, 0.25 + 0.5 * 1 / 2])
    np.testing.assert_allclose(ci.survival_before, [1.0, 0.75, 0.5])


@pytest.mark.realdata
def test_real_mds_aml_transformation_vs_death(make_federation, shared_data) -> None:
    raw = pd.read_csv(shared_data / "mds-ipssm-cohort" / "df_clinical.tsv", sep="\t")
    df = pd.DataFrame({"patient_id": raw["ID"], "disease": "MDS", "sex": raw["SEX"],
                       "os_time": raw["OS_YEARS"], "os_status": raw["OS_STATUS"],
                       "amlt_time": raw["AMLt_YEARS"], "amlt_status": raw["AMLt_STATUS"]})
    df = df[~(df["amlt_time"] > df["os_time"] + 1e-9)]  # one record fails validation
    # the study stores days / 365; snap float noise onto that lattice
    for col in ("os_time", "amlt_time"):
        df[col] = np.round(df[col] * 365) / 365
    aj = FederatedAalenJohansen().fit(make_federation(_split(df, seed=2022)), steps_per_unit=365)
    ok = df.dropna(subset=["os_time", "os_status", "amlt_time", "amlt_status"])
    time, cause = _pooled_events(ok)
    assert aj.excluded_ == len(df) - len(ok)
    for k in (1, 2):
        expected = _hand_cif(time, cause, k, aj.grid_)
        np.testing.assert_allclose(aj.cumulative_incidence(k).cif, expected, atol=1e-9)
    km = KaplanMeierFitter().fit(time, cause > 0)
    s = km.survival_function_.iloc[:, 0].reindex(aj.grid_, method="ffill").to_numpy()
    total = aj.cumulative_incidence(1).cif + aj.cumulative_incidence(2).cif
    np.testing.assert_allclose(total, 1 - s, atol=1e-9)
    five = aj.at([5.0], cause=1)["cif"].iloc[0]
    assert 0.05 < five < 0.4  # MDS: AML transformation by 5 years


def test_bad_requests(make_federation) -> None:
    fed = make_federation(_split(_tie_free(100), k=2))
    with pytest.raises(InvalidInput, match="'aml_time'"):
        FederatedAalenJohansen().fit(fed, [("aml_time", "amlt_status")])
    with pytest.raises(InvalidInput, match="event_of_interest"):
        FederatedAalenJohansen().fit(fed, event_of_interest=3)
    with pytest.raises(InvalidInput, match="levels"):
        FederatedAalenJohansen().fit(fed, group_col="sex")
    with pytest.raises(InvalidInput, match="public grid"):
        FederatedAalenJohansen().fit(fed, dp=DPRequest(1.0))
    with pytest.raises(InvalidInput, match="fit"):
        _ = FederatedAalenJohansen().cumulative_density_



def test_dp_release_is_monotone(make_federation) -> None:
    df = _tie_free(800)
    fed = NoisyFederation(make_federation(_split(df)), std=2.0, seed=1)
    aj = FederatedAalenJohansen().fit(fed, grid=np.arange(0, 16, 0.5), time_mapping="up",
                                      dp=DPRequest(2.0, 1e-6))
    cif = aj.cumulative_incidence(1).cif
    assert np.all(np.diff(cif) >= 0) and cif.min() >= 0 and cif.max() <= 1
    assert aj.noise.epsilon == 2.0 and aj.noise.noise_std["competing_risk_table.events"] == 2.0
    time, cause = _pooled_events(df)
    exact = _hand_cif(np.ceil(time * 2) / 2, cause, 1, np.array([10.0]))[0]
    assert abs(cif[20] - exact) < 0.05
