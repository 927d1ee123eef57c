"""The public time grid of the survival queries, the site's survival rows on it, and the
parameter checks those queries share.

Times live on a public, sorted *grid* of time points:

* ``time_mapping="exact"`` (default): every event time must lie on the grid (within 1e-9
  relative); censoring times may lie anywhere (the at-risk indicator ``T >= t_j`` is computed
  from the site's own times). Results then equal the pooled analysis exactly.
* ``"up"`` / ``"down"``: each time is moved to the next / previous grid point before anything is
  summed: a binned approximation for analyst-declared coarse grids.

A row the grid cannot hold (``exact``: an event off the grid; ``down``: a time before the first
grid point) is left out and counted in the query's ``excluded`` sum, like a row with a missing
value (:func:`fits_grid`). It is never a refusal: whether one site's times fit a grid the hub
chose would be a per-site yes/no answer about its data, outside secure aggregation.

The exact grid itself is public only as a secure histogram on a fine public lattice
(:func:`lattice_grid`, ``time_histogram`` in :mod:`hemafed.analytics.km_queries`).

The helpers here read the hub's parameter mapping, so every survival-type query (Kaplan-Meier,
Cox, competing risks, Fine-Gray, start-stop, weighting, the learners' metrics) selects the same
rows the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from hemafed.analytics.design import (
    DesignSpec,
    complete_case_mask,
    design_matrix,
    design_values,
)
from hemafed.cohort.model import Cohort
from hemafed.errors import InvalidInput
from hemafed.federation import checks
from hemafed.federation.checks import column
from hemafed.federation.queries import Params, QueryParams

TIME_MAPPINGS = ("exact", "up", "down")
REL_TOL = 1e-9


def check_grid(grid: Any, name: str = "grid") -> np.ndarray:
    """A public time grid: non-empty, finite, non-negative and strictly increasing."""
    try:
        g = np.asarray(grid, dtype=float)
    except (TypeError, ValueError):
        raise InvalidInput(f"parameter {name!r} must be a list of time points") from None
    if g.ndim != 1 or g.size == 0:
        raise InvalidInput(f"parameter {name!r} must be a non-empty list of time points")
    if not np.all(np.isfinite(g)) or g.min() < 0:
        raise InvalidInput(f"parameter {name!r} must hold finite, non-negative times")
    if g.size > 1 and not np.all(np.diff(g) > 0):
        raise InvalidInput(f"parameter {name!r} must be strictly increasing (sorted, distinct)")
    return g


def lattice_grid(steps_per_unit: float, max_time: float = 60.0) -> list[float]:
    """The whole public lattice ``k / steps_per_unit``, ``k = 0 .. max_time * steps_per_unit``:
    the time grid of a fit whose study spec fixes a ``lattice`` (hub and site compute the same
    list; with ``time_mapping: up`` each grid time counts one interval fixed at approval).

    >>> lattice_grid(1.0, 3.0)
    [0.0, 1.0, 2.0, 3.0]
    """
    return [k / float(steps_per_unit)
            for k in range(math.floor(max_time * steps_per_unit + 1e-9) + 1)]


def grouping(params: Params, key: str) -> tuple[str | None, tuple[str, ...] | None]:
    """``(params[key_col], params[key_levels])``: an optional grouping column (``group``,
    ``strata``) with its public levels, or ``(None, None)`` without the column."""
    if params.get(f"{key}_col") is None:
        return None, None
    return column(params, f"{key}_col"), checks.levels(params, f"{key}_levels")


@dataclass(frozen=True, kw_only=True)
class GridParams(QueryParams):
    """The parameters every survival query on a grid reads: the outcome columns, the public
    grid and how times map onto it (subclassed by each query for its own keys)."""

    duration_col: str = "os_time"
    event_col: str = "os_status"
    grid: tuple[float, ...]
    time_mapping: str = "exact"
    max_patients: int = checks.MAX_PATIENTS

    @staticmethod
    def common(params: Params) -> dict[str, Any]:
        """The checked values of this class's keys, for a subclass's ``from_mapping``."""
        return {"duration_col": column(params, "duration_col", "os_time"),
                "event_col": column(params, "event_col", "os_status"),
                "grid": tuple(float(t) for t in check_grid(params.get("grid"))),
                "time_mapping": checks.choice(params, "time_mapping", TIME_MAPPINGS, "exact"),
                "max_patients": checks.max_patients(params)}

    @property
    def grid_array(self) -> np.ndarray:
        return np.asarray(self.grid, dtype=float)

    def rows(self, cohort: Cohort, spec: DesignSpec | None = None,
             group_col: str | None = None,
             group_levels: Sequence[str] | None = None) -> SurvivalRows:
        """The site's survival rows under these parameters (:func:`select_rows`)."""
        return select_rows(cohort, self.duration_col, self.event_col, self.grid_array,
                           self.time_mapping, spec, group_col, group_levels)

    def to_mapping(self) -> dict[str, Any]:
        """The wire form; an optional key left at ``None`` is left out."""
        return {k: v for k, v in super().to_mapping().items() if v is not None}


def check_survival_params(params: Params) -> None:
    """Check the hub's mapping of a survival query (outcome columns, grid, time mapping, the
    optional ``group`` and ``strata`` columns with their levels)."""
    GridParams.common(params)
    grouping(params, "group")
    grouping(params, "strata")


# --- the site's survival rows -----------------------------------------------------------------

@dataclass(frozen=True)
class SurvivalRows:
    """The complete-case rows of one site: effective times, events, covariates, group codes."""

    time: np.ndarray
    event: np.ndarray
    group: np.ndarray
    x: np.ndarray
    excluded: int


def outcome_column(cohort: Cohort, col: str, kind: str) -> pd.Series:
    if col not in cohort.patients.columns:
        raise InvalidInput(f"{kind} column {col!r} is not in the site's cohort")
    s = cohort.patients[col]
    if not (pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)):
        raise InvalidInput(f"{kind} column {col!r} is not numeric (dtype {s.dtype})")
    return s


def fits_grid(time: np.ndarray, event: np.ndarray, grid: np.ndarray, mode: str) -> np.ndarray:
    """Which rows the grid can hold under ``mode``: ``exact``, events on a grid point (censoring
    times anywhere); ``down``, times at or after the first grid point; ``up``, every row (later
    times are at risk throughout, never an event). The others go to ``excluded``.

    >>> fits_grid(np.array([0.5, 1.5, 2.0]), np.array([True, True, False]),
    ...           np.array([1.0, 2.0]), "exact").tolist()
    [False, False, True]
    """
    tol = REL_TOL * np.maximum(1.0, np.abs(time))
    if mode == "exact":
        pos = np.clip(np.searchsorted(grid, time - tol), 0, grid.size - 1)
        return ~event | (np.abs(grid[pos] - time) <= tol)
    if mode == "down":
        return np.searchsorted(grid, time + tol, side="right") > 0
    return np.ones(time.shape, dtype=bool)


def effective_times(time: np.ndarray, event: np.ndarray, grid: np.ndarray, mode: str) -> np.ndarray:
    """Times as the sums see them: raw (``exact``) or moved to the grid, for rows that
    :func:`fits_grid` (the others' entries mean nothing: leave those rows out)."""
    tol = REL_TOL * np.maximum(1.0, np.abs(time))
    if mode == "exact":
        pos = np.clip(np.searchsorted(grid, time - tol), 0, grid.size - 1)
        return np.where(event, grid[pos], time)
    if mode == "up":
        pos = np.searchsorted(grid, time - tol)
        return np.where(pos < grid.size, grid[np.minimum(pos, grid.size - 1)], np.inf)
    pos = np.searchsorted(grid, time + tol, side="right") - 1
    return grid[np.maximum(pos, 0)]


def keep_fitting(mask: np.ndarray, fits: np.ndarray) -> np.ndarray:
    """``mask`` (over the cohort) without the selected rows that do not fit the grid
    (``fits`` is over the selected rows, in order)."""
    out = mask.copy()
    out[np.flatnonzero(mask)[~fits]] = False
    return out


def survival_rows(cohort: Cohort, params: Params, spec: DesignSpec | None = None,
                  group_key: str | None = None) -> SurvivalRows:
    """:func:`select_rows` under the hub's mapping (``group_key``: ``group`` or ``strata``, the
    optional grouping column; typed parameters use :meth:`GridParams.rows`)."""
    gcol, levels = grouping(params, group_key) if group_key else (None, None)
    return select_rows(cohort, column(params, "duration_col", "os_time"),
                       column(params, "event_col", "os_status"), check_grid(params.get("grid")),
                       checks.choice(params, "time_mapping", TIME_MAPPINGS, "exact"), spec,
                       gcol, levels)


def select_rows(cohort: Cohort, dcol: str, ecol: str, grid: np.ndarray, mode: str,
                spec: DesignSpec | None = None, gcol: str | None = None,
                levels: Sequence[str] | None = None) -> SurvivalRows:
    """Select complete cases and compute effective times, events, covariates and group codes
    (codes of ``levels`` in column ``gcol``; rows of another level are left out)."""
    outcome_column(cohort, dcol, "duration")
    outcome_column(cohort, ecol, "event")
    required = [dcol, ecol]
    if gcol is not None:
        if gcol not in cohort.patients.columns:
            raise InvalidInput(f"grouping column {gcol!r} is not in the site's cohort")
        required.append(gcol)
    design = design_values(cohort, spec) if spec is not None else None
    mask = complete_case_mask(cohort, spec, required, values=design)
    codes = np.zeros(len(cohort), dtype=int)
    if gcol is not None and levels is not None:
        values = cohort.patients[gcol].astype("string")
        codes = np.full(len(cohort), -1)
        for k, lv in enumerate(levels):
            codes[(values == lv).fillna(False).to_numpy(dtype=bool)] = k
        mask &= codes >= 0
    p = cohort.patients
    time = p[dcol].astype("Float64").to_numpy(dtype=float, na_value=np.nan)[mask]
    event = p[ecol].astype("Float64").to_numpy(dtype=float, na_value=np.nan)[mask]
    if np.any((event != 0) & (event != 1)):
        raise InvalidInput(f"event column {ecol!r} must be 0/1")
    if time.size and time.min() < 0:
        raise InvalidInput(f"duration column {dcol!r} has negative times")
    ev = event.astype(bool)
    fits = fits_grid(time, ev, grid, mode)
    mask, time, ev = keep_fitting(mask, fits), time[fits], ev[fits]
    eff = effective_times(time, ev, grid, mode)
    if spec is not None:
        x, _ = design_matrix(cohort, spec, mask, values=design)
        x = x - spec.center
    else:
        x = np.empty((time.size, 0))
    return SurvivalRows(eff, ev, codes[mask], x, int(len(cohort) - mask.sum()))


def grid_positions(time: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(at_risk_count, on_grid_index)``: row i is at risk at grid points ``j < at_risk_count[i]``
    (``t_j <= T_i``); ``on_grid_index`` is the grid point equal to ``T_i`` or -1."""
    tol = REL_TOL * np.maximum(1.0, np.abs(np.where(np.isfinite(time), time, 0.0)))
    at_risk_count = np.searchsorted(grid, time + tol, side="right")
    pos = np.clip(at_risk_count - 1, 0, grid.size - 1)
    on = (at_risk_count > 0) & (np.abs(grid[pos] - time) <= tol)
    return at_risk_count, np.where(on, pos, -1)


def reverse_cumsum_above(acc: np.ndarray) -> np.ndarray:
    """Given per-count sums ``acc[c]`` (c = 0..m) return ``out[j] = sum_{c > j} acc[c]``."""
    rev = np.cumsum(acc[::-1], axis=0)[::-1]
    return rev[1:]



def check_lattice(params: Params) -> tuple[float, float]:
    """``(steps_per_unit, max_time)`` of the public lattice ``k / steps_per_unit`` up to
    ``max_time`` (``time_histogram`` and the start-stop queries), at most 200000 points."""
    spu = checks.number(params, "steps_per_unit", low=0.0, open_low=True)
    tmax = checks.number(params, "max_time", low=0.0, open_low=True)
    if tmax * spu > 200_000:
        raise InvalidInput("parameter 'max_time' must be > 0 with max_time * steps_per_unit "
                           "<= 200000 lattice points")
    return spu, tmax


def lattice_points(steps_per_unit: float, max_time: float) -> int:
    """The number of lattice points ``k / steps_per_unit <= max_time``.

    >>> lattice_points(365.25, 1.0)
    366
    """
    return math.floor(max_time * steps_per_unit) + 1


def lattice_size(params: Params) -> int:
    """:func:`lattice_points` of the hub's mapping."""
    return lattice_points(float(params["steps_per_unit"]), float(params["max_time"]))


def query_params(duration_col: str, event_col: str, grid: Sequence[float] | np.ndarray, *,
                 time_mapping: str = "exact", **extra: Any) -> dict[str, Any]:
    """The common parameters of the survival queries, JSON-serialisable."""
    return {"duration_col": duration_col, "event_col": event_col,
            "grid": [float(t) for t in grid], "time_mapping": time_mapping, **extra}
