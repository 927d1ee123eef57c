"""The site's cache of Cox rows.

The Cox queries run every Newton round with a new ``beta`` only, so each site keeps its rows,
centred design matrix and time order in :data:`COX_SITE_CACHE` (bounded, per cohort object
and public parameters) and answers a round with cumulative sums over its time-sorted rows.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from hemafed.analytics.cox_math import lp_bands, upper_index
from hemafed.analytics.design import DesignSpec
from hemafed.analytics.survival_grid import GridParams, SurvivalRows, grid_positions
from hemafed.cohort.model import Cohort


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
        """Risk-set sums at ``beta`` with ``S2`` packed (see :func:`hemafed.analytics.cox_math.expand_cox_sums`);
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
    (outcome columns, grid, time mapping, design, strata: not ``beta`` nor the row selections,
    so every Newton round and the concordance histogram share an entry). Cohorts are immutable
    values; a site that reloads its data builds a new ``Cohort`` and so misses the cache.
    Thread-safe.
    """

    def __init__(self, size: int = 16) -> None:
        self._size = size
        self._entries: OrderedDict[tuple[Any, ...],
                                  tuple[weakref.ref[Cohort], CoxSiteData]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, cohort: Cohort, params: GridParams, spec: DesignSpec,
            strata_col: str | None = None,
            strata_levels: tuple[str, ...] | None = None) -> CoxSiteData:
        key = (id(cohort), params.duration_col, params.event_col, params.grid,
               params.time_mapping, spec, strata_col, strata_levels)
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None and hit[0]() is cohort:
                self._entries.move_to_end(key)
                return hit[1]
        data = CoxSiteData.build(params.rows(cohort, spec, strata_col, strata_levels),
                                 params.grid_array,
                                 1 if strata_levels is None else len(strata_levels),
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


COX_SITE_CACHE = _SiteDataCache()
"""The site-side cache of Cox rows; ``COX_SITE_CACHE.clear()`` empties it."""
