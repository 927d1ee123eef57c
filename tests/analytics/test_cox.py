"""Federated Cox PH against lifelines' CoxPHFitter on the pooled rows (Breslow and Efron,
unstratified and stratified), the federated C-index, and bad requests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from lifelines.utils import concordance_index
from test_km import make_survival_frame, split_sites

from hemafed.analytics.cox import FederatedCoxPH
from hemafed.analytics.design import parse_formula
from hemafed.analytics.results import SUMMARY_COLUMNS
from hemafed.cohort.validate import validate_cohort
from hemafed.errors import ConvergenceError, InvalidInput

FORMULA = "age + hb + sex + cyto_ipssr"


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return make_survival_frame()


def pooled_design(frame: pd.DataFrame) -> pd.DataFrame:
    """The pooled complete cases with the same dummy coding as the federated design."""
    df = frame.dropna(subset=["age", "hb", "os_time", "os_status"]).copy()
    out = df[["os_time", "os_status", "age", "hb"]].copy()
    out["sex[F]"] = (df["sex"] == "F").astype(float)
    for lv in ("Good", "Intermediate", "Poor", "Very Poor"):
        out[f"cyto_ipssr[{lv}]"] = (df["cyto_ipssr"] == lv).astype(float)
    return out


REF_FIT = {"precision": 1e-10}
"""lifelines' default precision (1e-7) stops ~1e-6 short of the optimum; ours converges tighter."""


def test_efron_equals_lifelines(frame: pd.DataFrame, make_federation) -> None:
    fed = make_federation(split_sites(frame))
    cph = FederatedCoxPH(ties="efron").fit(fed, "os_time", "os_status", FORMULA)
    data = pooled_design(frame)
    ref = CoxPHFitter().fit(data, "os_time", "os_status", fit_options=REF_FIT)
    assert list(cph.summary.columns) == list(ref.summary.columns) == list(SUMMARY_COLUMNS)
    np.testing.assert_allclose(cph.params_.to_numpy(), ref.params_.to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(cph.standard_errors_.to_numpy(),
                               ref.standard_errors_.to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(cph.summary.to_numpy(), ref.summary.to_numpy(), rtol=1e-5)
    assert cph.log_likelihood_ == pytest.approx(ref.log_likelihood_, rel=1e-9)
    assert cph.n_ == len(data) and cph.excluded_ == len(frame) - len(data)
    assert cph.rounds <= 12
    lp = data[list(cph.params_.index)].to_numpy() @ cph.params_.to_numpy()
    ref_c = concordance_index(data["os_time"], -lp, data["os_status"])
    assert cph.concordance_index_ == pytest.approx(ref_c, abs=2e-3)
    assert json.loads(cph.to_json())["rounds"] == cph.rounds


def test_breslow_equals_statsmodels(frame: pd.DataFrame, make_federation) -> None:
    from statsmodels.duration.hazard_regression import PHReg

    fed = make_federation(split_sites(frame))
    cph = FederatedCoxPH(ties="breslow").fit(fed, "os_time", "os_status", FORMULA)
    data = pooled_design(frame)
    x = data[list(cph.params_.index)].to_numpy()
    ref = PHReg(data["os_time"].to_numpy(), x, status=data["os_status"].to_numpy(),
                ties="breslow").fit()
    np.testing.assert_allclose(cph.params_.to_numpy(), ref.params, rtol=1e-6)
    np.testing.assert_allclose(cph.standard_errors_.to_numpy(), ref.bse, rtol=1e-6)
    assert cph.log_likelihood_ == pytest.approx(ref.llf, rel=1e-9)


def test_stratified_by_site_equals_lifelines_strata(frame: pd.DataFrame, make_federation) -> None:
    sites = split_sites(frame)
    fed = make_federation(sites)
    cph = FederatedCoxPH(strata="site").fit(fed, "os_time", "os_status", FORMULA)
    site_of = {pid: name for name, c in sites.items() for pid in c.ids}
    data = pooled_design(frame)
    data["site"] = frame.loc[data.index, "patient_id"].map(site_of)
    ref = CoxPHFitter().fit(data, "os_time", "os_status", strata=["site"], fit_options=REF_FIT)
    np.testing.assert_allclose(cph.params_.to_numpy(), ref.params_.to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(cph.standard_errors_.to_numpy(),
                               ref.standard_errors_.to_numpy(), rtol=1e-6)
    assert cph.log_likelihood_ == pytest.approx(ref.log_likelihood_, rel=1e-9)


def test_stratified_by_column_equals_lifelines(frame: pd.DataFrame, make_federation) -> None:
    fed = make_federation(split_sites(frame))
    cph = FederatedCoxPH(strata="sex", strata_levels=["M", "F"]).fit(
        fed, "os_time", "os_status", "age + hb + cyto_ipssr")
    data = pooled_design(frame).drop(columns="sex[F]")
    data["sex"] = frame.loc[data.index, "sex"]
    ref = CoxPHFitter().fit(data, "os_time", "os_status", strata=["sex"], fit_options=REF_FIT)
    np.testing.assert_allclose(cph.params_.to_numpy(), ref.params_.to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(cph.standard_errors_.to_numpy(),
                               ref.standard_errors_.to_numpy(), rtol=1e-6)


def test_bad_requests(frame: pd.DataFrame, make_federation) -> None:
    fed = make_federation(split_sites(frame))
    with pytest.raises(InvalidInput, match="not a cohort schema column"):
        FederatedCoxPH().fit(fed, "os_time", "os_status", "age + tumour_size")
    with pytest.raises(InvalidInput, match="not numeric, boolean or categorical"):
        FederatedCoxPH().fit(fed, "os_time", "os_status", "age + karyotype")
    with pytest.raises(InvalidInput, match="not in the site's cohort"):
        FederatedCoxPH().fit(fed, "os_time", "os_status", "age + anc")
    few = frame.copy()
    few["os_status"] = 0
    few.loc[few.index[:2], "os_status"] = 1
    with pytest.raises(InvalidInput, match="too few events"):
        FederatedCoxPH().fit(make_federation(split_sites(few)), "os_time", "os_status",
                             "age + hb + sex")


def test_constant_covariate_is_named(frame: pd.DataFrame, make_federation) -> None:
    const = frame.assign(sex="F")
    fed = make_federation(split_sites(const))
    with pytest.raises(ConvergenceError, match="sex"):
        FederatedCoxPH().fit(fed, "os_time", "os_status", "age + sex")


def test_perfect_separation_is_named(make_federation) -> None:
    df = make_survival_frame(n=200, seed=3)
    df["sex"] = np.where(df["os_status"] == 1, "M", "F")
    df["os_time"] = np.where(df["sex"] == "M", 30 / 365.25, 1095 / 365.25)
    fed = make_federation(split_sites(df, 4))
    with pytest.raises(ConvergenceError, match="sex"):
        FederatedCoxPH().fit(fed, "os_time", "os_status", "age + sex")


def _mds_sites(root: Path, n_sites: int = 10) -> tuple[pd.DataFrame, dict]:
    raw = pd.read_csv(root / "mds-ipssm-cohort" / "df_clinical.tsv", sep="\t")
    df = pd.DataFrame({
        "patient_id": raw["ID"].astype(str), "disease": "MDS",
        "age": raw["AGE"], "hb": raw["HB"], "plt": raw["PLT"], "bm_blast": raw["BM_BLAST"],
        "os_time": np.round(raw["OS_YEARS"] * 365.25) / 365.25, "os_status": raw["OS_STATUS"],
    }).dropna().reset_index(drop=True)
    df = df[df["os_time"] > 0].reset_index(drop=True)
    return df, split_sites(df, n_sites)


def test_real_mds_cohort_equals_lifelines(shared_data: Path, make_federation) -> None:
    df, sites = _mds_sites(shared_data)
    fed = make_federation(sites)
    formula = "age + hb + plt + bm_blast"
    cph = FederatedCoxPH().fit(fed, "os_time", "os_status", formula, concordance=False)
    ref = CoxPHFitter().fit(df[["os_time", "os_status", "age", "hb", "plt", "bm_blast"]],
                            "os_time", "os_status", fit_options=REF_FIT)
    np.testing.assert_allclose(cph.params_.to_numpy(), ref.params_.to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(cph.standard_errors_.to_numpy(),
                               ref.standard_errors_.to_numpy(), rtol=1e-6)
    assert parse_formula(formula).names == tuple(ref.params_.index)
    assert sum(len(c) for c in sites.values()) == len(df)
    assert validate_cohort  # the sites were built through the validator
