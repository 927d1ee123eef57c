"""Federated GWAS over 5 uneven sites (secure sums, in-process transport) against PLINK 2 run on
the pooled file, and against a direct numpy least-squares fit on the pooled data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from bed_reader import open_bed
from genomics_world import (
    STUDY,
    World,
    close_to_printed,
    plink2,
    pooled_covariates,
    pooled_phenotypes,
)
from scipy import stats

from hemafed.genomics.gwas import FederatedGWAS
from hemafed.genomics.pca import site_scores
from hemafed.genomics.qc import QCFilters


@pytest.fixture(scope="module")
def linear(world: World) -> FederatedGWAS:
    return world.run(lambda fed: FederatedGWAS(model="linear", n_pcs=4).fit(
        fed, world.vlist, study=STUDY, trait="hbf", study_id=STUDY))


def _pooled_dosage(world: World) -> np.ndarray:
    g = open_bed(str(world.files / "pooled.bed"), count_A1=True).read(dtype="int8").T
    return np.where(g < 0, -1, g)


def _plink_glm(world: World, tmp: Path, gwas: FederatedGWAS, pheno: str, model_flags: list[str]
               ) -> pd.DataFrame:
    pcs = site_scores(_pooled_dosage(world), gwas.pca) if gwas.pca is not None else None
    cov = pooled_covariates(world, pcs, tmp / "cov.tsv")
    phe = pooled_phenotypes(world, tmp / "pheno.tsv")
    plink2("--bfile", str(world.files / "pooled"), "--pheno", str(phe), "--pheno-name", pheno,
           "--covar", str(cov), "--covar-variance-standardize", "--glm", "hide-covar",
           "omit-ref", *model_flags, "--out", str(tmp / "plk"))
    ext = ("linear" if pheno == "hbf" else "firth" if "firth" in model_flags
           else "logistic.hybrid" if "firth-fallback" in model_flags else "logistic")
    out = pd.read_csv(tmp / f"plk.{pheno}.glm.{ext}", sep="\t")
    return gwas.summary.merge(out, left_on="id", right_on="ID", validate="1:1")


def test_linear_equals_plink2_glm(world: World, linear: FederatedGWAS, tmp_path: Path) -> None:
    m = _plink_glm(world, tmp_path, linear, "hbf", [])
    assert len(m) == len(linear.summary) > 2900
    assert (m["A1"] == m["alt"]).all()
    assert (m["n"] == m["OBS_CT"]).all()
    assert (m["n"] < 400).sum() > 20  # variants with missing calls are fitted on fewer patients
    for ours, theirs in (("beta", "BETA"), ("se", "SE"), ("stat", "T_STAT")):
        ok = close_to_printed(m[ours], m[theirs])
        assert ok.all(), m.loc[~ok, ["id", ours, theirs]].head()
    # PLINK's own t-distribution tail is good to ~1e-6 and printed to 6 digits; ours is scipy's
    # (checked to 1e-9 against numpy below), so the last printed digit may differ by one
    np.testing.assert_allclose(m["p"], m["P"], rtol=1e-5)


def test_linear_equals_pooled_least_squares_to_1e_9(world: World, linear: FederatedGWAS) -> None:
    """PLINK prints 6 digits; the maths itself is checked to 1e-9 against numpy lstsq."""
    g = _pooled_dosage(world)
    pts = pd.read_csv(world.files / "pooled_patients.csv")
    pcs = site_scores(g, linear.pca)  # type: ignore[arg-type]
    c = np.column_stack([np.ones(len(pts)), pts.age, pts.sex == "F", pcs])
    y = pts.hbf.to_numpy()
    rows = np.linspace(0, len(linear.summary) - 1, 60).astype(int)
    index = {v: i for i, v in enumerate(world.vlist.frame["id"])}
    for r in rows:
        s = linear.summary.iloc[r]
        gj = g[index[s["id"]]]
        keep = gj >= 0
        x = np.column_stack([c[keep], gj[keep]])
        beta, rss, *_ = np.linalg.lstsq(x, y[keep], rcond=None)
        df = keep.sum() - x.shape[1]
        se = np.sqrt(rss[0] / df * np.linalg.inv(x.T @ x)[-1, -1])
        p = 2 * stats.t.sf(abs(beta[-1] / se), df)
        np.testing.assert_allclose([s["beta"], s["se"], s["p"]], [beta[-1], se, p], rtol=1e-9)


def test_freq_and_hardy_equal_plink2(world: World, linear: FederatedGWAS, tmp_path: Path) -> None:
    plink2("--bfile", str(world.files / "pooled"), "--freq", "--hardy", "--out",
           str(tmp_path / "qc"))
    fr = pd.read_csv(tmp_path / "qc.afreq", sep="\t")
    hw = pd.read_csv(tmp_path / "qc.hardy", sep="\t")
    qc = linear.qc.assign(ID=world.vlist.frame["id"])
    m = qc.merge(fr, on="ID").merge(hw, on="ID", suffixes=("", "_hw"))
    assert len(m) == len(world.vlist)
    assert close_to_printed(m["alt_freq"], m["ALT_FREQS"]).all()
    assert (m["n_called"] if "n_called" in m else m["hom_ref"] + m["het"] + m["hom_alt"]).eq(
        m["OBS_CT"] // 2).all()
    # PLINK's A1 in --hardy is REF: HOM_A1_CT = hom REF
    assert (m["hom_ref"] == m["HOM_A1_CT"]).all() and (m["het"] == m["HET_A1_CT"]).all()
    ok = close_to_printed(m["hwe_p"], m["P"])
    assert ok.all(), m.loc[~ok, ["ID", "hwe_p", "P"]].head()


@pytest.fixture(scope="module")
def logistic(world: World) -> FederatedGWAS:
    """The binary trait with PLINK 2's default Firth fallback."""
    return world.run(lambda fed: FederatedGWAS(model="logistic", n_pcs=4).fit(
        fed, world.vlist, study=STUDY, trait="tcd_velocity", threshold=200.0, study_id=STUDY))


def test_firth_fallback_equals_plink2(world: World, logistic: FederatedGWAS,
                                      tmp_path: Path) -> None:
    """Rare variants absent from cases or controls (separation): Firth's penalised likelihood,
    federated (one secure sum per Newton step), equals plink2 --glm firth-fallback."""
    m = _plink_glm(world, tmp_path, logistic, "tcd", ["firth-fallback"])
    assert (m["firth"] == (m["FIRTH?"] == "Y")).all()
    f = m[m["firth"]]
    assert 5 < len(f) < 100 and f["p"].notna().all() and (f["n"] == f["OBS_CT"]).all()
    # the maths, to 1e-7, against textbook Firth on the pooled data (hat matrix formed directly)
    g = _pooled_dosage(world)
    pts = pd.read_csv(world.files / "pooled_patients.csv")
    c = np.column_stack([np.ones(len(pts)), pts.age, pts.sex == "F",
                         site_scores(g, logistic.pca)])  # type: ignore[arg-type]
    y = (pts.tcd_velocity >= 200).to_numpy(dtype=float)
    index = {v: i for i, v in enumerate(world.vlist.frame["id"])}
    for _, row in f.iterrows():
        gj = g[index[row["id"]]]
        keep = gj >= 0
        beta, se = _pooled_firth(np.column_stack([c[keep], gj[keep]]), y[keep])
        np.testing.assert_allclose([row["beta"], row["se"]], [beta, se], rtol=1e-7)
    # plink2 2.00a3.5 fits Firth in single precision and stops once the step is <= 1e-4 and the
    # penalised log-likelihood changes by <= 1e-4: on the flat likelihood of a separated variant
    # that leaves its beta within ~1e-3 (typically 3e-5) of the optimum; SE and p within 5e-4
    d_beta = np.abs(f["beta"] - np.log(f["OR"]))
    assert d_beta.max() < 1e-3 and d_beta.median() < 1e-4, d_beta.describe()
    np.testing.assert_allclose(f["se"], f["LOG(OR)_SE"], rtol=5e-4)
    np.testing.assert_allclose(f["p"], f["P"], rtol=5e-4)


def _pooled_firth(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Firth (1993) logistic regression, Newton with step halving on the penalised likelihood:
    the last coefficient and its SE from the inverse information at the estimate."""
    beta = np.zeros(x.shape[1])

    def penalised(b: np.ndarray) -> float:
        eta = x @ b
        p = 1 / (1 + np.exp(-eta))
        info = (x * (p * (1 - p))[:, None]).T @ x
        return float(np.sum(y * eta - np.logaddexp(0, eta)) + 0.5 * np.linalg.slogdet(info)[1])

    for _ in range(200):
        p = 1 / (1 + np.exp(-(x @ beta)))
        w = p * (1 - p)
        inv = np.linalg.inv((x * w[:, None]).T @ x)
        h = w * np.einsum("ij,jk,ik->i", x, inv, x)
        step = inv @ (x.T @ (y - p + h * (0.5 - p)))
        while penalised(beta + step) < penalised(beta) - 1e-12:
            step /= 2
        beta = beta + step
        if np.max(np.abs(step)) < 1e-12:
            break
    p = 1 / (1 + np.exp(-(x @ beta)))
    inv = np.linalg.inv((x * (p * (1 - p))[:, None]).T @ x)
    return float(beta[-1]), float(np.sqrt(inv[-1, -1]))


@pytest.mark.slow
def test_logistic_equals_plink2_glm(world: World, logistic: FederatedGWAS, tmp_path: Path) -> None:
    gwas = logistic
    m = _plink_glm(world, tmp_path, gwas, "tcd", ["no-firth"])
    assert len(m) > 2900 and (m["n"] == m["OBS_CT"]).all()
    # rare variants with quasi-complete separation: PLINK without Firth reports NA
    # (SEPARATION); they are the ones we refit with Firth
    sep = m["ERRCODE"].astype(str).str.contains("SEPARATION")
    assert 0 < sep.sum() < 100
    assert (m["firth"] == m["OR"].isna()).all() and m["beta"].notna().all()
    m = m[~m["OR"].isna()]
    np.testing.assert_allclose(m["beta"], np.log(m["OR"]), rtol=1e-4, atol=1e-5)
    # PLINK 2.00a3.5's logistic SE differs (up to ~4 %) on variants with missing calls while
    # its beta agrees; there statsmodels on the same patients is the reference (below)
    full = m[m["call_rate"] == 1]
    assert len(full) > 2800
    np.testing.assert_allclose(full["se"], full["LOG(OR)_SE"], rtol=1e-4)
    np.testing.assert_allclose(full["stat"], full["Z_STAT"], rtol=1e-4, atol=1e-5)
    # p amplifies z's last-digit differences by ~z^2 (PLINK works partly in single precision)
    np.testing.assert_allclose(full["p"], full["P"], rtol=2e-4)
    g = _pooled_dosage(world)
    pts = pd.read_csv(world.files / "pooled_patients.csv")
    c = np.column_stack([np.ones(len(pts)), pts.age, pts.sex == "F",
                         site_scores(g, gwas.pca)])  # type: ignore[arg-type]
    y = (pts.tcd_velocity >= 200).to_numpy(dtype=float)
    index = {v: i for i, v in enumerate(world.vlist.frame["id"])}
    for _, row in m[m["call_rate"] < 1].head(8).iterrows():
        gj = g[index[row["id"]]]
        keep = gj >= 0
        fit = sm.Logit(y[keep], np.column_stack([c[keep], gj[keep]])).fit(disp=0, tol=1e-12)
        np.testing.assert_allclose([row["beta"], row["se"], row["p"]],
                                   [fit.params[-1], fit.bse[-1], fit.pvalues[-1]], rtol=1e-6)
    # the score test after one null fit agrees with the Wald test on common variants
    score = world.run(lambda fed: FederatedGWAS(model="logistic", n_pcs=4, test="score").fit(
        fed, world.vlist, study=STUDY, trait="tcd_velocity", threshold=200.0, study_id=STUDY))
    common = (gwas.summary["a1_freq"].between(0.2, 0.8)).to_numpy()
    lw, ls = -np.log10(gwas.summary["p"][common]), -np.log10(score.summary["p"][common])
    assert np.corrcoef(lw, ls)[0, 1] > 0.99
    assert score.secure_sums < gwas.secure_sums


def test_firth_always_equals_plink2_firth(world: World, tmp_path: Path) -> None:
    """``firth="always"`` as ``plink2 --glm firth`` (common variants only, to stay quick)."""
    gwas = world.run(lambda fed: FederatedGWAS(
        model="logistic", n_pcs=2, firth="always", filters=QCFilters(min_maf=0.45)).fit(
        fed, world.vlist, study=STUDY, trait="tcd_velocity", threshold=200.0, study_id=STUDY))
    m = _plink_glm(world, tmp_path, gwas, "tcd", ["firth"])
    assert 20 < len(m) == len(gwas.summary) and gwas.summary["firth"].all()
    assert (m["n"] == m["OBS_CT"]).all()
    np.testing.assert_allclose(m["beta"], np.log(m["OR"]), rtol=1e-4, atol=1e-4)
    # as without Firth, plink2 2.00a3.5's SE differs on variants with missing calls
    full = m[m["call_rate"] == 1]
    assert len(full) > 0.8 * len(m)
    np.testing.assert_allclose(full["se"], full["LOG(OR)_SE"], rtol=1e-4)
    np.testing.assert_allclose(full["p"], full["P"], rtol=5e-4)
