"""Readers for the real public haematology cohorts used to validate hemafed.

- :func:`read_mds_ipssm`: the IPSS-M study cohort (Bernard et al., NEJM Evidence 2022; 2,957 MDS
  patients; repository papaemmelab/IPSSMstudy, folder ``data/``).
- :func:`read_aml_tazi`: the two AML cohorts of Tazi et al., Nat Commun 2022 (training 2,113 and
  validation 1,540 patients; repository papaemmelab/Tazi_NatureC_AML).

Each returns a :class:`PublicCohort`: the canonical, validated :class:`~hemafed.cohort.model.Cohort`,
a ``reference`` table of the published scores/classes that are not schema fields, and a ``report``
that accounts for every row.

Load policy (for public research files only; site intake refuses invalid data instead): a value
that fails validation (out of plausible range, unknown category, inconsistent outcome) is set to NA
and counted in ``report`` under ``"<column>: <problem>; set to NA"``; a mutation row that cannot be
loaded is left out and counted; a patient row is never dropped unless it has no usable identifier,
and then it is counted too. ``report["rows_read"] == report["patients_loaded"] +
report["patient rows dropped"]`` always holds. Paths are parameters; files are read, never copied.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from hemafed.cohort import genes as gene_vocab
from hemafed.cohort.model import PANEL_COLUMN, Cohort
from hemafed.cohort.validate import validate_cohort
from hemafed.errors import InvalidInput, ValidationFailed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PublicCohort:
    """A public cohort in the canonical model, its published reference values and its load report.

    ``reference`` is indexed by ``patient_id`` (the same identifiers as ``cohort``); ``report``
    maps a row-count kind (``rows_read``, ``patients_loaded``, problem kinds ...) to a count.
    """

    cohort: Cohort
    reference: pd.DataFrame
    report: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ids = set(self.cohort.ids)
        if not set(map(str, self.reference.index)) <= ids:
            raise ValueError("PublicCohort: reference rows must belong to patients of the cohort")
        read = self.report.get("rows_read")
        if read is not None and read != len(self.cohort) + self.report.get(
                "patient rows dropped", 0):
            raise ValueError("PublicCohort: report does not account for every row read")


# ---------------------------------------------------------------------------------------------
# Shared load-with-repair


def _problem_kind(column: str, reason: str) -> str:
    if "is after os_time" in reason:
        what = "after os_time"
    elif "plausible" in reason:
        what = "outside the plausible range"
    elif reason.startswith("expected a number"):
        what = "not a number"
    elif reason.startswith("unknown value"):
        what = "unknown category"
    elif reason.startswith("expected 0/1"):
        what = "not 0/1"
    elif "without a time" in reason or "without a status" in reason:
        what = "incomplete outcome"
    else:
        what = reason
    return f"{column}: {what}; set to NA"


_OUTCOME_PAIRS = {"os_time": "os_status", "lfs_time": "lfs_status", "amlt_time": "amlt_status",
                  "relapse_time": "relapse_status"}
_OUTCOME_PAIRS.update({v: k for k, v in list(_OUTCOME_PAIRS.items())})


def _load_repairing(patients: pd.DataFrame, mutations: pd.DataFrame,
                    panels: Mapping[str, Iterable[str]], source: str,
                    report: Counter[str]) -> Cohort:
    """Validate; set each offending value to NA (or drop the mutation row) and count it; repeat."""
    patients = patients.reset_index(drop=True).copy()
    mutations = mutations.reset_index(drop=True).copy()
    for _ in range(4):
        try:
            return validate_cohort(patients, mutations, panels, source=source)
        except ValidationFailed as failed:
            drop_patients: set[int] = set()
            drop_mutations: set[int] = set()
            for p in failed.problems:
                col = p.column or ""
                if p.row is None:
                    raise  # a structural problem of the reader itself, not of a value
                if col.startswith("mutations."):
                    drop_mutations.add(p.row - 1)
                    report[f"mutation rows not loaded: {_mutation_kind(p.reason)}"] += 1
                elif col == "patient_id":
                    drop_patients.add(p.row - 1)
                    report["patient rows dropped"] += 1
                    report[f"patient rows dropped: {p.reason.split(' (')[0]}"] += 1
                else:
                    report[_problem_kind(col, p.reason)] += 1
                    for c in (col, _OUTCOME_PAIRS.get(col)):
                        if c is not None and c in patients:
                            patients.loc[p.row - 1, c] = None
            if drop_mutations:
                mutations = mutations.drop(index=list(drop_mutations)).reset_index(drop=True)
            if drop_patients:
                gone = set(patients.loc[list(drop_patients), "patient_id"].astype(str))
                patients = patients.drop(index=list(drop_patients)).reset_index(drop=True)
                orphan = mutations["patient_id"].astype(str).isin(gone)
                report["mutation rows not loaded: patient row dropped"] += int(orphan.sum())
                mutations = mutations.loc[~orphan].reset_index(drop=True)
    raise InvalidInput(f"{source}: values still fail validation after setting offending values "
                       "to NA; please report this as a bug in hemafed.cohort.public")


def _mutation_kind(reason: str) -> str:
    if "not on panel" in reason:
        return "gene not on the patient's panel"
    if "unknown gene" in reason:
        return "unknown gene symbol"
    if "not in the patient table" in reason:
        return "patient not in the clinical table"
    if "VAF" in reason:
        return "VAF outside 0-1"
    return reason


def _canonical_gene(symbol: str) -> str:
    return gene_vocab.ALIASES.get(symbol, symbol)


# ---------------------------------------------------------------------------------------------
# MDS: IPSS-M study cohort

_MDS_NUMERIC = {"AGE": "age", "BM_BLAST": "bm_blast", "PB_BLAST": "pb_blast", "WBC": "wbc",
                "ANC": "anc", "MONOCYTES": "mono", "HB": "hb", "PLT": "plt",
                "RINGED_SIDEROBLASTS": "ring_sideroblasts"}
_MDS_OUTCOMES = {"OS": "os", "LFS": "lfs", "AMLt": "amlt"}
_MDS_TREATMENTS = {"hma": "hma", "lenalidomid": "lenalidomide", "chemotherapy": "chemotherapy",
                   "transplant": "transplant"}
_CYTO_IPSSR = {"Very-Good": "Very Good", "Very Good": "Very Good", "Good": "Good",
               "Int": "Intermediate", "Intermediate": "Intermediate", "Poor": "Poor",
               "Very-Poor": "Very Poor", "Very Poor": "Very Poor"}
_MDS_DERIVED = ("TP53mono", "TP53multi", "TET2bi", "TET2other")
_MDS_REFERENCE = ("IPSSR", "IPSSR_SCORE", "IPSSRA", "IPSSRA_SCORE", "IPSSM", "IPSSM_SCORE")
MDS_PANEL = "ipssm-study"
"""Panel name of the IPSS-M study's targeted sequencing (the genes of ``df_mut.tsv``)."""


def _read_tsv(path: Path, **kw: object) -> pd.DataFrame:
    if not path.is_file():
        raise InvalidInput(f"{path}: file not found; point the reader at the folder holding the "
                           "downloaded cohort files")
    return pd.read_csv(path, sep="\t", **kw)  # type: ignore[call-overload, no-any-return]


def read_mds_ipssm(path: str | Path) -> PublicCohort:
    """Read the IPSS-M study cohort folder (df_clinical.tsv, maf.tsv, df_mut.tsv, df_cna.tsv).

    Mapping: blood counts and blasts as published (g/dL, 10^9/L, %); ``CYTO_IPSSR`` to the schema's
    categories; ``complex`` from the ``complex`` column; del(5q)/-5, -7/del(7q) and
    -17/del(17p)/i(17q) from ``df_cna.tsv`` (and ``chr17`` del/iso17q) -- all NA when a patient has
    neither a karyotype, an IPSS-R cytogenetic category nor a copy-number call; ``MDS_TYPE``
    s_t_MDS -> secondary. Mutations come from ``maf.tsv``; MLL with effect PTD becomes ``MLL_PTD``
    and FLT3 with effect ITD ``FLT3_ITD`` (as in the IPSS-M model); legacy symbols go through
    :data:`hemafed.cohort.genes.ALIASES`. Every patient was sequenced with the study panel
    (:data:`MDS_PANEL`, the gene columns of ``df_mut.tsv`` without the derived TP53/TET2 columns).
    """
    folder = Path(path)
    clinical = _read_tsv(folder / "df_clinical.tsv", dtype={"ID": str})
    maf = _read_tsv(folder / "maf.tsv", dtype={"ID": str, "CHR": str})
    mut_matrix = _read_tsv(folder / "df_mut.tsv", dtype={"ID": str}, nrows=0)
    cna = _read_tsv(folder / "df_cna.tsv", dtype={"ID": str}).set_index("ID")
    report: Counter[str] = Counter()
    report["rows_read"] = len(clinical)
    report["maf_rows_read"] = len(maf)
    ids = clinical["ID"].astype("string").str.strip()
    pat = pd.DataFrame({"patient_id": ids, "disease": "MDS"})
    sex = clinical["SEX"].astype("string").str.strip().str.upper()
    pat["sex"] = sex
    for src, dst in _MDS_NUMERIC.items():
        pat[dst] = clinical[src]
    pat["who2016"] = clinical["WHO_2016"]
    pat["secondary"] = clinical["MDS_TYPE"].map({"s_t_MDS": True, "primary": False}).astype(
        "boolean")
    pat["karyotype"] = clinical["CYTOGENETICS"]
    cyto_raw = clinical["CYTO_IPSSR"].astype("string").str.strip()
    pat["cyto_ipssr"] = cyto_raw.map(lambda v: _CYTO_IPSSR.get(v, v) if pd.notna(v) else v)
    cna_rows = cna.reindex(ids.astype(str))

    def cna_any(*cols: str) -> pd.Series:
        present = [c for c in cols if c in cna_rows]
        return (cna_rows[present].fillna(0).sum(axis=1) > 0).reset_index(drop=True)

    chr17 = clinical.get("chr17")
    chr17_del = (chr17.isin(["del", "iso17q"]) if chr17 is not None
                 else pd.Series(False, index=clinical.index))
    flags = {
        "del5q": cna_any("del5q", "del5"),
        "del7_7q": cna_any("del7", "del7q"),
        "del17_17p": cna_any("del17p", "del17", "iso17q") | chr17_del.to_numpy(),
        "complex": (clinical["complex"] == "complex").reset_index(drop=True),
    }
    no_cyto = (clinical["CYTOGENETICS"].isna() & cyto_raw.isna()
               & (cna_rows.fillna(0).sum(axis=1) == 0).to_numpy()).to_numpy(dtype=bool)
    report["cytogenetic flags unknown (no karyotype, category or copy-number call); set to NA"] \
        = int(no_cyto.sum())
    missing_cna = cna_rows.isna().all(axis=1).to_numpy(dtype=bool)
    if missing_cna.any():
        report["patients without a df_cna.tsv row"] = int(missing_cna.sum())
    for name, values in flags.items():
        pat[name] = pd.Series(values.to_numpy(dtype=bool), dtype="boolean").mask(no_cyto)
    for src, stem in _MDS_OUTCOMES.items():
        pat[f"{stem}_time"] = clinical[f"{src}_YEARS"]
        pat[f"{stem}_status"] = clinical[f"{src}_STATUS"]
    for src, dst in _MDS_TREATMENTS.items():
        pat[dst] = clinical[src]
    genes = [c for c in mut_matrix.columns if c != "ID" and c not in _MDS_DERIVED]
    panel_genes = tuple(dict.fromkeys(_canonical_gene(g) for g in genes))
    pat[PANEL_COLUMN] = MDS_PANEL

    effect = maf["EFFECT"].astype("string")
    gene = maf["GENE"].astype("string").map(_canonical_gene)
    gene = gene.mask((maf["GENE"] == "MLL") & (effect == "PTD"), "MLL_PTD")
    gene = gene.mask((maf["GENE"] == "FLT3") & (effect == "ITD"), "FLT3_ITD")
    muts = pd.DataFrame({
        "patient_id": maf["ID"].astype("string").str.strip(), "gene": gene,
        "vaf": maf["VAF"], "protein_change": maf["PROTEIN_CHANGE"], "effect": effect,
        "chrom": maf["CHR"], "pos": maf["START"], "ref": maf["REF"], "alt": maf["ALT"],
        "depth": maf["DEPTH"],
    })
    report["mutation rows without VAF (kept, VAF NA)"] = int(muts["vaf"].isna().sum())
    cohort = _load_repairing(pat, muts, {MDS_PANEL: panel_genes}, f"{folder}", report)
    report["patients_loaded"] = len(cohort)
    report["mutations_loaded"] = len(cohort.mutations)
    report.setdefault("patient rows dropped", 0)
    reference = clinical.loc[:, ["ID", *_MDS_REFERENCE]].rename(columns={"ID": "patient_id"})
    reference = reference[reference["patient_id"].isin(set(cohort.ids))].set_index("patient_id")
    log.info("read MDS IPSS-M cohort from %s: %d patients, %d mutations", folder, len(cohort),
             len(cohort.mutations))
    return PublicCohort(cohort, reference, dict(report))


# ---------------------------------------------------------------------------------------------
# AML: Tazi et al. 2022

_AML_FILES = {"training": "training_cohort.tsv", "validation": "validation_cohort.tsv"}
# Source gene column -> (gene, protein change, effect). Hotspot columns keep their codon.
_AML_GENE_COLUMNS: dict[str, tuple[str, str | None, str | None]] = {
    "ITD": ("FLT3_ITD", None, "ITD"),
    "FLT3_TKD": ("FLT3_TKD", None, None),
    "FLT3_other": ("FLT3", None, None),
    "CEBPA_bi": ("CEBPA", None, "biallelic"),
    "CEBPA_mono": ("CEBPA", None, "monoallelic"),
    "IDH2_p.R140": ("IDH2", "p.R140", "non_synonymous_codon"),
    "IDH2_p.R172": ("IDH2", "p.R172", "non_synonymous_codon"),
    "NRAS_p.G12_13": ("NRAS", "p.G12/G13", "non_synonymous_codon"),
    "NRAS_p.Q61_62": ("NRAS", "p.Q61/E62", "non_synonymous_codon"),
    "NRAS_other": ("NRAS", None, None),
    "U2AF1_p.S34": ("U2AF1", "p.S34", "non_synonymous_codon"),
    "U2AF1_p.Q157": ("U2AF1", "p.Q157", "non_synonymous_codon"),
    # Legacy MLL family names used by the validation cohort (HGNC renamed them to KMT2*).
    "MLL2": ("KMT2D", None, None),
    "MLL3": ("KMT2C", None, None),
    "MLL5": ("KMT2E", None, None),
}
_AML_CYTO = {"t(8;21)": "t_8_21", "inv(16)": "inv_16", "t(15;17)": "t_15_17",
             "t(9;11)": "t_9_11", "t(v;11)": "t_v_11", "t(6;9)": "t_6_9", "t(9;22)": "t_9_22",
             "inv(3)": "inv_3", "-5": "minus5", "-7": "minus7", "-17": "minus17",
             "complex": "complex"}
# Case-insensitive names of the clinical columns (training is lower case, validation capitalised).
_AML_CLINICAL = {"age": "age", "bm_blasts": "bm_blast", "wbc": "wbc", "hb": "hb", "plt": "plt"}
_AML_NON_GENE = re.compile(r"^(eln_2017.*|full_component.*|principal_component.*|princ_comp|"
                           r"final_component.*|overlap|[+-].*|t\(.*|inv\(.*|complex|"
                           r"others_transloc|ahd|perf_status|secondary|gender|age|bm_blasts|wbc|"
                           r"hb|plt|os|os_status)$", re.IGNORECASE)


def _read_r_table(path: Path) -> pd.DataFrame:
    """R ``write.table`` output: space separated, quoted header one field short (row names)."""
    if not path.is_file():
        raise InvalidInput(f"{path}: file not found; point the reader at the folder holding "
                           "training_cohort.tsv and validation_cohort.tsv")
    with path.open(encoding="utf-8") as fh:
        header = fh.readline()
        first = fh.readline()
    n_header = len(header.split())
    n_fields = len(first.split())
    if n_fields != n_header + 1:
        raise InvalidInput(f"{path}: expected R write.table format (data rows one field longer "
                           f"than the header), got {n_header} header and {n_fields} row fields")
    frame = pd.read_csv(path, sep=" ", quotechar='"', index_col=0)
    frame.index = frame.index.astype(str)
    frame.index.name = "patient_id"
    return frame


def read_aml_tazi(path: str | Path, which: str = "training") -> PublicCohort:
    """Read one of the two Tazi et al. 2022 AML cohorts (``which``: "training" or "validation").

    Gene columns are 0/1: each 1 becomes a mutation row without VAF (hotspot columns such as
    ``IDH2_p.R140`` keep their codon as protein change; ``ITD`` is ``FLT3_ITD``); the panel
    (``tazi2022-<which>``) is the set of gene columns present. Gene columns outside hemafed's gene
    vocabulary are left out of panel and mutations and counted in the report. Cytogenetic columns
    map to the schema flags; -5/-7/-17 also set del5q/del7_7q/del17_17p. ``gender`` 1 is read as
    male and 0 as female (the coding of the study's data; AML is male-predominant and so are the
    1s). ``secondary`` 2 (secondary AML) and 3 (therapy-related) set ``secondary``. ELN 2017 class
    and the study's genomic class (``princ_comp``) go to ``reference``.
    """
    if which not in _AML_FILES:
        raise InvalidInput(f"read_aml_tazi: which must be 'training' or 'validation', got {which!r}")
    file = Path(path) / _AML_FILES[which]
    raw = _read_r_table(file)
    lower = {c.lower(): c for c in raw.columns}
    report: Counter[str] = Counter()
    report["rows_read"] = len(raw)
    ids = pd.Series(raw.index, dtype="string").str.strip()
    pat = pd.DataFrame({"patient_id": ids, "disease": "AML"})
    for src, dst in _AML_CLINICAL.items():
        pat[dst] = raw[lower[src]].to_numpy()
    gender = raw[lower["gender"]].map({1: "M", 0: "F"})
    report["sex: not 0/1; set to NA"] = int((gender.isna() & raw[lower["gender"]].notna()).sum())
    pat["sex"] = gender.to_numpy()
    secondary = raw[lower["secondary"]].map({1: False, 2: True, 3: True})
    report["secondary: not 1/2/3; set to NA"] = int(
        (secondary.isna() & raw[lower["secondary"]].notna()).sum())
    pat["secondary"] = secondary.astype("boolean").to_numpy()
    for src, dst in _AML_CYTO.items():
        if src in raw:
            pat[dst] = raw[src].to_numpy()
    for src, dst in (("minus5", "del5q"), ("minus7", "del7_7q"), ("minus17", "del17_17p")):
        if src in pat:
            pat[dst] = pat[src]
    pat["os_time"] = raw[lower["os"]].to_numpy()
    pat["os_status"] = raw[lower["os_status"]].to_numpy()

    gene_cols = [c for c in raw.columns if not _AML_NON_GENE.match(c)]
    rows = []
    outside: Counter[str] = Counter()
    for col in gene_cols:
        gene, protein, effect = _AML_GENE_COLUMNS.get(col, (_canonical_gene(col), None, None))
        hit = raw[col].to_numpy()
        bad = ~np.isin(hit, [0, 1])
        if bad.any():
            report[f"mutations from {col}: not 0/1; not loaded"] += int(bad.sum())
        if not gene_vocab.is_known(gene):
            outside[col] += int((hit == 1).sum())
            continue
        for r in np.flatnonzero(hit == 1):
            rows.append((ids.iloc[r], gene, protein, effect))
    for col, count in sorted(outside.items()):
        report[f"mutations in {col} (outside the hemafed gene vocabulary); not loaded"] = count
    muts = pd.DataFrame(rows, columns=["patient_id", "gene", "protein_change", "effect"])
    panel_name = f"tazi2022-{which}"
    panel = tuple(dict.fromkeys(
        _AML_GENE_COLUMNS.get(c, (_canonical_gene(c), None, None))[0] for c in gene_cols
        if c not in outside))
    panel = tuple(g for g in panel if gene_vocab.is_known(g))
    pat[PANEL_COLUMN] = panel_name
    cohort = _load_repairing(pat, muts, {panel_name: panel}, str(file), report)
    report["patients_loaded"] = len(cohort)
    report["mutations_loaded"] = len(cohort.mutations)
    report.setdefault("patient rows dropped", 0)
    reference = pd.DataFrame({"eln_2017": _eln_labels(raw, lower),
                              "princ_comp": raw.get("princ_comp")}, index=raw.index)
    reference = reference[reference.index.isin(set(cohort.ids))]
    log.info("read AML Tazi %s cohort from %s: %d patients", which, file, len(cohort))
    return PublicCohort(cohort, reference, {k: int(v) for k, v in report.items() if v or
                                            k in ("patient rows dropped",)})


def _eln_labels(raw: pd.DataFrame, lower: Mapping[str, str]) -> pd.Series:
    """ELN 2017 class as text; the training file codes it 1/2/3, so read its one-hot columns."""
    col = raw[lower["eln_2017"]]
    if col.dtype == object:
        return col.astype("string")
    labels = pd.Series(pd.NA, index=raw.index, dtype="string")
    for name in ("favorable", "intermediate", "adverse"):
        onehot = f"eln_2017_{name}"
        if onehot in raw:
            labels = labels.mask(raw[onehot] == 1, name)
    return labels
