"""Round trips canonical CSV -> Cohort -> FHIR / Phenopackets -> Cohort must lose nothing."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pandas.testing as pdt
import pytest

from hemafed.cohort.io import read_cohort
from hemafed.cohort.io.fhir import cohort_to_fhir_bundle, read_fhir_bundle, write_fhir_bundle
from hemafed.cohort.io.phenopackets import (
    cohort_to_phenopackets,
    read_phenopackets,
    write_phenopackets,
)
from hemafed.cohort.model import Cohort
from hemafed.cohort.validate import validate_cohort

NA = None
PANELS = {"myeloid": ("TP53", "SF3B1", "ASXL1", "RUNX1", "NPM1", "FLT3_ITD", "DNMT3A"),
          "myeloma": ("KRAS", "NRAS", "TP53", "DIS3")}


def make_cohort() -> Cohort:
    """Hand-made cohort: four diseases, missing values, odd ids, mutations with and without VAF."""
    patients = pd.DataFrame({
        "patient_id": ["MDS_001", "mds-002", "AML 3", "MM.4", "scd5", "MDS-006"],
        "disease": ["MDS", "MDS", "AML", "MM", "SCD", "MDS"],
        "sex": ["M", "F", NA, "F", "M", "F"],
        "age": [71.25, 64.0, 58.123456789, 66.5, 12.0, NA],
        "icd10": ["D46.2", NA, "C92.0", NA, "D57.1", NA],
        "mondo": [NA, NA, NA, "MONDO:0009693", NA, NA],
        "who2016": ["MDS-EB2", "MDS-SLD", "AML-MRC", NA, NA, NA],
        "hb": [8.7, 11.3, 7.9, 10.1, 8.2, NA],
        "plt": [45.0, 210.0, 18.0, 150.0, 320.0, 99.9],
        "anc": [0.6, 2.1, 0.3, NA, 4.4, NA],
        "bm_blast": [12.0, 2.0, 45.0, NA, NA, 0.5],
        "cyto_ipssr": ["Poor", "Good", NA, NA, NA, "Very Good"],
        "del5q": [True, False, False, NA, NA, NA],
        "karyotype": ["46,XY,del(5)(q13q33)[20]", "46,XX[20]", NA, NA, NA, NA],
        "b2m": [NA, NA, NA, 5.6, NA, NA],
        "albumin": [NA, NA, NA, 3.2, NA, NA],
        "ldh": [250.0, NA, 900.0, 310.0, 400.0, NA],
        "gain1q": [NA, NA, NA, True, NA, NA],
        "hbf": [NA, NA, NA, NA, 18.5, NA],
        "hydroxyurea": [NA, NA, NA, NA, True, NA],
        "hma": [True, False, NA, NA, NA, NA],
        "transplant": [False, NA, True, True, False, NA],
        "response": ["HI", NA, "CR", "VGPR", NA, NA],
        "os_time": [1.7, 6.25, 0.4, 3.0, 15.5, NA],
        "os_status": [True, False, True, False, False, NA],
        "lfs_time": [1.2, 6.25, 0.4, NA, NA, NA],
        "lfs_status": [True, False, True, NA, NA, NA],
        "panel": ["myeloid", "myeloid", "myeloid", "myeloma", NA, "myeloid"],
    })
    mutations = pd.DataFrame({
        "patient_id": ["MDS_001", "MDS_001", "mds-002", "AML 3", "AML 3", "MM.4"],
        "gene": ["TP53", "ASXL1", "SF3B1", "NPM1", "FLT3_ITD", "KRAS"],
        "vaf": [0.45, NA, 0.31, 0.42, NA, 0.123456789],
        "protein_change": ["p.R248Q", "p.G646Wfs*12", "p.K700E", "p.W288Cfs*12", NA, "p.G12D"],
        "effect": ["missense_variant", "frameshift_variant", "missense_variant",
                   "frameshift_variant", NA, "missense_variant"],
        "chrom": ["17", "20", "2", NA, NA, "12"],
        "pos": [7577538, 31022441, 198266834, NA, NA, 25398284],
        "ref": ["C", "G", "T", NA, NA, "C"],
        "alt": ["T", "GG", "C", NA, NA, "T"],
        "depth": [812, NA, 640, NA, NA, 1500],
    })
    return validate_cohort(patients, mutations, PANELS)


def _sorted(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return df.sort_values(keys).reset_index(drop=True)


def assert_same_cohort(a: Cohort, b: Cohort) -> None:
    pdt.assert_frame_equal(_sorted(a.patients, ["patient_id"]), _sorted(b.patients, ["patient_id"]))
    keys = ["patient_id", "gene"]
    pdt.assert_frame_equal(_sorted(a.mutations, keys), _sorted(b.mutations, keys))
    assert {k: tuple(v) for k, v in a.panels.items()} == {k: tuple(v) for k, v in b.panels.items()}


@pytest.fixture
def csv_cohort(tmp_path: Path) -> Cohort:
    original = make_cohort()
    original.patients.to_csv(tmp_path / "patients.csv", index=False)
    original.mutations.to_csv(tmp_path / "mutations.csv", index=False)
    cohort = read_cohort(tmp_path / "patients.csv", mutations=tmp_path / "mutations.csv",
                         panels=PANELS)
    assert_same_cohort(original, cohort)
    return cohort


def test_csv_to_fhir_and_back_is_lossless(csv_cohort: Cohort, tmp_path: Path) -> None:
    path = write_fhir_bundle(csv_cohort, tmp_path / "bundle.json")
    assert_same_cohort(csv_cohort, read_fhir_bundle(path))
    assert_same_cohort(csv_cohort, read_cohort(path, "fhir"))
    bundle = cohort_to_fhir_bundle(csv_cohort)
    assert_same_cohort(csv_cohort, read_fhir_bundle(bundle, validate=False))
    kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert (kinds.count("Patient"), kinds.count("Condition")) == (6, 6)


def test_csv_to_phenopackets_and_back_is_lossless(csv_cohort: Cohort, tmp_path: Path) -> None:
    folder = write_phenopackets(csv_cohort, tmp_path / "pp")
    assert len(list(folder.glob("*.json"))) == len(csv_cohort)
    assert_same_cohort(csv_cohort, read_phenopackets(folder))
    assert_same_cohort(csv_cohort, read_cohort(folder, "phenopackets"))
    assert_same_cohort(csv_cohort, read_phenopackets(cohort_to_phenopackets(csv_cohort)))


@pytest.mark.parametrize("disease", ["MDS", "AML", "MM", "SCD"])
def test_demo_cohorts_round_trip_through_csv_fhir_and_phenopackets(disease: str,
                                                                   tmp_path: Path) -> None:
    from hemafed.cohort.demo import generate

    original = generate(disease, 120, 5)
    original.patients.to_csv(tmp_path / "patients.csv", index=False)
    original.mutations.to_csv(tmp_path / "mutations.csv", index=False)
    from_csv = read_cohort(tmp_path / "patients.csv", mutations=tmp_path / "mutations.csv",
                           panels={k: list(v) for k, v in original.panels.items()})
    assert_same_cohort(original, from_csv)
    assert_same_cohort(from_csv, read_fhir_bundle(write_fhir_bundle(from_csv, tmp_path / "b.json")))
    assert_same_cohort(from_csv, read_phenopackets(write_phenopackets(from_csv, tmp_path / "pp")))
