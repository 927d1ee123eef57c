"""Federated univariate screen of imaging features: per-feature association through secure sums.

For a binary outcome, each feature's Welch t statistic (positives vs negatives); for a
time-to-event outcome, the same between patients with an event before ``horizon`` and patients
followed event-free beyond it (those censored earlier are left out). Both need, per feature,
only ``n``, ``sum`` and ``sum of squares`` in each outcome group: one secure sum for all features.
Features are then ranked by ``|t|`` and the top ``k`` enter the federated model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from hemafed.cohort.model import Cohort
from hemafed.errors import InvalidInput
from hemafed.federation.api import Federation
from hemafed.federation.checks import max_patients
from hemafed.federation.queries import Params, Query, Statistic, encodable_resolution, register

SCREEN_QUERY = "imaging_screen"


def _check(params: Params) -> None:
    feats = params.get("features")
    if not isinstance(feats, list) or not feats or not all(isinstance(f, str) for f in feats):
        raise InvalidInput("parameter 'features' must list feature columns")
    if not isinstance(params.get("outcome"), str):
        raise InvalidInput("parameter 'outcome' must name a 0/1 (or event) column")
    bounds = params.get("bounds")
    if not isinstance(bounds, Mapping) or any(
            not (isinstance(bounds.get(f), Sequence) and len(bounds[f]) == 2
                 and float(bounds[f][0]) < float(bounds[f][1])) for f in feats):
        raise InvalidInput("parameter 'bounds' must give [low, high] for every feature")
    h = params.get("horizon")
    if h is not None and not (isinstance(h, int | float) and h > 0):
        raise InvalidInput(f"parameter 'horizon' must be a positive time, got {h!r}")


def _groups(cohort: Cohort, params: Params) -> tuple[np.ndarray, np.ndarray]:
    """``(X n x p, g n)`` complete cases; ``g`` is 1 for the outcome group, 0 for the other."""
    feats = list(params["features"])
    y = cohort.numeric_column(str(params["outcome"]), "outcome")
    x = np.column_stack([cohort.numeric_column(f, "feature") for f in feats])
    h = params.get("horizon")
    if h is not None:
        t = cohort.numeric_column(str(params["time"]), "duration")
        # event before the horizon vs event-free beyond it; censored earlier: unknown
        g = np.where((y == 1) & (t <= h), 1.0, np.where(t > h, 0.0, np.nan))
    else:
        if not np.isin(y[~np.isnan(y)], (0.0, 1.0)).all():
            raise InvalidInput(f"outcome {params['outcome']!r} is not 0/1")
        g = y
    ok = ~np.isnan(g) & ~np.isnan(x).any(axis=1)
    b = np.asarray([params["bounds"][f] for f in feats], dtype=float)
    if ((x[ok] < b[:, 0]) | (x[ok] > b[:, 1])).any():
        # the sensitivity is declared from these bounds (pinned by the plan to the spec's
        # imaging bounds): nothing is clipped
        raise InvalidInput("a feature has values outside its declared bounds (nothing is clipped)")
    return x[ok], g[ok]


def _compute(cohort: Cohort, params: Params) -> dict[str, np.ndarray]:
    x, g = _groups(cohort, params)
    out = {}
    for k, sel in (("1", g == 1), ("0", g == 0)):
        out[f"n{k}"] = np.array([float(sel.sum())])
        out[f"sum{k}"] = x[sel].sum(axis=0)
        out[f"sumsq{k}"] = (x[sel] ** 2).sum(axis=0)
    return out


def _declare(params: Params) -> dict[str, Statistic]:
    feats = list(params["features"])
    m = max_patients(params)
    b = np.asarray([params["bounds"][f] for f in feats], dtype=float)
    amax = float(np.abs(b).max())
    res = float(params.get("resolution", 1e-9))
    p = len(feats)
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


register(Query(SCREEN_QUERY, "1", compute=_compute, declare=_declare, check_params=_check,
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
