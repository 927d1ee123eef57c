"""Federated Kaplan-Meier: the hub step over the secure sums of ``km_risk_table``.

The hub receives, per group and public grid time, the sums over sites of events, censored and
number at risk, and computes the product-limit estimate, Greenwood variance and lifelines'
exponential-Greenwood ("log(-log)") confidence intervals. With the exact event-time grid
(:func:`time_grid`) the curves equal lifelines' ``KaplanMeierFitter`` on the pooled rows.

>>> # km = FederatedKaplanMeier().fit(federation, "os_time", "os_status", group_col="sex",
>>> #                                 levels=["M", "F"])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from hemafed.analytics.fitter import FederatedFitter
from hemafed.analytics.survival_grid import check_grid, query_params
from hemafed.errors import InvalidInput
from hemafed.federation.api import Federation


def time_grid(federation: Federation, duration_col: str = "os_time",
              event_col: str = "os_status", *, steps_per_unit: float = 365.25,
              max_time: float = 60.0, events_only: bool = False,
              study: str = "default") -> np.ndarray:
    """The exact distinct-time grid, from a secure histogram on the lattice ``k/steps_per_unit``.

    Sites must hold times on that lattice (e.g. whole days in years); the grid is the lattice
    points where some site has an event (``events_only``) or any exit. The histogram reveals
    the pooled number of events and exits per lattice point, which a KM table shows anyway.
    """
    return time_grid_counts(federation, duration_col, event_col, steps_per_unit=steps_per_unit,
                            max_time=max_time, events_only=events_only, study=study)[0]


def time_grid_counts(federation: Federation, duration_col: str = "os_time",
                     event_col: str = "os_status", *, steps_per_unit: float = 365.25,
                     max_time: float = 60.0, events_only: bool = False,
                     study: str = "default") -> tuple[np.ndarray, np.ndarray]:
    """:func:`time_grid` and the pooled number of events at each of its points (over rows
    with a duration and an event, before any covariate makes a row incomplete)."""
    agg = federation.secure_sum("time_histogram", {
        "duration_col": duration_col, "event_col": event_col,
        "steps_per_unit": float(steps_per_unit), "max_time": float(max_time)}, study=study)
    counts = agg["events"] if events_only else agg["exits"]
    k = np.flatnonzero(counts > 0)
    if k.size == 0:
        raise InvalidInput(f"no {'events' if events_only else 'times'} in {duration_col!r} at any site")
    return k / float(steps_per_unit), np.asarray(agg["events"])[k]


@dataclass(frozen=True)
class KMCurve:
    """One group's curve: lifelines-style event table, survival, CI and median."""

    label: str
    event_table: pd.DataFrame
    survival: pd.Series
    ci_lower: pd.Series
    ci_upper: pd.Series
    variance: pd.Series

    @property
    def std_err(self) -> pd.Series:
        """Greenwood standard error of S(t) (R's ``summary(survfit)$std.err``); NaN where
        S(t) = 0, as R."""
        return (self.survival * np.sqrt(self.variance)).rename("std_err")

    def at(self, times: Sequence[float]) -> pd.DataFrame:
        """Survival, standard error and confidence limits at ``times`` (the step function's
        value; NaN where undefined, e.g. the standard error once S(t) = 0)."""
        idx = self.survival.index.to_numpy()
        pos = np.searchsorted(idx, np.asarray(times, dtype=float), side="right") - 1
        cols = {"survival": self.survival, "std_err": self.std_err, "lower": self.ci_lower,
                "upper": self.ci_upper}
        out = {k: np.where(pos >= 0, v.to_numpy()[np.maximum(pos, 0)], 1.0 if k != "std_err"
                           else 0.0) for k, v in cols.items()}
        return pd.DataFrame(out, index=pd.Index([float(t) for t in times], name="time"))

    @property
    def median(self) -> float:
        below = self.survival[self.survival <= 0.5]
        return float(below.index[0]) if len(below) else float("inf")


def km_curve(label: str, times: np.ndarray, observed: np.ndarray, censored: np.ndarray,
             at_risk: np.ndarray, n: float, alpha: float = 0.05) -> KMCurve:
    """Product-limit estimate and exponential-Greenwood CI from pooled counts (pure)."""
    removed = observed + censored
    keep = removed > 0
    t, d, c, r = times[keep], observed[keep], censored[keep], at_risk[keep]
    entrance = np.zeros_like(t)
    if t.size and t[0] == 0.0:
        entrance[0] = n
        r[0] = n
    else:
        t, d, c, r = (np.concatenate([[0.0], a]) for a in (t, d, c, r))
        r[0] = n
        entrance = np.concatenate([[n], entrance])
    table = pd.DataFrame({"removed": d + c, "observed": d, "censored": c, "entrance": entrance,
                          "at_risk": r}, index=pd.Index(t, name="event_at"))
    with np.errstate(divide="ignore", invalid="ignore"):
        log_s = np.cumsum(np.log(r - d) - np.log(r))
        step = d / (r * (r - d))
    var = np.cumsum(np.where(np.isinf(step), 0.0, np.nan_to_num(step, nan=0.0)))
    surv = np.exp(log_s)
    z = stats.norm.ppf(1 - alpha / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.log(surv)
        lower = np.nan_to_num(np.exp(-np.exp(np.log(-v) - z * np.sqrt(var) / v)), nan=1.0)
        upper = np.nan_to_num(np.exp(-np.exp(np.log(-v) + z * np.sqrt(var) / v)), nan=1.0)
    # once S(t) reaches 0 the Greenwood variance is undefined: R's survfit gives std.err NA and
    # no confidence interval from there on, and so do we (NaN; None in JSON, a dash in reports)
    zero = surv <= 0.0
    var, lower, upper = (np.where(zero, np.nan, a) for a in (var, lower, upper))
    idx = pd.Index(t, name="timeline")
    return KMCurve(label, table, pd.Series(surv, idx, name=label), pd.Series(lower, idx),
                   pd.Series(upper, idx), pd.Series(var, idx))


class FederatedKaplanMeier(FederatedFitter):
    """Kaplan-Meier over a federation, shaped like lifelines' ``KaplanMeierFitter``.

    ``fit`` returns self; then ``survival_function_`` (one column per group),
    ``confidence_interval_``, ``event_table``, ``median_survival_time_``, ``at_risk_table``,
    ``plot()`` and ``to_json()``.
    """

    _fitted_attribute = "curves_"

    def __init__(self, alpha: float = 0.05, label: str = "KM_estimate") -> None:
        if not 0 < alpha < 1:
            raise InvalidInput(f"alpha must be in (0, 1), got {alpha}")
        self.alpha = alpha
        self.label = label
        self.curves_: dict[str, KMCurve] = {}
        self.sums_: dict[str, np.ndarray] = {}

    def fit(self, federation: Federation, duration_col: str = "os_time",
            event_col: str = "os_status", *, group_col: str | None = None,
            levels: Sequence[str] | None = None, grid: Sequence[float] | None = None,
            time_mapping: str = "exact", steps_per_unit: float = 365.25,
            study: str = "default") -> FederatedKaplanMeier:
        """Fit one curve, or one per declared level of ``group_col``.

        ``grid`` defaults to the exact distinct-time grid (:func:`time_grid` at
        ``steps_per_unit``); pass a public grid with ``time_mapping='up'|'down'`` to bin.
        """
        if group_col is not None and not levels:
            raise InvalidInput(f"group_col {group_col!r} needs its public levels (levels=[...])")
        g = check_grid(grid) if grid is not None else time_grid(
            federation, duration_col, event_col, steps_per_unit=steps_per_unit, study=study)
        extra: dict[str, Any] = {}
        labels = [self.label]
        if group_col is not None and levels:
            labels = [str(v) for v in levels]
            extra = {"group_col": group_col, "group_levels": labels}
        params = query_params(duration_col, event_col, g, time_mapping=time_mapping, **extra)
        agg = federation.secure_sum("km_risk_table", params, study=study)
        self.sums_ = dict(agg.values)
        self.grid_ = g
        self.duration_col, self.event_col, self.group_col = duration_col, event_col, group_col
        self.excluded_ = int(agg["excluded"][0])
        self.curves_ = {
            lab: km_curve(lab, g, agg["observed"][k], agg["censored"][k], agg["at_risk"][k].copy(),
                          float(agg["n"][k]), self.alpha)
            for k, lab in enumerate(labels)}
        return self

    def _need_fit(self) -> None:
        if not self.curves_:
            raise InvalidInput("call fit(...) first")

    def curve(self, label: str | None = None) -> KMCurve:
        """One group's curve (the only one when ungrouped)."""
        self._need_fit()
        if label is None:
            return next(iter(self.curves_.values()))
        try:
            return self.curves_[str(label)]
        except KeyError:
            raise InvalidInput(f"no curve {label!r}; fitted: {list(self.curves_)}") from None

    @property
    def survival_function_(self) -> pd.DataFrame:
        self._need_fit()
        frame = pd.concat([c.survival for c in self.curves_.values()], axis=1)
        return frame.sort_index().ffill()

    @property
    def confidence_interval_(self) -> pd.DataFrame:
        self._need_fit()
        level = f"{1 - self.alpha:g}"
        cols = {}
        for lab, c in self.curves_.items():
            cols[f"{lab}_lower_{level}"] = c.ci_lower
            cols[f"{lab}_upper_{level}"] = c.ci_upper
        return pd.DataFrame(cols).sort_index().ffill()

    @property
    def summary(self) -> pd.DataFrame:
        """The survival function beside its confidence limits, one row per grid time."""
        return pd.concat([self.survival_function_, self.confidence_interval_], axis=1)

    @property
    def event_table(self) -> pd.DataFrame:
        self._need_fit()
        if len(self.curves_) == 1:
            return self.curve().event_table
        return pd.concat({lab: c.event_table for lab, c in self.curves_.items()},
                         names=[self.group_col or "group"])

    @property
    def median_survival_time_(self) -> float | pd.Series:
        self._need_fit()
        if len(self.curves_) == 1:
            return self.curve().median
        return pd.Series({lab: c.median for lab, c in self.curves_.items()},
                         name="median_survival_time")

    def at_risk_table(self, times: Sequence[float]) -> pd.DataFrame:
        """Number at risk at each requested time (rows: groups), as under a KM plot."""
        self._need_fit()
        out = {}
        for lab, c in self.curves_.items():
            et = c.event_table
            n = float(et["entrance"].sum())
            out[lab] = [n - float(et.loc[et.index < t, "removed"].sum()) for t in times]
        return pd.DataFrame(out, index=pd.Index(list(times), name="time")).T

    def plot(self, ax: Any = None, ci: bool = True) -> Any:
        """Step plot of every curve with its CI band (matplotlib axes returned)."""
        self._need_fit()
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots()
        for lab, c in self.curves_.items():
            line = ax.step(c.survival.index, c.survival.to_numpy(), where="post", label=lab)[0]
            if ci:
                ax.fill_between(c.survival.index, c.ci_lower.to_numpy(), c.ci_upper.to_numpy(),
                                step="post", alpha=0.25, color=line.get_color())
        ax.set_xlabel(self.duration_col)
        ax.set_ylabel("survival probability")
        ax.set_ylim(0, 1.02)
        ax.legend()
        return ax

    def _payload(self) -> dict[str, Any]:
        self._need_fit()
        return {
            "kind": "kaplan_meier", "duration_col": self.duration_col,
            "event_col": self.event_col, "group_col": self.group_col, "alpha": self.alpha,
            "excluded": self.excluded_,
            "curves": {lab: {"event_table": c.event_table.reset_index(),
                             "survival": c.survival.to_numpy(),
                             "timeline": c.survival.index.to_numpy(),
                             "ci_lower": c.ci_lower.to_numpy(), "ci_upper": c.ci_upper.to_numpy(),
                             "median": c.median}
                       for lab, c in self.curves_.items()}}
