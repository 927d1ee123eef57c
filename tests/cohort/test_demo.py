"""Virtual demo cohorts: validity, determinism, published frequencies and outcome structure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter, KaplanMeierFitter

from hemafed.cohort import validate_cohort
from hemafed.cohort.demo import (
    AML_GENE_FREQUENCIES,
    MDS_CYTO_FREQUENCIES,
    MDS_GENE_FREQUENCIES,
    MM_FREQUENCIES,
    SCD_GENOTYPE_FREQUENCIES,
    generate,
)
from hemafed.errors import InvalidInput

N_LARGE = 20_000


@pytest.fixture(scope="module")
def mds() -> object:
    return generate("MDS", N_LARGE, seed=11)


@pytest.fixture(scope="module")
def aml() -> object:
    return generate("AML", N_LARGE, seed=12)


def _tolerance(p: float, n: int) -> float:
    return 0.012 + 4 * np.sqrt(p * (1 - p) / n)


def _median_os(p: pd.DataFrame) -> float:
    km = KaplanMeierFitter().fit(p["os_time"].astype(float), p["os_status"].astype(bool))
    return float(km.median_survival_time_)


@pytest.mark.parametrize("disease", ["MDS", "AML", "MM", "SCD"])
def test_every_disease_gives_a_valid_cohort_with_synthetic_ids(disease: str) -> None:
    c = generate(disease, 400, seed=3)
    assert len(c) == 400
    assert c.patients["patient_id"].iloc[7] == f"DEMO-{disease}-000007"
    assert set(c.patients["disease"]) == {disease}
    again = validate_cohort(c.patients, c.mutations if len(c.mutations) else None, c.panels)
    assert len(again) == 400
    if len(c.mutations):
        vaf = c.mutations["vaf"].astype(float)
        assert vaf.between(0.02, 0.98).all()
        assert c.mutations["protein_change"].str.startswith("p.").mean() > 0.9


@pytest.mark.parametrize("disease", ["MDS", "AML", "MM", "SCD"])
def test_same_seed_same_cohort_and_different_seed_differs(disease: str) -> None:
    a, b, other = generate(disease, 300, 5), generate(disease, 300, 5), generate(disease, 300, 6)
    pd.testing.assert_frame_equal(a.patients, b.patients)
    pd.testing.assert_frame_equal(a.mutations, b.mutations)
    assert not a.patients["os_time"].equals(other.patients["os_time"])


def test_unknown_disease_and_bad_size_are_refused() -> None:
    with pytest.raises(InvalidInput, match="unknown disease 'CLL'"):
        generate("CLL", 10, 1)
    with pytest.raises(InvalidInput, match="positive integer"):
        generate("MDS", 0, 1)


def test_mds_gene_and_cytogenetic_frequencies_match_the_published_tables(mds) -> None:
    gm = mds.gene_matrix()
    for gene, published in MDS_GENE_FREQUENCIES.items():
        assert abs(float(gm[gene].mean()) - published) < _tolerance(published, N_LARGE), gene
    observed = mds.patients["cyto_ipssr"].value_counts(normalize=True)
    for cat, published in MDS_CYTO_FREQUENCIES.items():
        assert abs(float(observed[cat]) - published) < _tolerance(published, N_LARGE), cat


def test_mds_blood_counts_are_near_the_ipssm_cohort_medians(mds) -> None:
    # Medians in the IPSS-M cohort: Hb 9.7 g/dL, PLT 130, ANC 1.9, BM blasts 3%, age 72.
    p = mds.patients
    assert abs(float(p["hb"].median()) - 9.7) < 0.5
    assert 100 < float(p["plt"].median()) < 170
    assert 1.4 < float(p["anc"].median()) < 2.5
    assert 1.0 <= float(p["bm_blast"].median()) <= 4.0
    assert abs(float(p["age"].median()) - 72) < 3


def test_mds_correlations_follow_the_biology(mds) -> None:
    p, gm = mds.patients, mds.gene_matrix()
    sf3b1 = gm["SF3B1"].to_numpy(dtype=bool)
    tp53 = gm["TP53"].to_numpy(dtype=bool)
    rs = p["ring_sideroblasts"].astype(float).to_numpy()
    assert (rs[sf3b1] >= 15).mean() > 0.95 and (rs[~sf3b1] >= 15).mean() < 0.01
    cx = p["complex"].to_numpy(dtype=bool)
    assert cx[tp53].mean() > 0.5 > 5 * cx[~tp53].mean()
    del5q = p["del5q"].to_numpy(dtype=bool)
    len_ = p["lenalidomide"].to_numpy(dtype=bool)
    assert len_[del5q].mean() > 5 * len_[~del5q].mean()
    # splicing factor mutations are mutually exclusive
    assert int((gm[["SF3B1", "SRSF2", "U2AF1", "ZRSR2"]].sum(axis=1) > 1).sum()) == 0


def test_mds_survival_separates_risk_groups_in_published_order(mds) -> None:
    p = mds.patients
    medians = [_median_os(p[p["cyto_ipssr"] == cat]) for cat in MDS_CYTO_FREQUENCIES]
    assert medians == sorted(medians, reverse=True)
    # Schanz 2012: median OS 0.7 years for Very Poor cytogenetics, 5.3 years for Good.
    assert 0.4 < medians[-1] < 1.5
    assert 3.5 < medians[1] < 8.0
    blasts = p["bm_blast"].astype(float)
    groups = [p[blasts <= 2], p[(blasts > 2) & (blasts < 5)], p[(blasts >= 5) & (blasts <= 10)],
              p[blasts > 10]]
    blast_medians = [_median_os(g) for g in groups]
    assert blast_medians == sorted(blast_medians, reverse=True)


def test_mds_tp53_and_sf3b1_hazard_ratios_have_the_published_direction(mds) -> None:
    gm = mds.gene_matrix()
    df = pd.DataFrame({"T": mds.patients["os_time"].astype(float).to_numpy(),
                       "E": mds.patients["os_status"].astype(int).to_numpy(),
                       "TP53": gm["TP53"].astype(int).to_numpy(),
                       "SF3B1": gm["SF3B1"].astype(int).to_numpy()}).iloc[:5000]
    hr = CoxPHFitter().fit(df, "T", "E").hazard_ratios_
    assert hr["TP53"] > 2.5  # Bernard 2022: TP53 multi-hit HR ~3-4
    assert hr["SF3B1"] < 0.9  # SF3B1: favourable


def test_mds_transformation_and_lfs_are_consistent_with_os(mds) -> None:
    p = mds.patients
    os_t, am, lfs = (p[c].astype(float) for c in ("os_time", "amlt_time", "lfs_time"))
    assert (am <= os_t).all()
    assert np.allclose(lfs, np.minimum(am, os_t))
    assert (p["lfs_status"] | ~p["amlt_status"]).all()  # transformation is an LFS event
    assert (p["lfs_status"] == (p["amlt_status"] | p["os_status"])).all()
    assert 0.08 < float(p["amlt_status"].mean()) < 0.25  # 16% transformed in the IPSS-M cohort


def test_aml_frequencies_and_npm1_normal_karyotype(aml) -> None:
    gm = aml.gene_matrix()
    for gene, published in AML_GENE_FREQUENCIES.items():
        assert abs(float(gm[gene].mean()) - published) < _tolerance(published, N_LARGE), gene
    p = aml.patients
    normal = p["karyotype"].str.fullmatch(r"46,X[XY]").to_numpy(dtype=bool)
    npm1 = gm["NPM1"].to_numpy(dtype=bool)
    assert npm1[normal].mean() > 5 * npm1[~normal].mean()
    assert abs(float(p["t_8_21"].mean()) - 0.05) < 0.01
    assert _median_os(p[p["complex"]]) < 0.5 * _median_os(p[normal])


def test_myeloma_staging_and_fish_frequencies_follow_palumbo_2015() -> None:
    p = generate("MM", N_LARGE, seed=13).patients
    for flag in ("del17_17p", "t_4_14", "t_14_16", "gain1q"):
        assert abs(float(p[flag].mean()) - MM_FREQUENCIES[flag]) < 0.015, flag
    assert abs(float((p["ldh"] > p["ldh_uln"]).mean()) - MM_FREQUENCIES["ldh_high"]) < 0.02
    b2m, alb = p["b2m"].astype(float), p["albumin"].astype(float)
    iss3 = b2m >= 5.5
    iss1 = (b2m < 3.5) & (alb >= 3.5)
    assert abs(float(iss1.mean()) - MM_FREQUENCIES["ISS I"]) < 0.02
    assert abs(float(iss3.mean()) - MM_FREQUENCIES["ISS III"]) < 0.02
    assert _median_os(p[iss3]) < _median_os(p[~iss1 & ~iss3])


def test_sickle_cell_genotypes_and_trv_follow_published_cohorts() -> None:
    p = generate("SCD", N_LARGE, seed=14).patients
    observed = p["scd_genotype"].value_counts(normalize=True)
    for geno, published in SCD_GENOTYPE_FREQUENCIES.items():
        assert abs(float(observed[geno]) - published) < 0.015, geno
    adults = p[p["age"] >= 18]
    assert p["trv"].notna().sum() == len(adults)
    high = (adults["trv"] >= 2.5).to_numpy(dtype=bool)
    assert abs(high.mean() - 0.30) < 0.03  # Gladwin 2004: 32%
    assert _median_os(adults[~high]) > _median_os(adults[high])
    tcd = p["tcd_velocity"].dropna().astype(float)
    assert 0.03 < float((tcd >= 200).mean()) < 0.15  # STOP screening: ~10% abnormal
