"""Shared pieces of federated result objects: lifelines-style coefficient tables and JSON output.

Every fitted analytics object renders its coefficients with :func:`coefficient_table` (the exact
columns of lifelines' ``CoxPHFitter.summary``) and serialises with :func:`to_json`, which turns
numpy and pandas values into plain JSON types.

>>> t = coefficient_table(["age"], [0.5], [0.1])
>>> list(t.columns) == list(SUMMARY_COLUMNS)
True
>>> round(float(t.loc["age", "z"]), 6)
5.0
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

SUMMARY_COLUMNS: tuple[str, ...] = (
    "coef", "exp(coef)", "se(coef)", "coef lower 95%", "coef upper 95%",
    "exp(coef) lower 95%", "exp(coef) upper 95%", "cmp to", "z", "p", "-log2(p)",
)
"""The columns of lifelines' ``CoxPHFitter.summary`` at ``alpha=0.05``."""


def coefficient_table(names: Sequence[str], coef: Sequence[float] | np.ndarray,
                      se: Sequence[float] | np.ndarray, alpha: float = 0.05,
                      index_name: str = "covariate") -> pd.DataFrame:
    """Wald table with lifelines' columns: estimates, SEs, CIs, z, two-sided p, -log2(p).

    The CI labels follow lifelines (``coef lower 95%`` for ``alpha=0.05``).
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    b = np.asarray(coef, dtype=float)
    s = np.asarray(se, dtype=float)
    if b.shape != (len(names),) or s.shape != b.shape:
        raise ValueError(f"need one coef and one se per name: {len(names)} names, "
                         f"{b.shape} coef, {s.shape} se")
    z_crit = stats.norm.ppf(1 - alpha / 2)
    level = f"{100 * (1 - alpha):g}%"
    with np.errstate(divide="ignore", invalid="ignore"):
        z = b / s
    p = 2 * stats.norm.sf(np.abs(z))
    with np.errstate(divide="ignore"):
        minus_log2_p = -np.log2(p)
    table = pd.DataFrame({
        "coef": b,
        "exp(coef)": np.exp(b),
        "se(coef)": s,
        f"coef lower {level}": b - z_crit * s,
        f"coef upper {level}": b + z_crit * s,
        f"exp(coef) lower {level}": np.exp(b - z_crit * s),
        f"exp(coef) upper {level}": np.exp(b + z_crit * s),
        "cmp to": np.zeros_like(b),
        "z": z,
        "p": p,
        "-log2(p)": minus_log2_p,
    }, index=pd.Index(list(names), name=index_name))
    return table


def jsonable(value: Any) -> Any:
    """Convert numpy/pandas values (recursively) into JSON types; NaN/inf become None."""
    if isinstance(value, pd.DataFrame):
        return {"index": [jsonable(i) for i in value.index], "columns": [str(c) for c in value.columns],
                "data": [[jsonable(v) for v in row] for row in value.to_numpy()]}
    if isinstance(value, pd.Series):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return [jsonable(v) for v in value.tolist()]
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def coefficient_plot(coef: pd.Series, lower: pd.Series, upper: pd.Series, *, xlabel: str,
                     ax: Any = None) -> Any:
    """Coefficients with their confidence intervals on a matplotlib axis (as lifelines' ``plot``):
    one row per covariate, first on top, and a dashed line at 0."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots()
    y = np.arange(len(coef))[::-1]
    ax.errorbar(coef, y, xerr=[coef - lower, upper - coef], fmt="s")
    ax.axvline(0.0, color="grey", linestyle="--")
    ax.set_yticks(y, list(coef.index))
    ax.set_xlabel(xlabel)
    return ax


def to_json(payload: Mapping[str, Any], indent: int | None = 2) -> str:
    """Serialise a result payload (``{"kind": ..., ...}``) to a JSON string."""
    return json.dumps(jsonable(payload), indent=indent, allow_nan=False)
