"""Site queries of inverse-probability-of-treatment weighting (IPTW), and the maths both sides share.

A site computes each of its patients' weight from *public* parameters only: the propensity
model's coefficients (fitted before by :class:`~hemafed.analytics.logistic.FederatedLogisticRegression`),
its :class:`~hemafed.analytics.design.DesignSpec` and, for stabilised weights, the pooled share
of treated patients. ``w = pi / e(x)`` for the treated and ``(1 - pi) / (1 - e(x))`` for the
others (``pi = 1`` for unstabilised weights). The largest possible weight follows from the
design bounds and the coefficients, so every declared bound comes from the parameters alone.

Queries (all over the rows complete in the treatment, the confounders and, when named, the
outcome columns):

* ``iptw_balance``: per arm, counts, sums of weights and squared weights, and unweighted and
  weighted sums of each design column and of its square (standardised mean differences).
* ``iptw_km_table``: per arm and public grid time, events and number at risk, plain and weighted.
* ``iptw_km_influence``: given the pooled weighted counts, the sum over the site's patients of
  their squared infinitesimal-jackknife influence on each arm's weighted curve (its robust SE).
* ``iptw_cox_sums``: weighted Cox risk-set sums for the treatment effect at a public ``beta``
  (Breslow and Efron tie terms, as ``survival::coxph(..., weights=w)`` accumulates them).
* ``iptw_cox_robust``: ``sum_i w_i^2 L_i^2`` of the per-patient score residuals ``L_i`` at the
  fitted ``beta``, given the pooled hazard increments and risk-set means (public, sent by the
  hub): the "meat" of the robust (sandwich) variance, summed over sites.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from hemafed.analytics.describe import codec_resolution
from hemafed.analytics.design import (
    DesignSpec,
    check_coefficients,
    complete_case_mask,
    design_values,
)
from hemafed.analytics.survival_grid import (
    check_grid,
    effective_times,
    fits_grid,
    grid_positions,
    keep_fitting,
)
from hemafed.cohort.model import Cohort
from hemafed.errors import InvalidInput
from hemafed.federation.checks import column, max_patients
from hemafed.federation.queries import Params, Query, Statistic, register
from hemafed.privacy.disclosure import risk_set_changes

DEFAULT_RESOLUTION = 1e-10
TIES = ("efron", "breslow")


# --- parameters -------------------------------------------------------------------------------

def _max_patients(params: Params) -> int:
    return max_patients(params)


_col = column


def check_weight_params(params: Params) -> None:
    """The propensity part every IPTW query shares: design, coefficients, marginal share."""
    spec = DesignSpec.from_params(params.get("design"))
    _col(params, "treatment")
    gamma = params.get("gamma")
    if (not isinstance(gamma, list | tuple) or len(gamma) != spec.width + 1
            or not all(isinstance(g, int | float) and math.isfinite(g) for g in gamma)):
        raise InvalidInput(f"parameter 'gamma' must list {spec.width + 1} finite propensity "
                           "coefficients (intercept first, original scale)")
    check_coefficients(gamma[1:], spec.half_width, spec.names, key="gamma")
    pi = params.get("marginal", 1.0)
    if not isinstance(pi, int | float) or not 0 < pi <= 1:
        raise InvalidInput("parameter 'marginal' must be the treated share in (0, 1) (stabilised "
                           "weights) or 1 (unstabilised)")
    cap = params.get("max_weight")
    if cap is not None and (not isinstance(cap, int | float) or not 0 < cap < math.inf):
        raise InvalidInput("parameter 'max_weight' must be a positive public cap on the weights")


def _check_outcome_params(params: Params) -> None:
    check_weight_params(params)
    _col(params, "duration_col")
    _col(params, "event_col")
    check_grid(params.get("grid"))


def weight_bound(params: Params) -> float:
    """The largest weight any patient can get: from the design bounds and coefficients, or the
    declared ``max_weight`` when that is smaller (weights are truncated at it)."""
    spec = DesignSpec.from_params(params["design"])
    gamma = np.asarray(params["gamma"], dtype=float)
    b = spec.bounds
    lo = gamma[0] + float(np.sum(np.minimum(gamma[1:] * b[:, 0], gamma[1:] * b[:, 1])))
    hi = gamma[0] + float(np.sum(np.maximum(gamma[1:] * b[:, 0], gamma[1:] * b[:, 1])))
    pi = float(params.get("marginal", 1.0))
    stab0 = 1.0 - pi if pi < 1.0 else 1.0
    # 1 / expit(lo) = 1 + exp(-lo); 1 / (1 - expit(hi)) = 1 + exp(hi)
    bound = max(pi * (1.0 + math.exp(min(-lo, 700.0))),
                stab0 * (1.0 + math.exp(min(hi, 700.0))))
    cap = params.get("max_weight")
    return bound if cap is None else min(bound, float(cap))


def design_bound(params: Params) -> np.ndarray:
    """``max |x_j|`` of each design column, from its bounds."""
    b = DesignSpec.from_params(params["design"]).bounds
    return np.maximum(np.abs(b[:, 0]), np.abs(b[:, 1]))


# --- the site's rows --------------------------------------------------------------------------

@dataclass(frozen=True)
class WeightedRows:
    """Complete-case rows of one site: treatment, confounders, weight, and (optionally) outcome."""

    treated: np.ndarray
    x: np.ndarray
    weight: np.ndarray
    time: np.ndarray
    event: np.ndarray


def _numeric(cohort: Cohort, col: str, kind: str) -> np.ndarray:
    if col not in cohort.patients.columns:
        raise InvalidInput(f"{kind} column {col!r} is not in the site's cohort")
    s = cohort.patients[col]
    try:
        return s.astype("Float64").to_numpy(dtype=float, na_value=np.nan)
    except (TypeError, ValueError):
        raise InvalidInput(f"{kind} column {col!r} is not numeric or 0/1") from None


def propensity_weights(x: np.ndarray, treated: np.ndarray, gamma: np.ndarray,
                       marginal: float) -> np.ndarray:
    """IPTW weights from the propensity coefficients (stabilised when ``marginal < 1``)."""
    eta = gamma[0] + x @ gamma[1:]
    e = 1.0 / (1.0 + np.exp(-eta))
    pi1, pi0 = (marginal, 1.0 - marginal) if marginal < 1.0 else (1.0, 1.0)
    return np.where(treated == 1, pi1 / e, pi0 / (1.0 - e))


def weighted_rows(cohort: Cohort, params: Params, outcome: bool) -> WeightedRows:
    """Select complete cases, check the treatment is 0/1 and compute each patient's weight."""
    spec = DesignSpec.from_params(params["design"])
    tcol = _col(params, "treatment")
    a = _numeric(cohort, tcol, "treatment")
    values = design_values(cohort, spec)
    mask = complete_case_mask(cohort, spec, values=values) & ~np.isnan(a)
    time = event = np.empty(0)
    if outcome:
        dcol, ecol = _col(params, "duration_col"), _col(params, "event_col")
        t_all, e_all = _numeric(cohort, dcol, "duration"), _numeric(cohort, ecol, "event")
        mask &= ~np.isnan(t_all) & ~np.isnan(e_all)
        time, event = t_all[mask], e_all[mask]
        if np.any((event != 0) & (event != 1)):
            raise InvalidInput(f"event column {ecol!r} must be 0/1")
        if time.size and time.min() < 0:
            raise InvalidInput(f"duration column {dcol!r} has negative times")
        mode, grid = str(params.get("time_mapping", "exact")), check_grid(params["grid"])
        # rows the grid cannot hold are left out, never refused (survival_grid)
        fits = fits_grid(time, event.astype(bool), grid, mode)
        mask, time, event = keep_fitting(mask, fits), time[fits], event[fits]
        time = effective_times(time, event.astype(bool), grid, mode)
    a = a[mask]
    if np.any((a != 0) & (a != 1)):
        raise InvalidInput(f"treatment column {tcol!r} must be 0/1 (or boolean)")
    x = values[mask]
    b = spec.bounds
    if x.size and ((x < b[:, 0]) | (x > b[:, 1])).any():
        raise InvalidInput("a confounder has values outside its declared bounds; widen them "
                           "(nothing is clipped)")
    w = propensity_weights(x, a, np.asarray(params["gamma"], dtype=float),
                           float(params.get("marginal", 1.0)))
    cap = params.get("max_weight")
    if cap is not None:
        # truncated at the spec's public cap (part of the estimand, docs/queries.md): a site
        # never refuses on its own largest weight, which would be a bisection oracle
        w = np.minimum(w, float(cap))
    return WeightedRows(a, x, w, time, event.astype(bool))


def _above(counts_by_exit: np.ndarray) -> np.ndarray:
    """``out[j] = sum_{c > j} acc[c]`` (rows at risk at grid point j exit at count c > j)."""
    return np.cumsum(counts_by_exit[::-1], axis=0)[::-1][1:]


# --- iptw_balance ------------------------------------------------------------------------------

def _balance_compute(cohort: Cohort, params: Params) -> dict[str, np.ndarray]:
    outcome = params.get("duration_col") is not None
    rows = weighted_rows(cohort, params, outcome)
    k = rows.x.shape[1]
    out: dict[str, np.ndarray] = {name: np.zeros((2, k)) for name in ("sx", "sxx", "swx", "swxx")}
    out |= {name: np.zeros(2) for name in ("n", "sw", "sww")}
    for arm in (0, 1):
        sel = rows.treated == arm
        x, w = rows.x[sel], rows.weight[sel]
        out["n"][arm] = float(sel.sum())
        out["sw"][arm], out["sww"][arm] = w.sum(), np.square(w).sum()
        out["sx"][arm], out["sxx"][arm] = x.sum(axis=0), np.square(x).sum(axis=0)
        out["swx"][arm] = w @ x
        out["swxx"][arm] = w @ np.square(x)
    return out


def _balance_declare(params: Params) -> dict[str, Statistic]:
    m = _max_patients(params)
    k = DesignSpec.from_params(params.get("design")).width
    bound = np.asarray(design_bound(params), dtype=float)
    a = float(bound.max())
    # one patient adds its whole confounder row (one arm): the L2 change is the norm of the
    # per-covariate bounds, not the largest bound (which understated it for k > 1)
    na, naa = float(np.linalg.norm(bound)), float(np.linalg.norm(bound * bound))
    wm = weight_bound(params)
    res = float(params.get("resolution", DEFAULT_RESOLUTION))

    def stat(shape: tuple[int, ...], high: float, low: float = 0.0,
             sens: float | None = None) -> Statistic:
        return Statistic(shape, low, high, codec_resolution(low, high, res),
                         sensitivity=high / m if sens is None else sens)

    return {"n": Statistic((2,), 0, m, is_count=True),
            "sw": stat((2,), m * wm), "sww": stat((2,), m * wm * wm),
            "sx": stat((2, k), m * a, -m * a, na), "sxx": stat((2, k), m * a * a, sens=naa),
            "swx": stat((2, k), m * wm * a, -m * wm * a, wm * na),
            "swxx": stat((2, k), m * wm * a * a, sens=wm * naa)}


def _balance_check(params: Params) -> None:
    check_weight_params(params)
    if params.get("duration_col") is not None:
        _check_outcome_params(params)


IPTW_BALANCE = register(Query(
    "iptw_balance", "1", compute=_balance_compute, declare=_balance_declare,
    check_params=_balance_check,
    description="per arm: n, sums of IPTW weights and squared weights, plain and weighted sums "
                "of each confounder and its square (standardised mean differences)"))


# --- iptw_km_table -----------------------------------------------------------------------------

def _km_compute(cohort: Cohort, params: Params) -> dict[str, np.ndarray]:
    rows = weighted_rows(cohort, params, True)
    grid = check_grid(params["grid"])
    m = grid.size
    count, on_grid = grid_positions(rows.time, grid)
    out = {name: np.zeros((2, m)) for name in ("events", "at_risk", "w_events", "w_at_risk")}
    for arm in (0, 1):
        sel = rows.treated == arm
        ev = sel & rows.event & (on_grid >= 0)
        out["events"][arm] = np.bincount(on_grid[ev], minlength=m)[:m]
        out["w_events"][arm] = np.bincount(on_grid[ev], weights=rows.weight[ev], minlength=m)[:m]
        out["at_risk"][arm] = _above(np.bincount(count[sel], minlength=m + 1).astype(float))
        out["w_at_risk"][arm] = _above(np.bincount(count[sel], weights=rows.weight[sel],
                                                   minlength=m + 1))
    return out


def _km_declare(params: Params) -> dict[str, Statistic]:
    mp = _max_patients(params)
    m = check_grid(params.get("grid")).size
    wm = weight_bound(params)
    res = float(params.get("resolution", DEFAULT_RESOLUTION))
    hi = mp * wm
    return {"events": Statistic((2, m), 0, mp, is_count=True),
            "at_risk": Statistic((2, m), 0, mp, sensitivity=math.sqrt(m), is_count=True),
            "w_events": Statistic((2, m), 0, hi, codec_resolution(0, hi, res), sensitivity=wm),
            "w_at_risk": Statistic((2, m), 0, hi, codec_resolution(0, hi, res),
                                   sensitivity=wm * math.sqrt(m))}


IPTW_KM_TABLE = register(Query(
    "iptw_km_table", "1", compute=_km_compute, declare=_km_declare,
    check_params=_check_outcome_params,
    description="per arm and grid time: events and number at risk, plain and IPTW-weighted"))


def _km_influence_check(params: Params) -> None:
    _check_outcome_params(params)
    m = check_grid(params.get("grid")).size
    for key in ("w_events", "w_at_risk"):
        try:
            arr = np.asarray(params.get(key), dtype=float)
        except (TypeError, ValueError):
            raise InvalidInput(f"parameter {key!r} must be the pooled (2, {m}) sums") from None
        if arr.shape != (2, m) or not np.all(np.isfinite(arr)) or arr.min() < 0:
            raise InvalidInput(f"parameter {key!r} must be the pooled non-negative (2, {m}) sums")


def _km_influence_compute(cohort: Cohort, params: Params) -> dict[str, np.ndarray]:
    """Each patient's infinitesimal-jackknife influence on its arm's weighted KM curve, by the
    product-limit recursion ``U(t) = U(t-) (1 - h) - S(t-) w_i (dN_i - Y_i h) / Y_w`` that
    ``survival::survfit`` uses for weighted curves; returns ``sum_i U_i(t)^2`` per arm."""
    rows = weighted_rows(cohort, params, True)
    grid = check_grid(params["grid"])
    m = grid.size
    d_w = np.asarray(params["w_events"], dtype=float)
    y_w = np.asarray(params["w_at_risk"], dtype=float)
    count, on_grid = grid_positions(rows.time, grid)
    died = rows.event & (on_grid >= 0)
    out = np.zeros((2, m))
    for arm in (0, 1):
        sel = rows.treated == arm
        w, c, dj = rows.weight[sel], count[sel], np.where(died[sel], on_grid[sel], -1)
        u = np.zeros(w.size)
        surv = 1.0
        with np.errstate(divide="ignore", invalid="ignore"):
            haz = np.where(y_w[arm] > 0, np.minimum(d_w[arm] / y_w[arm], 1.0), 0.0)
        for j in np.flatnonzero(haz > 0):
            at_risk = c > j
            # an honest pooled Y_w holds the patient's own weight: dividing by at least w_i
            # keeps each step within the declared min(1, w_max / Y_w) whatever the hub sends
            y = np.maximum(y_w[arm, j], w)
            u = u * (1.0 - haz[j]) - surv * w * ((dj == j) - at_risk * haz[j]) / y
            surv *= 1.0 - haz[j]
            out[arm, j] = float(u @ u)
        # between event times the influence does not move: carry the sums forward
        last = 0.0
        for k in range(m):
            if haz[k] > 0:
                last = out[arm, k]
            else:
                out[arm, k] = last
    return {"influence_sq": out}


def km_influence_bound(params: Params) -> float:
    """``max |U_i(t)|``: each event time moves it by at most ``min(1, w_max / Y_w)``, since a
    patient at risk carries at most the whole weight at risk (the site divides by
    ``max(Y_w, w_i)`` and caps the hazard at 1, so this holds for any hub-sent ``Y_w``)."""
    wm = weight_bound(params)
    try:
        y_w = np.asarray(params.get("w_at_risk"), dtype=float)
        d_w = np.asarray(params.get("w_events"), dtype=float)
        steps = (d_w > 0) & (y_w > 0)
        return float(np.max(np.sum(np.where(steps, np.minimum(1.0, wm / np.where(
            y_w > 0, y_w, 1.0)), 0.0), axis=-1))) if steps.any() else 1.0
    except (TypeError, ValueError):
        return float(check_grid(params.get("grid")).size)


def _km_influence_declare(params: Params) -> dict[str, Statistic]:
    mp = _max_patients(params)
    m = check_grid(params.get("grid")).size
    b = km_influence_bound(params)
    hi = mp * b * b
    res = float(params.get("resolution", 1e-14))
    return {"influence_sq": Statistic((2, m), 0.0, hi, codec_resolution(0.0, hi, res),
                                      sensitivity=b * b * math.sqrt(m))}


IPTW_KM_INFLUENCE = register(Query(
    "iptw_km_influence", "1", compute=_km_influence_compute, declare=_km_influence_declare,
    check_params=_km_influence_check,
    description="sum of squared per-patient influences on each arm's weighted KM curve "
                "(robust standard errors)"))


# --- iptw_cox_sums -----------------------------------------------------------------------------

def _beta(params: Params) -> float:
    beta = params.get("beta")
    if (not isinstance(beta, list | tuple) or len(beta) != 1
            or not isinstance(beta[0], int | float) or not math.isfinite(beta[0])):
        raise InvalidInput("parameter 'beta' must be a list of one finite treatment coefficient")
    # the treatment is 0/1: half-width 1/2
    check_coefficients(beta, [0.5], ["treatment"])
    return float(beta[0])


def _cox_check(params: Params) -> None:
    _check_outcome_params(params)
    _beta(params)
    if params.get("ties", "efron") not in TIES:
        raise InvalidInput(f"parameter 'ties' must be one of {TIES}")


def _cox_compute(cohort: Cohort, params: Params) -> dict[str, np.ndarray]:
    rows = weighted_rows(cohort, params, True)
    grid = check_grid(params["grid"])
    m = grid.size
    count, on_grid = grid_positions(rows.time, grid)
    a, w = rows.treated, rows.weight
    wr = w * np.exp(_beta(params) * a)
    ev = rows.event & (on_grid >= 0)
    j = on_grid[ev]

    def at_risk(values: np.ndarray) -> np.ndarray:
        return _above(np.bincount(count, weights=values, minlength=m + 1))

    def at_deaths(values: np.ndarray) -> np.ndarray:
        return np.bincount(j, weights=values[ev], minlength=m)[:m]

    # a is 0/1, so a^2 = a: S1 and S2 coincide, as do E1 and E2
    return {"s0": at_risk(wr), "s1": at_risk(wr * a),
            "d": np.bincount(j, minlength=m)[:m].astype(float),
            "dw": at_deaths(w), "xdw": at_deaths(w * a),
            "e0": at_deaths(wr), "e1": at_deaths(wr * a)}


def _cox_declare(params: Params) -> dict[str, Statistic]:
    mp = _max_patients(params)
    m = check_grid(params.get("grid")).size
    wm = weight_bound(params)
    r = math.exp(abs(float(params.get("beta", [0.0])[0])))
    res = float(params.get("resolution", DEFAULT_RESOLUTION))

    def stat(high: float, sens: float) -> Statistic:
        return Statistic((m,), 0.0, high, codec_resolution(0.0, high, res), sensitivity=sens)

    return {"s0": stat(mp * wm * r, wm * r * math.sqrt(m)),
            "s1": stat(mp * wm * r, wm * r * math.sqrt(m)),
            "d": Statistic((m,), 0, mp, is_count=True),
            "dw": stat(mp * wm, wm), "xdw": stat(mp * wm, wm),
            "e0": stat(mp * wm * r, wm * r), "e1": stat(mp * wm * r, wm * r)}


def _cox_changes(cohort: Cohort, params: Params) -> np.ndarray:
    """The site-only cells of the weighted risk-set changes (attack M): a censored patient's
    weight and treatment leave ``s0``/``s1`` between two grid points, so the censorings per
    interval, the first and the last risk sets are cells
    (:func:`hemafed.privacy.disclosure.risk_set_changes`)."""
    rows = weighted_rows(cohort, params, True)
    grid = check_grid(params["grid"])
    count, on_grid = grid_positions(rows.time, grid)
    return risk_set_changes(np.zeros(count.size, dtype=np.intp), count,
                            rows.event & (on_grid >= 0), grid.size)


IPTW_COX_SUMS = register(Query(
    "iptw_cox_sums", "1", compute=_cox_compute, declare=_cox_declare, check_params=_cox_check,
    risk_set_changes=_cox_changes,
    description="IPTW-weighted Cox risk-set and tied-event sums of the treatment at beta"))


def weighted_cox_derivatives(sums: dict[str, np.ndarray], beta: float, efron: bool
                             ) -> tuple[float, float, float]:
    """Weighted log partial likelihood, score and information for one 0/1 covariate, as
    ``survival::coxph`` accumulates them (Efron: each tied death set's log terms weighted by the
    mean weight of its deaths)."""
    keep = sums["d"] > 0
    d, dw, xdw = sums["d"][keep], sums["dw"][keep], sums["xdw"][keep]
    s0, s1 = sums["s0"][keep], sums["s1"][keep]
    e0, e1 = sums["e0"][keep], sums["e1"][keep]
    loglik, score, info = float(beta * xdw.sum()), float(xdw.sum()), 0.0
    if not efron:
        xbar = s1 / s0
        return (loglik - float(np.sum(dw * np.log(s0))), score - float(np.sum(dw * xbar)),
                float(np.sum(dw * (xbar - xbar**2))))
    meanwt = dw / d
    for ell in range(int(d.max()) if d.size else 0):
        live = d > ell
        f = ell / d[live]
        den = s0[live] - f * e0[live]
        xbar = (s1[live] - f * e1[live]) / den
        mw = meanwt[live]
        loglik -= float(np.sum(mw * np.log(den)))
        score -= float(np.sum(mw * xbar))
        info += float(np.sum(mw * (xbar - xbar**2)))  # S2 = S1 for a 0/1 covariate
    return loglik, score, info


def residual_terms(sums: dict[str, np.ndarray], beta: float, efron: bool) -> dict[str, list[float]]:
    """Per grid time, the pooled terms a site needs for its patients' score residuals:
    ``h`` / ``g`` (sums over the tied-death steps of the hazard increment and of it times the
    risk-set mean, for patients still at risk), ``hd`` / ``gd`` (the same, Efron-discounted, for
    the patients dying there) and ``xb`` (a death's average risk-set mean). Zero without deaths."""
    m = sums["d"].size
    out = {name: np.zeros(m) for name in ("h", "g", "hd", "gd", "xb")}
    for jj in np.flatnonzero(sums["d"] > 0):
        d = round(float(sums["d"][jj]))
        steps = range(d) if efron else range(1)
        meanwt = float(sums["dw"][jj]) / (d if efron else 1)
        for ell in steps:
            f = ell / d if efron else 0.0
            den = float(sums["s0"][jj] - f * sums["e0"][jj])
            xbar = float(sums["s1"][jj] - f * sums["e1"][jj]) / den
            haz = meanwt / den
            out["h"][jj] += haz
            out["g"][jj] += haz * xbar
            out["hd"][jj] += haz * (1.0 - f)
            out["gd"][jj] += haz * (1.0 - f) * xbar
            out["xb"][jj] += xbar / len(steps)
    return {k: [float(v) for v in arr] for k, arr in out.items()}


# --- iptw_cox_robust ---------------------------------------------------------------------------

_TERMS = ("h", "g", "hd", "gd", "xb")


def _terms(params: Params, m: int) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name in _TERMS:
        raw = params.get(name)
        try:
            arr = np.asarray(raw, dtype=float)
        except (TypeError, ValueError):
            raise InvalidInput(f"parameter {name!r} must be a list of {m} numbers") from None
        if arr.shape != (m,) or not np.all(np.isfinite(arr)) or (name != "xb" and arr.min() < 0):
            raise InvalidInput(f"parameter {name!r} must be a list of {m} finite numbers "
                               "(non-negative hazard terms)")
        out[name] = arr
    return out


def _robust_check(params: Params) -> None:
    _cox_check(params)
    _terms(params, check_grid(params.get("grid")).size)


def score_residuals(rows: WeightedRows, grid: np.ndarray, beta: float,
                    terms: dict[str, np.ndarray]) -> np.ndarray:
    """Each row's (unweighted) Cox score residual at ``beta`` given the pooled residual terms."""
    count, on_grid = grid_positions(rows.time, grid)
    zero = np.zeros(1)
    ch = np.concatenate([zero, np.cumsum(terms["h"])])  # ch[c] = sum_{j < c} h_j
    cg = np.concatenate([zero, np.cumsum(terms["g"])])
    a, r = rows.treated, np.exp(beta * rows.treated)
    died = rows.event & (on_grid >= 0)
    own = np.where(died, on_grid, 0)
    # patients who die at t_j are at risk before j with the full terms, at j with the Efron ones
    before = np.where(died, own, count)
    hsum = ch[before] + np.where(died, terms["hd"][own], 0.0)
    gsum = cg[before] + np.where(died, terms["gd"][own], 0.0)
    return np.where(died, a - terms["xb"][own], 0.0) - r * (a * hsum - gsum)


def _robust_compute(cohort: Cohort, params: Params) -> dict[str, np.ndarray]:
    rows = weighted_rows(cohort, params, True)
    grid = check_grid(params["grid"])
    resid = score_residuals(rows, grid, _beta(params), _terms(params, grid.size))
    wl = rows.weight * resid
    return {"meat": np.array([float(wl @ wl)]), "score": np.array([float(wl.sum())])}


def residual_bound(params: Params) -> float:
    """``max |L_i|`` from the public terms: ``|a - xbar| <= 1`` and the cumulative hazard terms."""
    r = math.exp(abs(_beta(params)))
    h = float(np.sum(np.asarray(params["h"], dtype=float)))
    g = float(np.sum(np.abs(np.asarray(params["g"], dtype=float))))
    return 1.0 + r * (h + g)


def _robust_declare(params: Params) -> dict[str, Statistic]:
    mp = _max_patients(params)
    wm = weight_bound(params)
    lb = residual_bound(params) if "h" in params else 1.0
    res = float(params.get("resolution", DEFAULT_RESOLUTION))
    hi_meat, hi_score = mp * (wm * lb) ** 2, mp * wm * lb
    return {"meat": Statistic((1,), 0.0, hi_meat, codec_resolution(0.0, hi_meat, res),
                              sensitivity=(wm * lb) ** 2),
            "score": Statistic((1,), -hi_score, hi_score,
                               codec_resolution(-hi_score, hi_score, res), sensitivity=wm * lb)}


IPTW_COX_ROBUST = register(Query(
    "iptw_cox_robust", "1", compute=_robust_compute, declare=_robust_declare,
    check_params=_robust_check,
    description="sum of squared weighted Cox score residuals of the treatment (robust variance)"))


def public_params(params: dict[str, Any]) -> dict[str, Any]:
    """JSON-ready copy (floats, lists) of hub-built parameters."""
    return {k: ([float(v) for v in val] if isinstance(val, np.ndarray) else val)
            for k, val in params.items()}
