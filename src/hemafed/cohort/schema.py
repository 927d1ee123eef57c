"""The canonical haematology cohort schema: one row per patient, one column per field.

Every importer maps its source onto these fields and every analysis, score and generator reads
them. A field declares its type, unit, plausible range or allowed values, the diseases it belongs
to, and its standard code (LOINC for labs, HPO for phenotypes, ICD-10/MONDO for diagnoses), so that
validation, unit conversion and FHIR/Phenopackets mapping all read one table.

Mutations are not columns here: they live in a long table (see ``hemafed.cohort.model``), and
which genes were *sequenced* is kept apart from which were *mutated*.

>>> FIELDS["hb"].unit
'g/dL'
>>> FIELDS["cyto_ipssr"].categories[0]
'Very Good'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["str", "float", "int", "bool", "category"]
Disease = Literal["MDS", "AML", "MM", "SCD"]

DISEASES: tuple[Disease, ...] = ("MDS", "AML", "MM", "SCD")
ALL: tuple[Disease, ...] = DISEASES
MYELOID: tuple[Disease, ...] = ("MDS", "AML")


@dataclass(frozen=True)
class Field:
    """One column of the patient table.

    ``low``/``high`` bound plausible values (inclusive); a value outside is a validation error,
    never clipped. ``categories`` lists allowed values of a categorical field.
    """

    name: str
    kind: Kind
    description: str
    unit: str | None = None
    low: float | None = None
    high: float | None = None
    categories: tuple[str, ...] = ()
    diseases: tuple[Disease, ...] = ALL
    loinc: str | None = None
    hpo: str | None = None
    required: bool = False
    group: str = "other"

    def __post_init__(self) -> None:
        if self.kind == "category" and not self.categories:
            raise ValueError(f"field {self.name!r}: a category field needs categories")
        if self.kind != "category" and self.categories:
            raise ValueError(f"field {self.name!r}: only category fields take categories")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError(f"field {self.name!r}: low {self.low} > high {self.high}")
        if self.kind not in ("float", "int") and (self.low is not None or self.high is not None):
            raise ValueError(f"field {self.name!r}: only numeric fields take bounds")


CYTO_IPSSR = ("Very Good", "Good", "Intermediate", "Poor", "Very Poor")
SEX = ("M", "F")
SCD_GENOTYPES = ("HbSS", "HbSC", "HbSbeta0", "HbSbeta+", "HbSD", "HbSE", "other")
RESPONSES = ("CR", "CRi", "PR", "HI", "SD", "PD", "VGPR", "sCR", "NR")
ELN_CLASSES = ("favorable", "intermediate", "adverse")


def _f(name: str, kind: Kind, description: str, **kw: object) -> Field:
    return Field(name, kind, description, **kw)  # type: ignore[arg-type]


def _flag(name: str, description: str, diseases: tuple[Disease, ...], group: str) -> Field:
    return Field(name, "bool", description, diseases=diseases, group=group)


def _outcome(stem: str, what: str, diseases: tuple[Disease, ...] = ALL) -> list[Field]:
    return [
        Field(f"{stem}_time", "float", f"time from diagnosis to {what} or censoring", unit="years",
              low=0.0, high=60.0, diseases=diseases, group="outcome"),
        Field(f"{stem}_status", "bool", f"1 if {what} was observed, 0 if censored",
              diseases=diseases, group="outcome"),
    ]


_FIELDS: list[Field] = [
    # identity and demographics
    Field("patient_id", "str", "pseudonymised patient identifier (unique within a cohort)",
          required=True, group="identity"),
    Field("disease", "category", "disease of the cohort entry", categories=DISEASES,
          required=True, group="identity"),
    Field("sex", "category", "administrative sex", categories=SEX, group="demographics"),
    Field("age", "float", "age at diagnosis", unit="years", low=0.0, high=110.0,
          group="demographics"),
    # diagnosis
    Field("icd10", "str", "ICD-10 code of the diagnosis, e.g. D46.2, C92.0, C90.0, D57.1",
          group="diagnosis"),
    Field("mondo", "str", "MONDO disease identifier, e.g. MONDO:0018881", group="diagnosis"),
    Field("who2016", "str", "WHO 2016 class, e.g. MDS-EB2", diseases=MYELOID, group="diagnosis"),
    Field("who2022", "str", "WHO 2022 (5th edition) class", diseases=MYELOID, group="diagnosis"),
    Field("icc2022", "str", "International Consensus Classification 2022 class",
          diseases=MYELOID, group="diagnosis"),
    Field("secondary", "bool", "therapy-related or secondary disease", diseases=MYELOID,
          group="diagnosis"),
    # blood counts and marrow
    Field("hb", "float", "haemoglobin", unit="g/dL", low=2.0, high=25.0, loinc="718-7",
          group="blood"),
    Field("plt", "float", "platelet count", unit="10^9/L", low=0.0, high=3000.0, loinc="777-3",
          group="blood"),
    Field("anc", "float", "absolute neutrophil count", unit="10^9/L", low=0.0, high=200.0,
          loinc="751-8", group="blood"),
    Field("wbc", "float", "white blood cell count", unit="10^9/L", low=0.0, high=1000.0,
          loinc="6690-2", group="blood"),
    Field("mono", "float", "absolute monocyte count", unit="10^9/L", low=0.0, high=200.0,
          loinc="742-7", group="blood"),
    Field("bm_blast", "float", "bone-marrow blasts", unit="%", low=0.0, high=100.0,
          loinc="11150-0", diseases=MYELOID, group="blood"),
    Field("pb_blast", "float", "peripheral-blood blasts", unit="%", low=0.0, high=100.0,
          loinc="709-2", diseases=MYELOID, group="blood"),
    Field("ring_sideroblasts", "float", "ring sideroblasts in marrow erythroid cells", unit="%",
          low=0.0, high=100.0, diseases=("MDS",), group="blood"),
    # cytogenetics
    Field("karyotype", "str", "karyotype in ISCN notation", diseases=MYELOID, group="cytogenetics"),
    Field("cyto_ipssr", "category", "IPSS-R cytogenetic risk category", categories=CYTO_IPSSR,
          diseases=MYELOID, group="cytogenetics"),
    _flag("del5q", "del(5q) or -5", MYELOID, "cytogenetics"),
    _flag("del7_7q", "-7 or del(7q)", MYELOID, "cytogenetics"),
    _flag("del17_17p", "-17, del(17p) or i(17q); in MM the FISH del(17p)", ALL, "cytogenetics"),
    _flag("complex", "complex karyotype (3 or more abnormalities)", MYELOID, "cytogenetics"),
    _flag("monosomal", "monosomal karyotype", ("AML",), "cytogenetics"),
    _flag("t_8_21", "t(8;21)(q22;q22.1) RUNX1::RUNX1T1", ("AML",), "cytogenetics"),
    _flag("inv_16", "inv(16)(p13.1q22) or t(16;16) CBFB::MYH11", ("AML",), "cytogenetics"),
    _flag("t_15_17", "t(15;17) PML::RARA", ("AML",), "cytogenetics"),
    _flag("t_9_11", "t(9;11)(p21.3;q23.3) MLLT3::KMT2A", ("AML",), "cytogenetics"),
    _flag("t_v_11", "t(v;11q23.3) KMT2A rearranged (other than t(9;11))", ("AML",),
          "cytogenetics"),
    _flag("t_6_9", "t(6;9)(p23;q34.1) DEK::NUP214", ("AML",), "cytogenetics"),
    _flag("t_9_22", "t(9;22)(q34.1;q11.2) BCR::ABL1", ("AML",), "cytogenetics"),
    _flag("inv_3", "inv(3)(q21.3q26.2) or t(3;3) GATA2,MECOM", ("AML",), "cytogenetics"),
    _flag("minus5", "-5 or del(5q) in AML", ("AML",), "cytogenetics"),
    _flag("minus7", "-7 in AML", ("AML",), "cytogenetics"),
    _flag("minus17", "-17/abn(17p) in AML", ("AML",), "cytogenetics"),
    # multiple myeloma
    Field("b2m", "float", "serum beta2-microglobulin", unit="mg/L", low=0.0, high=100.0,
          loinc="1952-1", diseases=("MM",), group="myeloma"),
    Field("albumin", "float", "serum albumin", unit="g/dL", low=0.5, high=7.0, loinc="1751-7",
          diseases=("MM",), group="myeloma"),
    Field("ldh", "float", "serum lactate dehydrogenase", unit="U/L", low=0.0, high=20000.0,
          loinc="2532-0", group="myeloma"),
    Field("ldh_uln", "float", "upper limit of normal of the site's LDH assay", unit="U/L",
          low=50.0, high=1000.0, group="myeloma"),
    _flag("t_4_14", "FISH t(4;14)", ("MM",), "myeloma"),
    _flag("t_14_16", "FISH t(14;16)", ("MM",), "myeloma"),
    _flag("gain1q", "FISH 1q gain/amplification", ("MM",), "myeloma"),
    # sickle cell disease
    Field("scd_genotype", "category", "sickle cell genotype", categories=SCD_GENOTYPES,
          diseases=("SCD",), group="scd"),
    Field("hbf", "float", "foetal haemoglobin", unit="%", low=0.0, high=100.0, loinc="4576-5",
          diseases=("SCD",), group="scd"),
    Field("tcd_velocity", "float", "transcranial Doppler time-averaged mean maximum velocity",
          unit="cm/s", low=0.0, high=400.0, diseases=("SCD",), group="scd"),
    Field("trv", "float", "tricuspid regurgitant jet velocity", unit="m/s", low=0.0, high=7.0,
          diseases=("SCD",), group="scd"),
    Field("nt_probnp", "float", "NT-proBNP", unit="pg/mL", low=0.0, high=100000.0,
          loinc="33762-6", diseases=("SCD",), group="scd"),
    Field("crp", "float", "C-reactive protein", unit="mg/L", low=0.0, high=500.0,
          loinc="1988-5", diseases=("SCD",), group="scd"),
    Field("microalbuminuria", "float", "urine albumin/creatinine ratio", unit="mg/g", low=0.0,
          high=10000.0, loinc="14959-1", diseases=("SCD",), group="scd"),
    _flag("silent_infarct", "silent cerebral infarct on brain MRI (radiology read)", ("SCD",),
          "scd"),
    # treatments and responses
    _flag("hma", "treated with a hypomethylating agent", MYELOID, "treatment"),
    _flag("lenalidomide", "treated with lenalidomide", ("MDS", "MM"), "treatment"),
    _flag("chemotherapy", "treated with intensive chemotherapy", ALL, "treatment"),
    _flag("transplant", "received allogeneic or autologous stem-cell transplant", ALL, "treatment"),
    _flag("hydroxyurea", "treated with hydroxyurea", ("SCD",), "treatment"),
    Field("response", "category", "best response to first-line treatment", categories=RESPONSES,
          group="treatment"),
    # outcomes
    *_outcome("os", "death from any cause"),
    *_outcome("lfs", "AML transformation or death", MYELOID),
    *_outcome("amlt", "transformation to AML", ("MDS",)),
    *_outcome("relapse", "relapse or progression"),
]

FIELDS: dict[str, Field] = {f.name: f for f in _FIELDS}
if len(FIELDS) != len(_FIELDS):  # pragma: no cover - guards edits to the table above
    raise RuntimeError("duplicate field name in the cohort schema")

OUTCOMES: dict[str, tuple[str, str]] = {
    stem: (f"{stem}_time", f"{stem}_status") for stem in ("os", "lfs", "amlt", "relapse")
}


@dataclass(frozen=True)
class Vocabulary:
    """A code system used by the schema (for exports and documentation)."""

    name: str
    system: str
    examples: dict[str, str] = field(default_factory=dict)


LOINC = Vocabulary("LOINC", "http://loinc.org")
HGNC = Vocabulary("HGNC", "http://www.genenames.org")
HPO = Vocabulary("HPO", "http://purl.obolibrary.org/obo/hp.owl")
ICD10 = Vocabulary("ICD-10", "http://hl7.org/fhir/sid/icd-10")
MONDO = Vocabulary("MONDO", "http://purl.obolibrary.org/obo/mondo.owl")

DISEASE_CODES: dict[str, tuple[str, str, str]] = {
    # disease -> (ICD-10, MONDO id, label)
    "MDS": ("D46.9", "MONDO:0018881", "myelodysplastic syndrome"),
    "AML": ("C92.0", "MONDO:0018874", "acute myeloid leukemia"),
    "MM": ("C90.0", "MONDO:0009693", "multiple myeloma"),
    "SCD": ("D57.1", "MONDO:0011382", "sickle cell disease"),
}

LOINC_TO_FIELD: dict[str, str] = {f.loinc: f.name for f in _FIELDS if f.loinc}


def fields_for(disease: str) -> list[Field]:
    """Fields that apply to a disease, in schema order."""
    if disease not in DISEASES:
        raise ValueError(f"unknown disease {disease!r}; expected one of {', '.join(DISEASES)}")
    return [f for f in _FIELDS if disease in f.diseases]


# ------------------------------------------------------------------ human labels (reports, plots)

# Short labels a clinician reads; units come from the field. A field not listed here is shown
# with its description. Derived score columns (hemafed.study.derived) are labelled here too.
LABELS: dict[str, str] = {
    "age": "Age", "sex": "Sex", "hb": "Haemoglobin", "plt": "Platelets",
    "anc": "Neutrophils (ANC)", "wbc": "White cells", "mono": "Monocytes",
    "bm_blast": "Marrow blasts", "pb_blast": "Blood blasts",
    "ring_sideroblasts": "Ring sideroblasts", "cyto_ipssr": "IPSS-R cytogenetic risk",
    "b2m": "Beta2-microglobulin", "albumin": "Albumin", "ldh": "LDH", "hbf": "Foetal Hb",
    "scd_genotype": "Sickle genotype", "response": "Best response",
    "os_time": "Overall survival time", "os_status": "Death",
    "lfs_time": "Leukaemia-free survival time", "lfs_status": "AML or death",
    "amlt_time": "Time to AML transformation", "amlt_status": "AML transformation",
    "relapse_time": "Time to relapse", "relapse_status": "Relapse",
    "ipssm_category": "IPSS-M risk category", "ipssm_score": "IPSS-M score",
    "ipssr_category": "IPSS-R risk category", "ipssr_score": "IPSS-R score",
    "eln2022_category": "ELN 2022 risk", "eln2022_score": "ELN 2022 score",
    "riss_category": "R-ISS stage", "riss_score": "R-ISS score",
}


def label(name: str, *, unit: bool = True) -> str:
    """A human label for a column, design term or gene term, e.g. ``"Haemoglobin (g/dL)"``.

    >>> label("hb"), label("gene:TP53"), label("cyto_ipssr[Good]")
    ('Haemoglobin (g/dL)', 'TP53 mutated', 'IPSS-R cytogenetic risk: Good')
    """
    if name.startswith("gene:"):
        return f"{name[5:]} mutated"
    if name.endswith("]") and "[" in name:  # a level of a categorical design term
        column, level = name[:-1].split("[", 1)
        return f"{label(column, unit=False)}: {level}"
    f = FIELDS.get(name)
    text = LABELS.get(name) or (f.description[:1].upper() + f.description[1:] if f else name)
    if unit and f is not None and f.unit:
        text += f" ({f.unit.replace('10^9/L', '×10⁹/L')})"
    return text
