"""Site query ``quantile_cdf``: a cumulative histogram of one numeric column on a public lattice.

The lattice is ``low, low + step, ..., high`` (``low``/``high`` the column's public bounds,
``step`` the spec's resolution; ``(high - low) / step`` a whole number). The site answers, for
each lattice point ``t_k``, the number of its patients with a value ``<= t_k``, and the number
with the value missing. Nothing else: the hub reads the quantiles off the secure sum
(:mod:`hemafed.analytics.quantile`).

Release properties, from the parameters alone:

* ``cdf``: ``K`` counts in ``[0, max_patients]``; adding or removing one patient changes every
  count at and above its value by 1, so its L2 sensitivity is ``sqrt(K)`` (the DP noise is
  calibrated on that). Like the at-risk counts of a Kaplan-Meier risk table (a cumulative
  count read from the other end) it is **not** a frequency table: ``cells=False``, the site's
  minimum-cell rule does not apply to it; the study's plan (the lattice is fixed by the spec,
  one distinct request per analysis and retry) and DP are its protection.
* ``missing``: one total, ``cells=False``, sensitivity 1.

A value outside ``[low, high]`` is refused (nothing is clipped); a value between two lattice
points counts from the next point up.

>>> import pandas as pd
>>> from hemafed.cohort import validate_cohort
>>> c = validate_cohort(pd.DataFrame({"patient_id": list("abcd"), "disease": ["MDS"] * 4,
...                                   "hb": [8.0, 9.0, 9.5, None]}))
>>> out = QUANTILE_QUERY_DEF.run(c, {"column": "hb", "low": 7.0, "high": 10.0, "step": 1.0})
>>> out["cdf"].tolist(), out["missing"].tolist()
([0.0, 1.0, 2.0, 3.0], [1.0])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hemafed.cohort.model import Cohort
from hemafed.errors import InvalidInput
from hemafed.federation import checks
from hemafed.federation.queries import Params, Query, QueryParams, Statistic, register

__all__ = ["MAX_LATTICE_POINTS", "QUANTILE_QUERY", "QUANTILE_QUERY_DEF", "QuantileParams",
           "lattice_size"]

QUANTILE_QUERY = "quantile_cdf"
MAX_LATTICE_POINTS = 10_001
"""Most lattice points one request may ask for (counts released per request)."""


def lattice_size(params: Params) -> int:
    """Number of lattice points ``(high - low) / step + 1``; refuses a lattice that is not one."""
    low, high = checks.bounds(params)
    step = checks.number(params, "step")
    return _lattice_size(low, high, step)


def _lattice_size(low: float, high: float, step: float) -> int:
    if not step > 0:
        raise InvalidInput("parameter 'step' must be > 0")
    steps = (high - low) / step
    k = round(steps)
    if abs(steps - k) > 1e-9 * max(1.0, steps) or not 1 <= k < MAX_LATTICE_POINTS:
        raise InvalidInput(f"parameter 'step' must divide high - low into 1..."
                           f"{MAX_LATTICE_POINTS - 1} equal steps")
    return k + 1


@dataclass(frozen=True)
class QuantileParams(QueryParams):
    """``quantile_cdf``: a numeric column, its public bounds and the lattice step.

    ``size``: the number of lattice points, derived once from the other three.
    """

    QUERY = QUANTILE_QUERY
    column: str
    low: float
    high: float
    step: float
    max_patients: int = checks.MAX_PATIENTS

    @classmethod
    def from_mapping(cls, params: Params) -> QuantileParams:
        cls.known(params)
        low, high = checks.bounds(params)
        p = cls(checks.column(params, "column"), low, high, checks.number(params, "step"),
                checks.max_patients(params))
        p.size  # noqa: B018  (refuses a step that does not divide the bounds)
        return p

    @property
    def size(self) -> int:
        return _lattice_size(self.low, self.high, self.step)


def _compute(cohort: Cohort, p: QuantileParams) -> dict[str, np.ndarray]:
    col, low, high, step, size = p.column, p.low, p.high, p.step, p.size
    raw = cohort.patients[col] if col in cohort.patients else \
        pd.Series(pd.NA, index=cohort.patients.index, dtype="object")
    values = pd.to_numeric(raw, errors="coerce").astype("Float64")
    x = values.dropna().to_numpy(dtype=float)
    if x.size and (x.min() < low or x.max() > high):
        raise InvalidInput(f"column {col!r} has values outside the declared bounds "
                           f"[{low:g}, {high:g}]; widen the bounds, nothing is clipped")
    # index of the first lattice point >= x (a value on the lattice is its own point; the
    # rounding absorbs the float error of decimal values such as 70.3 / 0.1)
    index = np.ceil(np.round((x - low) / step, 6)).astype(int)
    cells = np.bincount(np.clip(index, 0, size - 1), minlength=size).astype(float)
    return {"cdf": np.cumsum(cells), "missing": np.array([float(values.isna().sum())])}


def _declare(p: QuantileParams) -> dict[str, Statistic]:
    m, size = p.max_patients, p.size
    return {"cdf": Statistic((size,), 0, m, is_count=True, sensitivity=math.sqrt(size),
                             cells=False),
            "missing": Statistic((1,), 0, m, is_count=True, cells=False)}


QUANTILE_QUERY_DEF = register(Query(
    QUANTILE_QUERY, "1", compute=_compute, declare=_declare, params_type=QuantileParams,
    description="number of patients with a value <= each point of a public lattice "
                "(low, low + step, ..., high) of a numeric column, and the missing count"))
