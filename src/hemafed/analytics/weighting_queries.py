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

Their typed parameters share one base, :class:`WeightParams` (the propensity model, the weight
cap and the optional outcome); :class:`WeightedOutcomeParams` requires the outcome, and each
query's subclass adds its own keys (``beta``, the pooled arrays). The helpers of this module
(:func:`weighted_rows`, :func:`weight_bound`, ...) take the typed parameters or the hub's
mapping.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Self, TypeVar

import numpy as np

from hemafed.analytics.describe import codec_resolution
from hemafed.analytics.design import (
    DesignSpec,
    check_coefficients,
    complete_case_mask,
    design_values,
)
from hemafed.analytics.survival_grid import (
    TIME_MAPPINGS,
    check_grid,
    effective_times,
    fits_grid,
    grid_positions,
    keep_fitting,
)
from hemafed.cohort.model import Cohort
from hemafed.errors import InvalidInput
from hemafed.federation import checks
from hemafed.federation.queries import Params, Query, QueryParams, Statistic, register
from hemafed.privacy.disclosure import risk_set_changes

DEFAULT_RESOLUTION = 1e-10
"""Fixed-point step of every ``iptw_*`` sum when the request names none (but
``iptw_km_influence``'s: :data:`INFLUENCE_RESOLUTION`)."""

INFLUENCE_RESOLUTION = 1e-14
"""Default fixed-point step of ``iptw_km_influence`` (squared influences are small)."""

TIES = ("efron", "breslow")
RESIDUAL_TERMS = ("h", "g", "hd", "gd", "xb")
"""The pooled per-grid-time terms ``iptw_cox_robust`` takes (:func:`residual_terms`)."""


# --- parameters -------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class WeightParams(QueryParams):
    """The propensity model every ``iptw_*`` query weights by, and the outcome it may select on.

    ``design`` and ``gamma`` (intercept first, original scale) are the propensity model,
    ``marginal`` the pooled treated share of stabilised weights (1: unstabilised),
    ``max_weight`` the spec's public cap (weights above it are truncated, never refused).
    ``duration_col``, ``event_col``, ``grid`` and ``time_mapping`` restrict the rows to those
    complete in the outcome and held by the grid: required by the outcome queries
    (:class:`WeightedOutcomeParams`), optional for ``iptw_balance`` (given ``duration_col``,
    the other two are required). ``resolution``: the fixed-point step of the weighted sums.
    """

    OUTCOME: ClassVar[bool] = False
    """Whether the outcome columns and the grid are required."""

    design: DesignSpec
    treatment: str
    gamma: tuple[float, ...]
    marginal: float = 1.0
    max_weight: float | None = None
    duration_col: str | None = None
    event_col: str | None = None
    grid: tuple[float, ...] | None = None
    time_mapping: str = "exact"
    resolution: float = DEFAULT_RESOLUTION
    max_patients: int = checks.MAX_PATIENTS

    @classmethod
    def from_mapping(cls, params: Params) -> Self:
        cls.known(params)
        return cls(**cls.checked(params))

    @classmethod
    def checked(cls, params: Params) -> dict[str, Any]:
        """The checked values of this class's keys (a subclass adds its own to them)."""
        spec = DesignSpec.from_params(params.get("design"))
        gamma = checks.numbers(params, "gamma", length=spec.width + 1)
        check_coefficients(gamma[1:], spec.half_width, spec.names, key="gamma")
        outcome = cls.OUTCOME or params.get("duration_col") is not None
        return {
            "design": spec, "treatment": checks.column(params, "treatment"), "gamma": gamma,
            "marginal": checks.number(params, "marginal", 1.0, low=0.0, high=1.0,
                                      open_low=True),
            "max_weight": None if params.get("max_weight") is None
            else checks.number(params, "max_weight", low=0.0, open_low=True),
            "duration_col": _optional(params, "duration_col", outcome, checks.column),
            "event_col": _optional(params, "event_col", outcome, checks.column),
            "grid": _optional(params, "grid", outcome,
                              lambda p, k: tuple(float(t) for t in check_grid(p.get(k), k))),
            "time_mapping": checks.choice(params, "time_mapping", TIME_MAPPINGS, "exact"),
            "resolution": checks.resolution(params, default=_default(cls, "resolution")),
            "max_patients": checks.max_patients(params)}

    def to_mapping(self) -> dict[str, Any]:
        """The wire form: the design as its terms; an optional key left at ``None`` left out."""
        out = {k: v for k, v in super().to_mapping().items() if v is not None}
        out["design"] = self.design.to_params()
        return out

    @property
    def gamma_array(self) -> np.ndarray:
        return np.asarray(self.gamma, dtype=float)

    @property
    def has_outcome(self) -> bool:
        """Whether the rows are restricted to those complete in the outcome."""
        return self.duration_col is not None

    def outcome(self) -> tuple[str, str, np.ndarray]:
        """``(duration_col, event_col, grid)``; refused naming the first one missing."""
        for key in ("duration_col", "event_col", "grid"):
            if getattr(self, key) is None:
                raise InvalidInput(f"parameter {key!r} is required by query "
                                   f"{self.QUERY or 'iptw'} (the outcome and its grid)")
        assert self.duration_col is not None and self.event_col is not None
        return self.duration_col, self.event_col, np.asarray(self.grid, dtype=float)


def _optional(params: Params, key: str, required: bool, check: Callable[[Params, str], Any]
              ) -> Any:
    """``check(params, key)`` when the key is required or given, else ``None``."""
    if not required and params.get(key) is None:
        return None
    return check(params, key)


def _default(cls: type[QueryParams], name: str) -> Any:
    return {f.name: f for f in dataclasses.fields(cls)}[name].default  # type: ignore[arg-type]


@dataclass(frozen=True, kw_only=True)
class BalanceParams(WeightParams):
    """``iptw_balance``: the weight model; with ``duration_col``, only the rows complete in
    the outcome and held by the grid are summed (the rows the outcome queries weight)."""

    QUERY = "iptw_balance"


@dataclass(frozen=True, kw_only=True)
class WeightedOutcomeParams(WeightParams):
    """The weight model and the outcome every weighted survival query reads (required)."""

    OUTCOME = True
    duration_col: str
    event_col: str
    grid: tuple[float, ...]

    @property
    def grid_array(self) -> np.ndarray:
        return np.asarray(self.grid, dtype=float)


@dataclass(frozen=True, kw_only=True)
class WeightedKMParams(WeightedOutcomeParams):
    """``iptw_km_table``: the weight model and the outcome."""

    QUERY = "iptw_km_table"


def _pooled_arm_sums(params: Params, key: str, m: int) -> tuple[tuple[float, ...], ...]:
    """``params[key]``: the pooled ``(2, m)`` non-negative sums per arm and grid time."""
    raw = params.get(key)
    if isinstance(raw, np.ndarray):
        raw = raw.tolist()
    if not isinstance(raw, list | tuple) or len(raw) != 2:
        raise InvalidInput(f"parameter {key!r} must be the pooled (2, {m}) sums (one row per arm)")
    return tuple(checks.numbers({key: row}, key, length=m, low=0.0) for row in raw)


@dataclass(frozen=True, kw_only=True)
class WeightedKMInfluenceParams(WeightedOutcomeParams):
    """``iptw_km_influence``: the weight model, the outcome, and the pooled weighted events and
    weights at risk of ``iptw_km_table`` (``(2, m)``: control, treated), the fixed-point step
    defaulting to :data:`INFLUENCE_RESOLUTION`."""

    QUERY = "iptw_km_influence"
    w_events: tuple[tuple[float, ...], ...]
    w_at_risk: tuple[tuple[float, ...], ...]
    resolution: float = INFLUENCE_RESOLUTION

    @classmethod
    def checked(cls, params: Params) -> dict[str, Any]:
        out = super().checked(params)
        m = len(out["grid"])
        return out | {key: _pooled_arm_sums(params, key, m) for key in ("w_events", "w_at_risk")}


@dataclass(frozen=True, kw_only=True)
class WeightedCoxParams(WeightedOutcomeParams):
    """``iptw_cox_sums``: the weight model, the outcome, the treatment's public coefficient
    ``beta`` (a list of one) and the tie method."""

    QUERY = "iptw_cox_sums"
    beta: tuple[float, ...]
    ties: str = "efron"

    @classmethod
    def checked(cls, params: Params) -> dict[str, Any]:
        beta = checks.numbers(params, "beta", length=1)
        # the treatment is 0/1: half-width 1/2
        check_coefficients(beta, [0.5], ["treatment"])
        return super().checked(params) | {"beta": beta,
                                          "ties": checks.choice(params, "ties", TIES, "efron")}

    @property
    def beta_value(self) -> float:
        return self.beta[0]


@dataclass(frozen=True, kw_only=True)
class WeightedCoxRobustParams(WeightedCoxParams):
    """``iptw_cox_robust``: the keys of ``iptw_cox_sums`` at the fitted ``beta`` and the pooled
    residual terms :data:`RESIDUAL_TERMS` per grid time (:func:`residual_terms`; all but
    ``xb`` non-negative)."""

    QUERY = "iptw_cox_robust"
    h: tuple[float, ...]
    g: tuple[float, ...]
    hd: tuple[float, ...]
    gd: tuple[float, ...]
    xb: tuple[float, ...]

    @classmethod
    def checked(cls, params: Params) -> dict[str, Any]:
        out = super().checked(params)
        m = len(out["grid"])
        return out | {name: checks.numbers(params, name, length=m,
                                           low=-math.inf if name == "xb" else 0.0)
                      for name in RESIDUAL_TERMS}

    def terms(self) -> dict[str, np.ndarray]:
        return {name: np.asarray(getattr(self, name), dtype=float) for name in RESIDUAL_TERMS}


P = TypeVar("P", bound=WeightParams)


def _typed(params: WeightParams | Params, cls: type[P]) -> P:
    """Typed parameters from either form: the module's helpers keep taking the hub's mapping
    (checked, keys of other queries ignored)."""
    if isinstance(params, cls):
        return params
    if isinstance(params, WeightParams):
        params = params.to_mapping()
    return cls(**cls.checked(params))


def check_weight_params(params: Params) -> None:
    """The propensity part every IPTW query shares: design, coefficients, marginal share, cap
    (:class:`WeightParams`; kept for callers that check a mapping)."""
    _typed(params, WeightParams)


def weight_bound(params: WeightParams | Params) -> float:
    """The largest weight any patient can get: from the design bounds and coefficients, or the
    declared ``max_weight`` when that is smaller (weights are truncated at it)."""
    p = _typed(params, WeightParams)
    gamma = p.gamma_array
    b = p.design.bounds
    lo = gamma[0] + float(np.sum(np.minimum(gamma[1:] * b[:, 0], gamma[1:] * b[:, 1])))
    hi = gamma[0] + float(np.sum(np.maximum(gamma[1:] * b[:, 0], gamma[1:] * b[:, 1])))
    pi = p.marginal
    stab0 = 1.0 - pi if pi < 1.0 else 1.0
    # 1 / expit(lo) = 1 + exp(-lo); 1 / (1 - expit(hi)) = 1 + exp(hi)
    bound = max(pi * (1.0 + math.exp(min(-lo, 700.0))),
                stab0 * (1.0 + math.exp(min(hi, 700.0))))
    return bound if p.max_weight is None else min(bound, p.max_weight)


def design_bound(params: WeightParams | Params) -> np.ndarray:
    """``max |x_j|`` of each design column, from its bounds."""
    b = _typed(params, WeightParams).design.bounds
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


def weighted_rows(cohort: Cohort, params: WeightParams | Params,
                  outcome: bool | None = None) -> WeightedRows:
    """Select complete cases, check the treatment is 0/1 and compute each patient's weight.

    ``outcome``: restrict to the rows complete in the outcome and held by the grid (default:
    whether the parameters name an outcome)."""
    p = _typed(params, WeightedOutcomeParams if outcome else WeightParams)
    outcome = p.has_outcome if outcome is None else outcome
    spec, tcol = p.design, p.treatment
    a = _numeric(cohort, tcol, "treatment")
    values = design_values(cohort, spec)
    mask = complete_case_mask(cohort, spec, values=values) & ~np.isnan(a)
    time = event = np.empty(0)
    if outcome:
        dcol, ecol, grid = p.outcome()
        t_all, e_all = _numeric(cohort, dcol, "duration"), _numeric(cohort, ecol, "event")
        mask &= ~np.isnan(t_all) & ~np.isnan(e_all)
        time, event = t_all[mask], e_all[mask]
        if np.any((event != 0) & (event != 1)):
            raise InvalidInput(f"event column {ecol!r} must be 0/1")
        if time.size and time.min() < 0:
            raise InvalidInput(f"duration column {dcol!r} has negative times")
        mode = p.time_mapping
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
    w = propensity_weights(x, a, p.gamma_array, p.marginal)
    if p.max_weight is not None:
        # truncated at the spec's public cap (part of the estimand, docs/queries.md): a site
        # never refuses on its own largest weight, which would be a bisection oracle
        w = np.minimum(w, p.max_weight)
    return WeightedRows(a, x, w, time, event.astype(bool))


def _above(counts_by_exit: np.ndarray) -> np.ndarray:
    """``out[j] = sum_{c > j} acc[c]`` (rows at risk at grid point j exit at count c > j)."""
    return np.cumsum(counts_by_exit[::-1], axis=0)[::-1][1:]


# --- iptw_balance ------------------------------------------------------------------------------

def _balance_compute(cohort: Cohort, params: BalanceParams) -> dict[str, np.ndarray]:
    rows = weighted_rows(cohort, params, params.has_outcome)
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


def _balance_declare(params: BalanceParams) -> dict[str, Statistic]:
    m = params.max_patients
    k = params.design.width
    bound = np.asarray(design_bound(params), dtype=float)
    a = float(bound.max())
    # one patient adds its whole confounder row (one arm): the L2 change is the norm of the
    # per-covariate bounds, not the largest bound (which understated it for k > 1)
    na, naa = float(np.linalg.norm(bound)), float(np.linalg.norm(bound * bound))
    wm = weight_bound(params)
    res = params.resolution

    def stat(shape: tuple[int, ...], high: float, low: float = 0.0,
             sens: float | None = None) -> Statistic:
        return Statistic(shape, low, high, codec_resolution(low, high, res),
                         sensitivity=high / m if sens is None else sens)

    return {"n": Statistic((2,), 0, m, is_count=True),
            "sw": stat((2,), m * wm), "sww": stat((2,), m * wm * wm),
            "sx": stat((2, k), m * a, -m * a, na), "sxx": stat((2, k), m * a * a, sens=naa),
            "swx": stat((2, k), m * wm * a, -m * wm * a, wm * na),
            "swxx": stat((2, k), m * wm * a * a, sens=wm * naa)}


IPTW_BALANCE = register(Query(
    "iptw_balance", "1", compute=_balance_compute, declare=_balance_declare,
    params_type=BalanceParams,
    description="per arm: n, sums of IPTW weights and squared weights, plain and weighted sums "
                "of each confounder and its square (standardised mean differences)"))


# --- iptw_km_table -----------------------------------------------------------------------------

def _km_compute(cohort: Cohort, params: WeightedKMParams) -> dict[str, np.ndarray]:
    rows = weighted_rows(cohort, params, True)
    m = len(params.grid)
    count, on_grid = grid_positions(rows.time, params.grid_array)
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


def _km_declare(params: WeightedKMParams) -> dict[str, Statistic]:
    mp = params.max_patients
    m = len(params.grid)
    wm = weight_bound(params)
    res = params.resolution
    hi = mp * wm
    return {"events": Statistic((2, m), 0, mp, is_count=True),
            "at_risk": Statistic((2, m), 0, mp, sensitivity=math.sqrt(m), is_count=True),
            "w_events": Statistic((2, m), 0, hi, codec_resolution(0, hi, res), sensitivity=wm),
            "w_at_risk": Statistic((2, m), 0, hi, codec_resolution(0, hi, res),
                                   sensitivity=wm * math.sqrt(m))}


IPTW_KM_TABLE = register(Query(
    "iptw_km_table", "1", compute=_km_compute, declare=_km_declare,
    params_type=WeightedKMParams,
    description="per arm and grid time: events and number at risk, plain and IPTW-weighted"))


def _km_influence_compute(cohort: Cohort, params: WeightedKMInfluenceParams
                          ) -> dict[str, np.ndarray]:
    """Each patient's infinitesimal-jackknife influence on its arm's weighted KM curve, by the
    product-limit recursion ``U(t) = U(t-) (1 - h) - S(t-) w_i (dN_i - Y_i h) / Y_w`` that
    ``survival::survfit`` uses for weighted curves; returns ``sum_i U_i(t)^2`` per arm."""
    rows = weighted_rows(cohort, params, True)
    m = len(params.grid)
    d_w = np.asarray(params.w_events, dtype=float)
    y_w = np.asarray(params.w_at_risk, dtype=float)
    count, on_grid = grid_positions(rows.time, params.grid_array)
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


def km_influence_bound(params: WeightedKMInfluenceParams | Params) -> float:
    """``max |U_i(t)|``: each event time moves it by at most ``min(1, w_max / Y_w)``, since a
    patient at risk carries at most the whole weight at risk (the site divides by
    ``max(Y_w, w_i)`` and caps the hazard at 1, so this holds for any hub-sent ``Y_w``)."""
    p = _typed(params, WeightedKMInfluenceParams)
    wm = weight_bound(p)
    y_w = np.asarray(p.w_at_risk, dtype=float)
    d_w = np.asarray(p.w_events, dtype=float)
    steps = (d_w > 0) & (y_w > 0)
    return float(np.max(np.sum(np.where(steps, np.minimum(1.0, wm / np.where(
        y_w > 0, y_w, 1.0)), 0.0), axis=-1))) if steps.any() else 1.0


def _km_influence_declare(params: WeightedKMInfluenceParams) -> dict[str, Statistic]:
    mp = params.max_patients
    m = len(params.grid)
    b = km_influence_bound(params)
    hi = mp * b * b
    res = params.resolution
    return {"influence_sq": Statistic((2, m), 0.0, hi, codec_resolution(0.0, hi, res),
                                      sensitivity=b * b * math.sqrt(m))}


IPTW_KM_INFLUENCE = register(Query(
    "iptw_km_influence", "1", compute=_km_influence_compute, declare=_km_influence_declare,
    params_type=WeightedKMInfluenceParams,
    description="sum of squared per-patient influences on each arm's weighted KM curve "
                "(robust standard errors)"))


# --- iptw_cox_sums -----------------------------------------------------------------------------

def _cox_compute(cohort: Cohort, params: WeightedCoxParams) -> dict[str, np.ndarray]:
    rows = weighted_rows(cohort, params, True)
    m = len(params.grid)
    count, on_grid = grid_positions(rows.time, params.grid_array)
    a, w = rows.treated, rows.weight
    wr = w * np.exp(params.beta_value * a)
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


def _cox_declare(params: WeightedCoxParams) -> dict[str, Statistic]:
    mp = params.max_patients
    m = len(params.grid)
    wm = weight_bound(params)
    r = math.exp(abs(params.beta_value))
    res = params.resolution

    def stat(high: float, sens: float) -> Statistic:
        return Statistic((m,), 0.0, high, codec_resolution(0.0, high, res), sensitivity=sens)

    return {"s0": stat(mp * wm * r, wm * r * math.sqrt(m)),
            "s1": stat(mp * wm * r, wm * r * math.sqrt(m)),
            "d": Statistic((m,), 0, mp, is_count=True),
            "dw": stat(mp * wm, wm), "xdw": stat(mp * wm, wm),
            "e0": stat(mp * wm * r, wm * r), "e1": stat(mp * wm * r, wm * r)}


def _cox_changes(cohort: Cohort, params: WeightedCoxParams) -> np.ndarray:
    """The site-only cells of the weighted risk-set changes (attack M): a censored patient's
    weight and treatment leave ``s0``/``s1`` between two grid points, so the censorings per
    interval, the first and the last risk sets are cells
    (:func:`hemafed.privacy.disclosure.risk_set_changes`)."""
    rows = weighted_rows(cohort, params, True)
    count, on_grid = grid_positions(rows.time, params.grid_array)
    return risk_set_changes(np.zeros(count.size, dtype=np.intp), count,
                            rows.event & (on_grid >= 0), len(params.grid))


IPTW_COX_SUMS = register(Query(
    "iptw_cox_sums", "1", compute=_cox_compute, declare=_cox_declare,
    params_type=WeightedCoxParams, risk_set_changes=_cox_changes,
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


def _robust_compute(cohort: Cohort, params: WeightedCoxRobustParams) -> dict[str, np.ndarray]:
    rows = weighted_rows(cohort, params, True)
    resid = score_residuals(rows, params.grid_array, params.beta_value, params.terms())
    wl = rows.weight * resid
    return {"meat": np.array([float(wl @ wl)]), "score": np.array([float(wl.sum())])}


def residual_bound(params: WeightedCoxRobustParams | Params) -> float:
    """``max |L_i|`` from the public terms: ``|a - xbar| <= 1`` and the cumulative hazard terms."""
    p = _typed(params, WeightedCoxRobustParams)
    r = math.exp(abs(p.beta_value))
    h = float(np.sum(np.asarray(p.h, dtype=float)))
    g = float(np.sum(np.abs(np.asarray(p.g, dtype=float))))
    return 1.0 + r * (h + g)


def _robust_declare(params: WeightedCoxRobustParams) -> dict[str, Statistic]:
    mp = params.max_patients
    wm = weight_bound(params)
    lb = residual_bound(params)
    res = params.resolution
    hi_meat, hi_score = mp * (wm * lb) ** 2, mp * wm * lb
    return {"meat": Statistic((1,), 0.0, hi_meat, codec_resolution(0.0, hi_meat, res),
                              sensitivity=(wm * lb) ** 2),
            "score": Statistic((1,), -hi_score, hi_score,
                               codec_resolution(-hi_score, hi_score, res), sensitivity=wm * lb)}


IPTW_COX_ROBUST = register(Query(
    "iptw_cox_robust", "1", compute=_robust_compute, declare=_robust_declare,
    params_type=WeightedCoxRobustParams,
    description="sum of squared weighted Cox score residuals of the treatment (robust variance)"))


def public_params(params: dict[str, Any]) -> dict[str, Any]:
    """JSON-ready copy (floats, lists) of hub-built parameters."""
    return {k: ([float(v) for v in val] if isinstance(val, np.ndarray) else val)
            for k, val in params.items()}
