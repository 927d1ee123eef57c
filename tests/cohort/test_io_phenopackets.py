"""GA4GH Phenopackets v2: foreign packets, ISO 8601 ages and specific errors."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from hemafed.cohort.io.phenopackets import iso_age, parse_iso_age, read_phenopackets
from hemafed.errors import InvalidInput, ValidationFailed

PACKET: dict[str, Any] = {
    "id": "pp1",
    "subject": {"id": "pp1", "sex": "MALE",
                "vitalStatus": {"status": "DECEASED", "survivalTimeInDays": 730}},
    "diseases": [{"term": {"id": "MONDO:0018874", "label": "acute myeloid leukemia"},
                  "onset": {"age": {"iso8601duration": "P63Y6M"}}}],
    "measurements": [
        {"assay": {"id": "LOINC:718-7"},
         "value": {"quantity": {"unit": {"id": "UCUM:g/L"}, "value": 92.0}}},
        {"assay": {"id": "hemafed:t_8_21"}, "value": {"ontologyClass": {"id": "NCIT:C49488"}}},
    ],
    "metaData": {"createdBy": "another tool", "phenopacketSchemaVersion": "2.0"},
}


def test_foreign_phenopacket_reads_age_survival_and_converts_units() -> None:
    cohort = read_phenopackets([PACKET])
    row = cohort.patients.iloc[0]
    assert (row["patient_id"], row["disease"], row["sex"]) == ("pp1", "AML", "M")
    assert row["age"] == pytest.approx(63.5)
    assert row["os_time"] == pytest.approx(730 / 365.25)
    assert bool(row["os_status"]) and bool(row["t_8_21"])
    assert row["hb"] == pytest.approx(9.2)


def test_iso_age_round_trips_exactly() -> None:
    for years in (71.25, 58.123456789, 0.1, 1e-5, 100.0):
        assert parse_iso_age(iso_age(years)) == years
    assert parse_iso_age("P2Y3M") == pytest.approx(2.25)


def _fails(packet: dict[str, Any]) -> str:
    with pytest.raises(ValidationFailed) as info:
        read_phenopackets([packet])
    return str(info.value)


def test_malformed_iso_age_is_named() -> None:
    p = copy.deepcopy(PACKET)
    p["diseases"][0]["onset"]["age"]["iso8601duration"] = "63 years"
    assert "age '63 years' is not an ISO 8601 duration" in _fails(p)


def test_unknown_assay_and_unknown_loinc_are_named() -> None:
    p = copy.deepcopy(PACKET)
    p["measurements"].append({"assay": {"id": "HP:0001903"}, "value": {"quantity": {"value": 1}}})
    p["measurements"].append({"assay": {"id": "LOINC:2345-7"}, "value": {"quantity": {"value": 1}}})
    text = _fails(p)
    assert "unknown assay 'HP:0001903'" in text
    assert "unknown LOINC code '2345-7'" in text


def test_flag_with_a_value_other_than_yes_or_no_is_refused() -> None:
    p = copy.deepcopy(PACKET)
    p["measurements"][1]["value"]["ontologyClass"]["id"] = "NCIT:C17998"
    assert "t_8_21: expected NCIT:C49488 (Yes) or NCIT:C49487 (No), got 'NCIT:C17998'" in _fails(p)


def test_unit_mismatch_and_missing_disease() -> None:
    p = copy.deepcopy(PACKET)
    p["measurements"][0]["value"]["quantity"]["unit"]["id"] = "UCUM:mmol/mol"
    p["diseases"] = [{"term": {"id": "MONDO:0005148", "label": "type 2 diabetes"}}]
    text = _fails(p)
    assert "unit mismatch: unit 'mmol/mol' is not known for field 'hb'" in text
    assert "expected exactly one of MDS, AML, MM, SCD" in text


def test_same_panel_name_with_other_genes_is_refused() -> None:
    def with_panel(pid: str, genes: str) -> dict[str, Any]:
        p = copy.deepcopy(PACKET)
        p["id"] = p["subject"]["id"] = pid
        p["measurements"].append({"assay": {"id": "hemafed:panel"},
                                  "description": f"genes studied: {genes}",
                                  "value": {"ontologyClass": {"id": "hemafed.panel:m", "label": "m"}}})
        return p

    with pytest.raises(ValidationFailed, match="panel 'm' lists other genes"):
        read_phenopackets([with_panel("a", "TP53,NPM1"), with_panel("b", "TP53")])


def test_document_that_is_not_a_phenopacket_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text(json.dumps({"id": "p", "subject": {"sexx": "MALE"}}))
    with pytest.raises(InvalidInput, match=r"x\.json: not a valid GA4GH Phenopacket v2"):
        read_phenopackets(tmp_path / "x.json")


def test_truncated_file_and_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "t.json").write_text(json.dumps(PACKET)[:50])
    with pytest.raises(InvalidInput, match="looks truncated"):
        read_phenopackets(tmp_path / "t.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInput, match="folder holds no"):
        read_phenopackets(tmp_path / "empty")
