"""Site queries of federated survival analysis, and the pure maths both sides share.

Every query is a pure function of the site's cohort and public parameters, returning sums that
are added over sites. Times live on a public, sorted *grid* of time points:

* ``time_mapping="exact"`` (default): every event time must lie on the grid (within 1e-9
  relative); censoring times may lie anywhere (the at-risk indicator ``T >= t_j`` is computed
  from the site's own times). Results then equal the pooled analysis exactly. A site with an
  event off the grid refuses with ``InvalidInput``.
* ``"up"`` / ``"down"``: each time is moved to the next / previous grid point before anything is
  summed: a binned approximation for analyst-declared coarse grids.

The exact grid itself is public only as a secure histogram: :data:`time_histogram` counts events
and exits on a fine public lattice (``k / steps_per_unit``, e.g. days in years with 365.25), so
the data are discretised to that resolution at the site and the pooled reference must be computed
on the same discretised times.

Queries: ``time_histogram`` (the lattice counts), ``km_risk_table`` (events, censored, at risk
per group and grid time), ``cox_risk_set_sums`` (Cox risk-set sums at a public ``beta``, per
stratum), ``cox_site_derivatives`` (log partial likelihood, gradient and Hessian of the site's
own stratum: stratified-by-site Cox is the plain sum of these) and ``cox_concordance_histogram``
(events and comparable subjects per grid time and linear-predictor bin, for Harrell's C).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from hemafed.analytics.design import DesignSpec, complete_case_mask, design_matrix
from hemafed.cohort.model import Cohort
from hemafed.errors import InvalidInput
from hemafed.federation.queries import Params, Query, Statistic, register

TIME_MAPPINGS = ("exact", "up", "down")
REL_TOL = 1e-9
DEFAULT_RESOLUTION = 1e-10


# --- parameters -------------------------------------------------------------------------------

def _max_patients(params: Params) -> int:
    return int(params.get("max_patients", 1_000_000))


def _col(params: Params, key: str, default: str) -> str:
    col = params.get(key, default)
    if not isinstance(col, str) or not col:
        raise InvalidInput(f"parameter {key!r} must name a cohort column, got {col!r}")
    return col


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


def effective_times(time: np.ndarray, event: np.ndarray, grid: np.ndarray, mode: str) -> np.ndarray:
    """Times as the sums see them: raw (``exact``, events checked on the grid) or moved to the grid."""
    tol = REL_TOL * np.maximum(1.0, np.abs(time))
    if mode == "exact":
        pos = np.clip(np.searchsorted(grid, time - tol), 0, grid.size - 1)
        off = event & (np.abs(grid[pos] - time) > tol)
        if off.any():
            raise InvalidInput(f"{int(off.sum())} event time(s) are not on the declared grid; use "
                               f"the exact event-time grid (time_grid) or time_mapping='up'/'down'")
        return np.where(event, grid[pos], time)
    if mode == "up":
        pos = np.searchsorted(grid, time - tol)
        return np.where(pos < grid.size, grid[np.minimum(pos, grid.size - 1)], np.inf)
    pos = np.searchsorted(grid, time + tol, side="right") - 1
    if (pos < 0).any():
        raise InvalidInput(f"{int((pos < 0).sum())} time(s) are before the first grid point "
                           f"{grid[0]:g}; with time_mapping='down' the grid must start at or before 0")
    return grid[pos]


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
    mask = complete_case_mask(cohort, spec, required)
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
    eff = effective_times(time, ev, grid, _mapping(params))
    if spec is not None:
        x, _ = design_matrix(cohort, spec, mask)
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
    if np.any(np.abs(k - time * spu) > 1e-6):
        raise InvalidInput(f"duration column {dcol!r} has times off the lattice k/{spu:g}; "
                           f"round times to that resolution at the site first")
    size = _hist_size(params)
    if k.size and k.max() >= size:
        raise InvalidInput(f"duration column {dcol!r} has times beyond max_time "
                           f"{float(params['max_time']):g}; raise max_time")
    ki = k.astype(int)
    return {"events": np.bincount(ki[event], minlength=size).astype(float),
            "exits": np.bincount(ki, minlength=size).astype(float),
            "excluded": np.array([float(len(cohort) - mask.sum())])}


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

def _cox_check(params: Params) -> None:
    _survival_check(params)
    spec = DesignSpec.from_params(params.get("design"))
    beta = params.get("beta")
    if not isinstance(beta, list | tuple) or len(beta) != spec.width:
        raise InvalidInput(f"parameter 'beta' must list {spec.width} coefficients "
                           f"({', '.join(spec.names)})")
    if not np.all(np.isfinite(np.asarray(beta, dtype=float))):
        raise InvalidInput("parameter 'beta' must be finite")
    if params.get("ties", "efron") not in ("efron", "breslow"):
        raise InvalidInput(f"parameter 'ties' must be 'efron' or 'breslow', got {params.get('ties')!r}")


def risk_set_sums(rows: SurvivalRows, grid: np.ndarray, beta: np.ndarray, n_strata: int,
                  efron: bool) -> dict[str, np.ndarray]:
    """Per stratum and grid time: S0, S1, S2 over the risk set, events d, sum of x over events
    and (Efron) the same exp(x beta)-weighted sums over the tied events."""
    m, p = grid.size, beta.size
    x = rows.x
    w = np.exp(x @ beta)
    xw = x * w[:, None]
    xxw = x[:, :, None] * xw[:, None, :]
    at_risk_count, on_grid = grid_positions(rows.time, grid)
    out = {"s0": np.zeros((n_strata, m)), "s1": np.zeros((n_strata, m, p)),
           "s2": np.zeros((n_strata, m, p, p)), "d": np.zeros((n_strata, m)),
           "xsum": np.zeros((n_strata, m, p))}
    if efron:
        out |= {"e0": np.zeros((n_strata, m)), "e1": np.zeros((n_strata, m, p)),
                "e2": np.zeros((n_strata, m, p, p))}
    for s in range(n_strata):
        sel = rows.group == s
        counts = at_risk_count[sel]
        order = np.argsort(-counts, kind="stable")
        # rows at risk at t_j are those with count > j: a prefix of the descending order
        n_at_risk = np.searchsorted(-counts[order], -np.arange(m), side="left")
        for name, val in (("s0", w), ("s1", xw), ("s2", xxw)):
            cums = np.concatenate([np.zeros((1, *val.shape[1:])),
                                   np.cumsum(val[sel][order], axis=0)])
            out[name][s] = cums[n_at_risk]
        ev = sel & rows.event & (on_grid >= 0)
        j = on_grid[ev]
        np.add.at(out["d"][s], j, 1.0)
        np.add.at(out["xsum"][s], j, x[ev])
        if efron:
            np.add.at(out["e0"][s], j, w[ev])
            np.add.at(out["e1"][s], j, xw[ev])
            np.add.at(out["e2"][s], j, xxw[ev])
    return out


def _cox_rows(cohort: Cohort, params: Params) -> tuple[SurvivalRows, np.ndarray, np.ndarray]:
    spec = DesignSpec.from_params(params["design"])
    rows = survival_rows(cohort, params, spec, "strata")
    return rows, check_grid(params["grid"]), np.asarray(params["beta"], dtype=float)


def _cox_sums_compute(cohort: Cohort, params: Params) -> dict[str, np.ndarray]:
    rows, grid, beta = _cox_rows(cohort, params)
    out = risk_set_sums(rows, grid, beta, _n_levels(params, "strata"),
                        params.get("ties", "efron") == "efron")
    out["n"] = np.array([float(rows.time.size)])
    out["excluded"] = np.array([float(rows.excluded)])
    return out


def exp_bound(params: Params) -> tuple[float, float]:
    """Public bounds ``(max |x - center|, max exp(x beta))`` from the design bounds and beta."""
    spec = DesignSpec.from_params(params["design"])
    beta = np.asarray(params["beta"], dtype=float)
    hw = spec.half_width
    return float(hw.max()), float(np.exp(np.sum(np.abs(beta) * hw)))


def _cox_sums_declare(params: Params) -> dict[str, Statistic]:
    mp = _max_patients(params)
    spec = DesignSpec.from_params(params.get("design"))
    k, m, p = _n_levels(params, "strata"), check_grid(params.get("grid")).size, spec.width
    a, e = exp_bound(params)
    res = float(params.get("resolution", DEFAULT_RESOLUTION))
    out = {"s0": Statistic((k, m), 0, mp * e, res, sensitivity=e * math.sqrt(m)),
           "s1": Statistic((k, m, p), -mp * a * e, mp * a * e, res,
                           sensitivity=a * e * math.sqrt(m * p)),
           "s2": Statistic((k, m, p, p), -mp * a * a * e, mp * a * a * e, res,
                           sensitivity=a * a * e * p * math.sqrt(m)),
           "d": Statistic((k, m), 0, mp, is_count=True),
           "xsum": Statistic((k, m, p), -mp * a, mp * a, res, sensitivity=a * math.sqrt(p)),
           "n": Statistic((1,), 0, mp, is_count=True),
           "excluded": Statistic((1,), 0, mp, is_count=True)}
    if params.get("ties", "efron") == "efron":
        out |= {"e0": Statistic((k, m), 0, mp * e, res, sensitivity=e),
                "e1": Statistic((k, m, p), -mp * a * e, mp * a * e, res,
                                sensitivity=a * e * math.sqrt(p)),
                "e2": Statistic((k, m, p, p), -mp * a * a * e, mp * a * a * e, res,
                                sensitivity=a * a * e * p)}
    return out


COX_RISK_SET_SUMS = register(Query(
    "cox_risk_set_sums", "1", compute=_cox_sums_compute, declare=_cox_sums_declare,
    check_params=_cox_check,
    description="Cox risk-set sums S0, S1, S2 and event sums per stratum and grid time at beta"))


def cox_derivatives(sums: Mapping[str, np.ndarray], beta: np.ndarray,
                    efron: bool) -> tuple[float, np.ndarray, np.ndarray]:
    """Log partial likelihood, gradient and Hessian from (pooled) risk-set sums, exactly.

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
    loglik = float(np.sum(xsum @ beta))
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


def _site_deriv_compute(cohort: Cohort, params: Params) -> dict[str, np.ndarray]:
    rows, grid, beta = _cox_rows(cohort, params)
    efron = params.get("ties", "efron") == "efron"
    n_strata = _n_levels(params, "strata")
    sums = risk_set_sums(rows, grid, beta, n_strata, efron)
    loglik, grad, hess = cox_derivatives(sums, beta, efron)
    return {"loglik": np.array([loglik]), "grad": grad, "hess": hess,
            "d": sums["d"].sum(axis=0), "n": np.array([float(rows.time.size)]),
            "excluded": np.array([float(rows.excluded)])}


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
    rows, grid, beta = _cox_rows(cohort, params)
    edges = lp_edges(params)
    nb, m = edges.size - 1, grid.size
    lp_bin = np.clip(np.searchsorted(edges, rows.x @ beta, side="right") - 1, 0, nb - 1)
    at_risk_count, on_grid = grid_positions(rows.time, grid)
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


COX_CONCORDANCE_HISTOGRAM = register(Query(
    "cox_concordance_histogram", "1", compute=_conc_compute, declare=_conc_declare,
    check_params=_conc_check,
    description="events and comparable subjects per grid time and linear-predictor bin"))


def query_params(duration_col: str, event_col: str, grid: Sequence[float] | np.ndarray, *,
                 time_mapping: str = "exact", **extra: Any) -> dict[str, Any]:
    """The common parameters of the survival queries, JSON-serialisable."""
    return {"duration_col": duration_col, "event_col": event_col,
            "grid": [float(t) for t in grid], "time_mapping": time_mapping, **extra}
