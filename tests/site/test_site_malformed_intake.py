"""Twenty-plus kinds of malformed input through the site intake: each gets its own specific
error, and the site directory is byte-for-byte unchanged afterwards."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from site_trees import tree_digest

from hemafed.errors import CryptoError, HemafedError
from hemafed.site.store import import_into_site, init_site, vault

HEADER = "patient_id,disease,hb,plt,sex,os_time,os_status"
GOOD = "P1,MDS,9.1,120,M,2.5,1"


def _csv(tmp: Path, *rows: str, header: str = HEADER, name: str = "in.csv") -> Path:
    p = tmp / name
    p.write_text("\n".join([header, *rows]) + "\n")
    return p


def _json(tmp: Path, doc: object, name: str) -> Path:
    p = tmp / name
    p.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return p


def _bundle(*resources: dict) -> dict:
    return {"resourceType": "Bundle", "type": "collection",
            "entry": [{"resource": r} for r in resources]}


PATIENT = {"resourceType": "Patient", "id": "p1", "gender": "male"}
CONDITION = {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"},
             "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "D46.9"}]}}


def _obs(code: str, value: float, unit: str, subject: str = "Patient/p1") -> dict:
    return {"resourceType": "Observation", "id": f"o{code}", "status": "final",
            "subject": {"reference": subject},
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org",
                              "code": unit}}


Case = Callable[[Path], tuple[Path, dict]]

CASES: dict[str, tuple[Case, str]] = {
    "haemoglobin in g/L declared as g/dL": (
        lambda t: (_csv(t, "P1,MDS,150,120,M,2.5,1"), {}), "looks like g/L"),
    "negative survival time": (
        lambda t: (_csv(t, "P1,MDS,9,120,M,-1,1"), {}), "below the plausible minimum"),
    "event without a time": (
        lambda t: (_csv(t, "P1,MDS,9,120,M,,1"), {}), "event recorded without a time"),
    "duplicate identifiers": (
        lambda t: (_csv(t, GOOD, "P1,MDS,9.5,100,F,1.0,0"), {}), "duplicate patient identifier"),
    "unknown disease": (
        lambda t: (_csv(t, "P1,XYZ,9,120,M,2.5,1"), {}), "unknown value 'XYZ'"),
    "text in a numeric column": (
        lambda t: (_csv(t, "P1,MDS,abc,120,M,2.5,1"), {}), "expected a number"),
    "status that is not 0/1": (
        lambda t: (_csv(t, "P1,MDS,9,120,M,2.5,2"), {}), "expected 0/1"),
    "unknown column": (
        lambda t: (_csv(t, GOOD + ",x", header=HEADER + ",mystery"), {}), "unknown column"),
    "missing required column": (
        lambda t: (_csv(t, "P1,9.1", header="patient_id,hb"), {}), "required column is missing"),
    "unknown gene symbol in the mutation table": (
        lambda t: (_csv(t, GOOD), {"mutations": _csv(t, "P1,TPX53,0.3",
                                                     header="patient_id,gene,vaf",
                                                     name="m.csv")}),
        "unknown gene symbol 'TPX53'"),
    "VAF given as a percentage": (
        lambda t: (_csv(t, GOOD), {"mutations": _csv(t, "P1,TP53,45",
                                                     header="patient_id,gene,vaf",
                                                     name="m.csv")}),
        "looks like a percentage"),
    "mutation for an unknown patient": (
        lambda t: (_csv(t, GOOD), {"mutations": _csv(t, "P9,TP53,0.3",
                                                     header="patient_id,gene,vaf",
                                                     name="m.csv")}),
        "not in the patient table"),
    "unreadable file format": (
        lambda t: (_json(t, "not a table", "in.xyz"), {}), "cannot tell the format"),
    "truncated FHIR JSON": (
        lambda t: (_json(t, '{"resourceType": "Bundle", "entry": [', "b.json"), {"fmt": "fhir"}),
        "truncated"),
    "FHIR resource that is not a Bundle": (
        lambda t: (_json(t, PATIENT, "b.json"), {"fmt": "fhir"}), "Bundle"),
    "unknown LOINC code": (
        lambda t: (_json(t, _bundle(PATIENT, CONDITION, _obs("99999-9", 1.0, "g/dL")), "b.json"),
                   {"fmt": "fhir"}), "99999-9"),
    "observation for a missing patient": (
        lambda t: (_json(t, _bundle(PATIENT, CONDITION, _obs("718-7", 9.0, "g/dL", "Patient/zz")),
                         "b.json"), {"fmt": "fhir"}), "zz"),
    "FHIR unit that does not match the LOINC code": (
        lambda t: (_json(t, _bundle(PATIENT, CONDITION, _obs("718-7", 9.0, "mmHg")), "b.json"),
                   {"fmt": "fhir"}), "mmHg"),
    "phenopacket that is not JSON": (
        lambda t: (_json(t, "{ nope", "p.json"), {"fmt": "phenopackets"}), "JSON"),
    "mapping with an unknown unit": (
        lambda t: (_csv(t, "P1,MDS,9,120,M,2.5,1", header="ID,DIS,HGB,PLT,SEX,OS,DEAD"),
                   {"mapping": {"columns": {"ID": "patient_id", "DIS": "disease",
                                            "HGB": {"field": "hb", "unit": "furlongs"},
                                            "PLT": "plt", "SEX": "sex", "OS": "os_time",
                                            "DEAD": "os_status"}}}),
        "furlongs"),
    "mapping that leaves a column unmapped": (
        lambda t: (_csv(t, "P1,MDS,9,120,M,2.5,1", header="ID,DIS,HGB,PLT,SEX,OS,DEAD"),
                   {"mapping": {"columns": {"ID": "patient_id", "DIS": "disease"}}}),
        "HGB"),
    "bad study name": (
        lambda t: (_csv(t, GOOD), {"study": "no spaces allowed"}), "study must be"),
}


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    init_site(root, "hosp-a")
    import_into_site(root, _csv(tmp_path, GOOD.replace("P1", "P0"), name="first.csv"))
    return root


@pytest.mark.parametrize("kind", sorted(CASES))
def test_malformed_input_is_refused_specifically_and_changes_nothing(
        kind: str, site: Path, tmp_path: Path) -> None:
    make, expected = CASES[kind]
    work = tmp_path / "in"
    work.mkdir()
    path, kwargs = make(work)
    before = tree_digest(site)
    with pytest.raises(HemafedError) as info:
        import_into_site(site, path, **kwargs)
    assert expected in str(info.value), f"{kind}: {info.value}"
    assert tree_digest(site) == before, f"{kind}: the site directory changed"


def test_wrong_key_for_a_crypt4gh_file_is_refused_and_changes_nothing(site: Path,
                                                                      tmp_path: Path) -> None:
    from hemafed.site.vault import generate_keypair

    raw = tmp_path / "s.vcf"
    raw.write_bytes(b"##fileformat=VCFv4.2\n" * 100)
    v = vault(site)
    v.add(raw, "s.vcf")
    generate_keypair(tmp_path / "other.sec", tmp_path / "other.pub")
    before = tree_digest(site)
    from hemafed.site.vault import Vault

    stranger = Vault(site / "vault", tmp_path / "other.sec", tmp_path / "other.pub")
    with pytest.raises(CryptoError):
        stranger.get_bytes("s.vcf")
    assert tree_digest(site) == before


def test_there_are_at_least_twenty_kinds() -> None:
    assert len(CASES) + 1 >= 20
