"""Federated Fine-Gray subdistribution-hazard regression (as ``cmprsk::crr``) from secure sums.

Competing events are declared as in :mod:`hemafed.analytics.competing` (an ordered list of
``(time column, status column)`` pairs; each patient has the first cause with status 1, else is
censored at the earliest listed time). For the cause of interest the subdistribution risk set
at a cause time ``t`` holds every patient still event-free (``T >= t``, weight 1) and every
patient who had a *competing* event before ``t``, with weight ``G(t-) / G(T-)``, ``G`` being the
Kaplan-Meier estimate of the censoring distribution; ties are handled as ``crr`` does (Breslow).

Three site queries, every output a sum over patients:

* ``finegray_table``: per public grid time (every exit time, from the secure lattice
  histograms; or the whole plan lattice with every exit moved up to its interval's end, when
  the study spec fixes a ``lattice``), the exit histogram and events per cause over the complete cases (covariates
  included, as ``crr`` drops incomplete rows before estimating ``G``); the hub derives ``G``.
* ``finegray_sums`` (each Newton round, public ``beta`` and ``G``): the weighted risk-set sums
  ``S0, S1, S2`` at the cause's event times per linear-predictor band (see
  :func:`hemafed.analytics.cox_math.lp_bands`), events and event covariate sums; the
  hub's Breslow log partial likelihood, score and information are then the pooled ones. In the
  last round it also returns the competing-event sums ``C0(u), C1(u)`` at every grid time.
* ``finegray_score_outer``: given public per-time arrays the hub derives from the pooled sums,
  each patient's influence term ``eta_i + psi_i`` of Fine and Gray's robust variance (score
  residual plus the term for the estimated ``G``, as ``crr``'s ``crrvv``), returned as the sum
  of their outer products. The variance is ``I^-1 (sum u_i u_i') I^-1``, as ``crr``'s ``var``.

>>> # fg = FederatedFineGray().fit(fed, "age + sex", causes=MDS_AML_VS_DEATH)
>>> # fg.summary  # lifelines' columns; exp(coef) are subdistribution hazard ratios
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from hemafed.analytics import cox_math, results
from hemafed.analytics.competing import MDS_AML_VS_DEATH, _causes, first_cause
from hemafed.analytics.cox import maximise_partial_likelihood
from hemafed.analytics.design import (
    DesignSpec,
    Term,
    check_coefficients,
    complete_case_mask,
    design_matrix,
    design_values,
    parse_formula,
)
from hemafed.analytics.fitter import FederatedFitter, same_sites
from hemafed.analytics.km import time_grid
from hemafed.analytics.survival_grid import (
    check_grid,
    effective_times,
    fits_grid,
    grid_positions,
    keep_fitting,
    lattice_grid,
)
from hemafed.cohort.model import Cohort
from hemafed.errors import InvalidInput
from hemafed.federation import checks
from hemafed.federation.api import Federation
from hemafed.federation.queries import Params, Query, QueryParams, Statistic, register
from hemafed.privacy.disclosure import risk_set_changes

log = logging.getLogger(__name__)


# --- parameters --------------------------------------------------------------------------------

FG_MAPPINGS = ("exact", "up")
"""Fine-Gray time mappings: ``exact`` (the grid holds every exit time, from the secure time
histograms) or ``up`` (the whole plan lattice, each exit moved up to its interval's end: the
pooled ``crr`` on times rounded up to the lattice)."""

INFLUENCE_ARRAYS = ("p0", "p1", "q0", "q1", "e1", "ss2", "qn")
"""Public per-grid-time arrays the hub sends for the robust variance (see :func:`influence`)."""


@dataclass(frozen=True, kw_only=True)
class FineGrayParams(QueryParams):
    """``finegray_table``: the (time, status) column pair of each cause, the cause of interest
    (1-based), the public design and grid, and how exit times map onto the grid."""

    QUERY = "finegray_table"
    causes: tuple[tuple[str, str], ...]
    design: DesignSpec
    grid: tuple[float, ...]
    cause: int = 1
    time_mapping: str = "exact"
    max_patients: int = checks.MAX_PATIENTS

    @classmethod
    def _base(cls, params: Params) -> dict[str, Any]:
        causes = tuple(_causes(params))
        return {"causes": causes, "design": DesignSpec.from_params(params.get("design")),
                "grid": tuple(float(t) for t in check_grid(params.get("grid"))),
                "cause": checks.positive_int(params, "cause", 1, cap=len(causes)),
                "time_mapping": checks.choice(params, "time_mapping", FG_MAPPINGS, "exact"),
                "max_patients": checks.max_patients(params)}

    @classmethod
    def from_mapping(cls, params: Params) -> FineGrayParams:
        cls.known(params)
        return cls(**cls._base(params))

    def to_mapping(self) -> dict[str, Any]:
        return super().to_mapping() | {"design": self.design.to_params()}


@dataclass(frozen=True, kw_only=True)
class WeightedParams(FineGrayParams):
    """Those of the table and what the hub derived from it: ``cens_surv`` (``G(t-)`` in
    ``(0, 1]`` per grid time), ``time_index`` (the grid positions of the cause's event times,
    increasing) and the coefficients ``beta`` (one per design column)."""

    cens_surv: tuple[float, ...]
    time_index: tuple[int, ...]
    beta: tuple[float, ...]

    @classmethod
    def _weighted(cls, params: Params) -> dict[str, Any]:
        base = cls._base(params)
        m, spec = len(base["grid"]), base["design"]
        g = checks.numbers(params, "cens_surv", length=m, low=0.0, high=1.0)
        if min(g) == 0:
            raise InvalidInput("parameter 'cens_surv' must hold G(t-) in (0, 1] at every grid "
                               "time")
        idx = checks.numbers(params, "time_index", low=0, high=m - 1, increasing=True)
        if any(i != int(i) for i in idx):
            raise InvalidInput("parameter 'time_index' must list increasing grid positions of "
                               "the cause's event times")
        beta = checks.numbers(params, "beta", length=spec.width)
        check_coefficients(beta, spec.half_width, spec.names)
        return base | {"cens_surv": g, "time_index": tuple(int(i) for i in idx), "beta": beta}


@dataclass(frozen=True, kw_only=True)
class SumsParams(WeightedParams):
    """``finegray_sums``: the weighted ones, and whether to add the competing-event sums."""

    QUERY = "finegray_sums"
    competing_sums: bool = False

    @classmethod
    def from_mapping(cls, params: Params) -> SumsParams:
        cls.known(params)
        return cls(**cls._weighted(params),
                   competing_sums=checks.flag(params, "competing_sums", False))


@dataclass(frozen=True, kw_only=True)
class OuterParams(WeightedParams):
    """``finegray_score_outer``: the weighted ones (``time_index`` comes with the fit's fixed
    request and is not read), the pooled number of the cause's ``events``, and the public
    arrays :data:`INFLUENCE_ARRAYS` (``p0``, ``q0`` one number per grid time, the others one
    row of ``width`` numbers per grid time)."""

    QUERY = "finegray_score_outer"
    p0: tuple[float, ...]
    p1: tuple[tuple[float, ...], ...]
    q0: tuple[float, ...]
    q1: tuple[tuple[float, ...], ...]
    e1: tuple[tuple[float, ...], ...]
    ss2: tuple[tuple[float, ...], ...]
    qn: tuple[tuple[float, ...], ...]
    events: int = 0

    @classmethod
    def from_mapping(cls, params: Params) -> OuterParams:
        cls.known(params)
        out = cls._weighted(params)
        m, p = len(out["grid"]), out["design"].width
        arrays: dict[str, Any] = {}
        for name in INFLUENCE_ARRAYS:
            if name in ("p0", "q0"):
                arrays[name] = checks.numbers(params, name, length=m)
                continue
            rows = params.get(name)
            if not isinstance(rows, list | tuple) or len(rows) != m:
                raise InvalidInput(f"parameter {name!r} must be a finite array of shape "
                                   f"{(m, p)}")
            arrays[name] = tuple(checks.numbers({name: r}, name, length=p) for r in rows)
        return cls(**out, **arrays, events=checks.positive_int(params, "events", 0, low=0))

    def arrays(self) -> dict[str, np.ndarray]:
        """The public arrays as float arrays, ``(m,)`` or ``(m, width)``."""
        return {name: np.asarray(getattr(self, name), dtype=float) for name in INFLUENCE_ARRAYS}


# --- the site's rows ---------------------------------------------------------------------------

def _rows(cohort: Cohort, params: FineGrayParams
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """``(at_risk_count, grid_index, status, x, excluded)``: per complete case the number of
    grid points ``<= T``, the grid point of ``T``, status (1 cause of interest, 2 competing,
    0 censored) and the centred design row."""
    causes = params.causes
    grid = np.asarray(params.grid)
    spec = params.design
    values = design_values(cohort, spec)
    mask = complete_case_mask(cohort, spec, [c for pair in causes for c in pair], values=values)
    times = np.column_stack([cohort.numeric_column(t)[mask] for t, _ in causes])
    statuses = np.column_stack([cohort.numeric_column(s)[mask] for _, s in causes])
    if np.any((statuses != 0) & (statuses != 1)):
        raise InvalidInput(f"status columns {[s for _, s in causes]} must be 0/1")
    time, cause = first_cause(times, statuses)
    if time.size and time.min() < 0:
        raise InvalidInput(f"negative times in {[t for t, _ in causes]}")
    # exact: every exit must be on the grid (the censoring distribution needs the censoring
    # times); one that is not is excluded, not refused (hemafed.analytics.survival_grid).
    # up (a plan lattice): every exit moves up to its interval's end, censorings included
    mode = params.time_mapping
    every = np.ones(time.size, dtype=bool)
    fits = fits_grid(time, every, grid, mode)
    mask, time, cause = keep_fitting(mask, fits), time[fits], cause[fits]
    eff = effective_times(time, every[fits], grid, mode)
    count, on_grid = grid_positions(eff, grid)
    # up: an exit after the last grid point is at risk throughout, never an event
    cause = np.where(on_grid >= 0, cause, 0)
    k = params.cause
    status = np.where(cause == k, 1, np.where(cause > 0, 2, 0))
    x, _ = design_matrix(cohort, spec, mask, values=values)
    return count, on_grid, status, x - spec.center, int(len(cohort) - mask.sum())


# --- finegray_table ----------------------------------------------------------------------------

def _table_compute(cohort: Cohort, params: FineGrayParams) -> dict[str, np.ndarray]:
    count, on_grid, status, _, excluded = _rows(cohort, params)
    m = len(params.grid)
    events = np.zeros((2, m))
    for s in (1, 2):
        np.add.at(events[s - 1], on_grid[status == s], 1.0)
    return {"exits": np.bincount(count, minlength=m + 1).astype(float)[:m + 1],
            "events": events, "excluded": np.array([float(excluded)])}


def _table_declare(params: FineGrayParams) -> dict[str, Statistic]:
    mp, m = params.max_patients, len(params.grid)
    # per-time counts that only feed the estimator (G and the cause's event times), still under
    # the min-cell rule on any grid: the hub sees them pooled, and with the per-time xsum of
    # finegray_sums a month with one event would give that patient's covariates (attack L)
    return {"exits": Statistic((m + 1,), 0, mp, is_count=True),
            "events": Statistic((2, m), 0, mp, is_count=True),
            "excluded": Statistic((1,), 0, mp, is_count=True)}


register(Query("finegray_table", "1", compute=_table_compute, declare=_table_declare,
               params_type=FineGrayParams,
               description="exit histogram and events of the cause of interest and of the "
                           "competing causes per grid time, over the design's complete cases"))


# --- finegray_sums -----------------------------------------------------------------------------

def _banded(x: np.ndarray, beta: np.ndarray, half_width: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray, int]:
    """Per row its band and ``[w, w x, w xx']`` with ``w = exp(x b - band centre)``."""
    centres, half = cox_math.lp_bands(half_width, beta)
    lp = x @ beta
    band = np.minimum(np.searchsorted(centres + half, lp, side="left"), centres.size - 1)
    w = np.exp(lp - centres[band])
    iu, ju = cox_math.upper_index(x.shape[1])
    vals = np.concatenate([w[:, None], x * w[:, None], (x[:, iu] * x[:, ju]) * w[:, None]],
                          axis=1)
    return band, vals, centres.size


def _sums_compute(cohort: Cohort, params: SumsParams) -> dict[str, np.ndarray]:
    spec = params.design
    m = len(params.grid)
    g, t_idx = np.asarray(params.cens_surv), np.asarray(params.time_index, dtype=np.intp)
    beta = np.asarray(params.beta)
    count, on_grid, status, x, excluded = _rows(cohort, params)
    p = x.shape[1]
    band, vals, nb = _banded(x, beta, spec.half_width)
    q = vals.shape[1]
    at = np.zeros((nb, m + 1, q))   # event-free: at risk at j < count
    np.add.at(at, (band, count), vals)
    at = np.cumsum(at[:, ::-1], axis=1)[:, ::-1][:, 1:]
    cmp = status == 2               # competing: weight G_j / G(T-) at grid points j >= count
    comp = np.zeros((nb, m + 1, q))
    np.add.at(comp, (band[cmp], count[cmp]), vals[cmp] / g[on_grid[cmp]][:, None])
    comp = np.cumsum(comp, axis=1)[:, :m]
    total = (at + g[None, :, None] * comp)[:, t_idx]
    d = np.bincount(on_grid[status == 1], minlength=m).astype(float)
    xsum = np.zeros((m, p))
    np.add.at(xsum, on_grid[status == 1], x[status == 1])
    out = {"s0": total[..., 0], "s1": total[..., 1:1 + p], "s2": total[..., 1 + p:],
           "d": d[None, t_idx], "xsum": xsum[None, t_idx], "n": np.array([float(x.shape[0])]),
           "excluded": np.array([float(excluded)])}
    if params.competing_sums:
        out |= {"c0": comp[..., 0], "c1": comp[..., 1:1 + p]}
    return out


def _sums_declare(params: SumsParams) -> dict[str, Statistic]:
    mp = params.max_patients
    spec = params.design
    m = len(params.grid)
    mt = len(params.time_index)
    g_min = min(params.cens_surv)
    p, a = spec.width, float(spec.half_width.max())
    qq = p * (p + 1) // 2
    centres, half = cox_math.lp_bands(spec.half_width, np.asarray(params.beta))
    nb, e = centres.size, math.exp(half)
    top = mp * e * (1.0 + cox_math.BOUND_SLACK)

    def stat(shape: tuple[int, ...], low: float, high: float, sens: float) -> Statistic:
        return Statistic(shape, low, high, cox_math.finest_resolution(low, high), sensitivity=sens)

    # each patient's weight is <= 1 in a risk set (G_j <= G(T-) for T < t_j)
    out = {"s0": stat((nb, mt), 0, top, e * math.sqrt(mt)),
           "s1": stat((nb, mt, p), -top * a, top * a, a * e * math.sqrt(mt * p)),
           "s2": stat((nb, mt, qq), -top * a * a, top * a * a, a * a * e * p * math.sqrt(mt)),
           "d": Statistic((1, mt), 0, mp, is_count=True),
           "xsum": stat((1, mt, p), -mp * a, mp * a, a * math.sqrt(p)),
           "n": Statistic((1,), 0, mp, is_count=True),
           "excluded": Statistic((1,), 0, mp, is_count=True)}
    if params.competing_sums:
        c = top / g_min
        out |= {"c0": stat((nb, m), 0, c, e / g_min * math.sqrt(m)),
                "c1": stat((nb, m, p), -c * a, c * a, a * e / g_min * math.sqrt(m * p))}
    return out


def _sums_changes(cohort: Cohort, params: SumsParams) -> np.ndarray:
    """The site-only cells of the Fine-Gray risk-set changes (whole grid): per interval the
    censored exits and, separately, the competing exits (which stay in the risk set with the
    weight ``G_j / G(T-)``: a hub-chosen ``G`` weights each exit point's competing patients
    alike, so it separates them from the rest but not from each other), and the first and last
    risk sets; the cause's events are the released ``d`` (attack M)."""
    count, _, status, _, _ = _rows(cohort, params)
    return risk_set_changes(np.zeros(count.size, dtype=np.intp), count, status == 1,
                            len(params.grid), (status == 2).astype(np.intp), 2)


register(Query("finegray_sums", "1", compute=_sums_compute, declare=_sums_declare,
               params_type=SumsParams, risk_set_changes=_sums_changes,
               description="Fine-Gray weighted risk-set sums per linear-predictor band at the "
                           "cause's event times at beta and G; optionally the competing-event "
                           "sums C0, C1 per grid time"))


# --- finegray_score_outer ----------------------------------------------------------------------

def influence_bound(params: OuterParams) -> float:
    """A public bound on every element of a patient's ``eta_i + psi_i`` (from the parameters).

    A patient in a risk set weighs at most that risk set's ``S0``, so each event time adds at
    most ``d_j * 2a`` to ``|eta_i|`` (``a`` the largest covariate half-width); the ``psi`` terms
    are bounded by the public arrays themselves.
    """
    arr = params.arrays()
    a = float(params.design.half_width.max())
    events = params.events
    psi = float(np.abs(arr["ss2"]).max()) + float(np.abs(arr["qn"]).max())
    return 2 * a + 4 * a * events + psi


def influence(count: np.ndarray, on_grid: np.ndarray, status: np.ndarray, x: np.ndarray,
              beta: np.ndarray, g: np.ndarray, arr: dict[str, np.ndarray]) -> np.ndarray:
    """Each patient's ``eta_i + psi_i`` of Fine and Gray's robust variance (``crrvv``).

    With ``e_i = exp(x_i b)`` and the pooled, public cumulative arrays at the patient's own
    grid time ``T_i`` (index ``j_i``): ``p0 = sum_{t_j <= T} d_j / S0_j``, ``p1`` the same with
    ``E_j = S1_j / S0_j``, ``q0 = sum_{t_j > T} d_j G_j / S0_j`` and ``q1`` with ``E_j``:

        eta_i = [cause] (x_i - E(T_i)) - e_i (x_i p0 - p1) - [competing] e_i / G(T_i-) (x_i q0 - q1)
        psi_i = ss2(T_i) + [censored] q(T_i) / n(T_i)

    where ``ss2`` accumulates ``-c_u q(u) / n(u)^2`` over censoring times ``u <= T`` (``c_u``
    censored, ``n(u)`` at risk) and ``q(u) = sum_{t_j >= u} d_j G_j / S0_j (C1(u) - E_j C0(u))``.
    """
    j = on_grid
    e = np.exp(x @ beta)[:, None]
    eta = -e * (x * arr["p0"][j][:, None] - arr["p1"][j])
    cmp = status == 2
    eta[cmp] -= (e[cmp] / g[j[cmp]][:, None]) * (x[cmp] * arr["q0"][j[cmp]][:, None]
                                                 - arr["q1"][j[cmp]])
    ev = status == 1
    eta[ev] += x[ev] - arr["e1"][j[ev]]
    psi = arr["ss2"][j] + np.where((status == 0)[:, None], arr["qn"][j], 0.0)
    return eta + psi


def _outer_compute(cohort: Cohort, params: OuterParams) -> dict[str, np.ndarray]:
    count, on_grid, status, x, _ = _rows(cohort, params)
    u = influence(count, on_grid, status, x, np.asarray(params.beta),
                  np.asarray(params.cens_surv), params.arrays())
    # The declaration bounds each element of a patient's term by ``influence_bound``, which
    # holds for the honest pooled arrays and ``events``; the site computes as declared for any
    # hub-sent values (as the KM and illness-death influences do), so a hub that undercounts
    # ``events`` or inflates ``p0`` cannot push a patient's contribution above the declared
    # DP sensitivity. Honest inputs are never clipped.
    b = influence_bound(params) * (1.0 + cox_math.BOUND_SLACK)
    u = np.clip(u, -b, b)
    return {"outer": u.T @ u, "total": u.sum(axis=0)}


def _outer_declare(params: OuterParams) -> dict[str, Statistic]:
    mp = params.max_patients
    p = params.design.width
    b = influence_bound(params) * (1.0 + cox_math.BOUND_SLACK)
    hi = mp * b * b
    return {"outer": Statistic((p, p), -hi, hi, cox_math.finest_resolution(-hi, hi),
                               sensitivity=b * b * p),
            "total": Statistic((p,), -mp * b, mp * b, cox_math.finest_resolution(-mp * b, mp * b),
                               sensitivity=b * math.sqrt(p))}


register(Query("finegray_score_outer", "1", compute=_outer_compute, declare=_outer_declare,
               params_type=OuterParams,
               description="sum over patients of the outer products of their Fine-Gray "
                           "influence terms (robust variance), at public pooled arrays"))


# --- hub ---------------------------------------------------------------------------------------

def censoring_survival(exits: np.ndarray, events: np.ndarray) -> np.ndarray:
    """``G(t_j-)``, the Kaplan-Meier estimate of the censoring distribution just before each
    grid time (censoring as the event; failures at ``t`` are still at risk of censoring at
    ``t``, as ``survfit`` counts them), from the pooled exit histogram and event counts."""
    at_risk = np.cumsum(exits[::-1])[::-1][1:]
    censored = exits[1:] - events.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        factor = np.where(at_risk > 0, 1.0 - censored / np.where(at_risk > 0, at_risk, 1), 1.0)
    return np.concatenate([[1.0], np.cumprod(factor)[:-1]])


class FederatedFineGray(FederatedFitter):
    """Fine-Gray regression over a federation, as ``cmprsk::crr`` on the pooled complete cases.

    After ``fit``: ``summary`` (lifelines' columns; ``exp(coef)`` are subdistribution hazard
    ratios), ``params_``, ``standard_errors_`` (robust, as ``crr``), ``variance_matrix_``,
    ``log_likelihood_``, ``n_``, ``events_``, ``competing_``, ``excluded_``, ``to_json()``.
    """

    def __init__(self, alpha: float = 0.05, tol: float = 1e-6, max_rounds: int = 50) -> None:
        self.alpha, self.tol, self.max_rounds = alpha, tol, max_rounds
        self.params_: pd.Series | None = None
        self.rounds = 0
        self.sites_: tuple[str, ...] = ()

    def _sum(self, query: str, extra: dict[str, Any]) -> Any:
        """One secure sum of the fit; every one covers the sites of its table."""
        agg = self._federation.secure_sum(query, self._request | extra, study=self._study)
        self.sites_ = same_sites(self.sites_, agg.sites)
        return agg

    def _round(self, beta: np.ndarray, competing: bool = False
               ) -> tuple[float, np.ndarray, np.ndarray, dict[str, Any]]:
        agg = self._sum("finegray_sums", {"beta": [float(b) for b in beta],
                                          "competing_sums": competing})
        values = {k: v for k, v in agg.values.items() if k not in ("c0", "c1")}
        bands = cox_math.lp_bands(self.spec.half_width, beta)
        sums: dict[str, Any] = cox_math.combine_bands(
            cox_math.expand_cox_sums(values, self._t_idx.size), bands)
        ll, g, h = cox_math.cox_derivatives(sums, beta, efron=False)
        self.rounds += 1
        self.n_, self.excluded_ = int(agg["n"][0]), int(agg["excluded"][0])
        if competing:
            sums["c"] = cox_math.combine_bands({"s0": agg["c0"], "s1": agg["c1"]}, bands)
        return ll, g, h, sums

    def fit(self, federation: Federation, formula: str | Iterable[str | Term] | DesignSpec,
            causes: Sequence[tuple[str, str]] = MDS_AML_VS_DEATH, cause: int = 1, *,
            steps_per_unit: float = 365.25, max_time: float = 60.0,
            study: str = "default", levels: Mapping[str, Sequence[str]] | None = None,
            lattice: float | None = None) -> FederatedFineGray:
        """Fit by Newton-Raphson on the Breslow partial likelihood of the subdistribution
        hazard of ``cause`` (1-based in ``causes``); robust variance as ``crr``. ``levels``:
        declared levels of categorical covariates (``{column: [reference, ...]}``).

        ``lattice``: steps per year of a public lattice fixed at the study's approval (the
        spec's ``lattice``). The grid is then that whole lattice
        (:func:`~hemafed.analytics.survival_grid.lattice_grid`) with every exit time
        (events and censorings) moved up to its interval's end (``time_mapping: up``), and no
        time histogram is asked: the fit is ``crr`` on the pooled times rounded up to the
        lattice. Its per-time counts (the censoring table, the event counts) stay under the
        sites' minimum-cell rule (docs/security.md, attack L): small cohorts need DP."""
        spec = parse_formula(formula, levels=levels)
        self._federation, self._study, self.spec = federation, study, spec
        self.causes, self.cause = [(str(t), str(s)) for t, s in causes], int(cause)
        base: dict[str, Any] = {"causes": [list(c) for c in self.causes], "cause": self.cause,
                                "design": spec.to_params()}
        if lattice is not None:
            grid = np.asarray(lattice_grid(float(lattice), max_time))
            base["time_mapping"] = "up"
        else:
            points = [time_grid(federation, t, s, steps_per_unit=steps_per_unit,
                                max_time=max_time, study=study) for t, s in self.causes]
            grid = np.unique(np.concatenate(points))
        base["grid"] = [float(t) for t in grid]
        table = federation.secure_sum("finegray_table", base, study=study)
        self.sites_ = same_sites((), table.sites)
        exits, events = table["exits"], table["events"]
        g = censoring_survival(exits, events)
        # past the last exit (the whole lattice runs on to max_time) nobody is at risk and
        # G(t-) can reach 0; no sum weighs a patient at those times, so G is carried forward
        g = np.maximum(g, g[g > 0].min())
        self._t_idx = np.flatnonzero(events[0] > 0)
        self.events_, self.competing_ = int(events[0].sum()), int(events[1].sum())
        if self.events_ < spec.width + 1:
            raise InvalidInput(f"too few events of cause {cause} ({self.events_}) for "
                               f"{spec.width} covariate(s)")
        self._grid, self._g, self._exits, self._events = grid, g, exits, events
        self._request = base | {"cens_surv": [float(v) for v in g],
                                "time_index": [int(i) for i in self._t_idx]}
        names = list(spec.names)
        beta = np.zeros(spec.width)
        self.rounds = 0
        ll, grad, hess, _ = self._round(beta)
        scale = np.sqrt(np.maximum(-np.diag(hess), 0.0) / self.events_)
        self.log_likelihood_null_ = ll
        last: dict[str, Any] = {}

        def derivatives(b: np.ndarray, final: bool) -> tuple[float, np.ndarray, np.ndarray]:
            # the last round also brings the competing-risk sums the robust variance needs
            ll_b, g_b, h_b, last["sums"] = self._round(b, competing=final)
            return ll_b, g_b, h_b

        fit = maximise_partial_likelihood(derivatives, (ll, grad, hess), scale, names,
                                          self.tol, self.max_rounds)
        beta, ll, hess, sums = fit.beta, fit.loglik, fit.hessian, last["sums"]
        info_inv = np.linalg.inv(-hess)
        v2 = self._robust_meat(beta, sums)
        cov = info_inv @ v2 @ info_inv
        index = pd.Index(names, name="covariate")
        self.params_ = pd.Series(beta, index=index, name="coef")
        self.standard_errors_ = pd.Series(np.sqrt(np.diag(cov)), index=index, name="se")
        self.variance_matrix_ = pd.DataFrame(cov, index=names, columns=names)
        self.naive_variance_matrix_ = pd.DataFrame(info_inv, index=names, columns=names)
        self.log_likelihood_ = ll
        log.info("federated Fine-Gray converged in %d rounds", self.rounds)
        return self

    def _robust_meat(self, beta: np.ndarray, sums: dict[str, Any]) -> np.ndarray:
        """``sum_i u_i u_i'`` from one more secure sum, at public arrays built from the pooled
        sums of the last round (see :func:`influence`)."""
        m, p = self._grid.size, beta.size
        t = self._t_idx
        scale = np.exp(sums["log_scale"][0])                    # S_true = scale * S_scaled
        s0 = sums["s0"][0] * scale
        e1 = sums["s1"][0] / sums["s0"][0][:, None]
        d = self._events[0][t]
        g = self._g
        full = np.zeros((m, p))
        full[t] = e1
        a0 = np.zeros(m)
        a0[t] = d / s0
        a1 = np.zeros((m, p))
        a1[t] = (d / s0)[:, None] * e1
        p0, p1 = np.cumsum(a0), np.cumsum(a1, axis=0)              # t_j <= T
        b0, b1 = a0 * g, a1 * g[:, None]
        q0 = np.cumsum(b0[::-1])[::-1] - b0                        # t_j > T
        q1 = np.cumsum(b1[::-1], axis=0)[::-1] - b1
        c = sums["c"]
        cs = np.exp(c["log_scale"][0])
        c0, c1 = c["s0"][0] * cs, c["s1"][0] * cs[:, None]         # competing with T < u
        # q(u) = sum_{t_j >= u} d_j G_j / S0_j (C1(u) - E_j C0(u))
        r0 = np.cumsum(b0[::-1])[::-1]
        r1 = np.cumsum(b1[::-1], axis=0)[::-1]
        qu = c1 * r0[:, None] - c0[:, None] * r1
        at_risk = np.cumsum(self._exits[::-1])[::-1][1:]
        censored = self._exits[1:] - self._events.sum(axis=0)
        n_safe = np.where(at_risk > 0, at_risk, 1.0)
        qn = qu / n_safe[:, None]
        ss2 = np.cumsum(-(censored / n_safe**2)[:, None] * qu, axis=0)
        arrays = {"p0": p0, "p1": p1, "q0": q0, "q1": q1, "e1": full, "ss2": ss2, "qn": qn}
        agg = self._sum("finegray_score_outer", {
            "beta": [float(b) for b in beta], "events": self.events_,
            **{k: v.tolist() for k, v in arrays.items()}})
        self.score_total_ = agg["total"]
        return np.asarray(agg["outer"])

    @property
    def summary(self) -> pd.DataFrame:
        if self.params_ is None:
            raise InvalidInput("call fit(...) first")
        return results.coefficient_table(list(self.params_.index), self.params_.to_numpy(),
                                         self.standard_errors_.to_numpy(), self.alpha)

    @property
    def hazard_ratios_(self) -> pd.Series:
        if self.params_ is None:
            raise InvalidInput("call fit(...) first")
        return np.exp(self.params_).rename("exp(coef)")

    def _payload(self) -> dict[str, Any]:
        return {
            "kind": "fine_gray", "causes": [list(c) for c in self.causes], "cause": self.cause,
            "design": self.spec.to_params(), "summary": self.summary,
            "log_likelihood": self.log_likelihood_, "rounds": self.rounds, "n": self.n_,
            "events": self.events_, "competing": self.competing_, "excluded": self.excluded_,
            "sites": list(self.sites_)}
