"""Pooled reference analyses, for validation only: what a central analysis of the same rows gives.

The demo (which generated the virtual cohort, so it may look at it) and the tests compute the same
analysis with lifelines / statsmodels on the pooled patients, and report the largest difference
from the federated result. A federation never runs this code: sites never pool their data. Each
kind's reference sits beside its estimator (``AnalysisKind.pooled``; shared helpers in
:mod:`hemafed.analytics.pooled`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from hemafed.cohort.model import Cohort
from hemafed.kinds import get_kind
from hemafed.study import kinds as _registrations  # noqa: F401  (registers the built-in kinds)
from hemafed.study.spec import Analysis


def compare(a: Analysis, doc: dict[str, Any], cohorts: Sequence[Cohort],
            holdout: pd.DataFrame | None = None) -> dict[str, Any] | None:
    """The pooled check for analysis ``a`` (None when the kind has no pooled reference).

    ``holdout``: real patients not used by the federation (synthetic-data privacy metrics).
    """
    fn = get_kind(a.kind).pooled
    return None if fn is None else fn(a, doc, cohorts, holdout=holdout)
