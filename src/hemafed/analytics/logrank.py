"""Federated log-rank test for k groups, from the same secure sums as Kaplan-Meier.

Observed minus expected events and their covariance are sums over grid times of pooled
counts, so the test equals lifelines' ``multivariate_logrank_test`` (``logrank_test`` for two
groups) on the pooled rows when the grid holds the exact event times.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from hemafed.analytics import results
from hemafed.analytics.km import time_grid
from hemafed.analytics.survival_grid import check_grid, query_params
from hemafed.errors import InvalidInput
from hemafed.federation.api import Federation


@dataclass(frozen=True)
class LogRankResult:
    """Test statistic (chi-square, k-1 df), p-value and per-group observed/expected events."""

    test_statistic: float
    p_value: float
    degrees_of_freedom: int
    observed: pd.Series
    expected: pd.Series

    @property
    def summary(self) -> pd.DataFrame:
        return pd.DataFrame({"test_statistic": [self.test_statistic], "p": [self.p_value],
                             "-log2(p)": [-np.log2(self.p_value) if self.p_value > 0 else np.inf],
                             "degrees_of_freedom": [self.degrees_of_freedom]})

    def to_json(self) -> str:
        return results.to_json({"kind": "logrank", "test_statistic": self.test_statistic,
                                "p_value": self.p_value, "df": self.degrees_of_freedom,
                                "observed": self.observed, "expected": self.expected})


def logrank_from_counts(observed: np.ndarray, at_risk: np.ndarray,
                        labels: Sequence[str]) -> LogRankResult:
    """Log-rank test from pooled ``(k, m)`` event and at-risk counts (pure)."""
    k = observed.shape[0]
    if k < 2:
        raise InvalidInput("the log-rank test needs at least two groups")
    d = observed.sum(axis=0)
    n = at_risk.sum(axis=0)
    live = n > 0
    d, n, o, r = d[live], n[live], observed[:, live], at_risk[:, live]
    expected = (r * (d / n)).sum(axis=1)
    z = o.sum(axis=1) - expected
    with np.errstate(divide="ignore", invalid="ignore"):
        shrink = (n - d) / (n - 1)
    factor = np.where(np.isfinite(shrink), shrink, 1.0) * d / n**2
    v_rows = r.T * np.sqrt(factor)[:, None]
    n_col = n * np.sqrt(factor)
    cov = -(v_rows.T @ v_rows)
    cov[np.arange(k), np.arange(k)] += v_rows.T @ n_col
    stat = float(z[:-1] @ np.linalg.pinv(cov[:-1, :-1]) @ z[:-1])
    p = float(stats.chi2.sf(stat, k - 1))
    return LogRankResult(stat, p, k - 1, pd.Series(o.sum(axis=1), index=list(labels)),
                         pd.Series(expected, index=list(labels)))


def federated_logrank_test(federation: Federation, duration_col: str, event_col: str,
                           group_col: str, levels: Sequence[str], *,
                           grid: Sequence[float] | None = None, time_mapping: str = "exact",
                           steps_per_unit: float = 365.25, study: str = "default") -> LogRankResult:
    """Log-rank test of equal survival across the declared ``levels`` of ``group_col``."""
    if len(levels) < 2:
        raise InvalidInput(f"group_col {group_col!r}: the log-rank test needs >= 2 levels")
    g = check_grid(grid) if grid is not None else time_grid(
        federation, duration_col, event_col, steps_per_unit=steps_per_unit, events_only=True,
        study=study)
    labels = [str(v) for v in levels]
    params = query_params(duration_col, event_col, g, time_mapping=time_mapping,
                          group_col=group_col, group_levels=labels)
    agg = federation.secure_sum("km_risk_table", params, study=study)
    return logrank_from_counts(agg["observed"], agg["at_risk"], labels)
