"""GA4GH Phenopackets v2 to and from the canonical cohort (one phenopacket per patient).

Built on the ``phenopackets`` protobuf classes and ``google.protobuf.json_format`` (camelCase JSON,
as the standard writes it). Mapping, lossless for every field that has a value:

* ``id`` and ``subject.id`` are the patient id; ``subject.sex`` MALE/FEMALE (UNKNOWN_SEX when
  missing).
* ``diseases[0].term`` is the disease's MONDO class (``DISEASE_CODES``); the age at diagnosis is
  ``diseases[0].onset.age.iso8601duration`` in years with the exact decimal (``P71.25Y``).
* ``subject.vitalStatus``: ``status`` DECEASED / ALIVE from ``os_status`` and
  ``survivalTimeInDays`` = round(``os_time`` x 365.25) for other tools; the exact ``os_time`` is
  also a measurement (below) because whole days would round it.
* ``measurements``: labs with a LOINC code in the schema have ``assay`` ``LOINC:<code>`` and a
  quantity with a ``UCUM:<unit>`` unit (other UCUM units are converted on import, or refused).
  Every other field is a measurement with ``assay`` ``hemafed:<field>``: numbers as quantities,
  flags as ``NCIT:C49488`` (Yes) / ``NCIT:C49487`` (No), text and categories as an ontology class
  whose ``label`` is the value (ICD-10 ids ``ICD10:<code>``, MONDO ids as they are).
* The sequenced panel is a measurement with ``assay`` ``hemafed:panel``, value
  ``hemafed.panel:<name>`` and ``description`` ``genes studied: A,B,C``.
* Mutations are one ``interpretation`` whose diagnosis lists a genomic interpretation per variant:
  ``variationDescriptor.geneContext`` (``valueId`` ``hgnc.symbol:<symbol>``, the cohort holds
  approved symbols, not HGNC numbers), ``expressions`` ``hgvs.p`` for the protein change,
  ``vcfRecord`` for chrom/pos/ref/alt (assembly not recorded), and ``extensions`` ``vaf``,
  ``depth`` and ``effect`` (molecular consequence).
* ``metaData`` lists the resources used; ``created`` is set only when passed, so output is
  deterministic.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from google.protobuf import json_format
from google.protobuf.message import Message

from hemafed.atomic import write_text
from hemafed.cohort.io._json import load_json
from hemafed.cohort.io.units import conversion_factor, ucum_of
from hemafed.cohort.model import MUTATION_COLUMNS, PANEL_COLUMN, Cohort
from hemafed.cohort.schema import DISEASE_CODES, FIELDS, LOINC_TO_FIELD
from hemafed.cohort.validate import validate_cohort
from hemafed.errors import InvalidInput, Problem, ValidationFailed

YES = ("NCIT:C49488", "Yes")
NO = ("NCIT:C49487", "No")
_DISEASE_BY_MONDO = {v[1]: k for k, v in DISEASE_CODES.items()}
_DISEASE_BY_ICD = {v[0]: k for k, v in DISEASE_CODES.items()}
_SPECIAL = {"patient_id", "disease", "sex", "age", "os_status"}
_ISO_AGE = re.compile(r"^P(?:(?P<y>\d+(?:\.\d+)?)Y)?(?:(?P<m>\d+(?:\.\d+)?)M)?"
                      r"(?:(?P<w>\d+(?:\.\d+)?)W)?(?:(?P<d>\d+(?:\.\d+)?)D)?$")
RESOURCES = [
    ("mondo", "Mondo Disease Ontology", "http://purl.obolibrary.org/obo/mondo.owl", "MONDO"),
    ("loinc", "Logical Observation Identifiers Names and Codes", "https://loinc.org", "LOINC"),
    ("ucum", "Unified Code for Units of Measure", "https://ucum.org", "UCUM"),
    ("ncit", "NCI Thesaurus", "http://purl.obolibrary.org/obo/ncit.owl", "NCIT"),
    ("icd10", "ICD-10", "https://icd.who.int/browse10", "ICD10"),
    ("hgnc", "HUGO Gene Nomenclature Committee", "https://www.genenames.org", "hgnc.symbol"),
    ("hemafed", "hemafed cohort schema", "http://hemafed.org/fhir/CodeSystem/field", "hemafed"),
]


def _pp() -> Any:
    import phenopackets

    return phenopackets


def iso_age(years: float) -> str:
    """An ISO 8601 duration in years that reads back to exactly ``years`` (``P71.25Y``)."""
    text = np.format_float_positional(float(years), unique=True, trim="-")
    return f"P{text}Y"


def parse_iso_age(text: str) -> float:
    """Years from an ISO 8601 duration (``P63Y6M`` -> 63.5); ``InvalidInput`` when malformed."""
    m = _ISO_AGE.match(text.strip())
    if not m or not any(m.groupdict().values()):
        raise InvalidInput(f"age {text!r} is not an ISO 8601 duration such as P63Y or P63Y6M")
    y, mo, w, d = (float(m.group(k) or 0) for k in ("y", "m", "w", "d"))
    if not (mo or w or d):
        return y
    return y + mo / 12 + (w * 7 + d) / 365.25


def _oc(id_: str, label: str = "") -> Any:
    return _pp().OntologyClass(id=id_, label=label)


def _present(v: Any) -> bool:
    return v is not None and not pd.isna(v)


def _measurement(field: str, v: Any) -> Any:
    pp = _pp()
    f = FIELDS[field]
    assay = _oc(f"LOINC:{f.loinc}", f.description) if f.loinc else \
        _oc(f"hemafed:{field}", f.description)
    if f.kind in ("float", "int"):
        ucum = ucum_of(field) or "1"
        value = pp.Value(quantity=pp.Quantity(unit=_oc(f"UCUM:{ucum}", ucum), value=float(v)))
    elif f.kind == "bool":
        value = pp.Value(ontology_class=_oc(*(YES if bool(v) else NO)))
    else:
        text = str(v)
        id_ = f"ICD10:{text}" if field == "icd10" else text if field == "mondo" else \
            f"hemafed.{field}:{text}"
        value = pp.Value(ontology_class=_oc(id_, text))
    return pp.Measurement(assay=assay, value=value)


def _variant(pid: str, k: int, m: Mapping[str, Any]) -> Any:
    pp = _pp()
    gene = str(m["gene"])
    vd = pp.VariationDescriptor(id=f"{pid}-var{k}", molecule_context=pp.genomic,
                                gene_context=pp.GeneDescriptor(value_id=f"hgnc.symbol:{gene}",
                                                               symbol=gene))
    if _present(m.get("protein_change")):
        vd.expressions.append(pp.Expression(syntax="hgvs.p", value=str(m["protein_change"])))
    if any(_present(m.get(c)) for c in ("chrom", "pos", "ref", "alt")):
        vd.vcf_record.CopyFrom(pp.VcfRecord(
            chrom=str(m["chrom"]) if _present(m.get("chrom")) else "",
            pos=int(m["pos"]) if _present(m.get("pos")) else 0,
            ref=str(m["ref"]) if _present(m.get("ref")) else "",
            alt=str(m["alt"]) if _present(m.get("alt")) else ""))
    if _present(m.get("vaf")):
        vd.extensions.append(pp.Extension(name="vaf", value=repr(float(m["vaf"]))))
    if _present(m.get("depth")):
        vd.extensions.append(pp.Extension(name="depth", value=str(int(m["depth"]))))
    if _present(m.get("effect")):
        vd.extensions.append(pp.Extension(name="effect", value=str(m["effect"])))
    return pp.GenomicInterpretation(
        subject_or_biosample_id=pid,
        variant_interpretation=pp.VariantInterpretation(variation_descriptor=vd))


def _phenopacket(row: Mapping[str, Any], muts: Sequence[Mapping[str, Any]],
                 panels: Mapping[str, tuple[str, ...]], created: datetime | None) -> Any:
    pp = _pp()
    pid = str(row["patient_id"])
    sex = {"M": pp.MALE, "F": pp.FEMALE}.get(str(row.get("sex")), pp.UNKNOWN_SEX)
    subject = pp.Individual(id=pid, sex=sex)
    if _present(row.get("os_status")) or _present(row.get("os_time")):
        vs = pp.VitalStatus()
        if _present(row.get("os_status")):
            vs.status = pp.VitalStatus.DECEASED if bool(row["os_status"]) else pp.VitalStatus.ALIVE
        if _present(row.get("os_time")):
            vs.survival_time_in_days = round(float(row["os_time"]) * 365.25)
        subject.vital_status.CopyFrom(vs)
    _, mondo, label = DISEASE_CODES[str(row["disease"])]
    disease = pp.Disease(term=_oc(mondo, label))
    if _present(row.get("age")):
        disease.onset.CopyFrom(pp.TimeElement(age=pp.Age(iso8601duration=iso_age(row["age"]))))
    packet = pp.Phenopacket(id=pid, subject=subject, diseases=[disease])
    for c, v in row.items():
        if c in FIELDS and c not in _SPECIAL and _present(v):
            packet.measurements.append(_measurement(c, v))
    panel = row.get(PANEL_COLUMN)
    if _present(panel):
        packet.measurements.append(pp.Measurement(
            assay=_oc("hemafed:panel", "sequencing panel"),
            description=f"genes studied: {','.join(panels[str(panel)])}",
            value=pp.Value(ontology_class=_oc(f"hemafed.panel:{panel}", str(panel)))))
    if muts:
        packet.interpretations.append(pp.Interpretation(
            id=f"{pid}-genomic", progress_status=pp.Interpretation.COMPLETED,
            diagnosis=pp.Diagnosis(disease=_oc(mondo, label),
                                   genomic_interpretations=[_variant(pid, k, m)
                                                            for k, m in enumerate(muts)])))
    meta = pp.MetaData(created_by="hemafed", phenopacket_schema_version="2.0",
                       resources=[pp.Resource(id=i, name=n, url=u, namespace_prefix=p,
                                              iri_prefix=u) for i, n, u, p in RESOURCES])
    if created is not None:
        meta.created.FromDatetime(created)
    packet.meta_data.CopyFrom(meta)
    return packet


def cohort_to_phenopackets(cohort: Cohort, created: datetime | None = None) -> list[dict[str, Any]]:
    """One phenopacket (camelCase JSON dict) per patient, in patient order."""
    by_pid: dict[str, list[dict[str, Any]]] = {}
    for m in cohort.mutations.to_dict("records"):
        by_pid.setdefault(str(m["patient_id"]), []).append(m)
    return [json_format.MessageToDict(_phenopacket(row, by_pid.get(str(row["patient_id"]), []),
                                                   cohort.panels, created))
            for row in cohort.patients.to_dict("records")]


def _file_name(pid: str, used: set[str]) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]", "_", pid)[:80] or "patient"
    if name.lower() in used or name != pid:
        name = f"{name}-{hashlib.sha1(pid.encode('utf-8')).hexdigest()[:8]}"
    used.add(name.lower())
    return f"{name}.json"


def write_phenopackets(cohort: Cohort, folder: str | Path, created: datetime | None = None) -> Path:
    """Write one ``<patient>.json`` per patient into ``folder`` (each file atomically)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    for packet in cohort_to_phenopackets(cohort, created):
        write_text(folder / _file_name(packet["id"], used), json.dumps(packet, indent=1,
                                                                       ensure_ascii=False))
    return folder


# ----------------------------------------------------------------------------- reading


def _sources(source: str | Path | Iterable[Any]) -> list[tuple[str, Any]]:
    """(where, parsed JSON) for each phenopacket of a folder, a file or a list."""
    if isinstance(source, str | Path):
        path = Path(source)
        if path.is_dir():
            files = sorted(path.glob("*.json"))
            if not files:
                raise InvalidInput(f"{path}: folder holds no *.json phenopackets")
            out: list[tuple[str, Any]] = []
            for f in files:
                out += _file_sources(f)
            return out
        if path.is_file():
            return _file_sources(path)
        raise InvalidInput(f"{path}: no such file or folder")
    items = list(source)
    return [(f"phenopacket {i + 1}", item) for i, item in enumerate(items)]


def _file_sources(path: Path) -> list[tuple[str, Any]]:
    data = load_json(path)
    if isinstance(data, list):
        return [(f"{path}[{i}]", d) for i, d in enumerate(data)]
    return [(str(path), data)]


def _parse(where: str, data: Any) -> Any:
    pp = _pp()
    if isinstance(data, pp.Phenopacket):
        return data
    if isinstance(data, Message):
        raise InvalidInput(f"{where}: expected a Phenopacket, got {type(data).__name__}")
    if not isinstance(data, dict):
        raise InvalidInput(f"{where}: expected a phenopacket JSON object, got {type(data).__name__}")
    try:
        return json_format.ParseDict(data, pp.Phenopacket())
    except json_format.ParseError as exc:
        raise InvalidInput(f"{where}: not a valid GA4GH Phenopacket v2: {exc}") from exc


def _disease_of(term_id: str) -> str | None:
    if term_id in _DISEASE_BY_MONDO:
        return _DISEASE_BY_MONDO[term_id]
    if term_id.startswith("ICD10:"):
        return _DISEASE_BY_ICD.get(term_id[len("ICD10:"):])
    return None


def _measured(m: Any) -> tuple[str | None, Any, str | None]:
    """(field, value, problem) of one measurement; field 'panel' for the panel measurement."""
    assay = m.assay.id
    if assay.startswith("LOINC:"):
        code = assay[len("LOINC:"):]
        if code not in LOINC_TO_FIELD:
            return None, None, (f"unknown LOINC code {code!r}; hemafed reads "
                                f"{', '.join(sorted(LOINC_TO_FIELD))}")
        field = LOINC_TO_FIELD[code]
    elif assay == "hemafed:panel":
        genes = m.description.removeprefix("genes studied:").strip()
        return "panel", (m.value.ontology_class.label, tuple(g for g in genes.split(",") if g)), None
    elif assay.startswith("hemafed:") and assay[len("hemafed:"):] in FIELDS:
        field = assay[len("hemafed:"):]
    else:
        return None, None, f"unknown assay {assay!r} (expected LOINC:<code> or hemafed:<field>)"
    kind = FIELDS[field].kind
    which = m.value.WhichOneof("value")
    if kind in ("float", "int"):
        if which != "quantity":
            return field, None, f"{field} needs a quantity value"
        q = m.value.quantity
        unit = q.unit.id.removeprefix("UCUM:") if q.unit.id else None
        if unit is None or unit == (ucum_of(field) or "1"):
            return field, q.value, None
        try:
            factor = conversion_factor(field, unit)
        except InvalidInput as exc:
            return field, None, f"unit mismatch: {exc}"
        return field, q.value / (1.0 / factor) if factor < 1 else q.value * factor, None
    if which != "ontology_class":
        return field, None, f"{field} needs an ontology class value"
    oc = m.value.ontology_class
    if kind == "bool":
        if oc.id not in (YES[0], NO[0]):
            return field, None, f"{field}: expected {YES[0]} (Yes) or {NO[0]} (No), got {oc.id!r}"
        return field, oc.id == YES[0], None
    return field, oc.label or oc.id, None


def _patient(k: int, packet: Any, problems: list[Problem]) -> tuple[dict[str, Any],
                                                                     list[dict[str, Any]],
                                                                     tuple[str, tuple[str, ...]] | None]:
    pp = _pp()
    pid = packet.subject.id or packet.id
    row: dict[str, Any] = {"patient_id": pid}
    if not pid:
        problems.append(Problem(k, "subject.id", "phenopacket has no subject id"))
    row["sex"] = {pp.MALE: "M", pp.FEMALE: "F"}.get(packet.subject.sex)
    diseases = {d for d in (_disease_of(x.term.id) for x in packet.diseases if not x.excluded) if d}
    if len(diseases) != 1:
        got = ", ".join(x.term.id for x in packet.diseases) or "none"
        problems.append(Problem(k, "diseases", "expected exactly one of MDS, AML, MM, SCD "
                                f"(MONDO or ICD10 term), got {got}", pid))
    row["disease"] = next(iter(diseases)) if len(diseases) == 1 else None
    for d in packet.diseases:
        if d.onset.HasField("age"):
            try:
                row["age"] = parse_iso_age(d.onset.age.iso8601duration)
            except InvalidInput as exc:
                problems.append(Problem(k, "diseases.onset.age", str(exc), pid))
    vs = packet.subject.vital_status
    if packet.subject.HasField("vital_status"):
        if vs.status != pp.VitalStatus.UNKNOWN_STATUS:
            row["os_status"] = vs.status == pp.VitalStatus.DECEASED
        if vs.survival_time_in_days:
            row["os_time"] = vs.survival_time_in_days / 365.25
    panel: tuple[str, tuple[str, ...]] | None = None
    seen: set[str] = set()
    for j, m in enumerate(packet.measurements):
        field, value, problem = _measured(m)
        if problem:
            problems.append(Problem(k, f"measurements[{j}]", problem, pid))
            continue
        if field == "panel":
            panel = value
            row[PANEL_COLUMN] = value[0]
            continue
        assert field is not None
        if field in seen:
            problems.append(Problem(k, f"measurements[{j}]", f"second value for {field}", pid))
        seen.add(field)
        row[field] = value
    muts: list[dict[str, Any]] = []
    for interp in packet.interpretations:
        for gi in interp.diagnosis.genomic_interpretations:
            vd = gi.variant_interpretation.variation_descriptor
            gene = vd.gene_context.symbol or gi.gene.symbol
            if not gene:
                problems.append(Problem(k, "interpretations", "variant without a gene symbol", pid))
                continue
            mut: dict[str, Any] = {"patient_id": pid, "gene": gene}
            for e in vd.expressions:
                if e.syntax == "hgvs.p":
                    mut["protein_change"] = e.value
            if vd.HasField("vcf_record"):
                r = vd.vcf_record
                mut.update(chrom=r.chrom or None, pos=r.pos or None, ref=r.ref or None,
                           alt=r.alt or None)
            for e in vd.extensions:
                if e.name == "vaf":
                    mut["vaf"] = float(e.value)
                elif e.name == "depth":
                    mut["depth"] = int(e.value)
                elif e.name == "effect":
                    mut["effect"] = e.value
            muts.append(mut)
    return row, muts, panel


def read_phenopackets(source: str | Path | Iterable[Any]) -> Cohort:
    """Read phenopackets (a folder of JSON files, one JSON file, or a list of dicts/messages).

    Raises ``InvalidInput`` for unreadable JSON or a document that is not a Phenopacket;
    ``ValidationFailed`` listing every content problem (``row`` is the 1-based phenopacket).
    """
    parsed = [(where, _parse(where, data)) for where, data in _sources(source)]
    where_all = str(source) if isinstance(source, str | Path) else "phenopackets"
    problems: list[Problem] = []
    rows: list[dict[str, Any]] = []
    mutations: list[dict[str, Any]] = []
    panels: dict[str, tuple[str, ...]] = {}
    for k, (_, packet) in enumerate(parsed, start=1):
        row, muts, panel = _patient(k, packet, problems)
        rows.append(row)
        mutations += muts
        if panel is not None:
            name, genes = panel
            if name in panels and panels[name] != genes:
                problems.append(Problem(k, "measurements", f"panel {name!r} lists other genes in "
                                        "an earlier phenopacket", row["patient_id"]))
            panels.setdefault(name, genes)
    if problems:
        raise ValidationFailed(problems, source=where_all)
    columns = list(dict.fromkeys(c for r in rows for c in r))
    columns = [c for c in columns if any(r.get(c) is not None for r in rows)]
    patients = pd.DataFrame({c: [r.get(c) for r in rows] for c in columns})
    muts_df = pd.DataFrame({c: [m.get(c) for m in mutations] for c in MUTATION_COLUMNS}) \
        if mutations else None
    return validate_cohort(patients, muts_df, panels, source=where_all)
