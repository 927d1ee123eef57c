"""Federated cumulative incidence of competing events (Aalen-Johansen) from secure sums.

Competing events are declared as an ordered list of ``(time column, status column)`` pairs, e.g.
``[("amlt_time", "amlt_status"), ("os_time", "os_status")]``: cause 1 is AML transformation at
``amlt_time``, cause 2 is death *without* (recorded) transformation at ``os_time``. Each patient
has the first cause (in this order) whose status is 1, at that cause's time; a patient with no
event is censored at the earliest of the listed times (the end of the shortest follow-up).
Patients missing any listed status or time are left out (complete cases) and counted.

The site query ``competing_risk_table`` returns, per group, the events of each cause at each
public grid time and a histogram of how many grid points each patient stays at risk for
(each patient adds exactly 1 to it, so its per-patient sensitivity is 1). The hub derives the
number at risk ``n_j``, the overall Kaplan-Meier ``S(t_j-)`` and

    CIF_k(t) = sum_{t_j <= t} S(t_j-) d_kj / n_j,

with the variance of lifelines' ``AalenJohansenFitter`` (Collett's Greenwood-type delta method)
and its log(-log) confidence interval. With the exact event-time grid (the default, from the
``time_histogram`` secure sum on a public lattice such as days) results equal the pooled
Aalen-Johansen estimate on the same discretised times. lifelines jitters tied event times of
different causes; we do not: a tie is handled exactly (all events at ``t_j`` use ``S(t_j-)``).

Gray's test is :mod:`hemafed.analytics.graytest`; Fine-Gray subdistribution-hazard regression
is :mod:`hemafed.analytics.finegray`.

>>> params = competing_params([("amlt_time", "amlt_status"), ("os_time", "os_status")], [1.0])
>>> params["causes"][0]
['amlt_time', 'amlt_status']
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from hemafed.analytics.dp import (
    NoiseRecord,
    clamp_counts,
    clip_probability,
    monotone_nondecreasing,
    monotone_nonincreasing,
    noise_record,
)
from hemafed.analytics.fitter import FederatedFitter
from hemafed.analytics.km import time_grid
from hemafed.analytics.survival_grid import (
    check_grid,
    effective_times,
    fits_grid,
    grid_positions,
    keep_fitting,
)
from hemafed.cohort.model import Cohort
from hemafed.cohort.schema import FIELDS
from hemafed.errors import InvalidInput
from hemafed.federation import checks
from hemafed.federation.api import AggregateResult, DPRequest, Federation
from hemafed.federation.queries import Params, Query, QueryParams, Statistic, register

QUERY = "competing_risk_table"
MDS_AML_VS_DEATH: tuple[tuple[str, str], ...] = (("amlt_time", "amlt_status"),
                                                 ("os_time", "os_status"))
"""Cause 1: transformation to AML; cause 2: death without transformation."""


# --- parameters and site query -----------------------------------------------------------------

def competing_params(causes: Sequence[tuple[str, str]], grid: Sequence[float] | np.ndarray, *,
                     time_mapping: str = "exact", group_col: str | None = None,
                     group_levels: Sequence[str] | None = None) -> dict[str, Any]:
    """JSON-serialisable parameters of ``competing_risk_table``."""
    out: dict[str, Any] = {"causes": [[str(t), str(s)] for t, s in causes],
                           "grid": [float(t) for t in grid], "time_mapping": time_mapping}
    if group_col is not None:
        out["group_col"] = group_col
        out["group_levels"] = [str(v) for v in (group_levels or ())]
    return out


def _causes(params: Params) -> list[tuple[str, str]]:
    causes = params.get("causes")
    if not isinstance(causes, list | tuple) or len(causes) < 1:
        raise InvalidInput("parameter 'causes' must list (time column, status column) pairs")
    out = []
    for i, pair in enumerate(causes):
        if (not isinstance(pair, list | tuple) or len(pair) != 2
                or not all(isinstance(c, str) and c for c in pair)):
            raise InvalidInput(f"cause {i + 1}: expected [time column, status column], "
                               f"got {pair!r}")
        out.append((str(pair[0]), str(pair[1])))
    return out


TIME_MAPPINGS = ("exact", "up", "down")


@dataclass(frozen=True)
class CompetingParams(QueryParams):
    """``competing_risk_table``: the (time, status) column pair of each cause, the public grid,
    how times map onto it, and an optional grouping column with its public levels."""

    QUERY = QUERY
    causes: tuple[tuple[str, str], ...]
    grid: tuple[float, ...]
    time_mapping: str = "exact"
    group_col: str | None = None
    group_levels: tuple[str, ...] | None = None
    max_patients: int = checks.MAX_PATIENTS

    @classmethod
    def from_mapping(cls, params: Params) -> CompetingParams:
        cls.known(params)
        causes = _causes(params)
        grid = check_grid(params.get("grid"))
        if params.get("time_mapping", "exact") not in TIME_MAPPINGS:
            raise InvalidInput(f"parameter 'time_mapping' must be exact, up or down, "
                               f"got {params.get('time_mapping')!r}")
        group_col = None if params.get("group_col") is None else \
            checks.column(params, "group_col")
        levels = None if group_col is None else checks.levels(params, "group_levels")
        return cls(tuple(causes), tuple(float(t) for t in grid),
                   str(params.get("time_mapping", "exact")), group_col,
                   None if levels is None else tuple(levels), checks.max_patients(params))

    def to_mapping(self) -> dict[str, Any]:
        out = super().to_mapping()
        for key in ("group_col", "group_levels"):
            if out[key] is None:
                del out[key]
        return out


def _numeric(cohort: Cohort, col: str) -> np.ndarray:
    return cohort.numeric_column(col)

def first_cause(times: np.ndarray, statuses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per patient ``(time, cause)``: the first listed cause with status 1 at its time, else
    cause 0 (censored) at the earliest listed time. Inputs are ``(n, K)``; pure."""
    n, k = times.shape
    cause = np.zeros(n, dtype=int)
    time = np.nanmin(times, axis=1) if k else np.zeros(n)
    for c in range(k - 1, -1, -1):  # last to first, so the first listed cause wins
        hit = statuses[:, c] == 1
        cause[hit] = c + 1
        time[hit] = times[hit, c]
    return time, cause


def _compute(cohort: Cohort, params: CompetingParams) -> dict[str, np.ndarray]:
    causes = params.causes
    grid = np.asarray(params.grid, dtype=float)
    m, k = grid.size, len(causes)
    times = np.column_stack([_numeric(cohort, t) for t, _ in causes])
    statuses = np.column_stack([_numeric(cohort, s) for _, s in causes])
    bad = ~np.isnan(statuses) & (statuses != 0) & (statuses != 1)
    if bad.any():
        col = causes[int(np.flatnonzero(bad.any(axis=0))[0])][1]
        raise InvalidInput(f"status column {col!r} must be 0/1")
    ok = ~(np.isnan(times).any(axis=1) | np.isnan(statuses).any(axis=1))
    levels = params.group_levels
    group = np.zeros(len(cohort), dtype=int)
    if levels is not None and params.group_col is not None:
        gcol = params.group_col
        if gcol not in cohort.patients.columns:
            raise InvalidInput(f"group column {gcol!r} is not in the site's cohort")
        values = cohort.patients[gcol].astype("string")
        group = np.full(len(cohort), -1)
        for g, lv in enumerate(levels):
            group[(values == lv).fillna(False).to_numpy(dtype=bool)] = g
        ok &= group >= 0
    time, cause = first_cause(times[ok], statuses[ok])
    if time.size and time.min() < 0:
        raise InvalidInput(f"negative times in {[t for t, _ in causes]}")
    mode = params.time_mapping
    fits = fits_grid(time, cause > 0, grid, mode)  # the others are excluded, not refused
    ok, time, cause = keep_fitting(ok, fits), time[fits], cause[fits]
    eff = effective_times(time, cause > 0, grid, mode)
    at_risk_count, on_grid = grid_positions(eff, grid)
    n_groups = 1 if levels is None else len(levels)
    events = np.zeros((n_groups, k, m))
    exits = np.zeros((n_groups, m + 1))
    g_ok = group[ok]
    ev = (cause > 0) & (on_grid >= 0)
    np.add.at(events, (g_ok[ev], cause[ev] - 1, on_grid[ev]), 1.0)
    np.add.at(exits, (g_ok, at_risk_count), 1.0)
    return {"events": events, "exits": exits,
            "excluded": np.array([float(len(cohort) - ok.sum())])}


def _declare(params: CompetingParams) -> dict[str, Statistic]:
    mp, m, k = params.max_patients, len(params.grid), len(params.causes)
    g = 1 if params.group_levels is None else len(params.group_levels)
    return {"events": Statistic((g, k, m), 0, mp, is_count=True),
            "exits": Statistic((g, m + 1), 0, mp, is_count=True),
            "excluded": Statistic((1,), 0, mp, is_count=True)}


register(Query(QUERY, "1", compute=_compute, declare=_declare, params_type=CompetingParams,
               description="per group: events of each competing cause per grid time and the "
                           "histogram of grid points at risk (competing-risks table)"))


# --- hub maths (pure) --------------------------------------------------------------------------

@dataclass(frozen=True)
class CumulativeIncidence:
    """Aalen-Johansen estimate of one cause in one group, on the grid times."""

    times: np.ndarray
    at_risk: np.ndarray
    events: np.ndarray
    all_events: np.ndarray
    survival_before: np.ndarray
    cif: np.ndarray
    variance: np.ndarray
    lower: np.ndarray
    upper: np.ndarray


def at_risk_from_exits(exits: np.ndarray) -> np.ndarray:
    """``n_j = #{patients at risk at grid point j}`` from the exit histogram (length m + 1)."""
    rev = np.cumsum(np.asarray(exits, dtype=float)[::-1])[::-1]
    return rev[1:]


def aalen_johansen(times: np.ndarray, at_risk: np.ndarray, events: np.ndarray, cause: int,
                   alpha: float = 0.05) -> CumulativeIncidence:
    """CIF of ``cause`` (1-based) from pooled counts: ``events`` (K, m), ``at_risk`` (m,).

    Variance as lifelines' ``AalenJohansenFitter`` (Collett, Modelling Survival Data, 3rd ed.,
    p. 411); NaN from the first time everyone at risk has an event.
    """
    d_all = events.sum(axis=0)
    d_k = events[cause - 1]
    n = at_risk
    with np.errstate(divide="ignore", invalid="ignore"):
        hazard = np.where(n > 0, d_all / n, 0.0)
        s = np.cumprod(1.0 - hazard)
        s_before = np.concatenate([[1.0], s[:-1]])
        inc = np.where(n > 0, s_before * d_k / n, 0.0)
        f = np.cumsum(inc)
        a = np.where(d_all > 0, d_all / (n * (n - d_all)), 0.0)
        b2 = np.where(n > 0, s_before**2 * d_k * (n - d_k) / n**3, 0.0)
        c = np.where(n > 0, s_before * d_k / n**2, 0.0)
        # sum_i a_i (F - F_i)^2 expanded into running sums, O(m)
        first = f**2 * np.cumsum(a) - 2 * f * np.cumsum(a * f) + np.cumsum(a * f**2)
        third = f * np.cumsum(c) - np.cumsum(c * f)
        var = first + np.cumsum(b2) - 2 * third
        var = np.where(np.cumsum(~np.isfinite(a)) > 0, np.nan, var)
        z = stats.norm.ppf(1 - alpha / 2)
        se_t = np.sqrt(var) / (f * np.abs(np.log(f)))
        lt = np.log(-np.log(f))
        one, two = np.exp(-np.exp(lt + z * se_t)), np.exp(-np.exp(lt - z * se_t))
    return CumulativeIncidence(times, n, d_k, d_all, s_before, f, var,
                               np.fmin(one, two), np.fmax(one, two))


# --- hub step ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Fit:
    groups: tuple[str, ...]
    curves: dict[tuple[str, int], CumulativeIncidence]
    excluded: float
    noise: NoiseRecord = field(default_factory=NoiseRecord)


class FederatedAalenJohansen(FederatedFitter):
    """Cumulative incidence of competing events across sites, shaped like lifelines'
    ``AalenJohansenFitter``: ``fit`` returns self; ``cumulative_density_`` (the cause of interest,
    one column per group), ``variance_``, ``confidence_interval_``, ``event_table``,
    ``cumulative_incidence(cause, group)`` for every cause, ``summary``, ``plot()``,
    ``to_json()``.
    """

    _fitted_attribute = "_fit"

    def __init__(self, alpha: float = 0.05) -> None:
        if not 0 < alpha < 1:
            raise InvalidInput(f"alpha must be in (0, 1), got {alpha}")
        self.alpha = alpha
        self._fit: _Fit | None = None

    def fit(self, federation: Federation,
            causes: Sequence[tuple[str, str]] = MDS_AML_VS_DEATH, *, event_of_interest: int = 1,
            group_col: str | None = None, levels: Sequence[str] | None = None,
            grid: Sequence[float] | None = None, time_mapping: str = "exact",
            steps_per_unit: float = 365.25, max_time: float = 60.0, study: str = "default",
            dp: DPRequest | None = None) -> FederatedAalenJohansen:
        """Estimate the CIF of every listed cause (per group).

        ``grid`` defaults to the exact event-time grid: the union, over causes, of lattice
        points ``k / steps_per_unit`` with an event (secure ``time_histogram`` sums; times at
        sites must lie on that lattice). With ``dp`` pass a coarse public ``grid`` with
        ``time_mapping='up'``: the exact grid would itself be a non-private release.
        """
        causes = [(str(t), str(s)) for t, s in causes]
        if not causes:
            raise InvalidInput("causes must list at least one (time column, status column) pair")
        for t, s in causes:
            for col in (t, s):
                if col not in FIELDS:
                    raise InvalidInput(f"column {col!r} is not a cohort schema field")
        if not 1 <= event_of_interest <= len(causes):
            raise InvalidInput(f"event_of_interest must be 1..{len(causes)}, "
                               f"got {event_of_interest}")
        if group_col is not None and not levels:
            raise InvalidInput(f"group_col {group_col!r} needs its public levels (levels=[...])")
        if grid is None:
            if dp is not None:
                raise InvalidInput("a DP release needs a public grid (grid=[...], "
                                   "time_mapping='up'); the exact event-time grid is not private")
            points = [time_grid(federation, t, s, steps_per_unit=steps_per_unit,
                                max_time=max_time, events_only=True, study=study)
                      for t, s in causes]
            g = np.unique(np.concatenate([[0.0], *points]))
        else:
            g = check_grid(grid)
        labels = ("all",) if group_col is None else tuple(str(v) for v in levels or ())
        params = competing_params(causes, g, time_mapping=time_mapping, group_col=group_col,
                                  group_levels=None if group_col is None else labels)
        agg: AggregateResult = federation.secure_sum(QUERY, params, study=study, dp=dp)
        events, exits = agg["events"], agg["exits"]
        if dp is not None:
            events, exits = clamp_counts(events), clamp_counts(exits)
        curves: dict[tuple[str, int], CumulativeIncidence] = {}
        for gi, lab in enumerate(labels):
            n = at_risk_from_exits(exits[gi])
            for k in range(1, len(causes) + 1):
                ci = aalen_johansen(g, n, events[gi], k, self.alpha)
                if dp is not None:
                    ci = _post_process(ci)
                curves[(lab, k)] = ci
        self.causes = causes
        self.event_of_interest = event_of_interest
        self.group_col = group_col
        self.grid_ = g
        self._fit = _Fit(labels, curves, float(clamp_counts(agg["excluded"])[0]),
                         noise_record([(QUERY, agg)], dp))
        return self

    def _need(self) -> _Fit:
        if self._fit is None:
            raise InvalidInput("call fit(...) first")
        return self._fit

    @property
    def excluded_(self) -> float:
        return self._need().excluded

    @property
    def noise(self) -> NoiseRecord:
        return self._need().noise

    def cumulative_incidence(self, cause: int | None = None,
                             group: str | None = None) -> CumulativeIncidence:
        fit = self._need()
        key = (fit.groups[0] if group is None else str(group),
               self.event_of_interest if cause is None else int(cause))
        try:
            return fit.curves[key]
        except KeyError:
            raise InvalidInput(f"no curve for group {key[0]!r}, cause {key[1]}; groups "
                               f"{list(fit.groups)}, causes 1..{len(self.causes)}") from None

    def _frame(self, attr: str, cause: int | None = None) -> pd.DataFrame:
        fit = self._need()
        k = self.event_of_interest if cause is None else cause
        cols = {f"CIF_{k}" if len(fit.groups) == 1 else lab:
                getattr(fit.curves[(lab, k)], attr) for lab in fit.groups}
        return pd.DataFrame(cols, index=pd.Index(self.grid_, name="timeline"))

    @property
    def cumulative_density_(self) -> pd.DataFrame:
        """CIF of the cause of interest at every grid time (one column per group)."""
        return self._frame("cif")

    @property
    def variance_(self) -> pd.DataFrame:
        return self._frame("variance")

    @property
    def confidence_interval_(self) -> pd.DataFrame:
        lower, upper = self._frame("lower"), self._frame("upper")
        level = f"{1 - self.alpha:g}"
        return pd.concat([lower.add_suffix(f"_lower_{level}"),
                          upper.add_suffix(f"_upper_{level}")], axis=1)

    @property
    def event_table(self) -> pd.DataFrame:
        """Per group and grid time: at risk, all events and events of each cause."""
        fit = self._need()
        parts = {}
        for lab in fit.groups:
            first = fit.curves[(lab, 1)]
            cols: dict[str, np.ndarray] = {"at_risk": first.at_risk, "observed": first.all_events}
            for k in range(1, len(self.causes) + 1):
                cols[f"observed_{k}"] = fit.curves[(lab, k)].events
            parts[lab] = pd.DataFrame(cols, index=pd.Index(self.grid_, name="event_at"))
        if len(parts) == 1:
            return next(iter(parts.values()))
        return pd.concat(parts, names=[self.group_col or "group"])

    def at(self, times: Sequence[float], cause: int | None = None) -> pd.DataFrame:
        """CIF (with CI) of ``cause`` at the requested times, one row per group and time."""
        fit = self._need()
        k = self.event_of_interest if cause is None else cause
        rows = []
        for lab in fit.groups:
            c = fit.curves[(lab, k)]
            for t in times:
                j = int(np.searchsorted(c.times, t, side="right")) - 1
                vals = (0.0, 0.0, math.nan, math.nan) if j < 0 else (
                    c.cif[j], c.variance[j], c.lower[j], c.upper[j])
                rows.append({"group": lab, "cause": k, "time": float(t), "cif": vals[0],
                             "variance": vals[1], "lower": vals[2], "upper": vals[3]})
        return pd.DataFrame(rows)

    @property
    def summary(self) -> pd.DataFrame:
        """CIF of every cause at 1, 2, 5 and 10 time units, per group."""
        self._need()
        return pd.concat([self.at([1.0, 2.0, 5.0, 10.0], k)
                          for k in range(1, len(self.causes) + 1)], ignore_index=True)

    def plot(self, ax: Any = None, cause: int | None = None, ci: bool = True) -> Any:
        """Step plot of the CIF of ``cause`` per group with its CI band (matplotlib axes)."""
        fit = self._need()
        import matplotlib.pyplot as plt

        k = self.event_of_interest if cause is None else cause
        if ax is None:
            _, ax = plt.subplots()
        for lab in fit.groups:
            c = fit.curves[(lab, k)]
            line = ax.step(c.times, c.cif, where="post", label=f"{lab} (cause {k})")[0]
            if ci:
                ax.fill_between(c.times, np.nan_to_num(c.lower), np.nan_to_num(c.upper),
                                step="post", alpha=0.25, color=line.get_color())
        ax.set_xlabel("time")
        ax.set_ylabel(f"cumulative incidence of {self.causes[k - 1][1]}")
        ax.set_ylim(0, 1.0)
        ax.legend()
        return ax

    def _payload(self) -> dict[str, Any]:
        fit = self._need()
        return {
            "kind": "aalen_johansen", "causes": self.causes, "alpha": self.alpha,
            "event_of_interest": self.event_of_interest, "group_col": self.group_col,
            "excluded": fit.excluded, "timeline": self.grid_, "dp": fit.noise.to_dict(),
            "curves": {f"{lab}|cause{k}": {"cif": c.cif, "variance": c.variance,
                                           "lower": c.lower, "upper": c.upper,
                                           "at_risk": c.at_risk, "events": c.events}
                       for (lab, k), c in fit.curves.items()}}


def _post_process(ci: CumulativeIncidence) -> CumulativeIncidence:
    """Keep a noisy release consistent: S(t-) in [0, 1] and non-increasing, CIF in [0, 1] and
    non-decreasing (post-processing costs no privacy)."""
    s = monotone_nonincreasing(clip_probability(np.nan_to_num(ci.survival_before, nan=0.0)))
    f = monotone_nondecreasing(clip_probability(np.nan_to_num(ci.cif, nan=0.0)))
    return CumulativeIncidence(ci.times, ci.at_risk, ci.events, ci.all_events, s, f,
                               ci.variance, clip_probability(ci.lower), clip_probability(ci.upper))
