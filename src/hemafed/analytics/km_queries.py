"""The Kaplan-Meier site queries: ``time_histogram`` (events and exits on a fine public lattice,
from which the hub learns the distinct-time grid) and ``km_risk_table`` (events, censored and at
risk per group and grid time).

``time_histogram`` counts on the lattice ``k / steps_per_unit`` (e.g. days in years with
365.25), so the data are discretised to that resolution at the site and the pooled reference
must be computed on the same discretised times.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from hemafed.analytics.design import complete_case_mask
from hemafed.analytics.survival_grid import (
    GridParams,
    check_lattice,
    grid_positions,
    grouping,
    lattice_points,
    outcome_column,
    reverse_cumsum_above,
)
from hemafed.cohort.model import Cohort
from hemafed.federation import checks
from hemafed.federation.queries import Params, Query, QueryParams, Statistic, register

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TimeHistogramParams(QueryParams):
    """``time_histogram``: the outcome columns and the public lattice ``k / steps_per_unit``
    up to ``max_time`` (no default: the hub always sends both)."""

    QUERY = "time_histogram"
    steps_per_unit: float
    max_time: float
    duration_col: str = "os_time"
    event_col: str = "os_status"
    max_patients: int = checks.MAX_PATIENTS

    @classmethod
    def from_mapping(cls, params: Params) -> TimeHistogramParams:
        cls.known(params)
        spu, tmax = check_lattice(params)
        return cls(spu, tmax, checks.column(params, "duration_col", "os_time"),
                   checks.column(params, "event_col", "os_status"), checks.max_patients(params))

    @property
    def size(self) -> int:
        return lattice_points(self.steps_per_unit, self.max_time)


def _hist_compute(cohort: Cohort, params: TimeHistogramParams) -> dict[str, np.ndarray]:
    dcol, ecol = params.duration_col, params.event_col
    outcome_column(cohort, dcol, "duration")
    outcome_column(cohort, ecol, "event")
    mask = complete_case_mask(cohort, None, [dcol, ecol])
    p = cohort.patients
    time = p[dcol].astype("Float64").to_numpy(dtype=float, na_value=np.nan)[mask]
    event = p[ecol].astype("Float64").to_numpy(dtype=float, na_value=np.nan)[mask] == 1
    spu = params.steps_per_unit
    k = np.rint(time * spu)
    size = params.size
    # times off the lattice or beyond max_time are excluded, not refused (module docstring)
    fits = (np.abs(k - time * spu) <= 1e-6) & (k >= 0) & (k < size)
    if not fits.all():
        log.warning("time_histogram on %r: %d time(s) off the lattice k/%g or beyond max_time "
                    "%g are counted as excluded; round times at intake", dcol,
                    int((~fits).sum()), spu, params.max_time)
    ki, event = k[fits].astype(int), event[fits]
    return {"events": np.bincount(ki[event], minlength=size).astype(float),
            "exits": np.bincount(ki, minlength=size).astype(float),
            "excluded": np.array([float(len(cohort) - fits.sum())])}


def _hist_declare(params: TimeHistogramParams) -> dict[str, Statistic]:
    m, size = params.max_patients, params.size
    return {"events": Statistic((size,), 0, m, is_count=True),
            "exits": Statistic((size,), 0, m, is_count=True),
            "excluded": Statistic((1,), 0, m, is_count=True)}


TIME_HISTOGRAM = register(Query(
    "time_histogram", "1", compute=_hist_compute, declare=_hist_declare,
    params_type=TimeHistogramParams,
    description="events and exits on the public lattice k/steps_per_unit (distinct-time grid)"))


@dataclass(frozen=True, kw_only=True)
class KMParams(GridParams):
    """``km_risk_table``: the survival parameters and an optional grouping column with its
    public levels (one group without it)."""

    QUERY = "km_risk_table"
    group_col: str | None = None
    group_levels: tuple[str, ...] | None = None

    @classmethod
    def from_mapping(cls, params: Params) -> KMParams:
        cls.known(params)
        group_col, group_levels = grouping(params, "group")
        return cls(**cls.common(params), group_col=group_col, group_levels=group_levels)

    @property
    def n_groups(self) -> int:
        return 1 if self.group_levels is None else len(self.group_levels)


def _km_compute(cohort: Cohort, params: KMParams) -> dict[str, np.ndarray]:
    rows = params.rows(cohort, None, params.group_col, params.group_levels)
    grid = params.grid_array
    k, m = params.n_groups, grid.size
    at_risk_count, on_grid = grid_positions(rows.time, grid)
    # censored in bin j: exits in [t_j, t_{j+1}); exits before t_0 leave no trace on the grid
    exit_bin = at_risk_count - 1
    out = {name: np.zeros((k, m)) for name in ("observed", "censored", "at_risk")}
    for g in range(k):
        sel = rows.group == g
        ev = sel & rows.event & (on_grid >= 0)
        out["observed"][g] = np.bincount(on_grid[ev], minlength=m)[:m]
        cen = sel & ~rows.event & (exit_bin >= 0)
        out["censored"][g] = np.bincount(exit_bin[cen], minlength=m)[:m]
        out["at_risk"][g] = reverse_cumsum_above(
            np.bincount(at_risk_count[sel], minlength=m + 1).astype(float))
    out["n"] = np.bincount(rows.group, minlength=k).astype(float)
    out["excluded"] = np.array([float(rows.excluded)])
    return out


def _km_declare(params: KMParams) -> dict[str, Statistic]:
    mp, k, m = params.max_patients, params.n_groups, len(params.grid)
    return {"observed": Statistic((k, m), 0, mp, is_count=True),
            "censored": Statistic((k, m), 0, mp, is_count=True),
            "at_risk": Statistic((k, m), 0, mp, sensitivity=math.sqrt(m), is_count=True),
            "n": Statistic((k,), 0, mp, is_count=True),
            "excluded": Statistic((1,), 0, mp, is_count=True)}


KM_RISK_TABLE = register(Query(
    "km_risk_table", "1", compute=_km_compute, declare=_km_declare, params_type=KMParams,
    description="per group and grid time: events, censored and number at risk"))

