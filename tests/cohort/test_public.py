"""Readers of the real public cohorts, checked against the raw files read independently."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hemafed.cohort import validate_cohort
from hemafed.cohort.public import PublicCohort, read_aml_tazi, read_mds_ipssm
from hemafed.errors import InvalidInput


@functools.lru_cache(maxsize=1)
def _read_mds_once(folder: str) -> PublicCohort:
    return read_mds_ipssm(folder)


@pytest.fixture
def mds_dir(shared_data: Path) -> Path:
    return shared_data / "mds-ipssm-cohort"


@pytest.fixture
def mds(mds_dir: Path) -> PublicCohort:
    return _read_mds_once(str(mds_dir))


def _accounted(report: dict) -> None:
    assert report["rows_read"] == report["patients_loaded"] + report["patient rows dropped"]


def test_mds_every_patient_is_loaded_and_accounted_for(mds: PublicCohort) -> None:
    assert len(mds.cohort) == 2957
    _accounted(mds.report)
    assert mds.report["patient rows dropped"] == 0
    assert mds.report["maf_rows_read"] == 9254 == mds.report["mutations_loaded"]
    validate_cohort(mds.cohort.patients, mds.cohort.mutations, mds.cohort.panels)


def test_mds_values_match_the_raw_files(mds: PublicCohort, mds_dir: Path) -> None:
    raw = pd.read_csv(mds_dir / "df_clinical.tsv", sep="\t").set_index("ID")
    p = mds.cohort.patients.set_index("patient_id")
    for pid in ("I-H-132697-T1-1-D1-1", "I-H-132698-T1-1-D1-1", raw.index[1500]):
        for src, dst in (("HB", "hb"), ("PLT", "plt"), ("BM_BLAST", "bm_blast"), ("AGE", "age"),
                         ("OS_YEARS", "os_time")):
            assert float(p.loc[pid, dst]) == pytest.approx(float(raw.loc[pid, src]))
    assert p.loc["I-H-132697-T1-1-D1-1", "who2016"] == "MDS-EB2"
    # IPSS-R cytogenetic labels mapped onto schema categories, one to one
    mapped = pd.crosstab(raw["CYTO_IPSSR"], p.loc[raw.index, "cyto_ipssr"])
    assert mapped.loc["Int", "Intermediate"] == int((raw["CYTO_IPSSR"] == "Int").sum())
    assert mapped.loc["Very-Poor", "Very Poor"] == int((raw["CYTO_IPSSR"] == "Very-Poor").sum())
    # complex karyotype and treatments
    assert int(p["complex"].sum()) == int((raw["complex"] == "complex").sum())
    assert int(p["lenalidomide"].sum()) == int(raw["lenalidomid"].sum())
    # the one AML transformation recorded after last follow-up was set to NA and counted
    bad = raw.index[raw["AMLt_YEARS"] > raw["OS_YEARS"] + 1e-9]
    assert len(bad) == mds.report["amlt_time: after os_time; set to NA"] == 1
    assert pd.isna(p.loc[bad[0], "amlt_time"])


def test_mds_cytogenetic_flags_follow_the_copy_number_matrix(mds: PublicCohort,
                                                              mds_dir: Path) -> None:
    cna = pd.read_csv(mds_dir / "df_cna.tsv", sep="\t").set_index("ID")
    p = mds.cohort.patients.set_index("patient_id")
    known = p["del5q"].notna()
    expected = (cna["del5q"] + cna["del5"] > 0).loc[known[known].index]
    assert (p.loc[known, "del5q"].astype(bool).to_numpy() == expected.to_numpy()).all()
    assert int(p["del5q"].sum()) >= int(cna["del5q"].sum()) - 30


def test_mds_mutations_and_panel_match_the_gene_matrix(mds: PublicCohort, mds_dir: Path) -> None:
    df_mut = pd.read_csv(mds_dir / "df_mut.tsv", sep="\t").set_index("ID")
    gm = mds.cohort.gene_matrix()
    for gene in ("TP53", "SF3B1", "ASXL1", "MLL_PTD", "FLT3_ITD", "NPM1"):
        assert (gm.loc[df_mut.index, gene].to_numpy(dtype=int) == df_mut[gene].to_numpy()).all(), gene
    assert (gm.loc[df_mut.index, "KMT2A"].to_numpy(dtype=int) == df_mut["MLL"].to_numpy()).all()
    panel = mds.cohort.panels["ipssm-study"]
    assert len(panel) == len(df_mut.columns) - 4  # the derived TP53/TET2 columns are not genes
    maf = pd.read_csv(mds_dir / "maf.tsv", sep="\t")
    row = maf.iloc[0]
    first = mds.cohort.mutations.iloc[0]
    assert (first["patient_id"], first["gene"], first["protein_change"]) == (
        row["ID"], row["GENE"], row["PROTEIN_CHANGE"])
    assert float(first["vaf"]) == pytest.approx(row["VAF"])


def test_mds_reference_keeps_the_published_scores(mds: PublicCohort, mds_dir: Path) -> None:
    raw = pd.read_csv(mds_dir / "df_clinical.tsv", sep="\t").set_index("ID")
    ref = mds.reference
    assert list(ref.columns) == ["IPSSR", "IPSSR_SCORE", "IPSSRA", "IPSSRA_SCORE", "IPSSM",
                                 "IPSSM_SCORE"]
    assert np.allclose(ref["IPSSM_SCORE"].loc[raw.index], raw["IPSSM_SCORE"], equal_nan=True)
    assert ref.loc["I-H-132697-T1-1-D1-1", "IPSSM"] == "Very-High"


@pytest.mark.parametrize("which, n, os_col", [("training", 2113, "os"),
                                              ("validation", 1540, "OS")])
def test_aml_cohorts_are_loaded_and_match_the_raw_files(shared_data: Path, which: str, n: int,
                                                        os_col: str) -> None:
    folder = shared_data / "aml-tazi-2022"
    aml = read_aml_tazi(folder, which)
    assert len(aml.cohort) == n
    _accounted(aml.report)
    raw = pd.read_csv(folder / f"{which}_cohort.tsv", sep=" ", index_col=0)
    p = aml.cohort.patients.set_index("patient_id")
    assert np.allclose(p.loc[raw.index, "os_time"].astype(float), raw[os_col])
    hb_col = "hb" if which == "training" else "HB"
    out_of_range = int(((raw[hb_col] < 2) | (raw[hb_col] > 25)).sum())
    assert aml.report.get("hb: outside the plausible range; set to NA", 0) == out_of_range
    assert int(p["hb"].isna().sum()) == out_of_range + int(raw[hb_col].isna().sum())
    gm = aml.cohort.gene_matrix()
    assert (gm.loc[raw.index, "NPM1"].to_numpy(dtype=int) == raw["NPM1"].to_numpy()).all()
    assert (gm.loc[raw.index, "FLT3_ITD"].to_numpy(dtype=int) == raw["ITD"].to_numpy()).all()
    for src, dst in (("t(8;21)", "t_8_21"), ("inv(16)", "inv_16"), ("complex", "complex"),
                     ("-7", "minus7")):
        assert (p.loc[raw.index, dst].to_numpy(dtype=int) == raw[src].to_numpy()).all(), src
    eln = aml.reference["eln_2017"]
    assert set(eln.dropna()) == {"favorable", "intermediate", "adverse"}
    favourable_t821 = eln.loc[raw.index[raw["t(8;21)"] == 1]]
    assert (favourable_t821 == "favorable").mean() > 0.9  # ELN 2017: t(8;21) is favourable


def test_aml_reader_refuses_an_unknown_cohort_name(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="which must be"):
        read_aml_tazi(tmp_path, "test")
    with pytest.raises(InvalidInput, match="file not found"):
        read_mds_ipssm(tmp_path)
