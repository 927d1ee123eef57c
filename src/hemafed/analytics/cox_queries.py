"""The Cox site queries: ``cox_risk_set_sums`` (risk-set sums at a public ``beta``, per
linear-predictor band and stratum, at the requested grid rows, ``S2`` packed as upper
triangles) and ``cox_site_derivatives`` (log partial likelihood, gradient and Hessian of the
site's own stratum: stratified-by-site Cox is the plain sum of these).

Both answer from the site's cached rows (:data:`hemafed.analytics.cox_cache.COX_SITE_CACHE`).
"""

from __future__ import annotations

import math

import numpy as np

from hemafed.analytics import cox_math
from hemafed.analytics.cox_cache import COX_SITE_CACHE
from hemafed.analytics.design import DesignSpec, check_coefficients
from hemafed.analytics.survival_grid import check_grid, check_survival_params, n_levels
from hemafed.cohort.model import Cohort
from hemafed.errors import InvalidInput
from hemafed.federation.checks import max_patients
from hemafed.federation.queries import Params, Query, Statistic, register
from hemafed.privacy.disclosure import risk_set_changes

DEFAULT_RESOLUTION = 1e-10


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


def check_cox_params(params: Params) -> None:
    check_survival_params(params)
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


def _cox_sums_compute(cohort: Cohort, params: Params) -> dict[str, np.ndarray]:
    data = COX_SITE_CACHE.get(cohort, params)
    t_idx, e_idx = cox_row_index(params)
    out = data.sums(np.asarray(params["beta"], dtype=float),
                    params.get("ties", "efron") == "efron", t_idx, e_idx,
                    bool(params.get("event_sums", True)))
    out["n"] = np.array([float(data.rows.time.size)])
    out["excluded"] = np.array([float(data.rows.excluded)])
    return out


def _cox_sums_declare(params: Params) -> dict[str, Statistic]:
    mp = max_patients(params)
    spec = DesignSpec.from_params(params.get("design"))
    k, p = n_levels(params, "strata"), spec.width
    t_idx, e_idx = cox_row_index(params)
    m, me, q = t_idx.size, e_idx.size, p * (p + 1) // 2
    a = float(spec.half_width.max())
    centres, half = cox_math.lp_bands(spec.half_width, np.asarray(params["beta"], dtype=float))
    nb, e = centres.size, math.exp(half)
    top = mp * e * (1.0 + cox_math.BOUND_SLACK)

    def stat(shape: tuple[int, ...], low: float, high: float, sens: float) -> Statistic:
        res = float(params.get("resolution", cox_math.finest_resolution(low, high)))
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
    check_params=check_cox_params, risk_set_changes=_cox_changes,
    description="Cox risk-set sums S0, S1, S2 (upper triangle) per linear-predictor band "
                "(lp_bands) and stratum at the requested grid times (time_index; Efron tie "
                "sums at tie_index) at beta, and the event counts and covariate sums there "
                "(unless event_sums is false)"))


def _site_deriv_compute(cohort: Cohort, params: Params) -> dict[str, np.ndarray]:
    data = COX_SITE_CACHE.get(cohort, params)
    beta = np.asarray(params["beta"], dtype=float)
    efron = params.get("ties", "efron") == "efron"
    sums = cox_math.combine_bands(cox_math.expand_cox_sums(data.sums(beta, efron), data.grid.size),
                                  cox_math.lp_bands(data.half_width, beta))
    loglik, grad, hess = cox_math.cox_derivatives(sums, beta, efron)
    # a log partial likelihood is <= 0; a one-patient stratum gives 0 up to rounding (+1e-16)
    return {"loglik": np.array([min(loglik, 0.0)]), "grad": grad, "hess": hess,
            "d": sums["d"].sum(axis=0), "n": np.array([float(data.rows.time.size)]),
            "excluded": np.array([float(data.rows.excluded)])}


def _site_deriv_declare(params: Params) -> dict[str, Statistic]:
    mp = max_patients(params)
    spec = DesignSpec.from_params(params.get("design"))
    m, p = check_grid(params.get("grid")).size, spec.width
    a, e = cox_math.exp_bound(params)
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
    check_params=check_cox_params,
    description="log partial likelihood, gradient, Hessian of the site's own stratum at beta"))


