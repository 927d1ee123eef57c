"""Site tables with a YAML column mapping: unit conversion, value maps, every problem at once."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from hemafed.cohort.io import read_cohort
from hemafed.cohort.io.mapping import load_mapping, parse_mapping
from hemafed.cohort.io.units import HB_G_PER_DL_PER_MMOL_L, conversion_factor
from hemafed.errors import InvalidInput, ValidationFailed

MAPPING = {
    "patients": {
        "columns": {
            "PatientID": "patient_id",
            "Dx": {"field": "disease", "values": {"Myelodysplastic syndrome": "MDS"}},
            "Sex": {"field": "sex", "values": {"Male": "M", "Female": "F"}},
            "Hb_gL": {"field": "hb", "unit": "g/L"},
            "Alb_gL": {"field": "albumin", "unit": "g/L"},
            "PLT_uL": {"field": "plt", "unit": "/uL"},
            "ANC_k": {"field": "anc", "unit": "10^3/uL"},
            "OS_days": {"field": "os_time", "unit": "days"},
            "LFS_months": {"field": "lfs_time", "unit": "months"},
            "Dead": {"field": "os_status", "values": {True: 1, False: 0}},
            "LFS_event": {"field": "lfs_status", "values": {"yes": 1, "no": 0}},
            "Genes": "sequenced_genes",
        },
        "ignore": ["MRN"],
    },
    "mutations": {
        "columns": {"ID": "patient_id", "Gene": "gene",
                    "VAF_pct": {"field": "vaf", "unit": "percent"}},
    },
}

PATIENTS = """PatientID,Dx,Sex,Hb_gL,Alb_gL,PLT_uL,ANC_k,OS_days,LFS_months,Dead,LFS_event,Genes,MRN
A1,Myelodysplastic syndrome,Male,95,,45000,0.6,730.5,18,yes,yes,TP53;SF3B1,111
A2,MDS,Female,123,,210000,2.1,365.25,12,no,no,TP53;SF3B1,222
A3,MM,Female,101,32,150000,,1826.25,,No,,KRAS,333
"""
MUTATIONS = "ID,Gene,VAF_pct\nA1,TP53,45\nA1,SF3B1,\nA3,KRAS,12.5\n"


def _files(tmp_path: Path, patients: str = PATIENTS, mapping: object = MAPPING) -> tuple[Path, Path, Path]:
    (tmp_path / "site.csv").write_text(patients)
    (tmp_path / "muts.csv").write_text(MUTATIONS)
    (tmp_path / "map.yaml").write_text(yaml.safe_dump(mapping, sort_keys=False))
    return tmp_path / "site.csv", tmp_path / "muts.csv", tmp_path / "map.yaml"


def test_mapping_converts_units_and_recodes_values(tmp_path: Path) -> None:
    site, muts, mapping = _files(tmp_path)
    cohort = read_cohort(site, mutations=muts, mapping=mapping)
    p = cohort.patients.set_index("patient_id")
    # hand-computed conversions into schema units
    assert p.loc["A1", "hb"] == pytest.approx(9.5)
    assert p.loc["A3", "albumin"] == pytest.approx(3.2)
    assert p.loc["A1", "plt"] == pytest.approx(45.0)
    assert p.loc["A2", "anc"] == pytest.approx(2.1)
    assert p.loc["A1", "os_time"] == pytest.approx(2.0)
    assert p.loc["A3", "os_time"] == pytest.approx(5.0)
    assert p.loc["A1", "lfs_time"] == pytest.approx(1.5)
    assert list(p["sex"]) == ["M", "F", "F"]
    assert list(p["disease"]) == ["MDS", "MDS", "MM"]
    assert list(p["os_status"]) == [True, False, False]
    assert bool(p.loc["A1", "lfs_status"]) and pd.isna(p.loc["A3", "lfs_status"])
    # sequenced_genes became panels; the MM patient's set is a second panel
    assert dict(cohort.panels) == {"genes-1": ("TP53", "SF3B1"), "genes-2": ("KRAS",)}
    assert list(p["panel"]) == ["genes-1", "genes-1", "genes-2"]
    m = cohort.mutations.set_index("gene")
    assert m.loc["TP53", "vaf"] == pytest.approx(0.45)
    assert pd.isna(m.loc["SF3B1", "vaf"])
    assert m.loc["KRAS", "vaf"] == pytest.approx(0.125)


def test_mapping_as_dict_and_explicit_panels_file(tmp_path: Path) -> None:
    _files(tmp_path)
    (tmp_path / "panels.yaml").write_text("myeloid: [TP53, SF3B1]\n")
    mapping = {"columns": {"PatientID": "patient_id", "Dx": "disease", "Hb_gL": {"field": "hb", "unit": "g/L"},
                           "Panel": "panel"}}
    (tmp_path / "s2.csv").write_text("PatientID,Dx,Hb_gL,Panel\nB1,MDS,80,myeloid\nB2,AML,,\n")
    cohort = read_cohort(tmp_path / "s2.csv", mapping=mapping, panels=tmp_path / "panels.yaml")
    assert dict(cohort.panels) == {"myeloid": ("TP53", "SF3B1")}
    assert cohort.patients["hb"].iloc[0] == pytest.approx(8.0)


def test_unit_factors_match_hand_computed_values() -> None:
    assert conversion_factor("hb", "mmol/L") == HB_G_PER_DL_PER_MMOL_L
    # 6.2 mmol/L haemoglobin is about 10 g/dL (Hb monomer 16,114 g/mol)
    assert 6.2 * conversion_factor("hb", "mmol/L") == pytest.approx(9.99, abs=0.01)
    assert conversion_factor("wbc", "/uL") == 1e-3
    assert conversion_factor("bm_blast", "fraction") == 100.0
    with pytest.raises(InvalidInput, match="unit 'mmol/L' is not known for field 'albumin'"):
        conversion_factor("albumin", "mmol/L")


def test_every_mapping_and_data_problem_is_reported_at_once(tmp_path: Path) -> None:
    bad_mapping = {
        "patients": {
            "columns": {
                "PatientID": "patient_id",
                "Dx": "disease",
                "Hb_gL": {"field": "hb", "unit": "furlongs"},
                "Alb_gL": {"field": "albumen"},
                "OS_days": {"field": "os_time", "unit": "days"},
                "Dead": "os_status",
                "Ghost": "plt",
            },
        },
    }
    patients = "PatientID,Dx,Hb_gL,Alb_gL,OS_days,Dead,Extra\nA1,MDS,95,,abc,1,x\nA1,XYZ,,,10,2,y\n"
    site, _, mapping = _files(tmp_path, patients, bad_mapping)
    with pytest.raises(ValidationFailed) as info:
        read_cohort(site, mapping=mapping)
    text = "\n".join(str(p) for p in info.value.problems)
    assert "unit 'furlongs' is not known for field 'hb'" in text
    assert "'albumen' is not a patients field" in text
    assert "column 'Extra': patients column is not mapped" in text
    assert "column 'Ghost': mapped patients column is absent" in text
    assert "row 1, patient 'A1', column 'os_time': expected a number in years, got 'abc'" in text
    assert "row 2, patient 'A1', column 'patient_id': duplicate patient identifier" in text
    assert "unknown value 'XYZ'" in text
    assert "expected 0/1" in text
    assert "nothing was imported" in str(info.value)


def test_load_mapping_rejects_structure_and_duplicate_targets() -> None:
    with pytest.raises(ValidationFailed) as info:
        load_mapping({"patients": {"columns": {"A": "hb", "B": "hb", "C": {"unit": "g/L"}}},
                      "extra": 1})
    text = str(info.value)
    assert "field 'hb' is filled by more than one column" in text
    assert "expected a field name or {field:, unit:, values:}" in text
    assert "mapping.extra" in text
    _, problems = parse_mapping({"columns": {"ID": "patient_id", "Sex": {"field": "sex", "unit": "g/L"}}})
    assert "field 'sex' has no unit" in str(problems[0])


def test_malformed_yaml_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text("patients: [unclosed\n")
    (tmp_path / "s.csv").write_text("patient_id,disease\np1,MDS\n")
    with pytest.raises(InvalidInput, match=r"m\.yaml: not valid YAML"):
        read_cohort(tmp_path / "s.csv", mapping=tmp_path / "m.yaml")


def test_canonical_csv_without_mapping_still_reads(tmp_path: Path) -> None:
    (tmp_path / "s.csv").write_text("patient_id,disease,hb\np1,MDS,9.1\np2,AML,\n")
    cohort = read_cohort(tmp_path / "s.csv")
    assert cohort.patients["hb"].iloc[0] == pytest.approx(9.1)


def test_unmapped_mutation_column_and_format_misuse_are_named(tmp_path: Path) -> None:
    site, _, mapping = _files(tmp_path)
    (tmp_path / "muts2.csv").write_text("ID,Gene,VAF_pct,Caller\nA1,TP53,45,mutect\n")
    with pytest.raises(ValidationFailed, match=r"column 'mutations\.Caller': mutations column is not mapped"):
        read_cohort(site, mutations=tmp_path / "muts2.csv", mapping=mapping)
    with pytest.raises(InvalidInput, match="a fhir input carries its own mutations and panels"):
        read_cohort(site, "fhir", mapping=mapping)
    with pytest.raises(InvalidInput, match="unknown format 'xml'"):
        read_cohort(site, "xml")
