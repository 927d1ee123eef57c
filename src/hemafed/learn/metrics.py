"""Federated evaluation of survival risk predictions: C-index, time-dependent AUC, integrated
Brier score and calibration by risk decile, each as secure sums plus a hub step.

A *predictor* is public and travels in the query parameters: a boosted model
(:func:`gbdt_predictor`), the IPSS-M mean score computed at the site (:func:`ipssm_predictor`),
or a numeric cohort column (:func:`column_predictor`); the site parses it once into a
:class:`~hemafed.learn.predictor.Predictor`, part of each query's typed parameters
(:class:`RiskHistogramParams`, :class:`EvalSumsParams`). Sites map times *up* to a public grid
(as the Cox objective does; times past the grid count as censored at its last point), so every
metric equals the same metric computed on the pooled grid-mapped times, except where noted.

Rounds:

1. ``km_risk_table`` (reused from :mod:`hemafed.analytics.km_queries`) gives events,
   censored and at risk per grid time; the hub forms the Kaplan-Meier estimate of the
   *censoring* distribution ``G`` (censorings as events; lifelines' reversed KM), used for the
   inverse-probability-of-censoring weights (IPCW).
2. ``learn_risk_histogram``: counts of the predicted risk on a fine public grid; the hub sets
   equal-mass public risk bins (quantiles) and the risk deciles for calibration.
3. ``learn_eval_sums``: per grid time and risk bin, events and comparable subjects (Harrell's C,
   hub step :func:`hemafed.analytics.concordance.concordance_from_histograms`; only pairs in the
   same risk bin are approximated, as ties), IPCW case weights and controls per risk bin for the
   cumulative/dynamic AUC at the horizon (Uno's estimator, same bin approximation), IPCW Brier
   sums at public times (exact; needs survival predictions), and per risk decile the predicted
   event probability at the horizon and a KM risk table for the observed one.

>>> # ev = evaluate(federation, gbdt_predictor(model), "os_time", "os_status", horizon=5.0)
>>> # ev.c_index, ev.auc, ev.integrated_brier, ev.calibration
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Self, TypeVar

import numpy as np
import pandas as pd

from hemafed.analytics.concordance import concordance_from_histograms
from hemafed.analytics.survival_grid import check_grid, query_params
from hemafed.cohort.model import Cohort
from hemafed.errors import InvalidInput
from hemafed.federation import checks
from hemafed.federation.api import Federation
from hemafed.federation.queries import Params, Query, QueryParams, Statistic, register
from hemafed.learn.features import fine_cell, quantile_cuts, site_cached
from hemafed.learn.gbdt import FederatedGBDT, margin_bound
from hemafed.learn.predictor import IPSSM_BOUNDS as IPSSM_BOUNDS
from hemafed.learn.predictor import PREDICTOR_KINDS as PREDICTOR_KINDS
from hemafed.learn.predictor import Predictor

MAX_FINE_BINS = 100_000
"""Most cells of the fine public risk grid of ``learn_risk_histogram``."""

EVAL_RESOLUTION = 1e-9
"""Fixed-point step of the weighted sums of ``learn_eval_sums`` when the request names none."""

_P = TypeVar("_P", bound="EvalParams")

# --- predictors -----------------------------------------------------------------------------

def gbdt_predictor(model: FederatedGBDT) -> dict[str, Any]:
    """A fitted boosted model as public predictor parameters (risk = margin)."""
    model._need_fit()
    out: dict[str, Any] = {
        "kind": "gbdt", "design": model.spec_.to_params(), "base": model.base_score_,
        "trees": [t.to_params() for t in model.trees_]}
    bound = margin_bound(model.trees_, model.base_score_)
    out["bounds"] = [-bound - 1e-9, bound + 1e-9]
    if model.objective == "survival:cox":
        h0 = model.baseline_cumulative_hazard_
        out["hazard_times"] = [float(t) for t in h0.index]
        out["hazard"] = [float(v) for v in h0.to_numpy()]
    return out


def ipssm_predictor() -> dict[str, Any]:
    """The IPSS-M mean-scenario score, computed at each site from its own patients."""
    return {"kind": "ipssm", "bounds": list(IPSSM_BOUNDS)}


def column_predictor(column: str, low: float, high: float) -> dict[str, Any]:
    """A numeric cohort column (higher = worse) with public bounds for binning."""
    return {"kind": "column", "column": column, "bounds": [float(low), float(high)]}


def check_predictor(p: Any) -> dict[str, Any]:
    """Validated predictor parameters, in the hub's wire form (raises ``InvalidInput``)."""
    return Predictor.from_params(p).to_params()


def predict_risk(cohort: Cohort, predictor: Mapping[str, Any] | Predictor) -> np.ndarray:
    """Risk score of every patient of the site (NaN where it cannot be computed)."""
    return Predictor.from_params(predictor).risk(cohort)


def survival_at(predictor: Mapping[str, Any] | Predictor, risk: np.ndarray,
                times: Sequence[float] | np.ndarray) -> np.ndarray | None:
    """``(n, len(times))`` predicted survival, or None when the predictor has no baseline."""
    return Predictor.from_params(predictor).survival(risk, times)


# --- the typed parameters -------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class EvalOutcome(QueryParams):
    """What every evaluation query reads: the outcome columns and the public time grid the
    site maps times *up* to (times past it count as censored at its last point)."""

    duration_col: str
    event_col: str
    grid: tuple[float, ...]
    max_patients: int = checks.MAX_PATIENTS

    @staticmethod
    def outcome_fields(params: Params) -> dict[str, Any]:
        """The checked values of this class's keys, for a subclass's ``from_mapping``."""
        return {"duration_col": checks.column(params, "duration_col"),
                "event_col": checks.column(params, "event_col"),
                "grid": tuple(float(t) for t in check_grid(params.get("grid"))),
                "max_patients": checks.max_patients(params)}

    def rows(self, cohort: Cohort, predictor: Predictor) -> EvalRows:
        """The site's rows with a known outcome and risk under ``predictor``."""
        return _eval_rows(cohort, self, predictor)


@dataclass(frozen=True, kw_only=True)
class EvalParams(EvalOutcome):
    """The outcome, the grid and one public ``predictor`` (a :class:`Predictor`): the keys of
    ``learn_site_concordance`` and the base of ``learn_risk_histogram``/``learn_eval_sums``."""

    QUERY = "learn_site_concordance"
    predictor: Predictor

    @classmethod
    def eval_fields(cls, params: Params) -> dict[str, Any]:
        cls.known(params)
        return {**cls.outcome_fields(params),
                "predictor": Predictor.from_params(params.get("predictor"))}

    @classmethod
    def from_mapping(cls, params: Params) -> Self:
        return cls(**cls.eval_fields(params))

    def to_mapping(self) -> dict[str, Any]:
        return {**super().to_mapping(), "predictor": self.predictor.to_params()}

    def site_rows(self, cohort: Cohort) -> EvalRows:
        """The site's evaluation rows under this request's predictor."""
        return self.rows(cohort, self.predictor)


@dataclass(frozen=True, kw_only=True)
class RiskHistogramParams(EvalParams):
    """``learn_risk_histogram``: and the number of cells of the fine public risk grid over
    the predictor's ``bounds``."""

    QUERY = "learn_risk_histogram"
    fine_bins: int = 4096

    @classmethod
    def from_mapping(cls, params: Params) -> RiskHistogramParams:
        return cls(**cls.eval_fields(params),
                   fine_bins=checks.positive_int(params, "fine_bins", 4096, cap=MAX_FINE_BINS))


@dataclass(frozen=True, kw_only=True)
class EvalSumsParams(EvalParams):
    """``learn_eval_sums``: and the hub's round-1 and round-2 results: the censoring survival
    ``G(t_j)`` per grid time, the public risk bins and deciles (cut points), the grid position
    of the horizon and those of the Brier times."""

    QUERY = "learn_eval_sums"
    censoring_survival: tuple[float, ...]
    risk_cuts: tuple[float, ...]
    decile_cuts: tuple[float, ...]
    horizon_index: int
    brier_index: tuple[int, ...]
    resolution: float = EVAL_RESOLUTION

    @classmethod
    def from_mapping(cls, params: Params) -> EvalSumsParams:
        common = cls.eval_fields(params)
        m = len(common["grid"])
        return cls(**common,
                   censoring_survival=checks.numbers(params, "censoring_survival", length=m,
                                                     low=0.0, high=1.0),
                   risk_cuts=_cuts(params, "risk_cuts"),
                   decile_cuts=_cuts(params, "decile_cuts"),
                   horizon_index=checks.positive_int(params, "horizon_index", low=0,
                                                     cap=m - 1),
                   brier_index=_grid_positions(params, "brier_index", m),
                   resolution=checks.resolution(params, default=EVAL_RESOLUTION))


def _cuts(params: Params, key: str) -> tuple[float, ...]:
    """Public cut points: strictly increasing finite numbers (none: one bin)."""
    return checks.numbers(params, key, allow_empty=True, increasing=True)


def _grid_positions(params: Params, key: str, m: int) -> tuple[int, ...]:
    """Strictly increasing grid positions in ``[0, m)`` (possibly none)."""
    raw = params.get(key)
    if not isinstance(raw, list | tuple) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in raw):
        raise InvalidInput(f"parameter {key!r} must be a list of grid positions (ints)")
    if raw and (raw[0] < 0 or raw[-1] >= m or any(a >= b for a, b in itertools.pairwise(raw))):
        raise InvalidInput(f"parameter {key!r} must be strictly increasing positions in "
                           f"[0, {m}) of the grid")
    return tuple(int(v) for v in raw)


def _typed(params: Params | EvalParams, ptype: type[_P]) -> _P:
    """Typed parameters from the typed object or from a mapping holding (at least) its keys."""
    if isinstance(params, ptype):
        return params
    if isinstance(params, EvalParams):
        raise InvalidInput(f"{ptype.QUERY} parameters expected, got {type(params).__name__}")
    wanted = set(ptype.keys())
    return ptype.from_mapping({k: v for k, v in params.items() if k in wanted})


# --- the site's evaluation rows -------------------------------------------------------------

@dataclass(frozen=True)
class EvalRows:
    """Rows with a known outcome and a risk: grid index, event flag, risk."""

    time_index: np.ndarray
    event: np.ndarray
    risk: np.ndarray


def _eval_rows(cohort: Cohort, outcome: EvalOutcome, predictor: Predictor) -> EvalRows:
    dcol, ecol = outcome.duration_col, outcome.event_col
    grid = np.asarray(outcome.grid, dtype=float)
    cols = []
    for c in (dcol, ecol):
        if c not in cohort.patients.columns:
            raise InvalidInput(f"outcome column {c!r} is not in the site's cohort")
        cols.append(cohort.patients[c].astype("Float64").to_numpy(dtype=float, na_value=np.nan))
    t, e = cols
    risk = site_cached(cohort, predictor.cache_key, lambda: predictor.risk(cohort))
    keep = ~np.isnan(t) & ~np.isnan(e) & ~np.isnan(risk)
    t, e, r = t[keep], e[keep], risk[keep]
    if np.any((e != 0) & (e != 1)):
        raise InvalidInput(f"event column {ecol!r} must be 0/1")
    idx = np.searchsorted(grid, t - 1e-9 * np.maximum(1.0, np.abs(t)), side="left")
    event = (e == 1) & (idx < grid.size)
    return EvalRows(np.minimum(idx, grid.size - 1), event, r)


def site_eval_rows(cohort: Cohort, params: Params | EvalParams) -> EvalRows:
    """The site's evaluation rows for a request holding ``duration_col``, ``event_col``,
    ``grid`` and ``predictor`` (rows with a known outcome and risk, grid-mapped times):
    :class:`EvalParams` or a mapping with those keys (others are ignored)."""
    return _typed(params, EvalParams).site_rows(cohort)


# --- query: fine histogram of the risk ------------------------------------------------------

def _risk_hist_compute(cohort: Cohort, params: RiskHistogramParams) -> dict[str, np.ndarray]:
    rows = params.site_rows(cohort)
    lo, hi = params.predictor.bounds
    fine = params.fine_bins
    counts = np.bincount(fine_cell(rows.risk, lo, hi, fine), minlength=fine).astype(float)
    return {"counts": counts}


def _risk_hist_declare(params: RiskHistogramParams) -> dict[str, Statistic]:
    return {"counts": Statistic((params.fine_bins,), 0, params.max_patients, is_count=True)}


register(Query("learn_risk_histogram", "1", compute=_risk_hist_compute,
               declare=_risk_hist_declare, params_type=RiskHistogramParams,
               description="counts of the predicted risk on a fine public grid"))


# --- query: the evaluation sums -------------------------------------------------------------

def _bin(values: np.ndarray, cuts: Sequence[float]) -> np.ndarray:
    return np.searchsorted(np.asarray(cuts, dtype=float), values, side="right")


def eval_sums(rows: EvalRows, params: Params | EvalSumsParams) -> dict[str, np.ndarray]:
    """Every evaluation sum of one site (pure given its rows); ``params``: the typed
    parameters or the hub's mapping of ``learn_eval_sums``."""
    p = _typed(params, EvalSumsParams)
    m = len(p.grid)
    g = np.asarray(p.censoring_survival, dtype=float)
    g_before = np.concatenate([[1.0], g[:-1]])  # G(t_j -)
    rc, dc = p.risk_cuts, p.decile_cuts
    nb, nd = len(rc) + 1, len(dc) + 1
    h = p.horizon_index
    b = _bin(rows.risk, rc)
    j, ev = rows.time_index, rows.event
    # Harrell's C: events at t_j vs subjects exiting after t_j or censored at t_j
    events = np.zeros((m, nb))
    np.add.at(events, (j[ev], b[ev]), 1.0)
    acc = np.zeros((m + 1, nb))
    np.add.at(acc, (np.where(ev, j, j + 1), b), 1.0)
    later = np.cumsum(acc[::-1], axis=0)[::-1][1:]
    # cumulative/dynamic AUC at the horizon (IPCW cases, controls still at risk after it)
    case = ev & (j <= h)
    with np.errstate(divide="ignore"):
        w = np.where(case, 1.0 / g_before[j], 0.0)
    auc_case = np.bincount(b, weights=w, minlength=nb)
    auc_control = np.bincount(b[j > h], minlength=nb).astype(float)
    # Brier at public grid indices s_k
    bi = np.asarray(p.brier_index, dtype=np.int64)
    grid = np.asarray(p.grid, dtype=float)
    predictor = p.predictor
    surv = predictor.survival(rows.risk, grid[bi]) if bi.size else None
    brier = np.zeros(bi.size)
    if surv is not None:
        dead = ev[:, None] & (j[:, None] <= bi[None, :])
        alive = j[:, None] > bi[None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            term = np.where(dead, surv**2 / g_before[j][:, None], 0.0) + np.where(
                alive, (1.0 - surv) ** 2 / g[bi][None, :], 0.0)
        brier = term.sum(axis=0)
    # calibration by risk decile at the horizon
    d = _bin(rows.risk, dc)
    s_h = predictor.survival(rows.risk, [grid[h]])
    pred = 1.0 - s_h[:, 0] if s_h is not None else np.zeros(rows.risk.size)
    cal_events = np.zeros((nd, m))
    np.add.at(cal_events, (d[ev], j[ev]), 1.0)
    cal_exit = np.zeros((nd, m + 1))
    np.add.at(cal_exit, (d, j + 1), 1.0)
    cal_at_risk = cal_exit.sum(axis=1, keepdims=True) - np.cumsum(cal_exit, axis=1)[:, :-1]
    return {"events": events, "later": later, "auc_case": auc_case, "auc_control": auc_control,
            "brier": brier, "n": np.array([float(rows.risk.size)]),
            "cal_n": np.bincount(d, minlength=nd).astype(float),
            "cal_pred": np.bincount(d, weights=pred, minlength=nd),
            "cal_events": cal_events, "cal_at_risk": cal_at_risk}


def _eval_compute(cohort: Cohort, params: EvalSumsParams) -> dict[str, np.ndarray]:
    return eval_sums(params.site_rows(cohort), params)


def _eval_declare(params: EvalSumsParams) -> dict[str, Statistic]:
    mp = params.max_patients
    m = len(params.grid)
    nb, nd = len(params.risk_cuts) + 1, len(params.decile_cuts) + 1
    k = len(params.brier_index)
    g = np.asarray(params.censoring_survival, dtype=float)
    wmax = 1.0 / max(float(g[g > 0].min()) if np.any(g > 0) else 1.0, 1e-12)
    res = params.resolution
    return {"events": Statistic((m, nb), 0, mp, is_count=True),
            "later": Statistic((m, nb), 0, mp, sensitivity=math.sqrt(m), is_count=True),
            "auc_case": Statistic((nb,), 0, mp * wmax, res, sensitivity=wmax),
            "auc_control": Statistic((nb,), 0, mp, is_count=True),
            "brier": Statistic((k,), 0, mp * wmax, res, sensitivity=wmax * math.sqrt(k)),
            "n": Statistic((1,), 0, mp, is_count=True),
            "cal_n": Statistic((nd,), 0, mp, is_count=True),
            "cal_pred": Statistic((nd,), 0, mp, res),
            "cal_events": Statistic((nd, m), 0, mp, is_count=True),
            "cal_at_risk": Statistic((nd, m), 0, mp, sensitivity=math.sqrt(m), is_count=True)}


register(Query("learn_eval_sums", "1", compute=_eval_compute, declare=_eval_declare,
               params_type=EvalSumsParams,
               description="sums for C-index, time-dependent AUC, Brier score and calibration"))


# --- hub steps (pure) -------------------------------------------------------------------------

def censoring_survival(censored: np.ndarray, at_risk: np.ndarray) -> np.ndarray:
    """KM of the censoring distribution ``G(t_j)`` from pooled counts (censorings as events)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(at_risk > 0, 1.0 - censored / at_risk, 1.0)
    return np.cumprod(factor)


def auc_from_histograms(case: np.ndarray, control: np.ndarray) -> float:
    """IPCW cumulative/dynamic AUC from per-risk-bin case weights and control counts."""
    below = np.cumsum(control) - control
    denom = float(case.sum() * control.sum())
    if denom == 0:
        return float("nan")
    return float(np.sum(case * (below + 0.5 * control)) / denom)


def km_at(events: np.ndarray, at_risk: np.ndarray, upto: int) -> float:
    """Kaplan-Meier survival at grid index ``upto`` from pooled counts."""
    e, r = events[: upto + 1], at_risk[: upto + 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.prod(np.where(r > 0, 1.0 - e / r, 1.0)))


@dataclass(frozen=True)
class Evaluation:
    """Federated evaluation of one predictor on the pooled held-out rows."""

    c_index: float
    auc: float
    integrated_brier: float
    brier: pd.Series
    calibration: pd.DataFrame
    n: int
    horizon: float
    sums: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict[str, float]:
        return {"c_index": self.c_index, "td_auc": self.auc,
                "integrated_brier": self.integrated_brier, "n": float(self.n)}


def eval_grid(max_time: float = 20.0, step: float = 1.0 / 52.0) -> list[float]:
    """A public weekly grid (years) for evaluation."""
    n = math.floor(max_time / step + 1e-9)
    return [float(round((k + 1) * step, 12)) for k in range(n)]


def evaluate(federation: Federation, predictor: Mapping[str, Any], duration_col: str = "os_time",
             event_col: str = "os_status", *, horizon: float = 5.0,
             grid: Sequence[float] | None = None, brier_times: Sequence[float] | None = None,
             risk_bins: int = 256, deciles: int = 10, fine_bins: int = 8192,
             study: str = "default") -> Evaluation:
    """C-index, time-dependent AUC at ``horizon``, integrated Brier score over ``brier_times``
    (default: 20 points up to the horizon) and calibration by risk decile, in three rounds."""
    pred = Predictor.from_params(predictor)
    g = check_grid(grid if grid is not None else eval_grid())
    if not g[0] <= horizon <= g[-1]:
        raise InvalidInput(f"horizon {horizon:g} must lie within the grid [{g[0]:g}, {g[-1]:g}]")
    h = int(np.searchsorted(g, horizon + 1e-12, side="right") - 1)
    bt = np.asarray(brier_times if brier_times is not None
                    else np.linspace(g[0], horizon, 20), dtype=float)
    bidx = np.unique(np.clip(np.searchsorted(g, bt + 1e-12, side="right") - 1, 0, g.size - 1))
    # round 1: KM table -> censoring distribution
    km = federation.secure_sum("km_risk_table", query_params(duration_col, event_col, g,
                                                             time_mapping="up"), study=study)
    gsurv = censoring_survival(km["censored"][0], km["at_risk"][0])
    base = {"duration_col": duration_col, "event_col": event_col, "grid": [float(t) for t in g],
            "predictor": pred.to_params()}
    # round 2: risk quantiles -> public risk bins and deciles
    lo, hi = pred.bounds
    counts = federation.secure_sum("learn_risk_histogram", base | {"fine_bins": fine_bins},
                                   study=study)["counts"]
    risk_cuts = quantile_cuts(counts, lo, hi, risk_bins)
    decile_cuts = quantile_cuts(counts, lo, hi, deciles)
    # round 3: the evaluation sums
    agg = federation.secure_sum("learn_eval_sums", base | {
        "censoring_survival": [float(v) for v in gsurv], "risk_cuts": list(risk_cuts),
        "decile_cuts": list(decile_cuts), "horizon_index": h,
        "brier_index": [int(v) for v in bidx]}, study=study)
    n = float(agg["n"][0])
    try:
        c = concordance_from_histograms(agg["events"], agg["later"])
    except ZeroDivisionError:
        c = float("nan")
    auc = auc_from_histograms(agg["auc_case"], agg["auc_control"])
    has_surv = pred.has_survival
    brier = pd.Series(agg["brier"] / n if has_surv and n else np.full(bidx.size, np.nan),
                      index=pd.Index(g[bidx], name="time"), name="brier")
    if has_surv and bidx.size > 1:
        ibs = float(np.trapezoid(brier.to_numpy(), g[bidx]) / (g[bidx][-1] - g[bidx][0]))
    else:
        ibs = float("nan")
    nd = agg["cal_n"].size
    with np.errstate(divide="ignore", invalid="ignore"):
        cal = pd.DataFrame({
            "n": agg["cal_n"],
            "predicted": np.where(agg["cal_n"] > 0, agg["cal_pred"] / agg["cal_n"], np.nan)
            if has_surv else np.full(nd, np.nan),
            "observed": [1.0 - km_at(agg["cal_events"][k], agg["cal_at_risk"][k], h)
                         for k in range(nd)]},
            index=pd.Index(range(1, nd + 1), name="risk_group"))
    return Evaluation(c, auc, ibs, brier, cal, int(n), float(g[h]), dict(agg.values))
