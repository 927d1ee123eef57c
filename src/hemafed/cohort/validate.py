"""Validation of a cohort: every problem at once, each with row, column and reason; no coercion.

Validation either returns a well-typed :class:`~hemafed.cohort.model.Cohort` or raises
:class:`~hemafed.errors.ValidationFailed` listing all problems found. Values are never clipped or
guessed: a haemoglobin of 150 "g/dL" is reported (with the hint that it looks like g/L), not
divided by ten. Row numbers are 1-based data rows of the source table.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from hemafed.cohort import genes as gene_vocab
from hemafed.cohort.model import (
    _MUTATION_DTYPES,
    MUTATION_COLUMNS,
    PANEL_COLUMN,
    Cohort,
    canonical_dtype,
)
from hemafed.cohort.schema import FIELDS, OUTCOMES, Field
from hemafed.errors import Problem, ValidationFailed

_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f"}

# Hints for values that are out of range because of a likely unit mix-up.
_UNIT_HINTS: dict[str, tuple[float, str]] = {
    "hb": (10.0, "looks like g/L; map the column with unit 'g/L' to convert to g/dL"),
    "albumin": (10.0, "looks like g/L; map the column with unit 'g/L' to convert to g/dL"),
    "bm_blast": (100.0, "looks like a fraction; blasts are expected in %"),
    "os_time": (1 / 365.25, "looks like days; map the column with unit 'days'"),
}


def _text(col: pd.Series) -> pd.Series:
    """Column as nullable strings with surrounding whitespace removed (vectorised in Arrow)."""
    return col.astype("string[pyarrow]").str.strip().astype("string")


def _problems_where(mask: np.ndarray, column: str, reasons: Iterable[str],
                    ids: pd.Series) -> list[Problem]:
    rows = np.flatnonzero(mask)
    return [Problem(int(r) + 1, column, reason, _pid(ids, int(r))) for r, reason in zip(rows, reasons, strict=True)]


def _pid(ids: pd.Series, r: int) -> str | None:
    v = ids.iloc[r]
    return None if pd.isna(v) else str(v)


def _parse_bool(col: pd.Series, name: str, ids: pd.Series) -> tuple[pd.Series, list[Problem]]:
    if pd.api.types.is_bool_dtype(col):
        return col.astype("boolean"), []
    if pd.api.types.is_numeric_dtype(col):
        ok = col.isna() | col.isin([0, 1])
        bad = ~ok.to_numpy(dtype=bool)
        reasons = [f"expected 0/1 (or true/false), got {v!r}" for v in col[bad]]
        out = col.where(ok).astype("Float64").astype("boolean")
        return out, _problems_where(bad, name, reasons, ids)
    text = _text(col).str.lower()
    is_true = text.isin(_TRUE).fillna(False).to_numpy(dtype=bool)
    is_false = text.isin(_FALSE).fillna(False).to_numpy(dtype=bool)
    missing = text.isna().to_numpy() | (text == "").fillna(False).to_numpy(dtype=bool)
    bad = ~(is_true | is_false | missing)
    out = pd.Series(pd.array([pd.NA] * len(col), dtype="boolean"), index=col.index)
    out[is_true] = True
    out[is_false] = False
    reasons = [f"expected 0/1 (or true/false), got {v!r}" for v in col[bad]]
    return out, _problems_where(bad, name, reasons, ids)


def _parse_numeric(col: pd.Series, f: Field, ids: pd.Series) -> tuple[pd.Series, list[Problem]]:
    problems: list[Problem] = []
    if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
        num = col.astype("Float64")
    else:
        text = _text(col)
        num = pd.to_numeric(text.replace("", pd.NA), errors="coerce").astype("Float64")
        bad = (num.isna() & text.notna() & (text != "")).to_numpy(dtype=bool)
        reasons = [f"expected a number{_unit(f)}, got {v!r}" for v in col[bad]]
        problems += _problems_where(bad, f.name, reasons, ids)
    finite = num.notna().to_numpy(dtype=bool)
    vals = num.to_numpy(dtype=float, na_value=np.nan)
    nonfinite = finite & ~np.isfinite(vals)
    problems += _problems_where(nonfinite, f.name, ["value is not finite"] * int(nonfinite.sum()),
                                ids)
    with np.errstate(invalid="ignore"):
        low = finite & (vals < f.low) if f.low is not None else np.zeros(len(vals), bool)
        high = finite & (vals > f.high) if f.high is not None else np.zeros(len(vals), bool)
    for mask, side in ((low, "below"), (high, "above")):
        if mask.any():
            reasons = [_range_reason(f, v, side) for v in vals[mask]]
            problems += _problems_where(mask, f.name, reasons, ids)
    if f.kind == "int":
        frac = finite & np.isfinite(vals) & (np.mod(vals, 1) != 0)
        problems += _problems_where(frac, f.name, ["expected a whole number"] * int(frac.sum()),
                                    ids)
        if not frac.any():
            num = num.astype("Int64")
    return num, problems


def _unit(f: Field) -> str:
    return f" in {f.unit}" if f.unit else ""


def _range_reason(f: Field, v: float, side: str) -> str:
    bound = f.low if side == "below" else f.high
    reason = f"{v:g}{_unit(f)} is {side} the plausible {'minimum' if side == 'below' else 'maximum'} {bound:g}"
    hint = _UNIT_HINTS.get(f.name)
    if hint is not None and side == "above" and f.high is not None and v / hint[0] <= f.high:
        reason += f" ({hint[1]})"
    return reason


def _parse_category(col: pd.Series, f: Field, ids: pd.Series) -> tuple[pd.Series, list[Problem]]:
    text = _text(col)
    text = text.mask(text == "")
    ok = text.isna() | text.isin(f.categories)
    bad = ~ok.to_numpy(dtype=bool)
    allowed = ", ".join(f.categories)
    reasons = [f"unknown value {v!r}; expected one of: {allowed}" for v in col[bad]]
    return text, _problems_where(bad, f.name, reasons, ids)


def _parse_column(col: pd.Series, f: Field, ids: pd.Series) -> tuple[pd.Series, list[Problem]]:
    if f.kind == "bool":
        return _parse_bool(col, f.name, ids)
    if f.kind in ("float", "int"):
        return _parse_numeric(col, f, ids)
    if f.kind == "category":
        return _parse_category(col, f, ids)
    text = _text(col)
    return text.mask(text == ""), []


def _check_patients(raw: pd.DataFrame, panels: Mapping[str, tuple[str, ...]]) -> tuple[pd.DataFrame, list[Problem]]:
    problems: list[Problem] = []
    unknown = [c for c in raw.columns if c not in FIELDS and c != PANEL_COLUMN]
    problems += [Problem(None, c, "unknown column; map it to a schema field or drop it")
                 for c in unknown]
    for name, f in FIELDS.items():
        if f.required and name not in raw.columns:
            problems.append(Problem(None, name, "required column is missing"))
    if "patient_id" not in raw.columns:
        return raw, problems
    ids = _text(raw["patient_id"])
    out: dict[str, pd.Series] = {}
    for c in raw.columns:
        if c in unknown:
            continue
        if c == PANEL_COLUMN:
            panel = _text(raw[c])
            panel = panel.mask(panel == "")
            bad = (panel.notna() & ~panel.isin(list(panels))).to_numpy(dtype=bool)
            reasons = [f"panel {v!r} is not declared; declared panels: {sorted(panels)}"
                       for v in panel[bad]]
            problems += _problems_where(bad, c, reasons, ids)
            out[c] = panel
            continue
        parsed, col_problems = _parse_column(raw[c], FIELDS[c], ids)
        out[c] = parsed
        problems += col_problems
    df = pd.DataFrame(out, index=raw.index)

    missing_id = ids.isna() | (ids == "")
    problems += _problems_where(missing_id.fillna(True).to_numpy(dtype=bool), "patient_id",
                                ["patient identifier is empty"] * int(missing_id.fillna(True).sum()), ids)
    dup = ids.duplicated(keep=False) & ~missing_id.fillna(True)
    if dup.any():
        first_row = {pid: i + 1 for i, pid in reversed(list(enumerate(ids))) if not pd.isna(pid)}
        reasons = [f"duplicate patient identifier (also on row {first_row[v]})" for v in ids[dup]]
        problems += _problems_where(dup.to_numpy(dtype=bool), "patient_id", reasons, ids)
    if "disease" in df:
        missing_disease = df["disease"].isna().to_numpy(dtype=bool)
        problems += _problems_where(missing_disease, "disease",
                                    ["disease is required"] * int(missing_disease.sum()), ids)
    problems += _check_outcomes(df, ids)
    problems += _check_disease_fields(df, ids)
    return df, problems


def _check_outcomes(df: pd.DataFrame, ids: pd.Series) -> list[Problem]:
    problems: list[Problem] = []
    for stem, (tcol, scol) in OUTCOMES.items():
        if scol in df and tcol not in df:
            problems.append(Problem(None, tcol, f"{scol} is given but {tcol} is missing"))
            continue
        if tcol not in df or scol not in df:
            continue
        event_no_time = (df[scol].fillna(False) & df[tcol].isna()).to_numpy(dtype=bool)
        problems += _problems_where(event_no_time, tcol,
                                    [f"{stem} event recorded without a time"] * int(event_no_time.sum()), ids)
        time_no_status = (df[tcol].notna() & df[scol].isna()).to_numpy(dtype=bool)
        problems += _problems_where(time_no_status, scol,
                                    [f"{stem} time given without a status (1 event, 0 censored)"] * int(time_no_status.sum()), ids)
    if "os_time" in df:
        for other in ("lfs_time", "amlt_time"):
            if other in df:
                later = (df[other] > df["os_time"] + 1e-9).fillna(False).to_numpy(dtype=bool)
                problems += _problems_where(later, other,
                                            [f"{other} is after os_time (follow-up ends at death or last contact)"] * int(later.sum()), ids)
    return problems


def _check_disease_fields(df: pd.DataFrame, ids: pd.Series) -> list[Problem]:
    if "disease" not in df:
        return []
    problems: list[Problem] = []
    disease = df["disease"]
    for c in df.columns:
        f = FIELDS.get(c)
        if f is None or f.diseases == tuple(FIELDS["disease"].categories):
            continue
        wrong = (df[c].notna() & disease.notna() & ~disease.isin(f.diseases)).to_numpy(dtype=bool)
        if wrong.any():
            reasons = [f"{c} applies to {'/'.join(f.diseases)} only, not {d}" for d in disease[wrong]]
            problems += _problems_where(wrong, c, reasons, ids)
    return problems


def _check_mutations(raw: pd.DataFrame, patient_ids: pd.Series, panels: Mapping[str, tuple[str, ...]],
                     panel_of: pd.Series, extra_genes: frozenset[str]) -> tuple[pd.DataFrame, list[Problem]]:
    problems: list[Problem] = []
    unknown_cols = [c for c in raw.columns if c not in MUTATION_COLUMNS]
    problems += [Problem(None, f"mutations.{c}", "unknown mutation column") for c in unknown_cols]
    for c in ("patient_id", "gene"):
        if c not in raw.columns:
            problems.append(Problem(None, f"mutations.{c}", "required mutation column is missing"))
    if problems:
        return raw, problems
    out = pd.DataFrame(index=raw.index)
    for c in MUTATION_COLUMNS:
        if c not in raw.columns:
            out[c] = pd.Series(pd.NA, index=raw.index, dtype=_MUTATION_DTYPES[c])
            continue
        if _MUTATION_DTYPES[c] in ("Float64", "Int64"):
            num = pd.to_numeric(raw[c], errors="coerce")
            bad = (num.isna() & raw[c].notna()).to_numpy(dtype=bool)
            problems += [Problem(int(r) + 1, f"mutations.{c}", f"expected a number, got {raw[c].iloc[r]!r}")
                         for r in np.flatnonzero(bad)]
            out[c] = num.astype(_MUTATION_DTYPES[c]) if not bad.any() else num.astype("Float64")
        else:
            text = _text(raw[c])
            out[c] = text.mask(text == "")
    gene = out["gene"]
    known = gene.isin(list(gene_vocab.KNOWN | extra_genes)).fillna(False).to_numpy(dtype=bool)
    for r in np.flatnonzero(~known):
        problems.append(Problem(int(r) + 1, "mutations.gene",
                                f"unknown gene symbol {gene.iloc[r]!r} (HGNC approved symbols expected)",
                                str(out["patient_id"].iloc[r])))
    vaf = out["vaf"].astype("Float64")
    bad_vaf = ((vaf < 0) | (vaf > 1)).fillna(False).to_numpy(dtype=bool)
    for r in np.flatnonzero(bad_vaf):
        hint = " (looks like a percentage; VAF is a fraction 0-1)" if vaf.iloc[r] <= 100 else ""
        problems.append(Problem(int(r) + 1, "mutations.vaf", f"VAF {vaf.iloc[r]:g} outside 0-1{hint}",
                                str(out["patient_id"].iloc[r])))
    known_ids = set(patient_ids.dropna())
    orphan = ~out["patient_id"].isin(list(known_ids)).fillna(False).to_numpy(dtype=bool)
    for r in np.flatnonzero(orphan):
        problems.append(Problem(int(r) + 1, "mutations.patient_id",
                                f"mutation for patient {out['patient_id'].iloc[r]!r} who is not in the patient table"))
    if panels:
        problems += _check_mutations_on_panel(out, ~orphan & known, patient_ids, panel_of, panels)
    return out.reset_index(drop=True), problems


def _check_mutations_on_panel(muts: pd.DataFrame, candidates: np.ndarray, patient_ids: pd.Series,
                              panel_of: pd.Series, panels: Mapping[str, tuple[str, ...]]) -> list[Problem]:
    """Each mutation must be in a gene on its patient's panel (vectorised: one merge, no loop)."""
    pairs = pd.DataFrame({"panel": [p for p, gs in panels.items() for _ in gs],
                          "gene": [g for gs in panels.values() for g in gs], "on_panel": True})
    panel_by_patient = pd.Series(panel_of.to_numpy(), index=patient_ids.to_numpy())
    panel_by_patient = panel_by_patient[~panel_by_patient.index.duplicated()]
    rows = pd.DataFrame({"row": np.flatnonzero(candidates),
                         "patient_id": muts["patient_id"].to_numpy()[candidates],
                         "gene": muts["gene"].to_numpy()[candidates]})
    rows["panel"] = rows["patient_id"].map(panel_by_patient).to_numpy()
    merged = rows.merge(pairs, on=["panel", "gene"], how="left")
    bad = merged[merged["on_panel"].isna()]
    problems: list[Problem] = []
    for r, pid, g, pan in zip(bad["row"], bad["patient_id"], bad["gene"], bad["panel"], strict=True):
        reason = (f"mutation in {g} for a patient with no sequencing panel" if pd.isna(pan)
                  else f"{g} is not on panel {pan!r}")
        problems.append(Problem(int(r) + 1, "mutations.gene", reason, str(pid)))
    return problems


def validate_cohort(
    patients: pd.DataFrame,
    mutations: pd.DataFrame | None = None,
    panels: Mapping[str, Iterable[str]] | None = None,
    *,
    source: str = "cohort",
    extra_genes: Iterable[str] = (),
) -> Cohort:
    """Check and type a cohort; return it, or raise ``ValidationFailed`` with every problem."""
    if not isinstance(patients, pd.DataFrame):
        raise TypeError(f"patients must be a pandas DataFrame, got {type(patients).__name__}")
    extra = frozenset(extra_genes)
    panel_map: dict[str, tuple[str, ...]] = {}
    problems: list[Problem] = []
    for name, genes in (panels or {}).items():
        glist = tuple(dict.fromkeys(str(g) for g in genes))
        bad = [g for g in glist if not gene_vocab.is_known(g, extra)]
        if bad:
            problems.append(Problem(None, PANEL_COLUMN, f"panel {name!r} lists unknown gene symbol(s): {', '.join(bad)}"))
        panel_map[str(name)] = glist
    raw = patients.reset_index(drop=True)
    df, patient_problems = _check_patients(raw, panel_map)
    problems += patient_problems
    if mutations is not None and len(mutations.columns):
        ids = df["patient_id"] if "patient_id" in df else pd.Series(dtype="string")
        panel_of = df[PANEL_COLUMN] if PANEL_COLUMN in df else pd.Series(pd.NA, index=df.index)
        muts, mut_problems = _check_mutations(mutations.reset_index(drop=True), ids, panel_map,
                                              panel_of, extra)
        problems += mut_problems
    else:
        muts = None
    if problems:
        raise ValidationFailed(problems, source=source)
    ordered = [c for c in FIELDS if c in df.columns] + ([PANEL_COLUMN] if PANEL_COLUMN in df else [])
    df = df[ordered].astype({c: canonical_dtype(c) for c in ordered})
    if muts is None:
        return Cohort(df, panels=panel_map)
    return Cohort(df, muts, panel_map)
