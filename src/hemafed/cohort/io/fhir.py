"""HL7 FHIR R4B bundles to and from the canonical cohort (validated with ``fhir.resources.R4B``).

Mapping (one patient = one Patient, one Condition and a set of Observations; export then import is
lossless for every field that has a value in at least one patient):

* **Patient**: ``id`` is the patient id when it is a valid FHIR id (else a sanitised id with a
  hash suffix); the exact id is always in ``identifier`` with system :data:`PATIENT_ID_SYSTEM`.
  ``gender`` male/female from ``sex``.
* **Age at diagnosis** is an Observation coded ``hemafed field#age`` with ``valueQuantity`` in UCUM
  ``a`` (years): the cohort holds an age at diagnosis, not a birth date.
* **Condition**: ``code`` carries the disease as ``http://hemafed.org/fhir/CodeSystem/disease``,
  ICD-10 and MONDO codings and the WHO 2016 / WHO 2022 / ICC 2022 classes as codings of
  ``http://hemafed.org/fhir/CodeSystem/<who2016|who2022|icc2022>``. An ICD-10 or MONDO coding that
  was recorded for the patient has ``userSelected: true``; the disease's default code (written so
  that other systems see a standard code) has ``userSelected: false`` and is not read back.
* **Labs** with a LOINC code in the schema are Observations with that LOINC code and a UCUM
  ``valueQuantity``; on import other UCUM units are converted (:mod:`.units`) or refused.
* **Every other field** (flags, cytogenetics, treatments, responses, outcome times and statuses)
  is an Observation coded ``http://hemafed.org/fhir/CodeSystem/field#<name>`` with
  ``valueQuantity`` (numbers; times in UCUM ``a``), ``valueBoolean`` or ``valueString``.
* **Sequenced panel**: an Observation coded LOINC 53041-0 (DNA region of interest panel) with
  ``valueCodeableConcept.text`` = panel name and one component per gene, LOINC 48018-6 (gene
  studied) with an HGNC coding.
* **Variants**: genomics-reporting style Observations, LOINC 69548-6 (genetic variant assessment),
  value LA9633-4 (present), components 48018-6 gene studied (HGNC coding; the code is the
  approved symbol), 81258-6 VAF (UCUM ``1``), 48005-3 amino-acid change, 48006-1 molecular
  consequence, 48000-4 chromosome, 69547-8 reference allele, 69551-0 alternate allele, and
  hemafed ``pos`` / ``depth`` (VCF position and read depth).

Fields with no value in any patient, and panels no patient uses, are not carried.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd

from hemafed.atomic import write_text
from hemafed.cohort.io._json import load_json
from hemafed.cohort.io.units import UCUM_SYSTEM, conversion_factor, ucum_of
from hemafed.cohort.model import MUTATION_COLUMNS, PANEL_COLUMN, Cohort
from hemafed.cohort.schema import DISEASE_CODES, FIELDS, HGNC, ICD10, LOINC, LOINC_TO_FIELD, MONDO
from hemafed.cohort.validate import validate_cohort
from hemafed.errors import InvalidInput, Problem, ValidationFailed

log = logging.getLogger(__name__)

HEMAFED = "http://hemafed.org/fhir"
FIELD_SYSTEM = f"{HEMAFED}/CodeSystem/field"
DISEASE_SYSTEM = f"{HEMAFED}/CodeSystem/disease"
PATIENT_ID_SYSTEM = f"{HEMAFED}/sid/patient-id"
CLASS_SYSTEMS = {name: f"{HEMAFED}/CodeSystem/{name}" for name in ("who2016", "who2022", "icc2022")}

VARIANT_CODE = "69548-6"
PANEL_CODE = "53041-0"
GENE_STUDIED = "48018-6"
VAF_CODE = "81258-6"
AA_CHANGE = "48005-3"
CONSEQUENCE = "48006-1"
CHROMOSOME = "48000-4"
REF_ALLELE = "69547-8"
ALT_ALLELE = "69551-0"
PRESENT = "LA9633-4"

_DISEASE_BY_MONDO = {v[1]: k for k, v in DISEASE_CODES.items()}
_AML_ICD = ("C92.0", "C92.4", "C92.5", "C92.6", "C92.8", "C93.0", "C94.0", "C94.2")
_SCD_ICD = ("D57.0", "D57.1", "D57.2", "D57.4", "D57.8")
_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_MAX_PATIENT_FHIR_ID = 40
_NOT_OBSERVATION_FIELDS = {"patient_id", "disease", "sex", "icd10", "mondo", *CLASS_SYSTEMS}


def fhir_id(patient_id: str) -> str:
    """A valid FHIR id for a patient (itself when valid and short enough for derived ids).

    Derived resource ids append up to 24 characters (``-ring-sideroblasts``, ``-var12``), and
    FHIR ids stop at 64, so a patient's id is at most 40 characters.
    """
    if _FHIR_ID.match(patient_id) and len(patient_id) <= _MAX_PATIENT_FHIR_ID:
        return patient_id
    digest = hashlib.sha1(patient_id.encode("utf-8")).hexdigest()[:8]
    return f"{re.sub(r'[^A-Za-z0-9.-]', '-', patient_id)[:31]}-{digest}"


def _coding(system: str, code: str, display: str | None = None, **kw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"system": system, "code": code}
    if display:
        out["display"] = display
    out.update(kw)
    return out


def _quantity(value: float, ucum: str | None) -> dict[str, Any]:
    q: dict[str, Any] = {"value": value}
    if ucum is not None:
        q.update(unit=ucum, system=UCUM_SYSTEM, code=ucum)
    return q


def _value(field: str, v: Any) -> dict[str, Any]:
    kind = FIELDS[field].kind
    if kind == "bool":
        return {"valueBoolean": bool(v)}
    if kind == "int":
        return {"valueInteger": int(v)}
    if kind == "float":
        return {"valueQuantity": _quantity(float(v), ucum_of(field))}
    return {"valueString": str(v)}


def _field_code(field: str) -> dict[str, Any]:
    f = FIELDS[field]
    if f.loinc:
        return {"coding": [_coding(LOINC.system, f.loinc, f.description)], "text": f.description}
    return {"coding": [_coding(FIELD_SYSTEM, field, f.description)], "text": f.description}


def _condition(fid: str, row: Mapping[str, Any]) -> dict[str, Any]:
    disease = str(row["disease"])
    icd, mondo, label = DISEASE_CODES[disease]
    codings = [_coding(DISEASE_SYSTEM, disease, label)]
    for col, system, default in (("icd10", ICD10.system, icd), ("mondo", MONDO.system, mondo)):
        recorded = row.get(col)
        if recorded is not None and not pd.isna(recorded):
            codings.append(_coding(system, str(recorded), userSelected=True))
        else:
            codings.append(_coding(system, default, label, userSelected=False))
    for col, system in CLASS_SYSTEMS.items():
        v = row.get(col)
        if v is not None and not pd.isna(v):
            codings.append(_coding(system, str(v)))
    return {"resourceType": "Condition", "id": f"{fid}-dx",
            "subject": {"reference": f"Patient/{fid}"}, "code": {"coding": codings, "text": label}}


def _component(code: str, display: str, value: dict[str, Any], system: str = LOINC.system
               ) -> dict[str, Any]:
    return {"code": {"coding": [_coding(system, code, display)]}, **value}


def _gene_value(gene: str) -> dict[str, Any]:
    return {"valueCodeableConcept": {"coding": [_coding(HGNC.system, gene, gene)]}}


def _variant(fid: str, k: int, m: Mapping[str, Any]) -> dict[str, Any]:
    comps = [_component(GENE_STUDIED, "Gene studied", _gene_value(str(m["gene"])))]

    def has(c: str) -> bool:
        return c in m and not pd.isna(m[c])

    if has("vaf"):
        comps.append(_component(VAF_CODE, "Sample variant allelic frequency",
                                {"valueQuantity": _quantity(float(m["vaf"]), "1")}))
    if has("protein_change"):
        comps.append(_component(AA_CHANGE, "Amino acid change",
                                {"valueCodeableConcept": {"text": str(m["protein_change"])}}))
    if has("effect"):
        comps.append(_component(CONSEQUENCE, "Molecular consequence",
                                {"valueCodeableConcept": {"text": str(m["effect"])}}))
    if has("chrom"):
        comps.append(_component(CHROMOSOME, "Chromosome",
                                {"valueCodeableConcept": {"text": str(m["chrom"])}}))
    if has("ref"):
        comps.append(_component(REF_ALLELE, "Reference allele", {"valueString": str(m["ref"])}))
    if has("alt"):
        comps.append(_component(ALT_ALLELE, "Alternate allele", {"valueString": str(m["alt"])}))
    for c in ("pos", "depth"):
        if has(c):
            comps.append(_component(c, c, {"valueInteger": int(m[c])}, FIELD_SYSTEM))
    return {"resourceType": "Observation", "id": f"{fid}-var{k}", "status": "final",
            "code": {"coding": [_coding(LOINC.system, VARIANT_CODE, "Genetic variant assessment")]},
            "subject": {"reference": f"Patient/{fid}"},
            "valueCodeableConcept": {"coding": [_coding(LOINC.system, PRESENT, "Present")]},
            "component": comps}


def cohort_to_fhir_bundle(cohort: Cohort) -> dict[str, Any]:
    """The cohort as a FHIR R4B ``collection`` Bundle (a JSON-ready dict, checked by the R4B model)."""
    from fhir.resources.R4B.bundle import Bundle

    p = cohort.patients
    obs_fields = [c for c in p.columns if c in FIELDS and c not in _NOT_OBSERVATION_FIELDS]
    records = p.to_dict("records")
    muts_by_pid: dict[str, list[dict[str, Any]]] = {}
    for m in cohort.mutations.to_dict("records"):
        muts_by_pid.setdefault(str(m["patient_id"]), []).append(m)
    entries: list[dict[str, Any]] = []
    for row in records:
        pid = str(row["patient_id"])
        fid = fhir_id(pid)
        patient: dict[str, Any] = {"resourceType": "Patient", "id": fid,
                                   "identifier": [{"system": PATIENT_ID_SYSTEM, "value": pid}]}
        sex = row.get("sex")
        if sex is not None and not pd.isna(sex):
            patient["gender"] = "male" if sex == "M" else "female"
        resources = [patient, _condition(fid, row)]
        for c in obs_fields:
            v = row[c]
            if pd.isna(v):
                continue
            resources.append({"resourceType": "Observation", "id": f"{fid}-{c.replace('_', '-')}",
                              "status": "final", "code": _field_code(c),
                              "subject": {"reference": f"Patient/{fid}"}, **_value(c, v)})
        panel = row.get(PANEL_COLUMN)
        if panel is not None and not pd.isna(panel):
            resources.append({
                "resourceType": "Observation", "id": f"{fid}-panel", "status": "final",
                "code": {"coding": [_coding(LOINC.system, PANEL_CODE, "DNA region of interest panel")]},
                "subject": {"reference": f"Patient/{fid}"},
                "valueCodeableConcept": {"text": str(panel)},
                "component": [_component(GENE_STUDIED, "Gene studied", _gene_value(g))
                              for g in cohort.panels[str(panel)]]})
        resources += [_variant(fid, k, m) for k, m in enumerate(muts_by_pid.get(pid, []))]
        entries += [{"fullUrl": f"{HEMAFED}/{r['resourceType']}/{r['id']}", "resource": r}
                    for r in resources]
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": entries}
    Bundle.model_validate(bundle)  # refuse to hand out a bundle the R4B model would reject
    return bundle


def write_fhir_bundle(cohort: Cohort, path: str | Path) -> Path:
    """Write the cohort's bundle as JSON, atomically; returns the path."""
    path = Path(path)
    write_text(path, json.dumps(cohort_to_fhir_bundle(cohort), ensure_ascii=False))
    return path


# ----------------------------------------------------------------------------- reading


def _load(source: str | Path | Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    if isinstance(source, Mapping):
        return dict(source), "FHIR bundle"
    path = Path(source)
    data = load_json(path)
    if not isinstance(data, dict):
        raise InvalidInput(f"{path}: expected a JSON object (a FHIR Bundle), got {type(data).__name__}")
    return data, str(path)


def _num(v: Decimal | float | int) -> float:
    return float(v)


def _disease_from_codes(codings: list[Any]) -> tuple[str | None, dict[str, str]]:
    """The canonical disease and the recorded fields (icd10, mondo, WHO classes) of a Condition."""
    disease: str | None = None
    guessed: str | None = None
    fields: dict[str, str] = {}
    for c in codings:
        system, code = c.system, c.code
        if code is None:
            continue
        if system == DISEASE_SYSTEM:
            disease = code
        elif system == ICD10.system:
            if c.userSelected is not False:
                fields["icd10"] = code
            if code.startswith("D46"):
                guessed = guessed or "MDS"
            elif code.startswith(_AML_ICD):
                guessed = guessed or "AML"
            elif code.startswith("C90.0"):
                guessed = guessed or "MM"
            elif code.startswith(_SCD_ICD):
                guessed = guessed or "SCD"
        elif system == MONDO.system:
            if c.userSelected is not False:
                fields["mondo"] = code
            guessed = guessed or _DISEASE_BY_MONDO.get(code)
        else:
            for name, s in CLASS_SYSTEMS.items():
                if system == s:
                    fields[name] = code
    return disease or guessed, fields


def _observation_field(codings: list[Any]) -> tuple[str | None, str | None]:
    """(kind, field): kind 'field', 'variant', 'panel'; or (None, reason) when not understood."""
    loinc = None
    for c in codings:
        if c.system == FIELD_SYSTEM and c.code in FIELDS:
            return "field", c.code
        if c.system == LOINC.system:
            loinc = c.code
    if loinc is None:
        shown = ", ".join(f"{c.system}|{c.code}" for c in codings) or "none"
        return None, f"Observation.code has no LOINC or hemafed field coding (got {shown})"
    if loinc in LOINC_TO_FIELD:
        return "field", LOINC_TO_FIELD[loinc]
    if loinc == VARIANT_CODE:
        return "variant", None
    if loinc == PANEL_CODE:
        return "panel", None
    return None, (f"unknown LOINC code {loinc!r}; hemafed reads the labs "
                  f"{', '.join(sorted(LOINC_TO_FIELD))} and genomic observations {VARIANT_CODE}, "
                  f"{PANEL_CODE}")


def _quantity_value(field: str, q: Any) -> tuple[float | None, str | None]:
    if q is None or q.value is None:
        return None, "valueQuantity has no value"
    unit = q.code or q.unit
    want = ucum_of(field) if field != "vaf" else "1"
    if unit is None or unit == want:
        return _num(q.value), None
    if q.system not in (None, UCUM_SYSTEM):
        return None, f"unit system {q.system!r} is not UCUM"
    try:
        factor = conversion_factor(field, str(unit))
    except InvalidInput as exc:
        return None, f"unit mismatch: {exc}"
    value = _num(q.value)
    return (value / (1.0 / factor) if factor < 1 else value * factor), None


def _field_value(field: str, obs: Any) -> tuple[Any, str | None]:
    kind = FIELDS[field].kind
    if obs.valueQuantity is not None:
        if kind not in ("float", "int"):
            return None, f"{field} is {kind}, got a valueQuantity"
        return _quantity_value(field, obs.valueQuantity)
    if obs.valueBoolean is not None:
        return bool(obs.valueBoolean), None
    if obs.valueInteger is not None:
        return int(obs.valueInteger), None
    if obs.valueString is not None:
        return str(obs.valueString), None
    if obs.valueCodeableConcept is not None:
        cc = obs.valueCodeableConcept
        code = cc.coding[0].code if cc.coding else None
        return code or cc.text, None
    return None, f"Observation for {field} has no value[x]"


def _variant_row(obs: Any) -> tuple[dict[str, Any], list[str]]:
    row: dict[str, Any] = {}
    errors: list[str] = []
    for comp in obs.component or []:
        codes = {(c.system, c.code) for c in comp.code.coding or []}
        if (LOINC.system, GENE_STUDIED) in codes:
            cc = comp.valueCodeableConcept
            gene = (cc.coding[0].code if cc and cc.coding else None) or (cc.text if cc else None)
            row["gene"] = gene
        elif (LOINC.system, VAF_CODE) in codes:
            value, err = _quantity_value("vaf", comp.valueQuantity)
            if err:
                errors.append(f"VAF component: {err}")
            row["vaf"] = value
        elif (LOINC.system, AA_CHANGE) in codes or (LOINC.system, CONSEQUENCE) in codes or \
                (LOINC.system, CHROMOSOME) in codes:
            cc = comp.valueCodeableConcept
            text = (cc.text or (cc.coding[0].code if cc.coding else None)) if cc else None
            col = "protein_change" if (LOINC.system, AA_CHANGE) in codes else \
                "effect" if (LOINC.system, CONSEQUENCE) in codes else "chrom"
            row[col] = text
        elif (LOINC.system, REF_ALLELE) in codes or (LOINC.system, ALT_ALLELE) in codes:
            row["ref" if (LOINC.system, REF_ALLELE) in codes else "alt"] = comp.valueString
        elif (FIELD_SYSTEM, "pos") in codes or (FIELD_SYSTEM, "depth") in codes:
            row["pos" if (FIELD_SYSTEM, "pos") in codes else "depth"] = comp.valueInteger
        else:
            errors.append(f"unknown variant component {sorted(c for _, c in codes)}")
    if row.get("gene") is None:
        errors.append(f"variant Observation has no gene studied ({GENE_STUDIED}) component")
    return row, errors


class _Node:
    """Attribute access over a parsed FHIR JSON object (``obs.valueQuantity.value``), None if absent.

    The R4B models check conformance; reading goes through the plain JSON so that the same code
    serves validated and trusted (``validate=False``) bundles.
    """

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = data

    def __getattr__(self, name: str) -> Any:
        return _wrap(self._data.get(name))

    @property
    def resource_type(self) -> str | None:
        rt = self._data.get("resourceType")
        return None if rt is None else str(rt)


def _wrap(value: Any) -> Any:
    if isinstance(value, Mapping):
        return _Node(value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


def read_fhir_bundle(source: str | Path | Mapping[str, Any], *, validate: bool = True) -> Cohort:
    """Read a FHIR R4B Bundle (path or parsed dict) into a validated cohort.

    Raises ``InvalidInput`` for unreadable JSON, a resource that is not a Bundle or a bundle the
    R4B model rejects; ``ValidationFailed`` listing every content problem (unknown LOINC code,
    reference to a missing Patient, unit mismatch, ...; ``row`` is the 1-based bundle entry).
    ``validate=False`` skips the ``fhir.resources`` R4B conformance check (most of the run time
    on large bundles) for bundles from a trusted exporter; the cohort is validated either way.
    """
    data, where = _load(source)
    rtype = data.get("resourceType")
    if rtype != "Bundle":
        raise InvalidInput(f"{where}: resourceType is {rtype!r}; expected 'Bundle'")
    if validate:
        from fhir.resources.R4B.bundle import Bundle

        try:
            Bundle.model_validate(data)
        except ValueError as exc:  # pydantic's ValidationError, raised by the R4B models
            errors = exc.errors() if hasattr(exc, "errors") else [{"loc": (), "msg": str(exc)}]
            loc = ".".join(str(x) for x in errors[0]["loc"]) or "Bundle"
            raise InvalidInput(f"{where}: not a valid FHIR R4B Bundle ({len(errors)} error(s)); "
                               f"first at {loc}: {errors[0]['msg']}") from exc
    elif not isinstance(data.get("entry", []), list):
        raise InvalidInput(f"{where}: Bundle.entry must be a list")
    try:
        return _read_entries([_wrap(e) for e in data.get("entry") or []], where)
    except (TypeError, AttributeError, KeyError, IndexError, ValueError) as exc:
        if isinstance(exc, InvalidInput):
            raise
        raise InvalidInput(f"{where}: malformed resource ({type(exc).__name__}: {exc}); read it "
                           "with validate=True to locate the error") from exc


def _read_entries(entries: list[Any], where: str) -> Cohort:
    problems: list[Problem] = []
    pid_of: dict[str, str] = {}
    order: list[str] = []
    for i, entry in enumerate(entries):
        res = entry.resource
        if res is not None and res.resource_type == "Patient":
            pid = next((str(x.value) for x in res.identifier or []
                        if x.system == PATIENT_ID_SYSTEM and x.value), None) or res.id
            if pid is None:
                problems.append(Problem(i + 1, "Patient.id", "Patient has neither id nor identifier"))
                continue
            for key in (f"Patient/{res.id}", entry.fullUrl):
                if key:
                    pid_of[key] = pid
            if pid in order:
                problems.append(Problem(i + 1, "Patient.id", f"patient {pid!r} appears twice"))
                continue
            order.append(pid)
    values: dict[str, dict[str, Any]] = {pid: {"patient_id": pid} for pid in order}
    mutations: list[dict[str, Any]] = []
    panel_genes: dict[str, tuple[str, ...]] = {}
    skipped: dict[str, int] = {}
    for i, entry in enumerate(entries):
        res = entry.resource
        if res is None:
            continue
        rt = res.resource_type
        if rt == "Patient":
            pid = pid_of.get(f"Patient/{res.id}")
            if pid is not None and res.gender in ("male", "female"):
                values[pid]["sex"] = "M" if res.gender == "male" else "F"
            continue
        if rt not in ("Condition", "Observation"):
            skipped[rt] = skipped.get(rt, 0) + 1
            continue
        ref = res.subject.reference if res.subject is not None else None
        pid = pid_of.get(ref) if ref else None
        if pid is None:
            reason = ("has no subject" if ref is None else
                      f"refers to {ref!r}, which is not a Patient in this bundle")
            problems.append(Problem(i + 1, f"{rt}.subject", f"{rt} {res.id or ''} {reason}".replace("  ", " ")))
            continue
        row = values[pid]
        if rt == "Condition":
            disease, recorded = _disease_from_codes(res.code.coding or [] if res.code else [])
            if disease is None:
                problems.append(Problem(i + 1, "Condition.code", "no haematological disease hemafed "
                                        "knows (MDS, AML, MM, SCD) in the ICD-10/MONDO codings", pid))
                continue
            if "disease" in row and row["disease"] != disease:
                problems.append(Problem(i + 1, "Condition.code",
                                        f"second disease {disease!r} besides {row['disease']!r}", pid))
                continue
            row["disease"] = disease
            row.update(recorded)
            continue
        kind, name = _observation_field(res.code.coding or [])
        if kind is None:
            problems.append(Problem(i + 1, "Observation.code", str(name), pid))
        elif kind == "variant":
            mut, errors = _variant_row(res)
            problems += [Problem(i + 1, "Observation.component", e, pid) for e in errors]
            mutations.append({"patient_id": pid, **mut})
        elif kind == "panel":
            name = res.valueCodeableConcept.text if res.valueCodeableConcept else None
            genes = tuple(str(c.valueCodeableConcept.coding[0].code) for c in res.component or []
                          if c.valueCodeableConcept and c.valueCodeableConcept.coding)
            if not name:
                problems.append(Problem(i + 1, "Observation.valueCodeableConcept",
                                        "panel Observation has no panel name (text)", pid))
                continue
            if name in panel_genes and panel_genes[name] != genes:
                problems.append(Problem(i + 1, "Observation.component",
                                        f"panel {name!r} lists other genes in an earlier entry", pid))
            panel_genes.setdefault(name, genes)
            row[PANEL_COLUMN] = name
        else:
            assert name is not None
            value, err = _field_value(name, res)
            if err:
                problems.append(Problem(i + 1, name, err, pid))
            elif name in row:
                problems.append(Problem(i + 1, name, f"second value for {name}", pid))
            else:
                row[name] = value
    if skipped:
        log.info("%s: resources not imported: %s", where, skipped)
    if problems:
        raise ValidationFailed(problems, source=where)
    columns = list(dict.fromkeys(c for r in values.values() for c in r))
    patients = pd.DataFrame({c: [values[p].get(c) for p in order] for c in columns})
    muts = pd.DataFrame({c: [m.get(c) for m in mutations] for c in MUTATION_COLUMNS}) \
        if mutations else None
    return validate_cohort(patients, muts, panel_genes, source=where)
