"""A data-quality summary of a site's cohort for its own console: completeness and validity per field.

Completeness is the share of patients with a value; validity the share of recorded values inside
the field's declared range or categories (:data:`hemafed.cohort.schema.FIELDS`). It is shown to
the site's officer on the site's machine only; nothing here is sent to the hub.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hemafed.cohort.schema import FIELDS
from hemafed.site.store import load_cohort


@dataclass(frozen=True)
class FieldQuality:
    field: str
    kind: str
    recorded: int
    patients: int
    completeness: float
    validity: float | None  # None: no declared range or categories to check against


def _valid_share(values: pd.Series, low: float | None, high: float | None,
                 categories: tuple[str, ...]) -> float | None:
    if values.empty:
        return None
    if categories:
        return float(values.astype(str).isin(categories).mean())
    if low is None and high is None:
        return None
    x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    ok = ~np.isnan(x)
    if low is not None:
        ok &= x >= low
    if high is not None:
        ok &= x <= high
    return float(ok.mean())


def cohort_quality(site_dir: str | Path) -> list[FieldQuality]:
    patients = load_cohort(site_dir).patients
    n = len(patients)
    out = []
    for name, f in FIELDS.items():
        if name not in patients.columns:
            continue
        values = patients[name].dropna()
        out.append(FieldQuality(name, f.kind, len(values), n,
                                len(values) / n if n else 0.0,
                                _valid_share(values, f.low, f.high, f.categories)))
    return out
