"""Derived columns a site computes locally before answering study queries.

Clinical scores are white boxes computed from the cohort at the site (hemafed.scores), so a study
can group or adjust by them (e.g. Kaplan-Meier by IPSS-M category) without any patient-level
score leaving the site. Derived columns are named ``<score>_score`` and ``<score>_category``.
"""

from __future__ import annotations

import logging

import pandas as pd

from hemafed.cohort.model import Cohort
from hemafed.scores.levels import DERIVED_LEVELS

__all__ = ["DERIVED_LEVELS", "with_derived_scores"]

log = logging.getLogger(__name__)


def with_derived_scores(cohort: Cohort) -> Cohort:
    """The cohort with score columns added for the diseases present (patients keep their order).

    A patient whose score cannot be computed (missing inputs) gets NA, and the failure is counted
    in the log, never the patient.
    """
    from hemafed import scores

    p = cohort.patients.copy()
    disease = p["disease"].astype("string")
    ids = p["patient_id"].astype(str)

    def put(name: str, mask: pd.Series, values: pd.DataFrame) -> None:
        if values.empty:
            return
        vals = values.reindex(ids[mask.to_numpy(dtype=bool)].to_numpy())
        for col, src in ((f"{name}_score", "value"), (f"{name}_category", "category")):
            if col not in p:
                p[col] = pd.Series(pd.NA, index=p.index, dtype="object")
            p.loc[mask.to_numpy(dtype=bool), col] = vals[src].to_numpy()

    mds = (disease == "MDS").fillna(False)
    if mds.any():
        sub = cohort.select(mds.to_numpy(dtype=bool))
        res = scores.ipssm(sub.patients, genes=sub.gene_matrix(), mutations=sub.mutations)
        put("ipssm", mds, res.values)
        put("ipssr", mds, scores.ipssr(sub.patients).values)
        if len(res.errors):
            log.info("IPSS-M not computable for %d patient(s)", res.errors["patient_id"].nunique())
    aml = (disease == "AML").fillna(False)
    if aml.any():
        sub = cohort.select(aml.to_numpy(dtype=bool))
        put("eln2022", aml, scores.eln2022(sub.patients, genes=sub.gene_matrix()).values)
    mm = (disease == "MM").fillna(False)
    if mm.any():
        sub = cohort.select(mm.to_numpy(dtype=bool))
        put("riss", mm, scores.riss(sub.patients).values)
    for col in [c for c in p.columns if c.endswith("_category")]:
        p[col] = p[col].astype("string")
    for col in [c for c in p.columns if c.endswith("_score")]:
        p[col] = pd.to_numeric(p[col], errors="coerce").astype("Float64")
    return Cohort(p, cohort.mutations, cohort.panels)
