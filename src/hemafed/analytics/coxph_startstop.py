"""Federated Cox regression with a time-varying covariate on start-stop data.

A patient-level event that happens during follow-up (AML transformation, a transplant, a new
treatment line) becomes a 0/1 covariate ``z(t)`` that switches on at that event's time: the
site splits each such patient's follow-up into the rows ``(0, s]`` with ``z = 0`` and
``(s, T]`` with ``z = 1`` (what ``survival::tmerge(..., tdc(s))`` builds), and the model is
``survival::coxph(Surv(start, stop, event) ~ x + z)``. The switch is declared as a pair of cohort
columns ``(switch_time, switch_status)``: ``z`` switches on at ``switch_time`` if
``switch_status`` is 1 and ``switch_time < T``; at ``switch_time = 0`` the patient has ``z = 1``
from the start. Rows missing a duration, event, covariate or either switch column are left out
(complete cases, counted in ``excluded``).

Each Newton round the site query ``cox_start_stop_sums`` returns, at every public grid time
``t_j``, the risk-set sums over rows with ``start < t_j <= stop`` (``S0``, ``S1``, ``S2`` per
linear-predictor band, see :func:`hemafed.analytics.cox_math.lp_bands`), the events, the
event covariate sums and the Efron tie sums; they add over sites, so the hub's log partial
likelihood, gradient and Hessian are the pooled ones (:func:`cox_derivatives`). Tied events use
Efron's or Breslow's method as ``coxph``.

The general case, :class:`CoxStartStopFitter`, reads a long-format table at each site (the
site's own table beside its patients, as the LMM's: ``patient_id, start, stop, event`` and
several time-varying covariates, several rows per patient, checked by
:func:`check_long_format`); query ``cox_long_sums`` returns the same sums over the rows whose
interval contains each event time.

>>> # tv = FederatedCoxTimeVarying().fit(fed, "os_time", "os_status", "age + sex",
>>> #                                    switch=("amlt_time", "amlt_status"))
>>> # tv.summary  # lifelines' columns; the time-varying covariate is 'amlt_status(t)'
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from hemafed.analytics import results
from hemafed.analytics.cox import maximise_partial_likelihood
from hemafed.analytics.cox_math import (
    BOUND_SLACK,
    combine_bands,
    cox_derivatives,
    expand_cox_sums,
    finest_resolution,
    lp_bands,
    upper_index,
)
from hemafed.analytics.design import (
    CategoricalTerm,
    DesignSpec,
    NumericTerm,
    Term,
    check_bounds,
    check_coefficients,
    complete_case_mask,
    design_matrix,
    design_values,
    parse_formula,
)
from hemafed.analytics.fitter import FederatedFitter, same_sites
from hemafed.analytics.km import time_grid_counts
from hemafed.analytics.mixed import LongitudinalCohort
from hemafed.analytics.survival_grid import (
    REL_TOL,
    TIME_MAPPINGS,
    check_grid,
    effective_times,
    fits_grid,
    grid_positions,
    keep_fitting,
    lattice_grid,
)
from hemafed.analytics.survival_grid import check_lattice as _hist_check
from hemafed.analytics.survival_grid import lattice_size as _hist_size
from hemafed.analytics.survival_grid import outcome_column as _outcome
from hemafed.cohort.model import Cohort
from hemafed.errors import InvalidInput
from hemafed.federation import checks
from hemafed.federation.api import Federation
from hemafed.federation.queries import Params, Query, QueryParams, Statistic, register
from hemafed.privacy.disclosure import risk_set_changes

log = logging.getLogger(__name__)

QUERY = "cox_start_stop_sums"


def _switch(params: Params) -> tuple[str, str]:
    sw = params.get("switch")
    if (not isinstance(sw, list | tuple) or len(sw) != 2
            or not all(isinstance(c, str) and c for c in sw)):
        raise InvalidInput("parameter 'switch' must be [time column, status column] of the "
                           "event that switches the time-varying covariate on")
    return str(sw[0]), str(sw[1])


def _half_widths(spec: DesignSpec) -> np.ndarray:
    """Public bounds of ``|x - centre|``: the design's, then 0.5 for the 0/1 ``z(t)``."""
    return np.r_[spec.half_width, 0.5]


TIES = ("efron", "breslow")


def _grid(params: Params) -> tuple[float, ...]:
    return tuple(float(t) for t in check_grid(params.get("grid")))


def _beta(params: Params, hw: np.ndarray, names: Sequence[str]) -> tuple[float, ...]:
    """``beta``: one finite number per covariate within the coefficient bound."""
    beta = checks.numbers(params, "beta", length=len(names))
    check_coefficients(beta, hw, tuple(names))
    return beta


@dataclass(frozen=True, kw_only=True)
class CoxSumsParams(QueryParams):
    """What every start-stop risk-set sum reads: the public design, grid (the event times),
    the coefficients the sums are taken at and the tie method."""

    design: DesignSpec
    grid: tuple[float, ...]
    beta: tuple[float, ...]
    ties: str = "efron"
    max_patients: int = checks.MAX_PATIENTS

    @staticmethod
    def _sums(params: Params, spec: DesignSpec, hw: np.ndarray, names: Sequence[str]
              ) -> dict[str, Any]:
        return {"design": spec, "grid": _grid(params), "beta": _beta(params, hw, names),
                "ties": checks.choice(params, "ties", TIES, "efron"),
                "max_patients": checks.max_patients(params)}

    def to_mapping(self) -> dict[str, Any]:
        return super().to_mapping() | {"design": self.design.to_params()}


@dataclass(frozen=True, kw_only=True)
class StartStopParams(CoxSumsParams):
    """``cox_start_stop_sums``: those of the sums (``beta`` the design's coefficients, then the
    time-varying covariate's), the outcome columns, the ``switch`` column pair and how times
    map onto the grid."""

    QUERY = QUERY
    switch: tuple[str, str]
    duration_col: str = "os_time"
    event_col: str = "os_status"
    time_mapping: str = "exact"

    @classmethod
    def from_mapping(cls, params: Params) -> StartStopParams:
        cls.known(params)
        spec = DesignSpec.from_params(params.get("design"))
        return cls(**cls._sums(params, spec, _half_widths(spec), (*spec.names, "z")),
                   switch=_switch(params),
                   duration_col=checks.column(params, "duration_col", "os_time"),
                   event_col=checks.column(params, "event_col", "os_status"),
                   time_mapping=checks.choice(params, "time_mapping", TIME_MAPPINGS, "exact"))


def start_stop_rows(cohort: Cohort, params: StartStopParams
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int, int]:
    """``(start, stop, event, x, n_patients, excluded)`` of the site's split rows; ``x`` is
    centred (design centres, 0.5 for ``z``) and its last column is ``z``."""
    spec = params.design
    dcol, ecol = params.duration_col, params.event_col
    tcol, scol = params.switch
    for c, kind in ((dcol, "duration"), (ecol, "event"), (tcol, "switch time"),
                    (scol, "switch status")):
        _outcome(cohort, c, kind)
    values = design_values(cohort, spec)
    mask = complete_case_mask(cohort, spec, [dcol, ecol, tcol, scol], values=values)
    p = cohort.patients
    num = {c: p[c].astype("Float64").to_numpy(dtype=float, na_value=np.nan)[mask]
           for c in (dcol, ecol, tcol, scol)}
    for c in (ecol, scol):
        if np.any((num[c] != 0) & (num[c] != 1)):
            raise InvalidInput(f"column {c!r} must be 0/1")
    for c in (dcol, tcol):
        if num[c].size and num[c].min() < 0:
            raise InvalidInput(f"column {c!r} has negative times")
    grid = np.asarray(params.grid)
    mode = params.time_mapping
    fits = fits_grid(num[dcol], num[ecol] == 1, grid, mode)  # the others are excluded
    mask = keep_fitting(mask, fits)
    num = {c: v[fits] for c, v in num.items()}
    event = num[ecol] == 1
    stop = effective_times(num[dcol], event, grid, mode)
    x0, _ = design_matrix(cohort, spec, mask, values=values)
    x0 = x0 - spec.center
    s = num[tcol]
    if mode == "up":
        # a plan lattice: the switch time moves up to its interval's end too, so every row is
        # one of lattice intervals (tmerge on the times rounded up to the lattice)
        s = effective_times(s, np.ones(s.size, dtype=bool), grid, "up")
    tol = REL_TOL * np.maximum(1.0, np.abs(stop))
    switched = (num[scol] == 1) & (s < stop - tol)
    from_start = switched & (s <= 0)
    split = switched & ~from_start
    # first rows: (0, s] with z = 0 for split patients, (0, T] otherwise
    first_stop = np.where(split, s, stop)
    first_z = np.where(from_start, 1.0, 0.0)
    first_event = event & ~split
    i2 = np.flatnonzero(split)
    start = np.r_[np.zeros(stop.size), s[i2]]
    stops = np.r_[first_stop, stop[i2]]
    events = np.r_[first_event, event[i2]]
    z = np.r_[first_z, np.ones(i2.size)] - 0.5
    x = np.column_stack([np.vstack([x0, x0[i2]]), z])
    return start, stops, events, x, int(mask.sum()), int(len(cohort) - mask.sum())


def _compute(cohort: Cohort, params: StartStopParams) -> dict[str, np.ndarray]:
    return _risk_sums(*start_stop_rows(cohort, params), _half_widths(params.design), params)


def _changes(start: np.ndarray, stop: np.ndarray, event: np.ndarray, params: CoxSumsParams
             ) -> np.ndarray:
    """The site-only cells of start-stop risk-set changes (attack M) over rows ``(start,
    stop]`` as :func:`_risk_sums` sees them: per interval the rows entering (a late entry, the
    second row of a switch) and the rows leaving other than by an event on the grid (a
    censoring, the first row of a switch), the first and last risk sets. One patient has at
    most one row at risk at a grid point, so each cell counts distinct patients."""
    grid = np.asarray(params.grid)
    cnt_start, _ = grid_positions(start, grid)
    cnt_stop, on_grid = grid_positions(stop, grid)
    return risk_set_changes(cnt_start, cnt_stop, event & (on_grid >= 0), grid.size)


def _tv_changes(cohort: Cohort, params: StartStopParams) -> np.ndarray:
    start, stop, event, *_ = start_stop_rows(cohort, params)
    return _changes(start, stop, event, params)


def _risk_sums(start: np.ndarray, stop: np.ndarray, event: np.ndarray, x: np.ndarray, n: int,
               excluded: int, hw: np.ndarray, params: CoxSumsParams) -> dict[str, np.ndarray]:
    """The sums at ``params.beta`` over rows ``(start, stop]`` (``x`` centred, ``hw`` its
    public half-widths); events lie on ``params.grid``."""
    grid = np.asarray(params.grid)
    beta = np.asarray(params.beta)
    efron = params.ties == "efron"
    m, p = grid.size, x.shape[1]
    centres, half = lp_bands(hw, beta)
    nb = centres.size
    lp = x @ beta
    band = np.minimum(np.searchsorted(centres + half, lp, side="left"), nb - 1)
    w = np.exp(lp - centres[band])
    iu, ju = upper_index(p)
    vals = np.concatenate([w[:, None], x * w[:, None], (x[:, iu] * x[:, ju]) * w[:, None]], axis=1)
    # a row is at risk at t_j for cnt_start <= j < cnt_stop (start < t_j <= stop)
    cnt_start, _ = grid_positions(start, grid)
    cnt_stop, on_grid = grid_positions(stop, grid)
    # exact: events lie on the grid (start_stop_rows excluded the others); up: an event after
    # the last grid point is not one on the grid (at risk throughout, as in km_risk_table)
    event = event & (on_grid >= 0)
    on_grid = np.where(event, on_grid, -1)
    q = vals.shape[1]
    risk = np.zeros((nb, m + 1, q))
    tied = np.zeros((nb, m, q))
    for b in range(nb):
        vb = vals * (band == b)[:, None]
        np.add.at(risk[b], cnt_start, vb)
        np.add.at(risk[b], cnt_stop, -vb)
        ev = event & (band == b)
        np.add.at(tied[b], on_grid[ev], vals[ev])
    risk = np.cumsum(risk, axis=1)[:, :m]
    # cancellation of the differences can leave -1e-17 where nobody is at risk
    risk[..., 0] = np.maximum(risk[..., 0], 0.0)
    d = np.bincount(on_grid[event], minlength=m).astype(float)[None, :m]
    xsum = np.zeros((m, p))
    np.add.at(xsum, on_grid[event], x[event])
    out = {"s0": risk[..., 0], "s1": risk[..., 1:1 + p], "s2": risk[..., 1 + p:],
           "d": d, "xsum": xsum[None], "n": np.array([float(n)]),
           "rows": np.array([float(start.size)]), "excluded": np.array([float(excluded)])}
    if efron:
        out |= {"e0": tied[..., 0], "e1": tied[..., 1:1 + p], "e2": tied[..., 1 + p:]}
    return out


def _declare(params: StartStopParams) -> dict[str, Statistic]:
    return _declare_sums(params, _half_widths(params.design), 2)


def _declare_sums(params: CoxSumsParams, hw: np.ndarray, rows_per_patient: int
                  ) -> dict[str, Statistic]:
    """Declarations of :func:`_risk_sums`: per-patient bounds (a patient is at risk in at most
    one of its rows at any time and has at most one event), ``rows_per_patient`` rows each."""
    mp = params.max_patients
    k = rows_per_patient
    m, p = len(params.grid), hw.size
    q = p * (p + 1) // 2
    a = float(hw.max())
    centres, half = lp_bands(hw, np.asarray(params.beta))
    nb, e = centres.size, math.exp(half)
    top = mp * e * (1.0 + BOUND_SLACK)

    def stat(shape: tuple[int, ...], low: float, high: float, sens: float) -> Statistic:
        return Statistic(shape, low, high, finest_resolution(low, high), sensitivity=sens)

    # a patient is at risk in at most one of its rows at any time: per-patient bounds as Cox
    out = {"s0": stat((nb, m), 0, top, e * math.sqrt(m)),
           "s1": stat((nb, m, p), -top * a, top * a, a * e * math.sqrt(m * p)),
           "s2": stat((nb, m, q), -top * a * a, top * a * a, a * a * e * p * math.sqrt(m)),
           "d": Statistic((1, m), 0, mp, is_count=True),
           "xsum": stat((1, m, p), -mp * a, mp * a, a * math.sqrt(p)),
           "n": Statistic((1,), 0, mp, is_count=True),
           "rows": Statistic((1,), 0, k * mp, sensitivity=float(k), is_count=True),
           "excluded": Statistic((1,), 0, mp, is_count=True)}
    if params.ties == "efron":
        out |= {"e0": stat((nb, m), 0, top, e),
                "e1": stat((nb, m, p), -top * a, top * a, a * e * math.sqrt(p)),
                "e2": stat((nb, m, q), -top * a * a, top * a * a, a * a * e * p)}
    return out


COX_START_STOP_SUMS = register(Query(
    QUERY, "1", compute=_compute, declare=_declare, params_type=StartStopParams,
    risk_set_changes=_tv_changes,
    description="Cox risk-set sums over start-stop rows (a 0/1 covariate switched on at a "
                "patient-level event time) per linear-predictor band and grid time at beta"))


class FederatedCoxTimeVarying(FederatedFitter):
    """Cox regression with one switch-on time-varying covariate, shaped like lifelines'
    ``CoxTimeVaryingFitter``; equal to ``coxph(Surv(start, stop, event) ~ ...)`` on the pooled
    split rows. After ``fit``: ``summary``, ``params_``, ``standard_errors_``,
    ``variance_matrix_``, ``log_likelihood_``, ``n_``, ``rows_``, ``events_``, ``to_json()``."""

    def __init__(self, ties: str = "efron", alpha: float = 0.05, tol: float = 1e-6,
                 max_rounds: int = 50) -> None:
        if ties not in ("efron", "breslow"):
            raise InvalidInput(f"ties must be 'efron' or 'breslow', got {ties!r}")
        self.ties, self.alpha, self.tol, self.max_rounds = ties, alpha, tol, max_rounds
        self.params_: pd.Series | None = None
        self.rounds = 0
        self._query = QUERY
        self.sites_: tuple[str, ...] = ()

    def _round(self, beta: np.ndarray) -> tuple[float, np.ndarray, np.ndarray, float]:
        request = self._request | {"beta": [float(b) for b in beta]}
        agg = self._federation.secure_sum(self._query, request, study=self._study)
        self.sites_ = same_sites(self.sites_, agg.sites)
        sums = combine_bands(expand_cox_sums(agg.values, self._grid.size),
                             lp_bands(self._hw, beta))
        ll, g, h = cox_derivatives(sums, beta, self.ties == "efron")
        self.rounds += 1
        self.n_, self.rows_ = int(agg["n"][0]), int(agg["rows"][0])
        self.excluded_ = int(agg["excluded"][0])
        return ll, g, h, float(sums["d"].sum())

    def fit(self, federation: Federation, duration_col: str = "os_time",
            event_col: str = "os_status", formula: str | Iterable[str | Term] | DesignSpec = "",
            *, switch: tuple[str, str] = ("amlt_time", "amlt_status"),
            steps_per_unit: float = 365.25, study: str = "default",
            levels: Mapping[str, Sequence[str]] | None = None,
            lattice: float | None = None) -> FederatedCoxTimeVarying:
        """Fit by Newton-Raphson; ``formula`` gives the baseline covariates, ``switch`` the
        ``(time, status)`` columns of the event that switches ``z(t)`` on; ``levels`` the
        declared levels of categorical covariates (``{column: [reference, ...]}``).

        ``lattice``: steps per year of a public lattice fixed at the study's approval (the
        spec's ``lattice``). The grid is then that whole lattice
        (:func:`~hemafed.analytics.survival_grid.lattice_grid`) with each follow-up and
        switch time moved up to its interval's end (``time_mapping: up``), and no time
        histogram is asked: the fit is ``coxph(Surv(start, stop, event))`` on the pooled rows
        split at the rounded times. Its per-time event counts stay under the sites'
        minimum-cell rule (docs/security.md, attack L): small cohorts need DP."""
        if not formula:
            raise InvalidInput("give the baseline covariates: a formula such as 'age + hb'")
        spec = parse_formula(formula, levels=levels)
        mapping = "exact"
        if lattice is not None:
            grid, mapping = np.asarray(lattice_grid(float(lattice))), "up"
        else:
            grid, _ = time_grid_counts(federation, duration_col, event_col,
                                       steps_per_unit=steps_per_unit, events_only=True,
                                       study=study)
        self._federation, self._study, self._grid, self.spec = federation, study, grid, spec
        self._hw = _half_widths(spec)
        self.switch = (str(switch[0]), str(switch[1]))
        self._request: dict[str, Any] = {
            "duration_col": duration_col, "event_col": event_col,
            "grid": [float(t) for t in grid], "time_mapping": mapping,
            "design": spec.to_params(), "switch": list(self.switch), "ties": self.ties}
        self.duration_col, self.event_col, self.rounds = duration_col, event_col, 0
        self.sites_ = ()
        return self._newton([*spec.names, f"{self.switch[1]}(t)"])

    def _newton(self, names: list[str]) -> FederatedCoxTimeVarying:
        """Newton-Raphson with step halving from ``beta = 0`` over :meth:`_round`."""
        beta = np.zeros(len(names))
        ll, grad, hess, events = self._round(beta)
        self.events_ = int(events)
        if events < len(names) + 1:
            raise InvalidInput(f"too few events ({int(events)}) for {len(names)} covariate(s)")
        self.log_likelihood_null_ = ll
        scale = np.sqrt(np.maximum(-np.diag(hess), 0.0) / events)
        fit = maximise_partial_likelihood(lambda b, final: self._round(b)[:3],
                                          (ll, grad, hess), scale, names, self.tol,
                                          self.max_rounds)
        beta, ll, cov = fit.beta, fit.loglik, fit.covariance
        index = pd.Index(names, name="covariate")
        self.params_ = pd.Series(beta, index=index, name="coef")
        self.standard_errors_ = pd.Series(np.sqrt(np.diag(cov)), index=index, name="se")
        self.variance_matrix_ = pd.DataFrame(cov, index=names, columns=names)
        self.log_likelihood_ = ll
        log.info("federated time-varying Cox converged in %d rounds", self.rounds)
        return self

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
            "kind": "cox_time_varying", "ties": self.ties, "switch": list(self.switch),
            "duration_col": self.duration_col, "event_col": self.event_col,
            "design": self.spec.to_params(), "summary": self.summary,
            "log_likelihood": self.log_likelihood_, "rounds": self.rounds, "n": self.n_,
            "rows": self.rows_, "events": self.events_, "excluded": self.excluded_}


def check_long_format(rows: pd.DataFrame, id_col: str = "patient_id", start_col: str = "start",
                      stop_col: str = "stop", event_col: str = "event") -> pd.DataFrame:
    """Validate long-format start-stop rows (several per patient, as ``survival::heart``) at a
    site's intake; return them sorted by patient and start.

    Each row is one interval ``(start, stop]`` of one patient with its covariate values. Refused
    with a one-line ``InvalidInput`` naming the rule and the first offending patient (a site's
    own intake message, never sent to a hub): a missing column or value, ``start >= stop``, a
    negative start, an event that is not 0/1, intervals of one patient that overlap, and an event
    on any row but the patient's last (after an event the patient leaves the risk set).

    >>> r = pd.DataFrame({"patient_id": ["a", "a"], "start": [0.0, 1.0], "stop": [1.0, 2.0],
    ...                   "event": [0, 1]})
    >>> len(check_long_format(r))
    2
    """
    cols = [id_col, start_col, stop_col, event_col]
    missing = [c for c in cols if c not in rows.columns]
    if missing:
        raise InvalidInput(f"long-format rows lack the column(s) {missing}")
    if rows[cols].isna().any().any():
        c = next(c for c in cols if rows[c].isna().any())
        raise InvalidInput(f"long-format rows: column {c!r} has missing values")
    try:
        start = rows[start_col].astype(float).to_numpy()
        stop = rows[stop_col].astype(float).to_numpy()
        event = rows[event_col].astype(float).to_numpy()
    except (TypeError, ValueError):
        raise InvalidInput(f"long-format rows: {start_col!r}, {stop_col!r} and {event_col!r} "
                           f"must be numbers") from None
    ids = rows[id_col].astype(str).to_numpy()

    def first(mask: np.ndarray) -> str:
        return str(ids[int(np.flatnonzero(mask)[0])])

    if not np.all(np.isfinite(start) & np.isfinite(stop)):
        raise InvalidInput(f"long-format rows: times must be finite (patient "
                           f"{first(~(np.isfinite(start) & np.isfinite(stop)))!r})")
    if (start < 0).any():
        raise InvalidInput(f"long-format rows: start must be >= 0 (patient {first(start < 0)!r})")
    if (start >= stop).any():
        raise InvalidInput(f"long-format rows: start must be below stop (patient "
                           f"{first(start >= stop)!r})")
    if not np.isin(event, (0.0, 1.0)).all():
        raise InvalidInput(f"long-format rows: {event_col!r} must be 0 or 1 (patient "
                           f"{first(~np.isin(event, (0.0, 1.0)))!r})")
    order = np.lexsort((start, ids))
    ids, start, stop, event = ids[order], start[order], stop[order], event[order]
    same = ids[1:] == ids[:-1]
    overlap = same & (start[1:] < stop[:-1])
    if overlap.any():
        raise InvalidInput(f"long-format rows: intervals of one patient overlap (patient "
                           f"{str(ids[1:][overlap][0])!r})")
    not_last = np.r_[same, False] & (event == 1)
    if not_last.any():
        raise InvalidInput(f"long-format rows: an event must be on the patient's last interval "
                           f"(patient {str(ids[not_last][0])!r})")
    return rows.iloc[order].reset_index(drop=True)


# --- the general case: a long-format table of start-stop rows at each site ---------------------

LONG_QUERY = "cox_long_sums"
LONG_EVENTS_QUERY = "cox_long_event_times"
MAX_ROWS_PER_PATIENT = 20


@dataclass(frozen=True, kw_only=True)
class LongColumns(QueryParams):
    """The columns of a site's long table a request names (the defaults of
    :data:`~hemafed.analytics.study_kinds.COX_LONG_DEFAULTS`), and the public cap on a
    patient's rows, which bounds each patient's part of a row count."""

    id_col: str = "patient_id"
    start_col: str = "start"
    stop_col: str = "stop"
    event_col: str = "event"
    max_rows_per_patient: int = MAX_ROWS_PER_PATIENT

    @staticmethod
    def _columns(params: Params) -> dict[str, Any]:
        return {"id_col": checks.column(params, "id_col", "patient_id"),
                "start_col": checks.column(params, "start_col", "start"),
                "stop_col": checks.column(params, "stop_col", "stop"),
                "event_col": checks.column(params, "event_col", "event"),
                "max_rows_per_patient": checks.positive_int(
                    params, "max_rows_per_patient", MAX_ROWS_PER_PATIENT, cap=10_000)}

    @classmethod
    def from_mapping(cls, params: Params) -> LongColumns:
        cls.known(params)
        return cls(**cls._columns(params))


@dataclass(frozen=True, kw_only=True)
class LongSumsParams(LongColumns, CoxSumsParams):
    """``cox_long_sums``: the long table's columns and those of the sums (``beta`` the
    design's coefficients; the grid the pooled event times)."""

    QUERY = LONG_QUERY

    @classmethod
    def from_mapping(cls, params: Params) -> LongSumsParams:
        cls.known(params)
        spec = DesignSpec.from_params(params.get("design"))
        return cls(**cls._columns(params), **cls._sums(params, spec, spec.half_width, spec.names))


@dataclass(frozen=True, kw_only=True)
class LongEventsParams(LongColumns):
    """``cox_long_event_times``: the long table's columns and the public lattice
    ``k / steps_per_unit`` up to ``max_time`` (time_histogram's lattice rule)."""

    QUERY = LONG_EVENTS_QUERY
    steps_per_unit: float
    max_time: float
    max_patients: int = checks.MAX_PATIENTS

    @classmethod
    def from_mapping(cls, params: Params) -> LongEventsParams:
        cls.known(params)
        spu = checks.number(params, "steps_per_unit", low=0.0, open_low=True)
        top = checks.number(params, "max_time", low=0.0, open_low=True)
        _hist_check({"steps_per_unit": spu, "max_time": top})
        return cls(**cls._columns(params), steps_per_unit=spu, max_time=top,
                   max_patients=checks.max_patients(params))

    @property
    def size(self) -> int:
        """The number of lattice points."""
        return _hist_size({"steps_per_unit": self.steps_per_unit, "max_time": self.max_time})


def long_rows(cohort: Cohort, params: LongColumns, spec: DesignSpec | None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int, int, np.ndarray]:
    """``(start, stop, event, x, n_patients, excluded_rows, patient_ids)`` of the site's long table
    (:class:`~hemafed.analytics.mixed.LongitudinalCohort`'s ``measurements``): the rows with
    start, stop, event and every covariate present (R's ``na.omit``), checked by
    :func:`check_long_format`, ``x`` centred on the design's public centres. A covariate not in
    the long table comes from the patient table (a baseline value). Times are as stored; the
    query maps them to the grid."""
    if not isinstance(cohort, LongitudinalCohort):
        raise InvalidInput("this site holds no long table (cohort/measurements.parquet)")
    idc, sc, tc, ec = params.id_col, params.start_col, params.stop_col, params.event_col
    table = cohort.measurements
    if idc not in table.columns:
        raise InvalidInput(f"column {idc!r} is not in the site's long table")
    frame = pd.DataFrame({idc: table[idc].astype(str).to_numpy()})
    base = cohort.patients.set_index(cohort.patients["patient_id"].astype(str))
    for c in (sc, tc, ec, *(spec.columns if spec is not None else ())):
        if c in table.columns:
            src = table[c].reset_index(drop=True)
        elif c in base.columns and c not in (sc, tc, ec):
            src = frame[idc].map(base[c])
        else:
            raise InvalidInput(f"column {c!r} is neither in the site's long table nor (for a "
                               "covariate) in its patient table")
        numeric = c in (sc, tc, ec) or (spec is not None and any(
            isinstance(t, NumericTerm) and t.column == c for t in spec.terms))
        if numeric:
            try:
                frame[c] = pd.to_numeric(src.astype("Float64"), errors="raise").to_numpy(
                    dtype=float, na_value=np.nan)
            except (TypeError, ValueError):
                raise InvalidInput(f"column {c!r} is not numeric") from None
        else:
            frame[c] = src.to_numpy()
    values = (design_values(Cohort(frame), spec) if spec is not None
              else np.zeros((len(frame), 0)))
    xcols = [f"__x{j}" for j in range(values.shape[1])]
    for j, c in enumerate(xcols):
        frame[c] = values[:, j]
    complete = ~frame[[sc, tc, ec, *xcols]].isna().any(axis=1).to_numpy()
    try:
        checked = check_long_format(frame[complete], idc, sc, tc, ec)
    except InvalidInput as e:  # the site's intake text names a patient: the hub gets the rule
        raise InvalidInput(str(e).split(" (patient ")[0]) from None
    k = params.max_rows_per_patient
    if len(checked) and int(checked.groupby(idc).size().max()) > k:
        raise InvalidInput("a patient has more rows than parameter 'max_rows_per_patient'")
    x = checked[xcols].to_numpy(dtype=float)
    if spec is not None:
        check_bounds(spec, x)
        x = x - spec.center
    ids = checked[idc].to_numpy(str)
    return (checked[sc].to_numpy(float), checked[tc].to_numpy(float),
            checked[ec].to_numpy(float) == 1, x, int(np.unique(ids).size),
            int(len(frame) - len(checked)), ids)


def _long_kept(cohort: Cohort, params: LongSumsParams
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int, int]:
    """``(start, stop, event, x, n, excluded)`` of the long rows the sums are over: a patient
    with an event off the public grid is left out (counted in ``excluded``)."""
    start, stop, event, x, n, excluded, ids = long_rows(cohort, params, params.design)
    grid = np.asarray(params.grid)
    off = event & ~fits_grid(stop, event, grid, "exact")
    drop = np.isin(ids, ids[off])
    stop = effective_times(stop, event, grid, "exact")
    keep = ~drop
    n_drop = int(np.unique(ids[drop]).size)
    return (start[keep], stop[keep], event[keep], x[keep], n - n_drop,
            excluded + int(drop.sum()))


def _long_compute(cohort: Cohort, params: LongSumsParams) -> dict[str, np.ndarray]:
    return _risk_sums(*_long_kept(cohort, params), params.design.half_width, params)


def _long_changes(cohort: Cohort, params: LongSumsParams) -> np.ndarray:
    start, stop, event, *_ = _long_kept(cohort, params)
    return _changes(start, stop, event, params)


def _long_declare(params: LongSumsParams) -> dict[str, Statistic]:
    k = params.max_rows_per_patient
    out = _declare_sums(params, params.design.half_width, k)
    out["excluded"] = Statistic((1,), 0, k * params.max_patients, sensitivity=float(k),
                                is_count=True)
    return out


COX_LONG_SUMS = register(Query(
    LONG_QUERY, "1", compute=_long_compute, declare=_long_declare, params_type=LongSumsParams,
    risk_set_changes=_long_changes,
    description="Cox risk-set sums over the rows of a site's long-format start-stop table "
                "(several time-varying covariates) per linear-predictor band and grid time"))


def _events_compute(cohort: Cohort, params: LongEventsParams) -> dict[str, np.ndarray]:
    _, stop, event, _, _, excluded, _ = long_rows(cohort, params, None)
    spu, size = params.steps_per_unit, params.size
    k = np.rint(stop[event] * spu)
    fits = (np.abs(k - stop[event] * spu) <= 1e-6) & (k < size)
    return {"events": np.bincount(k[fits].astype(int), minlength=size).astype(float),
            "excluded": np.array([float(excluded + int((~fits).sum()))])}


def _events_declare(params: LongEventsParams) -> dict[str, Statistic]:
    mp, k = params.max_patients, params.max_rows_per_patient
    return {"events": Statistic((params.size,), 0, mp, is_count=True),
            "excluded": Statistic((1,), 0, k * mp, sensitivity=float(k), is_count=True)}


COX_LONG_EVENT_TIMES = register(Query(
    LONG_EVENTS_QUERY, "1", compute=_events_compute, declare=_events_declare,
    params_type=LongEventsParams,
    description="events of a site's long-format start-stop table on the public lattice "
                "k/steps_per_unit (the event-time grid of cox_long_sums)"))


def long_design(formula: str | Iterable[str] | DesignSpec,
                bounds: Mapping[str, Sequence[float]] | None,
                levels: Mapping[str, Sequence[str]] | None = None) -> DesignSpec:
    """A design of covariates ``"age + year + surgery"`` of the long table: numeric ones with
    public ``bounds`` (``{column: [low, high]}``), categorical ones with public ``levels``
    (``{column: [reference, level2, ...]}``, R's treatment coding as ``parse_formula``);
    every covariate has one or the other. A :class:`DesignSpec` is taken as is.

    >>> long_design("age + arm", {"age": [0, 100]}, {"arm": ["a", "b"]}).names
    ('age', 'arm[b]')
    """
    if isinstance(formula, DesignSpec):
        return formula
    names = ([n.strip() for n in formula.split("+")] if isinstance(formula, str)
             else [str(n).strip() for n in formula])
    names = [n for n in names if n]
    if not names:
        raise InvalidInput("give the covariates: a formula such as 'age + transplant'")
    bounds, levels = bounds or {}, levels or {}
    missing = [n for n in names if n not in bounds and n not in levels]
    if missing:
        raise InvalidInput(f"declare public bounds [low, high] (or levels) for covariate(s) "
                           f"{missing}")
    unused = sorted((set(bounds) | set(levels)) - set(names))
    if unused:
        raise InvalidInput(f"bounds or levels given for {unused}, which the formula does not use")
    terms: list[Term] = []
    for n in names:
        if n in levels:
            lv = levels[n]
            if (not isinstance(lv, list | tuple) or n in bounds
                    or not all(isinstance(v, str | int) and not isinstance(v, bool) for v in lv)):
                raise InvalidInput(f"levels of {n!r} must be a list of level names, reference "
                                   "first (and no bounds)")
            terms.append(CategoricalTerm(n, tuple(str(v) for v in lv), str(lv[0]) if lv else ""))
            continue
        b = bounds[n]
        if not isinstance(b, list | tuple) or len(b) != 2:
            raise InvalidInput(f"bounds of {n!r} must be [low, high]")
        terms.append(NumericTerm(n, float(b[0]), float(b[1])))
    return DesignSpec(tuple(terms))


class CoxStartStopFitter(FederatedCoxTimeVarying):
    """Cox regression on the long-format start-stop tables of the sites (several rows per
    patient, several time-varying covariates), equal to ``coxph(Surv(start, stop, event) ~
    ...)`` on the pooled rows. Attributes as :class:`FederatedCoxTimeVarying`; ``rows_`` counts
    rows (R's ``n``), ``n_`` patients, ``excluded_`` rows left out, ``sites_`` the sites."""

    def fit(self, federation: Federation, duration_col: str = "",  # type: ignore[override]
            event_col: str = "event", formula: str | Iterable[str | Term] | DesignSpec = "",
            *, bounds: Mapping[str, Sequence[float]] | None = None,
            levels: Mapping[str, Sequence[str]] | None = None, id_col: str = "patient_id",
            start_col: str = "start", stop_col: str = "stop", steps_per_unit: float = 1.0,
            max_time: float = 10_000.0, max_rows_per_patient: int = MAX_ROWS_PER_PATIENT,
            study: str = "default", **_: Any) -> CoxStartStopFitter:
        """Fit by Newton-Raphson. ``duration_col`` (the stop column, if given) overrides
        ``stop_col``; event times must lie on the lattice ``k / steps_per_unit`` up to
        ``max_time`` (the others' patients are excluded)."""
        stop_col = duration_col or stop_col
        spec = long_design(formula, bounds, levels)  # type: ignore[arg-type]
        cols = {"id_col": id_col, "start_col": start_col, "stop_col": stop_col,
                "event_col": event_col, "max_rows_per_patient": max_rows_per_patient}
        agg = federation.secure_sum(LONG_EVENTS_QUERY, cols | {
            "steps_per_unit": float(steps_per_unit), "max_time": float(max_time)}, study=study)
        k = np.flatnonzero(np.asarray(agg["events"]) > 0)
        if k.size == 0:
            raise InvalidInput(f"no events in {event_col!r} at any site")
        grid = k / float(steps_per_unit)
        self._federation, self._study, self._grid, self.spec = federation, study, grid, spec
        self._hw, self._query = spec.half_width, LONG_QUERY
        self.switch = ("", "")
        self._request = cols | {"grid": [float(t) for t in grid], "design": spec.to_params(),
                                "ties": self.ties}
        self.duration_col, self.event_col, self.rounds = stop_col, event_col, 0
        self.start_col = start_col
        self.sites_ = tuple(sorted(agg.sites))
        self._newton(list(spec.names))
        return self

    def _payload(self) -> dict[str, Any]:
        return {
            "kind": "cox_start_stop", "ties": self.ties, "start_col": self.start_col,
            "stop_col": self.duration_col, "event_col": self.event_col,
            "design": self.spec.to_params(), "summary": self.summary,
            "log_likelihood": self.log_likelihood_, "rounds": self.rounds, "n": self.n_,
            "rows": self.rows_, "events": self.events_, "excluded": self.excluded_,
            "sites": list(self.sites_)}
