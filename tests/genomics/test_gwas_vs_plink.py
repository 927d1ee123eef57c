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
    ext = "linear" if pheno == "hbf" else "logistic"
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


@pytest.mark.slow
def test_logistic_equals_plink2_glm(world: World, tmp_path: Path) -> None:
    gwas = world.run(lambda fed: FederatedGWAS(model="logistic", n_pcs=4).fit(
        fed, world.vlist, study=STUDY, trait="tcd_velocity", threshold=200.0, study_id=STUDY))
    m = _plink_glm(world, tmp_path, gwas, "tcd", ["no-firth"])
    assert len(m) > 2900 and (m["n"] == m["OBS_CT"]).all()
    # rare variants with quasi-complete separation: PLINK reports NA (SEPARATION), so do we
    sep = m["ERRCODE"].astype(str).str.contains("SEPARATION")
    assert 0 < sep.sum() < 100
    assert (np.isnan(m["beta"]) == m["OR"].isna()).all()
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
