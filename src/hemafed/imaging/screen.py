"""Federated univariate screen of imaging features: per-feature association through secure sums.

For a binary outcome, each feature's Welch t statistic (positives vs negatives); for a
time-to-event outcome, the same between patients with an event before ``horizon`` and patients
followed event-free beyond it (those censored earlier are left out). Both need, per feature,
only ``n``, ``sum`` and ``sum of squares`` in each outcome group: one secure sum for all features.
Features are then ranked by ``|t|`` and the top ``k`` enter the federated model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from hemafed.cohort.model import Cohort
from hemafed.errors import InvalidInput
from hemafed.federation import checks
from hemafed.federation.api import Federation
from hemafed.federation.queries import (
    Params,
    Query,
    QueryParams,
    Statistic,
    encodable_resolution,
    register,
)
from hemafed.imaging.combat_params import column_bounds

SCREEN_QUERY = "imaging_screen"


@dataclass(frozen=True)
class ScreenParams(QueryParams):
    """``imaging_screen``: the features with their public bounds, the 0/1 (or event) outcome
    and, for a time-to-event screen, the duration column and the horizon."""

    QUERY = SCREEN_QUERY
    features: tuple[str, ...]
    outcome: str
    bounds: tuple[tuple[float, float], ...]
    """``(low, high)`` of each feature, in the order of ``features``."""
    time: str | None = None
    horizon: float | None = None
    resolution: float = 1e-9
    max_patients: int = checks.MAX_PATIENTS

    @classmethod
    def from_mapping(cls, params: Params) -> ScreenParams:
        cls.known(params)
        feats = checks.names(params, "features")
        bounds = column_bounds(params, feats)
        horizon = None if params.get("horizon") is None else \
            checks.number(params, "horizon", low=0.0, open_low=True)
        if horizon is not None and params.get("time") is None:
            # the groups are "event before the horizon" and "event-free beyond it"
            raise InvalidInput("parameter 'time' must name the duration column of a screen "
                               "with a 'horizon'")
        time = None if params.get("time") is None else checks.column(params, "time")
        return cls(feats, checks.column(params, "outcome"),
                   tuple((float(lo), float(hi)) for lo, hi in bounds), time, horizon,
                   checks.resolution(params, default=1e-9), checks.max_patients(params))

    def to_mapping(self) -> dict[str, Any]:
        out = super().to_mapping()
        out["bounds"] = {f: list(b) for f, b in zip(self.features, self.bounds, strict=True)}
        for key in ("time", "horizon"):
            if out[key] is None:
                del out[key]
        return out


def _groups(cohort: Cohort, params: ScreenParams) -> tuple[np.ndarray, np.ndarray]:
    """``(X n x p, g n)`` complete cases; ``g`` is 1 for the outcome group, 0 for the other."""
    y = cohort.numeric_column(params.outcome, "outcome")
    x = np.column_stack([cohort.numeric_column(f, "feature") for f in params.features])
    h = params.horizon
    if h is not None and params.time is not None:
        t = cohort.numeric_column(params.time, "duration")
        # event before the horizon vs event-free beyond it; censored earlier: unknown
        g = np.where((y == 1) & (t <= h), 1.0, np.where(t > h, 0.0, np.nan))
    else:
        if not np.isin(y[~np.isnan(y)], (0.0, 1.0)).all():
            raise InvalidInput(f"outcome {params.outcome!r} is not 0/1")
        g = y
    ok = ~np.isnan(g) & ~np.isnan(x).any(axis=1)
    b = np.asarray(params.bounds, dtype=float)
    if ((x[ok] < b[:, 0]) | (x[ok] > b[:, 1])).any():
        # the sensitivity is declared from these bounds (pinned by the plan to the spec's
        # imaging bounds): nothing is clipped
        raise InvalidInput("a feature has values outside its declared bounds (nothing is clipped)")
    return x[ok], g[ok]


def _compute(cohort: Cohort, params: ScreenParams) -> dict[str, np.ndarray]:
    x, g = _groups(cohort, params)
    out = {}
    for k, sel in (("1", g == 1), ("0", g == 0)):
        out[f"n{k}"] = np.array([float(sel.sum())])
        out[f"sum{k}"] = x[sel].sum(axis=0)
        out[f"sumsq{k}"] = (x[sel] ** 2).sum(axis=0)
    return out


def _declare(params: ScreenParams) -> dict[str, Statistic]:
    m = params.max_patients
    amax = float(np.abs(np.asarray(params.bounds, dtype=float)).max())
    res = params.resolution
    p = len(params.features)
    out: dict[str, Statistic] = {}
    for k in ("1", "0"):
        out[f"n{k}"] = Statistic((1,), 0, m, is_count=True)
        # one patient adds at most amax (amax**2) to each of the p sums (sums of squares)
        out[f"sum{k}"] = Statistic((p,), -m * amax, m * amax,
                                   encodable_resolution(-m * amax, m * amax, res),
                                   sensitivity=amax * p ** 0.5)
        out[f"sumsq{k}"] = Statistic((p,), 0.0, m * amax ** 2,
                                     encodable_resolution(0.0, m * amax ** 2, res),
                                     sensitivity=amax ** 2 * p ** 0.5)
    return out


register(Query(SCREEN_QUERY, "1", compute=_compute, declare=_declare, params_type=ScreenParams,
               description="per-feature n, sum and sum of squares in two outcome groups"))


def welch_t(n1: float, s1: np.ndarray, q1: np.ndarray, n0: float, s0: np.ndarray,
            q0: np.ndarray) -> np.ndarray:
    """Welch t statistics from group counts, sums and sums of squares."""
    m1, m0 = s1 / n1, s0 / n0
    v1 = (q1 - n1 * m1 ** 2) / (n1 - 1)
    v0 = (q0 - n0 * m0 ** 2) / (n0 - 1)
    se = np.sqrt(np.maximum(v1, 0) / n1 + np.maximum(v0, 0) / n0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(se > 0, (m1 - m0) / se, 0.0)


def federated_screen(federation: Federation, features: Sequence[str], outcome: str,
                     bounds: Mapping[str, Sequence[float]], *, time: str | None = None,
                     horizon: float | None = None, study: str = "default") -> pd.DataFrame:
    """Per-feature Welch ``t`` (outcome group vs the rest) from one secure sum, sorted by |t|."""
    params: dict[str, Any] = {"features": list(features), "outcome": outcome,
                              "bounds": {f: [float(bounds[f][0]), float(bounds[f][1])]
                                         for f in features}}
    if horizon is not None:
        if time is None:
            raise InvalidInput("a time-to-event screen needs the duration column (time=)")
        params |= {"time": time, "horizon": float(horizon)}
    res = federation.secure_sum(SCREEN_QUERY, params, study=study)
    n1, n0 = float(res["n1"][0]), float(res["n0"][0])
    if n1 < 2 or n0 < 2:
        raise InvalidInput(f"screen: each outcome group needs >= 2 patients (got {n1:g}, {n0:g})")
    t = welch_t(n1, res["sum1"], res["sumsq1"], n0, res["sum0"], res["sumsq0"])
    table = pd.DataFrame({"feature": list(features), "t": t,
                          "mean_1": res["sum1"] / n1, "mean_0": res["sum0"] / n0})
    table["abs_t"] = table["t"].abs()
    table = table.sort_values("abs_t", ascending=False, kind="stable").reset_index(drop=True)
    table.attrs["n1"], table.attrs["n0"] = n1, n0
    table.attrs["sites"] = list(res.sites)
    return table.drop(columns="abs_t")
