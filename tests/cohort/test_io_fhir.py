"""FHIR R4B bundles: reading foreign bundles, unit conversion, and specific errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from hemafed.cohort.io.fhir import (
    FIELD_SYSTEM,
    PATIENT_ID_SYSTEM,
    cohort_to_fhir_bundle,
    fhir_id,
    read_fhir_bundle,
)
from hemafed.cohort.validate import validate_cohort
from hemafed.errors import InvalidInput, ValidationFailed

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"


def _obs(oid: str, subject: str, code: str, system: str = LOINC, **value: Any) -> dict[str, Any]:
    return {"resource": {"resourceType": "Observation", "id": oid, "status": "final",
                         "code": {"coding": [{"system": system, "code": code}]},
                         "subject": {"reference": subject}, **value}}


def _bundle(*extra: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": "urn:uuid:pat-1", "resource": {"resourceType": "Patient", "id": "x1",
                                                   "gender": "female"}},
        {"resource": {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/x1"},
                      "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10",
                                           "code": "D46.2"}]}}},
        *extra]}


def test_foreign_bundle_maps_icd10_loinc_and_converts_ucum_units() -> None:
    bundle = _bundle(
        _obs("o1", "Patient/x1", "718-7", valueQuantity={"value": 87, "system": UCUM, "code": "g/L"}),
        _obs("o2", "urn:uuid:pat-1", "777-3",
             valueQuantity={"value": 45000, "system": UCUM, "code": "/uL"}),
        {"resource": {"resourceType": "Encounter", "id": "e1", "status": "finished",
                      "class": {"code": "AMB"}}},
    )
    cohort = read_fhir_bundle(bundle)
    row = cohort.patients.iloc[0]
    assert (row["patient_id"], row["disease"], row["sex"], row["icd10"]) == ("x1", "MDS", "F", "D46.2")
    assert row["hb"] == pytest.approx(8.7)  # 87 g/L
    assert row["plt"] == pytest.approx(45.0)  # 45,000 /uL


def test_patient_ids_that_are_not_fhir_ids_survive_via_identifier() -> None:
    long_id = "x" * 64  # a valid FHIR id, but too long to derive Observation ids from
    ids = ["MDS_001 a", long_id]
    cohort = validate_cohort(pd.DataFrame({"patient_id": ids, "disease": ["MDS", "MDS"],
                                           "ring_sideroblasts": [15.0, 20.0]}))
    bundle = cohort_to_fhir_bundle(cohort)  # checked against the R4B model inside
    patient = bundle["entry"][0]["resource"]
    assert patient["id"] == fhir_id("MDS_001 a") != "MDS_001 a"
    assert patient["identifier"][0] == {"system": PATIENT_ID_SYSTEM, "value": "MDS_001 a"}
    assert max(len(e["resource"]["id"]) for e in bundle["entry"]) <= 64
    assert read_fhir_bundle(bundle).patients["patient_id"].tolist() == ids


def _problems(bundle: dict[str, Any]) -> str:
    with pytest.raises(ValidationFailed) as info:
        read_fhir_bundle(bundle)
    return "\n".join(str(p) for p in info.value.problems)


def test_truncated_json_is_reported_as_truncated(tmp_path: Path) -> None:
    text = json.dumps(_bundle())
    (tmp_path / "b.json").write_text(text[: len(text) // 2])
    with pytest.raises(InvalidInput, match=r"b\.json: not valid JSON at line 1 .*the file looks truncated"):
        read_fhir_bundle(tmp_path / "b.json")


def test_wrong_resource_type_is_refused() -> None:
    with pytest.raises(InvalidInput, match="resourceType is 'Patient'; expected 'Bundle'"):
        read_fhir_bundle({"resourceType": "Patient", "id": "x"})


def test_bundle_that_breaks_the_r4b_model_is_refused() -> None:
    bundle = _bundle({"resource": {"resourceType": "Observation", "id": "bad_id!", "status": "final",
                                   "code": {"text": "x"}}})
    with pytest.raises(InvalidInput, match=r"not a valid FHIR R4B Bundle .*entry"):
        read_fhir_bundle(bundle)


def test_unknown_loinc_code_is_named() -> None:
    text = _problems(_bundle(_obs("o1", "Patient/x1", "9999-9", valueQuantity={"value": 1})))
    assert "row 3, patient 'x1', column 'Observation.code': unknown LOINC code '9999-9'" in text


def test_reference_to_missing_patient_is_named() -> None:
    text = _problems(_bundle(_obs("o1", "Patient/ghost", "718-7", valueQuantity={"value": 9.0})))
    assert "Observation o1 refers to 'Patient/ghost', which is not a Patient in this bundle" in text


def test_unit_that_does_not_match_the_field_is_refused() -> None:
    text = _problems(_bundle(_obs("o1", "Patient/x1", "718-7",
                                  valueQuantity={"value": 9.0, "system": UCUM, "code": "mg/dL"})))
    assert "unit mismatch: unit 'mg/dL' is not known for field 'hb'" in text


def test_condition_without_a_known_disease_and_unknown_field_code() -> None:
    bundle = _bundle(_obs("o1", "Patient/x1", "nonsense", system=FIELD_SYSTEM, valueString="1"))
    bundle["entry"][1]["resource"]["code"]["coding"][0]["code"] = "I10"
    text = _problems(bundle)
    assert "no haematological disease hemafed knows" in text
    assert "no LOINC or hemafed field coding" in text


def test_variant_without_gene_component_is_refused() -> None:
    variant = _obs("v1", "Patient/x1", "69548-6", valueCodeableConcept={"text": "present"})
    variant["resource"]["component"] = [{"code": {"coding": [{"system": LOINC, "code": "81258-6"}]},
                                         "valueQuantity": {"value": 0.3}}]
    assert "has no gene studied (48018-6) component" in _problems(_bundle(variant))
