"""Shared parts of the pooled reference analyses (``AnalysisKind.pooled``), for validation only.

The demo (which generated the virtual cohort, so it may look at it) and the tests compute each
analysis again with lifelines / statsmodels on the pooled patients and report the largest
difference from the federated result. A federation never runs this code: sites never pool
their data. Each kind's reference sits beside its estimator; these are the helpers they share.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from hemafed.cohort.model import Cohort


def pooled_design(cohorts: Sequence[Cohort], formula: str, required: Sequence[str]
            ) -> tuple[np.ndarray, list[str], pd.DataFrame]:
    """The pooled complete cases' design matrix, its column names and their ``required``
    columns (time, event, outcome ...)."""
    from hemafed.analytics.design import complete_case_mask, design_matrix, parse_formula

    spec = parse_formula(formula)
    xs, extras = [], []
    names: list[str] = []
    for c in cohorts:
        rows = complete_case_mask(c, spec, required=required)
        x, names = design_matrix(c, spec, rows)
        xs.append(x)
        extras.append(c.patients.loc[rows, list(required)].reset_index(drop=True))
    return np.vstack(xs), names, pd.concat(extras, ignore_index=True)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12)))


def agreement(engine: str, coef: Any, se: Any, want_coef: Any, want_se: Any) -> dict[str, str]:
    """How far the federated coefficients and standard errors are from the pooled engine's."""
    def rel(a: Any, b: Any) -> str:
        return f"{_rel(np.asarray(a, dtype=float), np.asarray(b, dtype=float)):.2e}"

    return {"pooled engine": engine,
            "max relative difference, coefficients": rel(coef, want_coef),
            "max relative difference, standard errors": rel(se, want_se)}
