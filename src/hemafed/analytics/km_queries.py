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

import numpy as np

from hemafed.analytics.design import complete_case_mask
from hemafed.analytics.survival_grid import (
    check_grid,
    check_lattice,
    check_survival_params,
    grid_positions,
    lattice_size,
    n_levels,
    outcome_column,
    reverse_cumsum_above,
    survival_rows,
)
from hemafed.cohort.model import Cohort
from hemafed.federation.checks import column, max_patients
from hemafed.federation.queries import Params, Query, Statistic, register

log = logging.getLogger(__name__)


def _hist_compute(cohort: Cohort, params: Params) -> dict[str, np.ndarray]:
    dcol = column(params, "duration_col", "os_time")
    ecol = column(params, "event_col", "os_status")
    outcome_column(cohort, dcol, "duration")
    outcome_column(cohort, ecol, "event")
    mask = complete_case_mask(cohort, None, [dcol, ecol])
    p = cohort.patients
    time = p[dcol].astype("Float64").to_numpy(dtype=float, na_value=np.nan)[mask]
    event = p[ecol].astype("Float64").to_numpy(dtype=float, na_value=np.nan)[mask] == 1
    spu = float(params["steps_per_unit"])
    k = np.rint(time * spu)
    size = lattice_size(params)
    # times off the lattice or beyond max_time are excluded, not refused (module docstring)
    fits = (np.abs(k - time * spu) <= 1e-6) & (k >= 0) & (k < size)
    if not fits.all():
        log.warning("time_histogram on %r: %d time(s) off the lattice k/%g or beyond max_time "
                    "%g are counted as excluded; round times at intake", dcol,
                    int((~fits).sum()), spu, float(params["max_time"]))
    ki, event = k[fits].astype(int), event[fits]
    return {"events": np.bincount(ki[event], minlength=size).astype(float),
            "exits": np.bincount(ki, minlength=size).astype(float),
            "excluded": np.array([float(len(cohort) - fits.sum())])}


def _hist_declare(params: Params) -> dict[str, Statistic]:
    m, size = max_patients(params), lattice_size(params)
    return {"events": Statistic((size,), 0, m, is_count=True),
            "exits": Statistic((size,), 0, m, is_count=True),
            "excluded": Statistic((1,), 0, m, is_count=True)}


TIME_HISTOGRAM = register(Query(
    "time_histogram", "1", compute=_hist_compute, declare=_hist_declare, check_params=check_lattice,
    description="events and exits on the public lattice k/steps_per_unit (distinct-time grid)"))


def _km_compute(cohort: Cohort, params: Params) -> dict[str, np.ndarray]:
    rows = survival_rows(cohort, params, None, "group")
    grid = check_grid(params["grid"])
    k, m = n_levels(params, "group"), grid.size
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


def _km_declare(params: Params) -> dict[str, Statistic]:
    mp = max_patients(params)
    k, m = n_levels(params, "group"), check_grid(params.get("grid")).size
    return {"observed": Statistic((k, m), 0, mp, is_count=True),
            "censored": Statistic((k, m), 0, mp, is_count=True),
            "at_risk": Statistic((k, m), 0, mp, sensitivity=math.sqrt(m), is_count=True),
            "n": Statistic((k,), 0, mp, is_count=True),
            "excluded": Statistic((1,), 0, mp, is_count=True)}


KM_RISK_TABLE = register(Query(
    "km_risk_table", "1", compute=_km_compute, declare=_km_declare, check_params=check_survival_params,
    description="per group and grid time: events, censored and number at risk"))

