"""Gray's K-sample test of cumulative incidence curves (as ``cmprsk::cuminc``'s ``Tests``).

Gray's (1988) score statistic compares the cumulative incidence of one cause among groups. It
is a function of the per-group numbers at risk and of the events of the cause of interest and
of all other causes at each distinct event time, so the hub computes it exactly from one
``competing_risk_table`` secure sum (the table :mod:`hemafed.analytics.competing` already uses
for Aalen-Johansen) on the exact event-time grid: :func:`gray_test` follows ``cmprsk``'s
``crst`` step by step (weights ``(1 - F(t-))^rho``, one stratum).

>>> # federated_gray_test(fed, MDS_AML_VS_DEATH, "sex", ["M", "F"]).statistic
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from hemafed.analytics.competing import (
    MDS_AML_VS_DEATH,
    QUERY,
    at_risk_from_exits,
    competing_params,
)
from hemafed.analytics.km import time_grid
from hemafed.errors import InvalidInput
from hemafed.federation.api import Federation


@dataclass(frozen=True)
class GrayTest:
    """Gray's test of one cause: chi-squared ``statistic`` on ``df`` degrees, ``p``, and the
    scores and their variance for the first ``groups - 1`` groups."""

    cause: int
    statistic: float
    df: int
    p: float
    score: np.ndarray
    variance: np.ndarray
    groups: tuple[str, ...]
    sites: tuple[str, ...] = ()


def gray_test(at_risk: np.ndarray, d1: np.ndarray, d2: np.ndarray,
              rho: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Scores and variance of Gray's test from ``(groups, times)`` tables of the number at
    risk, events of the cause of interest (``d1``) and of every other cause (``d2``) at each
    distinct event time, in time order (pure; ``cmprsk``'s ``crst``)."""
    rs, d1, d2 = (np.asarray(v, dtype=float) for v in (at_risk, d1, d2))
    ng = rs.shape[0]
    if ng < 2:
        raise InvalidInput("Gray's test needs at least two groups")
    ng1 = ng - 1
    s, v = np.zeros(ng1), np.zeros((ng1, ng1))
    f1m, f1, skmm, skm = np.zeros(ng), np.zeros(ng), np.ones(ng), np.ones(ng)
    v3, v2, c = np.zeros(ng), np.zeros((ng1, ng)), np.zeros((ng, ng))
    fm = 0.0
    with np.errstate(invalid="ignore", divide="ignore"):  # np.where's unused branches
        return _scores(rs, d1, d2, rho, s, v, f1m, f1, skmm, skm, v3, v2, c, fm)


def _scores(rs: np.ndarray, d1: np.ndarray, d2: np.ndarray, rho: float, s: np.ndarray,
            v: np.ndarray, f1m: np.ndarray, f1: np.ndarray, skmm: np.ndarray, skm: np.ndarray,
            v3: np.ndarray, v2: np.ndarray, c: np.ndarray, fm: float
            ) -> tuple[np.ndarray, np.ndarray]:
    ng1 = rs.shape[0] - 1
    for j in range(rs.shape[1]):
        r, e1, e2 = rs[:, j], d1[:, j], d2[:, j]
        nd1, nd2 = float(e1.sum()), float(e2.sum())
        if nd1 == 0 and nd2 == 0:
            continue
        live = r > 0
        safe = np.where(live, r, 1.0)
        skm = np.where(live, skmm * (r - e1 - e2) / safe, skm)
        f1 = np.where(live, f1m + skmm * e1 / safe, f1)
        tr = float(np.sum(np.where(live, r / skmm, 0.0)))
        tq = float(np.sum(np.where(live, r * (1 - f1m) / skmm, 0.0)))
        f = fm + nd1 / tr
        fb = (1 - fm) ** rho
        t1 = np.where(live, r / skmm, 0.0)
        a = -fb * np.outer(t1, t1) / tr
        np.fill_diagonal(a, fb * t1 * (1 - t1 / tr))
        a[~live, :] = 0.0
        a[:, ~live] = 0.0
        c += a * nd1 / (tr * (1 - fm))
        s += np.where(live[:ng1], fb * (e1[:ng1] - nd1 * r[:ng1] * (1 - f1m[:ng1])
                                        / (skmm[:ng1] * tq)), 0.0)
        if nd1 > 0:
            for k in np.flatnonzero(live):
                t4 = 1 - (1 - f) / skm[k] if skm[k] > 0 else 1.0
                t5 = 1 - (nd1 - 1) / (tr * skmm[k] - 1) if nd1 > 1 else 1.0
                t3 = t5 * skmm[k] * nd1 / (tr * r[k])
                v3[k] += t4 * t4 * t3
                tt = a[:ng1, k] - t4 * c[:ng1, k]
                v2[:, k] += tt * t4 * t3
                v += np.outer(tt, tt) * t3
        if nd2 > 0:
            for k in np.flatnonzero(live & (skm > 0) & (e2 > 0)):
                t4 = (1 - f) / skm[k]
                t5 = 1 - (e2[k] - 1) / (r[k] - 1) if e2[k] > 1 else 1.0
                t3 = t5 * skmm[k] ** 2 * e2[k] / r[k] ** 2
                v3[k] += t4 * t4 * t3
                tt = t4 * c[:ng1, k]
                v2[:, k] -= tt * t4 * t3
                v += np.outer(tt, tt) * t3
        fm, f1m, skmm = f, f1.copy(), skm.copy()
    cc = c[:ng1]
    v += (cc * v3) @ cc.T + cc @ v2.T + v2 @ cc.T
    return s, v


def federated_gray_test(federation: Federation, causes: Sequence[tuple[str, str]] =
                        MDS_AML_VS_DEATH, group_col: str = "sex",
                        levels: Sequence[str] = ("M", "F"), *, cause: int = 1,
                        rho: float = 0.0, steps_per_unit: float = 365.25,
                        max_time: float = 60.0, study: str = "default") -> GrayTest:
    """Gray's test of ``cause`` (1-based in ``causes``) among the ``levels`` of ``group_col``,
    from one ``competing_risk_table`` secure sum on the exact event-time grid."""
    causes = [(str(t), str(s)) for t, s in causes]
    if not 1 <= cause <= len(causes):
        raise InvalidInput(f"cause must be 1..{len(causes)}, got {cause}")
    if len(levels) < 2:
        raise InvalidInput(f"group_col {group_col!r} needs at least two public levels")
    points = [time_grid(federation, t, s, steps_per_unit=steps_per_unit, max_time=max_time,
                        events_only=True, study=study) for t, s in causes]
    grid = np.unique(np.concatenate(points))
    params = competing_params(causes, grid, group_col=group_col, group_levels=list(levels))
    agg = federation.secure_sum(QUERY, params, study=study)
    events = np.asarray(agg["events"])
    at_risk = np.stack([at_risk_from_exits(row) for row in agg["exits"]])
    d1 = events[:, cause - 1]
    d2 = events.sum(axis=1) - d1
    score, var = gray_test(at_risk, d1, d2, rho)
    stat = float(score @ np.linalg.solve(var, score))
    df = len(levels) - 1
    return GrayTest(cause, stat, df, float(stats.chi2.sf(stat, df)), score, var,
                    tuple(str(v) for v in levels), tuple(agg.sites))
