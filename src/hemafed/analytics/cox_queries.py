"""The Cox site queries: ``cox_risk_set_sums`` (risk-set sums at a public ``beta``, per
linear-predictor band and stratum, at the requested grid rows, ``S2`` packed as upper
triangles) and ``cox_site_derivatives`` (log partial likelihood, gradient and Hessian of the
site's own stratum: stratified-by-site Cox is the plain sum of these).

Both answer from the site's cached rows (:data:`hemafed.analytics.cox_cache.COX_SITE_CACHE`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Self

import numpy as np

from hemafed.analytics import cox_math
from hemafed.analytics.cox_cache import COX_SITE_CACHE, CoxSiteData
from hemafed.analytics.design import DesignSpec, check_coefficients
from hemafed.analytics.survival_grid import GridParams, grouping
from hemafed.cohort.model import Cohort
from hemafed.errors import InvalidInput
from hemafed.federation import checks
from hemafed.federation.queries import Params, Query, Statistic, register
from hemafed.privacy.disclosure import risk_set_changes

DEFAULT_RESOLUTION = 1e-10
"""Fixed-point step of ``cox_site_derivatives`` when the request names none."""


def _index_param(params: Params, key: str, m: int) -> tuple[int, ...] | None:
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
    return tuple(int(i) for i in idx)


@dataclass(frozen=True, kw_only=True)
class CoxParams(GridParams):
    """``cox_risk_set_sums``: the survival parameters, the public design and ``beta``, an
    optional strata column with its levels, the tie method, the grid rows to return
    (``time_index``, default all; Efron tie sums at ``tie_index``, default the same), whether
    to return the event sums (``d``, ``xsum``: they do not depend on ``beta``) and the
    fixed-point step (default the finest each sum's range allows)."""

    QUERY = "cox_risk_set_sums"
    design: DesignSpec
    beta: tuple[float, ...]
    strata_col: str | None = None
    strata_levels: tuple[str, ...] | None = None
    ties: str = "efron"
    time_index: tuple[int, ...] | None = None
    tie_index: tuple[int, ...] | None = None
    event_sums: bool = True
    resolution: float | None = None

    @classmethod
    def from_mapping(cls, params: Params) -> Self:
        cls.known(params)
        return cls(**cls.cox_fields(params))

    @classmethod
    def cox_fields(cls, params: Params) -> dict[str, Any]:
        """The checked values of this class's keys (for a subclass's ``from_mapping``)."""
        common = cls.common(params)
        spec = DesignSpec.from_params(params.get("design"))
        beta = params.get("beta")
        if not isinstance(beta, list | tuple) or len(beta) != spec.width:
            raise InvalidInput(f"parameter 'beta' must list {spec.width} coefficients "
                               f"({', '.join(spec.names)})")
        check_coefficients(beta, spec.half_width, spec.names)
        strata_col, strata_levels = grouping(params, "strata")
        m = len(common["grid"])
        return {**common, "design": spec, "beta": tuple(float(b) for b in beta),
                "strata_col": strata_col, "strata_levels": strata_levels,
                "ties": checks.choice(params, "ties", ("efron", "breslow"), "efron"),
                "time_index": _index_param(params, "time_index", m),
                "tie_index": _index_param(params, "tie_index", m),
                "event_sums": checks.flag(params, "event_sums", True),
                "resolution": None if params.get("resolution") is None
                else checks.resolution(params)}

    def to_mapping(self) -> dict[str, Any]:
        out = super().to_mapping()
        out["design"] = self.design.to_params()
        return out

    @property
    def efron(self) -> bool:
        return self.ties == "efron"

    @property
    def beta_array(self) -> np.ndarray:
        return np.asarray(self.beta, dtype=float)

    @property
    def n_strata(self) -> int:
        return 1 if self.strata_levels is None else len(self.strata_levels)

    def row_index(self) -> tuple[np.ndarray, np.ndarray]:
        """Grid positions the risk-set sums are returned at (``time_index``, default all) and
        the positions of the Efron tie sums (``tie_index``, default the same)."""
        times = np.arange(len(self.grid)) if self.time_index is None \
            else np.asarray(self.time_index, dtype=np.intp)
        return times, times if self.tie_index is None else np.asarray(self.tie_index,
                                                                       dtype=np.intp)

    def site_data(self, cohort: Cohort) -> CoxSiteData:
        """The site's cached rows for these parameters (:data:`COX_SITE_CACHE`)."""
        return COX_SITE_CACHE.get(cohort, self, self.design, self.strata_col,
                                  self.strata_levels)


def _cox_sums_compute(cohort: Cohort, params: CoxParams) -> dict[str, np.ndarray]:
    data = params.site_data(cohort)
    t_idx, e_idx = params.row_index()
    out = data.sums(params.beta_array, params.efron, t_idx, e_idx, params.event_sums)
    out["n"] = np.array([float(data.rows.time.size)])
    out["excluded"] = np.array([float(data.rows.excluded)])
    return out


def _cox_sums_declare(params: CoxParams) -> dict[str, Statistic]:
    mp = params.max_patients
    spec = params.design
    k, p = params.n_strata, spec.width
    t_idx, e_idx = params.row_index()
    m, me, q = t_idx.size, e_idx.size, p * (p + 1) // 2
    a = float(spec.half_width.max())
    centres, half = cox_math.lp_bands(spec.half_width, params.beta_array)
    nb, e = centres.size, math.exp(half)
    top = mp * e * (1.0 + cox_math.BOUND_SLACK)

    def stat(shape: tuple[int, ...], low: float, high: float, sens: float) -> Statistic:
        res = cox_math.finest_resolution(low, high) if params.resolution is None \
            else params.resolution
        return Statistic(shape, low, high, res, sensitivity=sens)

    out = {"s0": stat((nb * k, m), 0, top, e * math.sqrt(m)),
           "s1": stat((nb * k, m, p), -top * a, top * a, a * e * math.sqrt(m * p)),
           "s2": stat((nb * k, m, q), -top * a * a, top * a * a, a * a * e * p * math.sqrt(m)),
           "n": Statistic((1,), 0, mp, is_count=True),
           "excluded": Statistic((1,), 0, mp, is_count=True)}
    if params.event_sums:
        out |= {"d": Statistic((k, m), 0, mp, is_count=True),
                "xsum": stat((k, m, p), -mp * a, mp * a, a * math.sqrt(p))}
    if params.efron:
        out |= {"e0": stat((nb * k, me), 0, top, e),
                "e1": stat((nb * k, me, p), -top * a, top * a, a * e * math.sqrt(p)),
                "e2": stat((nb * k, me, q), -top * a * a, top * a * a, a * a * e * p)}
    return out


def _cox_changes(cohort: Cohort, params: CoxParams) -> np.ndarray:
    """The site-only cells of risk-set changes of the Cox sums (per stratum, whole grid):
    censorings (and, mapping ``up``, events after the last point) per interval, the first and
    the last risk set (:func:`hemafed.privacy.disclosure.risk_set_changes`)."""
    data = params.site_data(cohort)
    released = data.rows.event & (data.on_grid >= 0)
    return risk_set_changes(np.zeros(data.rows.time.size, dtype=np.intp), data.at_risk_count,
                            released, data.grid.size, data.rows.group, data.n_strata)


COX_RISK_SET_SUMS = register(Query(
    "cox_risk_set_sums", "3", compute=_cox_sums_compute, declare=_cox_sums_declare,
    params_type=CoxParams, risk_set_changes=_cox_changes,
    description="Cox risk-set sums S0, S1, S2 (upper triangle) per linear-predictor band "
                "(lp_bands) and stratum at the requested grid times (time_index; Efron tie "
                "sums at tie_index) at beta, and the event counts and covariate sums there "
                "(unless event_sums is false)"))


@dataclass(frozen=True, kw_only=True)
class SiteDerivativesParams(CoxParams):
    """``cox_site_derivatives``: the keys of ``cox_risk_set_sums`` (the site's own stratum:
    the hub sends no strata and no row selection), its fixed-point step defaulting to
    :data:`DEFAULT_RESOLUTION`."""

    QUERY = "cox_site_derivatives"


def _site_deriv_compute(cohort: Cohort, params: SiteDerivativesParams) -> dict[str, np.ndarray]:
    data = params.site_data(cohort)
    beta, efron = params.beta_array, params.efron
    sums = cox_math.combine_bands(cox_math.expand_cox_sums(data.sums(beta, efron), data.grid.size),
                                  cox_math.lp_bands(data.half_width, beta))
    loglik, grad, hess = cox_math.cox_derivatives(sums, beta, efron)
    # a log partial likelihood is <= 0; a one-patient stratum gives 0 up to rounding (+1e-16)
    return {"loglik": np.array([min(loglik, 0.0)]), "grad": grad, "hess": hess,
            "d": sums["d"].sum(axis=0), "n": np.array([float(data.rows.time.size)]),
            "excluded": np.array([float(data.rows.excluded)])}


def _site_deriv_declare(params: SiteDerivativesParams) -> dict[str, Statistic]:
    mp, m, p = params.max_patients, len(params.grid), params.design.width
    a, e = cox_math.exp_bound(params.design.half_width, params.beta_array)
    res = DEFAULT_RESOLUTION if params.resolution is None else params.resolution
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
    params_type=SiteDerivativesParams,
    description="log partial likelihood, gradient, Hessian of the site's own stratum at beta"))


