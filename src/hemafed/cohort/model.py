"""The in-memory cohort: a patient table, a long mutation table and the gene panels sequenced.

A gene that was not on a patient's panel is *missing* for that patient, not wild-type; the derived
gene matrix (:meth:`Cohort.gene_matrix`) has 1 for mutated, 0 for sequenced and not mutated, and
NA for not sequenced.

>>> import pandas as pd
>>> from hemafed.cohort.validate import validate_cohort
>>> c = validate_cohort(
...     pd.DataFrame({"patient_id": ["p1", "p2"], "disease": ["MDS", "MDS"],
...                   "panel": ["myeloid", "myeloid"]}),
...     mutations=pd.DataFrame({"patient_id": ["p1"], "gene": ["TP53"], "vaf": [0.4]}),
...     panels={"myeloid": ("TP53", "SF3B1")})
>>> int(c.gene_matrix().loc["p2", "TP53"]), int(c.gene_matrix().loc["p1", "TP53"])
(0, 1)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from hemafed.cohort.schema import FIELDS

MUTATION_COLUMNS: tuple[str, ...] = ("patient_id", "gene", "vaf", "protein_change", "effect",
                                     "chrom", "pos", "ref", "alt", "depth")
"""Columns of the long mutation table; only ``patient_id`` and ``gene`` are required."""

PANEL_COLUMN = "panel"
"""Patient-table column naming the gene panel each patient was sequenced with (NA: none)."""


def _empty_mutations() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=_MUTATION_DTYPES[c]) for c in MUTATION_COLUMNS})


_MUTATION_DTYPES: dict[str, str] = {
    "patient_id": "string", "gene": "string", "vaf": "Float64", "protein_change": "string",
    "effect": "string", "chrom": "string", "pos": "Int64", "ref": "string", "alt": "string",
    "depth": "Int64",
}

_PANDAS_DTYPES: dict[str, str] = {
    "str": "string", "float": "Float64", "int": "Int64", "bool": "boolean", "category": "string",
}


def canonical_dtype(column: str) -> str:
    """The pandas dtype a patient-table column has in a validated cohort."""
    if column == PANEL_COLUMN:
        return "string"
    return _PANDAS_DTYPES[FIELDS[column].kind]


@dataclass(frozen=True)
class Cohort:
    """A validated, well-typed cohort. Build it with :func:`hemafed.cohort.validate.validate_cohort`
    (which checks every field and lists all problems at once).

    ``patients``: one row per patient, columns from :data:`hemafed.cohort.schema.FIELDS` plus
    ``panel``; ``mutations``: one row per variant; ``panels``: panel name -> genes sequenced.
    """

    patients: pd.DataFrame
    mutations: pd.DataFrame = field(default_factory=_empty_mutations)
    panels: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.patients)

    @property
    def ids(self) -> pd.Index:
        return pd.Index(self.patients["patient_id"].astype(str), name="patient_id")

    @property
    def genes(self) -> tuple[str, ...]:
        """Every gene sequenced on any panel or seen mutated, sorted."""
        genes: set[str] = set()
        for g in self.panels.values():
            genes.update(g)
        genes.update(self.mutations["gene"].dropna().astype(str))
        return tuple(sorted(genes))

    def gene_matrix(self, genes: Iterable[str] | None = None) -> pd.DataFrame:
        """Patients x genes: 1 mutated, 0 sequenced wild-type, NA not sequenced (nullable Int8)."""
        genes = tuple(genes) if genes is not None else self.genes
        n = len(self.patients)
        values = np.full((n, len(genes)), -1, dtype=np.int8)  # -1 marks "not sequenced"
        gene_pos = {g: j for j, g in enumerate(genes)}
        panel_col = self.patients.get(PANEL_COLUMN)
        if panel_col is not None:
            panel_names = panel_col.astype("string").fillna("")
            for name, sequenced in self.panels.items():
                rows = np.flatnonzero((panel_names == name).to_numpy())
                cols = np.array([gene_pos[g] for g in sequenced if g in gene_pos], dtype=np.intp)
                if len(rows) and len(cols):
                    values[np.ix_(rows, cols)] = 0
        row_of = {pid: i for i, pid in enumerate(self.ids)}
        muts = self.mutations
        if len(muts):
            r = muts["patient_id"].astype(str).map(row_of).to_numpy()
            c = muts["gene"].astype(str).map(gene_pos).to_numpy()
            ok = ~(pd.isna(r) | pd.isna(c))
            values[r[ok].astype(int), c[ok].astype(int)] = 1
        frame = pd.DataFrame(values, index=self.ids, columns=list(genes)).astype("Int8")
        return frame.mask(frame == -1)

    def numeric_column(self, column: str, kind: str = "") -> np.ndarray:
        """A numeric or boolean column as floats (NaN for missing); ``InvalidInput`` otherwise.

        ``kind`` names the column's role in messages (e.g. "outcome", "duration").
        """
        from hemafed.errors import InvalidInput

        what = f"{kind} column" if kind else "column"
        if column not in self.patients.columns:
            raise InvalidInput(f"{what} {column!r} is not in the site's cohort")
        s = self.patients[column]
        if not (pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)):
            raise InvalidInput(f"{what} {column!r} is not numeric (dtype {s.dtype})")
        return s.astype("Float64").to_numpy(dtype=float, na_value=np.nan)

    def select(self, mask: np.ndarray | pd.Series) -> Cohort:
        """A sub-cohort of the patients where ``mask`` is true (mutations follow)."""
        mask_arr = np.asarray(mask, dtype=bool)
        patients = self.patients.loc[mask_arr].reset_index(drop=True)
        keep = set(patients["patient_id"].astype(str))
        muts = self.mutations[self.mutations["patient_id"].astype(str).isin(keep)]
        used = set(patients[PANEL_COLUMN].dropna()) if PANEL_COLUMN in patients else set()
        panels = {k: v for k, v in self.panels.items() if k in used}
        return Cohort(patients, muts.reset_index(drop=True), panels)

    def summary(self) -> dict[str, object]:
        """Counts a data manager checks after an import (no patient-level values)."""
        p = self.patients
        out: dict[str, object] = {
            "patients": len(p),
            "diseases": {str(k): int(v) for k, v in p["disease"].value_counts().items()},
            "mutations": len(self.mutations),
            "panels": {k: len(v) for k, v in self.panels.items()},
        }
        present = [c for c in p.columns if c in FIELDS and c not in ("patient_id", "disease")]
        out["missing_fraction"] = {c: round(float(p[c].isna().mean()), 4) for c in present}
        return out
