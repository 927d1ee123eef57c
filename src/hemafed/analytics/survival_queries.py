"""Site queries of federated survival analysis, and the pure maths both sides share.

Every query is a pure function of the site's cohort and public parameters, returning sums that
are added over sites. Times live on a public, sorted *grid* of time points:

* ``time_mapping="exact"`` (default): every event time must lie on the grid (within 1e-9
  relative); censoring times may lie anywhere (the at-risk indicator ``T >= t_j`` is computed
  from the site's own times). Results then equal the pooled analysis exactly.
* ``"up"`` / ``"down"``: each time is moved to the next / previous grid point before anything is
  summed: a binned approximation for analyst-declared coarse grids.

A row the grid cannot hold (``exact``: an event off the grid; ``down``: a time before the first
grid point) is left out and counted in the query's ``excluded`` sum, like a row with a missing
value (:func:`fits_grid`). It is never a refusal: whether one site's times fit a grid the hub
chose would be a per-site yes/no answer about its data, outside secure aggregation.

The exact grid itself is public only as a secure histogram: :data:`time_histogram` counts events
and exits on a fine public lattice (``k / steps_per_unit``, e.g. days in years with 365.25), so
the data are discretised to that resolution at the site and the pooled reference must be computed
on the same discretised times.

Queries: ``time_histogram`` (the lattice counts), ``km_risk_table`` (events, censored, at risk
per group and grid time), ``cox_risk_set_sums`` (Cox risk-set sums at a public ``beta``, per
stratum, at the requested grid rows, ``S2`` packed as upper triangles), ``cox_site_derivatives`` (log partial likelihood, gradient and Hessian of the site's
own stratum: stratified-by-site Cox is the plain sum of these) and ``cox_concordance_histogram``
(events and comparable subjects per grid time and linear-predictor bin, for Harrell's C).

The Cox queries run every Newton round with a new ``beta`` only, so each site keeps its rows,
centred design matrix and time order in :data:`COX_SITE_CACHE` (bounded, per cohort object
and public parameters) and answers a round with cumulative sums over its time-sorted rows.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import weakref
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from hemafed.analytics.design import (
    DesignSpec,
    check_coefficients,
    complete_case_mask,
    design_matrix,
    design_values,
)
from hemafed.cohort.model import Cohort
from hemafed.errors import InvalidInput
from hemafed.federation.checks import column, max_patients
from hemafed.federation.queries import Params, Query, Statistic, register
from hemafed.privacy.disclosure import risk_set_changes

log = logging.getLogger(__name__)

TIME_MAPPINGS = ("exact", "up", "down")
REL_TOL = 1e-9
DEFAULT_RESOLUTION = 1e-10


# --- parameters -------------------------------------------------------------------------------

def _max_patients(params: Params) -> int:
    return max_patients(params)


_col = column


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


def _mapping(params: Params) -> str:
    mode = params.get("time_mapping", "exact")
    if mode not in TIME_MAPPINGS:
        raise InvalidInput(f"parameter 'time_mapping' must be one of {TIME_MAPPINGS}, got {mode!r}")
    return str(mode)


def _levels(params: Params, key: str) -> list[str] | None:
    col = params.get(f"{key}_col")
    if col is None:
        return None
    levels = params.get(f"{key}_levels")
    if not isinstance(levels, list | tuple) or not levels or len(set(map(str, levels))) != len(levels):
        raise InvalidInput(f"parameter '{key}_levels' must list the distinct levels of "
                           f"{key}_col {col!r}")
    return [str(v) for v in levels]


def _survival_check(params: Params) -> None:
    _col(params, "duration_col", "os_time")
    _col(params, "event_col", "os_status")
    check_grid(params.get("grid"))
    _mapping(params)
    _levels(params, "group")
    _levels(params, "strata")


# --- the site's survival rows -----------------------------------------------------------------

@dataclass(frozen=True)
class SurvivalRows:
    """The complete-case rows of one site: effective times, events, covariates, group codes."""

    time: np.ndarray
    event: np.ndarray
    group: np.ndarray
    x: np.ndarray
    excluded: int


def _outcome(cohort: Cohort, col: str, kind: str) -> pd.Series:
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
    """Select complete cases and compute effective times, events, covariates and group codes."""
    dcol = _col(params, "duration_col", "os_time")
    ecol = _col(params, "event_col", "os_status")
    _outcome(cohort, dcol, "duration")
    _outcome(cohort, ecol, "event")
    grid = check_grid(params.get("grid"))
    required = [dcol, ecol]
    levels = _levels(params, group_key) if group_key else None
    gcol = params.get(f"{group_key}_col") if group_key else None
    if gcol is not None:
        if gcol not in cohort.patients.columns:
            raise InvalidInput(f"{group_key} column {gcol!r} is not in the site's cohort")
        required.append(str(gcol))
    design = design_values(cohort, spec) if spec is not None else None
    mask = complete_case_mask(cohort, spec, required, values=design)
    codes = np.zeros(len(cohort), dtype=int)
    if gcol is not None and levels is not None:
        values = cohort.patients[str(gcol)].astype("string")
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
    fits = fits_grid(time, ev, grid, _mapping(params))
    mask, time, ev = keep_fitting(mask, fits), time[fits], ev[fits]
    eff = effective_times(time, ev, grid, _mapping(params))
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


def _reverse_cumsum_above(acc: np.ndarray) -> np.ndarray:
    """Given per-count sums ``acc[c]`` (c = 0..m) return ``out[j] = sum_{c > j} acc[c]``."""
    rev = np.cumsum(acc[::-1], axis=0)[::-1]
    return rev[1:]


# --- time_histogram ---------------------------------------------------------------------------

def _hist_check(params: Params) -> None:
    _col(params, "duration_col", "os_time")
    _col(params, "event_col", "os_status")
    spu, tmax = params.get("steps_per_unit"), params.get("max_time")
    if not isinstance(spu, int | float) or not spu > 0:
        raise InvalidInput("parameter 'steps_per_unit' must be > 0 (e.g. 365.25 for days in years)")
    if not isinstance(tmax, int | float) or not tmax > 0 or tmax * spu > 200_000:
        raise InvalidInput("parameter 'max_time' must be > 0 with max_time * steps_per_unit "
                           "<= 200000 lattice points")


def _hist_size(params: Params) -> int:
    return math.floor(float(params["max_time"]) * float(params["steps_per_unit"])) + 1


def _hist_compute(cohort: Cohort, params: Params) -> dict[str, np.ndarray]:
    dcol = _col(params, "duration_col", "os_time")
    ecol = _col(params, "event_col", "os_status")
    _outcome(cohort, dcol, "duration")
    _outcome(cohort, ecol, "event")
    mask = complete_case_mask(cohort, None, [dcol, ecol])
    p = cohort.patients
    time = p[dcol].astype("Float64").to_numpy(dtype=float, na_value=np.nan)[mask]
    event = p[ecol].astype("Float64").to_numpy(dtype=float, na_value=np.nan)[mask] == 1
    spu = float(params["steps_per_unit"])
    k = np.rint(time * spu)
    size = _hist_size(params)
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
    m, size = _max_patients(params), _hist_size(params)
    return {"events": Statistic((size,), 0, m, is_count=True),
            "exits": Statistic((size,), 0, m, is_count=True),
            "excluded": Statistic((1,), 0, m, is_count=True)}


TIME_HISTOGRAM = register(Query(
    "time_histogram", "1", compute=_hist_compute, declare=_hist_declare, check_params=_hist_check,
    description="events and exits on the public lattice k/steps_per_unit (distinct-time grid)"))


# --- km_risk_table ----------------------------------------------------------------------------

def _n_levels(params: Params, key: str) -> int:
    levels = _levels(params, key)
    return 1 if levels is None else len(levels)


def _km_compute(cohort: Cohort, params: Params) -> dict[str, np.ndarray]:
    rows = survival_rows(cohort, params, None, "group")
    grid = check_grid(params["grid"])
    k, m = _n_levels(params, "group"), grid.size
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
        out["at_risk"][g] = _reverse_cumsum_above(
            np.bincount(at_risk_count[sel], minlength=m + 1).astype(float))
    out["n"] = np.bincount(rows.group, minlength=k).astype(float)
    out["excluded"] = np.array([float(rows.excluded)])
    return out


def _km_declare(params: Params) -> dict[str, Statistic]:
    mp = _max_patients(params)
    k, m = _n_levels(params, "group"), check_grid(params.get("grid")).size
    return {"observed": Statistic((k, m), 0, mp, is_count=True),
            "censored": Statistic((k, m), 0, mp, is_count=True),
            "at_risk": Statistic((k, m), 0, mp, sensitivity=math.sqrt(m), is_count=True),
            "n": Statistic((k,), 0, mp, is_count=True),
            "excluded": Statistic((1,), 0, mp, is_count=True)}


KM_RISK_TABLE = register(Query(
    "km_risk_table", "1", compute=_km_compute, declare=_km_declare, check_params=_survival_check,
    description="per group and grid time: events, censored and number at risk"))


# --- Cox risk-set sums ------------------------------------------------------------------------

def upper_index(p: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of the upper triangle (diagonal included) of a ``p x p`` matrix,
    the order in which symmetric ``S2`` blocks are packed (``p (p + 1) / 2`` numbers)."""
    return np.triu_indices(p)


def unpack_upper(packed: np.ndarray, p: int) -> np.ndarray:
    """``(..., p (p + 1) / 2)`` packed upper triangles back to symmetric ``(..., p, p)``."""
    iu, ju = upper_index(p)
    full = np.zeros((*packed.shape[:-1], p, p))
    full[..., iu, ju] = packed
    full[..., ju, iu] = packed
    return full


def _index_param(params: Params, key: str, m: int) -> np.ndarray | None:
    """An optional strictly increasing list of grid positions in ``[0, m)``."""
    raw = params.get(key)
    if raw is None:
        return None
    if not isinstance(raw, list | tuple) or not all(isinstance(v, int) for v in raw):
        raise InvalidInput(f"parameter {key!r} must be a list of grid positions (ints)")
    idx = np.asarray(raw, dtype=np.intp)
    if idx.size and (idx[0] < 0 or idx[-1] >= m or np.any(np.diff(idx) <= 0)):
        raise InvalidInput(f"parameter {key!r} must be strictly increasing positions in "
                           f"[0, {m}) of the grid")
    return idx


def cox_row_index(params: Params) -> tuple[np.ndarray, np.ndarray]:
    """Grid positions the risk-set sums are returned at (``time_index``, default all) and the
    positions of the Efron tie sums (``tie_index``, default the same)."""
    m = check_grid(params.get("grid")).size
    times = _index_param(params, "time_index", m)
    times = np.arange(m) if times is None else times
    ties = _index_param(params, "tie_index", m)
    return times, times if ties is None else ties


def _cox_check(params: Params) -> None:
    _survival_check(params)
    spec = DesignSpec.from_params(params.get("design"))
    beta = params.get("beta")
    if not isinstance(beta, list | tuple) or len(beta) != spec.width:
        raise InvalidInput(f"parameter 'beta' must list {spec.width} coefficients "
                           f"({', '.join(spec.names)})")
    check_coefficients(beta, spec.half_width, spec.names)
    if params.get("ties", "efron") not in ("efron", "breslow"):
        raise InvalidInput(f"parameter 'ties' must be 'efron' or 'breslow', got {params.get('ties')!r}")
    cox_row_index(params)
    if not isinstance(params.get("event_sums", True), bool):
        raise InvalidInput("parameter 'event_sums' must be true or false")


@dataclass(frozen=True)
class CoxSiteData:
    """What a site needs, independent of ``beta``, to answer Cox queries quickly.

    Rows are sorted by stratum, then by decreasing number of grid times they are at risk at, so
    the risk set of stratum ``s`` at grid time ``j`` is the slice ``order[start[s]:risk_end[s,
    j]]`` and each risk-set sum is one difference of cumulative sums. Event rows are sorted by
    their (stratum, grid time) cell so that tied-event sums are one ``np.add.reduceat``.
    """

    rows: SurvivalRows
    grid: np.ndarray
    n_strata: int
    at_risk_count: np.ndarray
    on_grid: np.ndarray
    order: np.ndarray
    start: np.ndarray
    risk_end: np.ndarray
    event_rows: np.ndarray
    event_cells: np.ndarray
    event_starts: np.ndarray
    xx: np.ndarray
    d: np.ndarray
    xsum: np.ndarray
    half_width: np.ndarray

    @classmethod
    def build(cls, rows: SurvivalRows, grid: np.ndarray, n_strata: int,
              half_width: np.ndarray | None = None) -> CoxSiteData:
        """``half_width``: the public bound of ``|x|`` per column (the design's), which fixes
        the linear-predictor bands (see :func:`lp_bands`); by default the rows' own maximum
        (for local use: every band layout gives the same combined sums)."""
        m, p = grid.size, rows.x.shape[1]
        if half_width is None:
            half_width = np.abs(rows.x).max(axis=0) if rows.x.size else np.ones(p)
        at_risk_count, on_grid = grid_positions(rows.time, grid)
        order = np.lexsort((-at_risk_count, rows.group))
        start = np.searchsorted(rows.group[order], np.arange(n_strata), side="left")
        stop = np.searchsorted(rows.group[order], np.arange(n_strata), side="right")
        risk_end = np.zeros((n_strata, m), dtype=np.intp)
        for s in range(n_strata):
            counts = at_risk_count[order[start[s]:stop[s]]]
            # rows at risk at t_j are those with count > j: a prefix of the descending order
            risk_end[s] = start[s] + np.searchsorted(-counts, -np.arange(m), side="left")
        ev = np.flatnonzero(rows.event & (on_grid >= 0))
        cell = rows.group[ev] * m + on_grid[ev]
        by_cell = np.argsort(cell, kind="stable")
        ev, cell = ev[by_cell], cell[by_cell]
        cells, starts = np.unique(cell, return_index=True)
        iu, ju = upper_index(p)
        d = np.bincount(cell, minlength=n_strata * m).astype(float).reshape(n_strata, m)
        xsum = np.zeros((n_strata * m, p))
        if ev.size:
            xsum[cells] = np.add.reduceat(rows.x[ev], starts, axis=0)
        return cls(rows, grid, n_strata, at_risk_count, on_grid, order, start, risk_end, ev,
                   cells, starts, rows.x[:, iu] * rows.x[:, ju], d, xsum.reshape(n_strata, m, p),
                   np.asarray(half_width, dtype=float))

    @property
    def width(self) -> int:
        return int(self.rows.x.shape[1])

    def sums(self, beta: np.ndarray, efron: bool, time_index: np.ndarray | None = None,
             tie_index: np.ndarray | None = None,
             event_sums: bool = True) -> dict[str, np.ndarray]:
        """Risk-set sums at ``beta`` with ``S2`` packed (see :func:`risk_set_sums`);
        ``event_sums=False`` leaves out ``d`` and ``xsum``, which do not depend on ``beta``."""
        m, p, k = self.grid.size, self.width, self.n_strata
        t_idx = np.arange(m) if time_index is None else time_index
        e_idx = t_idx if tie_index is None else tie_index
        centres, half = lp_bands(self.half_width, beta)
        nb = centres.size
        lp = self.rows.x @ beta
        band = np.minimum(np.searchsorted(centres + half, lp, side="left"), nb - 1)
        w = np.exp(lp - centres[band])
        # one matrix [w, w x, w x x'(upper)] so each cumulative sum runs once per band
        vals = np.concatenate([w[:, None], self.rows.x * w[:, None], self.xx * w[:, None]],
                              axis=1)
        q = vals.shape[1]
        banded = np.empty((nb, k, t_idx.size, q))
        for b in range(nb):
            vb = vals if nb == 1 else vals * (band == b)[:, None]
            for s in range(k):
                block = vb[self.order[self.start[s]:self.risk_end[s, 0]]]
                cums = np.concatenate([np.zeros((1, q)), np.cumsum(block, axis=0)])
                banded[b, s] = cums[self.risk_end[s, t_idx] - self.start[s]]
        acc = banded.reshape(nb * k, t_idx.size, q)
        out = {"s0": acc[..., 0], "s1": acc[..., 1:1 + p], "s2": acc[..., 1 + p:]}
        if event_sums:
            out |= {"d": self.d[:, t_idx], "xsum": self.xsum[:, t_idx]}
        if efron:
            tied = np.zeros((nb, k * m, q))
            if self.event_rows.size:
                ev_band = band[self.event_rows]
                for b in range(nb):
                    vb = vals[self.event_rows] * (ev_band == b)[:, None]
                    tied[b, self.event_cells] = np.add.reduceat(vb, self.event_starts, axis=0)
            tied = tied.reshape(nb * k, m, -1)[:, e_idx]
            out |= {"e0": tied[..., 0], "e1": tied[..., 1:1 + p], "e2": tied[..., 1 + p:]}
        return out


class _SiteDataCache:
    """A small LRU cache of :class:`CoxSiteData` per (cohort object, public parameters).

    Keyed on the cohort's identity (a weak reference: an entry dies with its cohort, and a
    reused ``id`` never matches a dead entry) plus the public parameters that shape the rows
    (everything but ``beta`` and the row selections). Cohorts are immutable values; a site that
    reloads its data builds a new ``Cohort`` and so misses the cache. Thread-safe.
    """

    def __init__(self, size: int = 16) -> None:
        self._size = size
        self._entries: OrderedDict[tuple[int, str, tuple[float, ...]],
                                  tuple[weakref.ref[Cohort], CoxSiteData]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _public_key(params: Params) -> tuple[str, tuple[float, ...]]:
        shaping = {k: v for k, v in params.items() if k not in _NOT_SHAPING and k != "grid"}
        # the grid is long: compared as a tuple of floats rather than serialised every round
        grid = tuple(float(t) for t in params.get("grid", ()))
        return json.dumps(shaping, sort_keys=True, default=str), grid

    def get(self, cohort: Cohort, params: Params) -> CoxSiteData:
        key = (id(cohort), *self._public_key(params))
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None and hit[0]() is cohort:
                self._entries.move_to_end(key)
                return hit[1]
        spec = DesignSpec.from_params(params["design"])
        data = CoxSiteData.build(survival_rows(cohort, params, spec, "strata"),
                                 check_grid(params["grid"]), _n_levels(params, "strata"),
                                 spec.half_width)
        with self._lock:
            self._entries[key] = (weakref.ref(cohort), data)
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return data

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_NOT_SHAPING = frozenset({"beta", "lp_bins", "time_index", "tie_index", "event_sums", "ties",
                          "max_patients", "resolution"})
COX_SITE_CACHE = _SiteDataCache()
"""The site-side cache of Cox rows; ``COX_SITE_CACHE.clear()`` empties it."""


def risk_set_sums(rows: SurvivalRows, grid: np.ndarray, beta: np.ndarray, n_strata: int,
                  efron: bool) -> dict[str, np.ndarray]:
    """Per stratum and grid time: S0, S1, S2 over the risk set, events d, sum of x over events
    and (Efron) the same exp(x beta)-weighted sums over the tied events (S2, E2 as full
    ``p x p`` blocks; the linear-predictor bands combined, so ``S0 = sum exp(x beta)``)."""
    data = CoxSiteData.build(rows, grid, n_strata)
    out = expand_cox_sums(data.sums(beta, efron), grid.size)
    out = combine_bands(out, lp_bands(data.half_width, beta))
    scale = np.exp(out.pop("log_scale"))
    for name in ("s0", "s1", "s2", "e0", "e1", "e2"):
        if name in out:
            out[name] = out[name] * scale.reshape(*scale.shape, *([1] * (out[name].ndim - 2)))
    return out


def _cox_sums_compute(cohort: Cohort, params: Params) -> dict[str, np.ndarray]:
    data = COX_SITE_CACHE.get(cohort, params)
    t_idx, e_idx = cox_row_index(params)
    out = data.sums(np.asarray(params["beta"], dtype=float),
                    params.get("ties", "efron") == "efron", t_idx, e_idx,
                    bool(params.get("event_sums", True)))
    out["n"] = np.array([float(data.rows.time.size)])
    out["excluded"] = np.array([float(data.rows.excluded)])
    return out


BAND_WIDTH = 16.0
"""Width (in units of the linear predictor) of one band of :func:`lp_bands`: within a band
``exp(x beta - centre)`` lies in ``[exp(-8), exp(8)]``, so the finest encodable resolution keeps
even a lone patient's term to ~1e-13 relative, whatever the design's bounds."""

BOUND_SLACK = 1e-9
"""Relative slack on the band sums' upper bounds (``exp(x beta - centre)`` may exceed its bound
by rounding when a value sits on its declared bound)."""


def lp_bands(half_width: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, float]:
    """Centres of the public linear-predictor bands at ``beta``, and their half-width.

    The centred linear predictor lies in ``[-A, A]`` with ``A = sum |beta_j| half_width_j``
    (public: design bounds and beta). It is cut into ``ceil(2A / BAND_WIDTH)`` equal bands; one
    band (centre 0, the former scheme) when ``2A <= 16``. A site reports every risk-set sum per
    band, each patient's term scaled by ``exp(-centre)`` of its band, so every reported number
    is bounded by the number of patients times ``exp(8)`` (times the covariate bounds) rather
    than by ``exp(A)``: the fixed-point encoding then keeps float precision relative to each
    band's actual size, which wide public bounds (``exp(A)`` of 1e30 and more) used to
    destroy. The hub recombines the bands exactly (:func:`combine_bands`).
    """
    a = float(np.sum(np.abs(np.asarray(beta, dtype=float)) * np.asarray(half_width)))
    nb = max(1, math.ceil(2.0 * a / BAND_WIDTH - 1e-12))
    half = a / nb
    return -a + (2 * np.arange(nb) + 1) * half, half


def combine_bands(sums: Mapping[str, np.ndarray], bands: tuple[np.ndarray, float]
                  ) -> dict[str, np.ndarray]:
    """Add the per-band risk-set sums (band-major first axis) into per-stratum sums.

    Each (stratum, time) row is scaled by ``exp(-log_scale)``, ``log_scale`` (returned, shaped
    like ``d``) being the centre of the highest band with patients at risk in that row, so nothing
    overflows or underflows however wide the bands span; ratios (gradient, Hessian) do not
    change and :func:`cox_derivatives` adds ``-d * log_scale`` per row to the log-likelihood.
    """
    tops = bands[0]
    nb = tops.size
    s0 = np.asarray(sums["s0"])
    s0 = s0.reshape(nb, s0.shape[0] // nb, *s0.shape[1:])
    lifted = np.where(s0 > 0, tops.reshape(-1, *([1] * (s0.ndim - 1))), -np.inf)
    row_top = lifted.max(axis=0)
    row_top = np.where(np.isfinite(row_top), row_top, 0.0)
    gap = tops.reshape(-1, *([1] * (s0.ndim - 1))) - row_top[None]
    weights = np.where(gap <= 0, np.exp(np.minimum(gap, 0.0)), 0.0)
    out = dict(sums)
    for name in ("s0", "s1", "s2", "e0", "e1", "e2"):
        if name in sums:
            v = np.asarray(sums[name])
            v = v.reshape(nb, v.shape[0] // nb, *v.shape[1:])
            w = weights.reshape(*weights.shape, *([1] * (v.ndim - weights.ndim)))
            out[name] = (w * v).sum(axis=0)
    out["log_scale"] = row_top
    return out


def exp_bound(params: Params) -> tuple[float, float]:
    """Public bounds ``(max |x - center|, max exp(x beta))`` from the design bounds and beta."""
    spec = DesignSpec.from_params(params["design"])
    beta = np.asarray(params["beta"], dtype=float)
    hw = spec.half_width
    return float(hw.max()), float(np.exp(np.sum(np.abs(beta) * hw)))


def finest_resolution(low: float, high: float) -> float:
    """The finest fixed-point step the two-limb encoding takes for ``[low, high]`` (with a
    factor-4 margin below :data:`hemafed.federation.queries.MAX_STEPS`)."""
    return max((float(high) - float(low)) / 2.0**88, 1e-300)


def _cox_sums_declare(params: Params) -> dict[str, Statistic]:
    mp = _max_patients(params)
    spec = DesignSpec.from_params(params.get("design"))
    k, p = _n_levels(params, "strata"), spec.width
    t_idx, e_idx = cox_row_index(params)
    m, me, q = t_idx.size, e_idx.size, p * (p + 1) // 2
    a = float(spec.half_width.max())
    centres, half = lp_bands(spec.half_width, np.asarray(params["beta"], dtype=float))
    nb, e = centres.size, math.exp(half)
    top = mp * e * (1.0 + BOUND_SLACK)

    def stat(shape: tuple[int, ...], low: float, high: float, sens: float) -> Statistic:
        res = float(params.get("resolution", finest_resolution(low, high)))
        return Statistic(shape, low, high, res, sensitivity=sens)

    out = {"s0": stat((nb * k, m), 0, top, e * math.sqrt(m)),
           "s1": stat((nb * k, m, p), -top * a, top * a, a * e * math.sqrt(m * p)),
           "s2": stat((nb * k, m, q), -top * a * a, top * a * a, a * a * e * p * math.sqrt(m)),
           "n": Statistic((1,), 0, mp, is_count=True),
           "excluded": Statistic((1,), 0, mp, is_count=True)}
    if params.get("event_sums", True):
        out |= {"d": Statistic((k, m), 0, mp, is_count=True),
                "xsum": stat((k, m, p), -mp * a, mp * a, a * math.sqrt(p))}
    if params.get("ties", "efron") == "efron":
        out |= {"e0": stat((nb * k, me), 0, top, e),
                "e1": stat((nb * k, me, p), -top * a, top * a, a * e * math.sqrt(p)),
                "e2": stat((nb * k, me, q), -top * a * a, top * a * a, a * a * e * p)}
    return out


def _cox_changes(cohort: Cohort, params: Params) -> np.ndarray:
    """The site-only cells of risk-set changes of the Cox sums (per stratum, whole grid):
    censorings (and, mapping ``up``, events after the last point) per interval, the first and
    the last risk set (:func:`hemafed.privacy.disclosure.risk_set_changes`)."""
    data = COX_SITE_CACHE.get(cohort, params)
    released = data.rows.event & (data.on_grid >= 0)
    return risk_set_changes(np.zeros(data.rows.time.size, dtype=np.intp), data.at_risk_count,
                            released, data.grid.size, data.rows.group, data.n_strata)


COX_RISK_SET_SUMS = register(Query(
    "cox_risk_set_sums", "3", compute=_cox_sums_compute, declare=_cox_sums_declare,
    check_params=_cox_check, risk_set_changes=_cox_changes,
    description="Cox risk-set sums S0, S1, S2 (upper triangle) per linear-predictor band "
                "(lp_bands) and stratum at the requested grid times (time_index; Efron tie "
                "sums at tie_index) at beta, and the event counts and covariate sums there "
                "(unless event_sums is false)"))


def expand_cox_sums(sums: Mapping[str, np.ndarray], grid_size: int,
                    time_index: Sequence[int] | np.ndarray | None = None,
                    tie_index: Sequence[int] | np.ndarray | None = None
                    ) -> dict[str, np.ndarray]:
    """Pooled ``cox_risk_set_sums`` back on the whole grid with full ``p x p`` blocks.

    Rows that were not requested are zero, which is exact as long as ``time_index`` holds every
    grid time with a pooled event and ``tie_index`` every one with two or more (Efron's tie
    terms vanish for a single event).
    """
    p = sums["s1"].shape[-1]
    t_idx = np.arange(grid_size) if time_index is None else np.asarray(time_index, dtype=np.intp)
    e_idx = t_idx if tie_index is None else np.asarray(tie_index, dtype=np.intp)
    out: dict[str, np.ndarray] = {}
    for name, idx in (("s0", t_idx), ("s1", t_idx), ("s2", t_idx), ("d", t_idx),
                      ("xsum", t_idx), ("e0", e_idx), ("e1", e_idx), ("e2", e_idx)):
        if name not in sums:
            continue
        val = sums[name]
        if name in ("s2", "e2"):
            val = unpack_upper(val, p)
        full = np.zeros((val.shape[0], grid_size, *val.shape[2:]))
        full[:, idx] = val
        out[name] = full
    return out


def cox_derivatives(sums: Mapping[str, np.ndarray], beta: np.ndarray,
                    efron: bool) -> tuple[float, np.ndarray, np.ndarray]:
    """Log partial likelihood, gradient and Hessian from (pooled) risk-set sums, exactly.

    ``sums`` hold full ``p x p`` blocks ``s2``/``e2`` (see :func:`expand_cox_sums`).
    Breslow: ``sum_j [xsum_j b - d_j log S0_j]``; Efron replaces ``d_j log S0_j`` by
    ``sum_{l<d_j} log(S0_j - l/d_j E0_j)`` (and likewise for the derivatives).
    """
    d = sums["d"].reshape(-1)
    keep = d > 0
    d = d[keep]
    p = beta.size
    s0 = sums["s0"].reshape(-1)[keep]
    s1 = sums["s1"].reshape(-1, p)[keep]
    s2 = sums["s2"].reshape(-1, p, p)[keep]
    xsum = sums["xsum"].reshape(-1, p)[keep]
    scale = np.broadcast_to(np.asarray(sums.get("log_scale", 0.0)), sums["d"].shape)
    loglik = float(np.sum(xsum @ beta)) - float(np.sum(d * scale.reshape(-1)[keep]))
    grad = xsum.sum(axis=0)
    hess = np.zeros((p, p))
    if not efron:
        loglik -= float(np.sum(d * np.log(s0)))
        a = s1 / s0[:, None]
        grad = grad - np.sum(d[:, None] * a, axis=0)
        hess -= np.einsum("k,kij->ij", d / s0, s2) - np.einsum("k,ki,kj->ij", d, a, a)
        return loglik, grad, hess
    e0 = sums["e0"].reshape(-1)[keep]
    e1 = sums["e1"].reshape(-1, p)[keep]
    e2 = sums["e2"].reshape(-1, p, p)[keep]
    for ell in range(int(d.max()) if d.size else 0):
        live = d > ell
        f = ell / d[live]
        phi = s0[live] - f * e0[live]
        a = (s1[live] - f[:, None] * e1[live]) / phi[:, None]
        b2 = s2[live] - f[:, None, None] * e2[live]
        loglik -= float(np.sum(np.log(phi)))
        grad = grad - a.sum(axis=0)
        hess -= np.einsum("k,kij->ij", 1.0 / phi, b2) - np.einsum("ki,kj->ij", a, a)
    return loglik, grad, hess


def event_means(sums: Mapping[str, np.ndarray], efron: bool) -> np.ndarray:
    """Per stratum and grid time, the expected covariate of an event under the model,
    ``E[x | R(t_j)]`` (Efron: the average over the tied events of the Efron-weighted means, as
    lifelines' Schoenfeld residuals use). Zero where there is no event."""
    d = sums["d"]
    s0, s1 = sums["s0"], sums["s1"]
    out = np.zeros(s1.shape)
    has = d > 0
    if not efron:
        out[has] = s1[has] / s0[has][:, None]
        return out
    dd, e0, e1 = d[has], sums["e0"][has], sums["e1"][has]
    acc = np.zeros((dd.size, s1.shape[-1]))
    for ell in range(int(dd.max()) if dd.size else 0):
        live = dd > ell
        f = ell / dd[live]
        phi = s0[has][live] - f * e0[live]
        acc[live] += (s1[has][live] - f[:, None] * e1[live]) / phi[:, None]
    out[has] = acc / dd[:, None]
    return out


def _site_deriv_compute(cohort: Cohort, params: Params) -> dict[str, np.ndarray]:
    data = COX_SITE_CACHE.get(cohort, params)
    beta = np.asarray(params["beta"], dtype=float)
    efron = params.get("ties", "efron") == "efron"
    sums = combine_bands(expand_cox_sums(data.sums(beta, efron), data.grid.size),
                         lp_bands(data.half_width, beta))
    loglik, grad, hess = cox_derivatives(sums, beta, efron)
    # a log partial likelihood is <= 0; a one-patient stratum gives 0 up to rounding (+1e-16)
    return {"loglik": np.array([min(loglik, 0.0)]), "grad": grad, "hess": hess,
            "d": sums["d"].sum(axis=0), "n": np.array([float(data.rows.time.size)]),
            "excluded": np.array([float(data.rows.excluded)])}


def _site_deriv_declare(params: Params) -> dict[str, Statistic]:
    mp = _max_patients(params)
    spec = DesignSpec.from_params(params.get("design"))
    m, p = check_grid(params.get("grid")).size, spec.width
    a, e = exp_bound(params)
    res = float(params.get("resolution", DEFAULT_RESOLUTION))
    # each event adds at most 2*sum|b|*a + log(n) to -loglik; gradient terms are within 2a
    span = 2.0 * math.log(e) + math.log(mp)
    return {"loglik": Statistic((1,), -mp * span - 1.0, 0.0, res, sensitivity=span * mp),
            "grad": Statistic((p,), -2 * mp * a, 2 * mp * a, res, sensitivity=2 * a * mp),
            "hess": Statistic((p, p), -mp * a * a * 4, mp * a * a * 4, res,
                              sensitivity=4 * a * a * mp),
            "d": Statistic((m,), 0, mp, is_count=True),
            "n": Statistic((1,), 0, mp, is_count=True),
            "excluded": Statistic((1,), 0, mp, is_count=True)}


COX_SITE_DERIVATIVES = register(Query(
    "cox_site_derivatives", "1", compute=_site_deriv_compute, declare=_site_deriv_declare,
    check_params=_cox_check,
    description="log partial likelihood, gradient, Hessian of the site's own stratum at beta"))


# --- concordance histogram --------------------------------------------------------------------

def _conc_check(params: Params) -> None:
    _cox_check(params)
    bins = params.get("lp_bins", 256)
    if not isinstance(bins, int) or not 2 <= bins <= 10_000:
        raise InvalidInput("parameter 'lp_bins' must be an int in [2, 10000]")


def lp_edges(params: Params) -> np.ndarray:
    """Public bin edges of the centred linear predictor, from the design bounds and beta."""
    spec = DesignSpec.from_params(params["design"])
    beta = np.asarray(params["beta"], dtype=float)
    span = float(np.sum(np.abs(beta) * spec.half_width)) or 1.0
    return np.linspace(-span, span, int(params.get("lp_bins", 256)) + 1)


def _conc_compute(cohort: Cohort, params: Params) -> dict[str, np.ndarray]:
    data = COX_SITE_CACHE.get(cohort, params)
    rows, beta = data.rows, np.asarray(params["beta"], dtype=float)
    edges = lp_edges(params)
    nb, m = edges.size - 1, data.grid.size
    lp_bin = np.clip(np.searchsorted(edges, rows.x @ beta, side="right") - 1, 0, nb - 1)
    at_risk_count, on_grid = data.at_risk_count, data.on_grid
    # comparable to an event at t_j (lifelines' rule): exits after t_j, or censored at t_j
    later_count = np.where(rows.event & (on_grid >= 0), on_grid, at_risk_count)
    acc = np.zeros((m + 1, nb))
    np.add.at(acc, (later_count, lp_bin), 1.0)
    events = np.zeros((m, nb))
    ev = rows.event & (on_grid >= 0)
    np.add.at(events, (on_grid[ev], lp_bin[ev]), 1.0)
    return {"events": events, "later": _reverse_cumsum_above(acc)}


def _conc_declare(params: Params) -> dict[str, Statistic]:
    mp = _max_patients(params)
    m, nb = check_grid(params.get("grid")).size, int(params.get("lp_bins", 256))
    return {"events": Statistic((m, nb), 0, mp, is_count=True),
            "later": Statistic((m, nb), 0, mp, sensitivity=math.sqrt(m), is_count=True)}


def _conc_changes(cohort: Cohort, params: Params) -> np.ndarray:
    """The site-only cells of the concordance table's risk-set changes: ``later[j] -
    later[j+1]`` per linear-predictor bin is the events at ``t_{j+1}`` (the ``events`` table,
    under the rule) plus the patients censored in between, so the censorings per (interval,
    bin) are cells, and so are the first and last comparable sets per bin."""
    data = COX_SITE_CACHE.get(cohort, params)
    rows, beta = data.rows, np.asarray(params["beta"], dtype=float)
    edges = lp_edges(params)
    nb = edges.size - 1
    lp_bin = np.clip(np.searchsorted(edges, rows.x @ beta, side="right") - 1, 0, nb - 1)
    ev = rows.event & (data.on_grid >= 0)
    later_count = np.where(ev, data.on_grid, data.at_risk_count)
    return risk_set_changes(np.zeros(rows.time.size, dtype=np.intp), later_count, ev,
                            data.grid.size, lp_bin, nb)


COX_CONCORDANCE_HISTOGRAM = register(Query(
    "cox_concordance_histogram", "1", compute=_conc_compute, declare=_conc_declare,
    check_params=_conc_check, risk_set_changes=_conc_changes,
    description="events and comparable subjects per grid time and linear-predictor bin"))


def query_params(duration_col: str, event_col: str, grid: Sequence[float] | np.ndarray, *,
                 time_mapping: str = "exact", **extra: Any) -> dict[str, Any]:
    """The common parameters of the survival queries, JSON-serialisable."""
    return {"duration_col": duration_col, "event_col": event_col,
            "grid": [float(t) for t in grid], "time_mapping": time_mapping, **extra}
