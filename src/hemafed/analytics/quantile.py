"""Federated quantiles (median, quartiles ...) of a numeric column, and the ``quantile`` kind.

One secure sum of the site query ``quantile_cdf`` (:mod:`hemafed.analytics.quantile_query`)
gives the pooled cumulative histogram ``C_k`` = number of patients with a value ``<= t_k`` on the
public lattice ``t_k = low + k * step`` (``low``/``high`` the column's public bounds: the spec's
``bounds`` or the schema's plausible range). The quantiles are read off it directly (no
bisection rounds: the whole lattice is one request, so the plan has a single request to check):

    Q(p) = the smallest lattice point t_k with C_k >= p * n        (n = C_K, the last point)

which is the inverted empirical CDF, numpy's ``method="inverted_cdf"``: with every value on the
lattice it *equals* ``numpy.quantile(pooled, p, method="inverted_cdf")``; otherwise it is that
pooled quantile rounded up to the next lattice point (at most one ``step`` above). No
interpolation between lattice points. ``p = 0`` gives the smallest occupied point (the minimum).
The read-off takes the index as the number of lattice points whose count is below
``p * n``: the same point on non-decreasing counts, and with DP noise (``n`` then the noisy last
count) an estimate the noise of single points moves by little, unlike a first crossing.

The registration :data:`KINDS` holds the whole kind: spec options ``column``, ``probs``
(default quartiles), optional ``bounds`` (``{column: [low, high]}``), ``step`` (default 1) and
``epsilon`` (a DP release, delta 1e-6); the plan's only request of it (:func:`quantile_params`,
exact: the plan refuses another lattice or bounds), its cap, runner and pooled reference.

>>> import pandas as pd
>>> from hemafed.cohort import validate_cohort
>>> from hemafed.federation.local import LocalSumFederation
>>> c = validate_cohort(pd.DataFrame({"patient_id": list("abcde"), "disease": ["MDS"] * 5,
...                                   "hb": [8.0, 9.0, 9.0, 11.0, 12.0]}))
>>> res = federated_quantiles(LocalSumFederation([c]), "hb", [0.5], bounds={"hb": (2, 25)})
>>> float(res.quantiles.iloc[0]), res.n
(9.0, 5)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hemafed.analytics.describe import numeric_bounds
from hemafed.analytics.quantile_query import QUANTILE_QUERY, lattice_size
from hemafed.documents import frame_from_json, frame_json
from hemafed.errors import InvalidInput
from hemafed.federation.api import DPRequest, Federation
from hemafed.kinds import AnalysisKind

if TYPE_CHECKING:
    from hemafed.cohort.model import Cohort
    from hemafed.study.spec import Analysis, StudySpec

__all__ = ["KINDS", "QuantileResult", "federated_quantiles", "quantile_params",
           "quantiles_from_cdf"]

DEFAULT_PROBS: tuple[float, ...] = (0.25, 0.5, 0.75)
DEFAULT_STEP = 1.0
DP_DELTA = 1e-6


def quantile_params(column: str, bounds: Mapping[str, Sequence[float]] | None = None,
                    step: float | None = None) -> dict[str, Any]:
    """The one request of a quantile analysis: the column, its public bounds and lattice step."""
    low, high = numeric_bounds(column, {k: (float(v[0]), float(v[1]))
                                        for k, v in (bounds or {}).items()})
    params = {"column": column, "low": low, "high": high,
              "step": float(DEFAULT_STEP if step is None else step)}
    lattice_size(params)  # a lattice that is not one is refused at the hub, before any request
    return params


def _probs(probs: Sequence[float] | None) -> tuple[float, ...]:
    out = tuple(float(p) for p in (DEFAULT_PROBS if probs is None else probs))
    if not out or not all(0.0 <= p <= 1.0 for p in out):
        raise InvalidInput(f"probs must be a non-empty list of numbers in [0, 1], got {probs!r}")
    return out


def quantiles_from_cdf(cdf: np.ndarray, lattice: np.ndarray,
                       probs: Sequence[float]) -> np.ndarray:
    """The inverted-CDF quantiles ``min{t_k : C_k >= p n}`` of a cumulative histogram.

    >>> quantiles_from_cdf(np.array([1.0, 1.0, 3.0, 4.0]), np.arange(4.0), [0, 0.5, 0.6, 1]).tolist()
    [0.0, 2.0, 2.0, 3.0]
    """
    c = np.asarray(cdf, dtype=float)
    n = float(c[-1]) if c.size else 0.0
    out = np.full(len(probs), np.nan)
    if n <= 0:
        return out
    for i, p in enumerate(probs):
        # on non-decreasing counts, the number of points below the target is the index of the
        # first point reaching it; with DP noise the count averages the noise out
        below = c <= 0 if p == 0 else c < p * n
        out[i] = lattice[min(int(below.sum()), c.size - 1)]
    return out


@dataclass(frozen=True)
class QuantileResult:
    """Pooled quantiles of one column and what they were computed from."""

    column: str
    quantiles: pd.Series
    n: int
    missing: int
    step: float
    bounds: tuple[float, float]
    sites: tuple[str, ...]
    dp: DPRequest | None = None


def federated_quantiles(fed: Federation, column: str, probs: Sequence[float] | None = None, *,
                        bounds: Mapping[str, Sequence[float]] | None = None,
                        step: float | None = None, dp: DPRequest | None = None,
                        study: str = "default") -> QuantileResult:
    """Quantiles of ``column`` over the federation's sites, from one secure sum."""
    ps = _probs(probs)
    params = quantile_params(column, bounds, step)
    res = fed.secure_sum(QUANTILE_QUERY, params, study=study, dp=dp)
    lattice = params["low"] + params["step"] * np.arange(lattice_size(params))
    lattice = np.round(lattice, 12)
    q = quantiles_from_cdf(res["cdf"], lattice, ps)
    cdf = np.asarray(res["cdf"], dtype=float)
    return QuantileResult(column, pd.Series(q, index=pd.Index(ps, name="prob"), name=column),
                          round(max(float(cdf[-1]), 0.0)),
                          round(max(float(res["missing"][0]), 0.0)), params["step"],
                          (params["low"], params["high"]), tuple(res.sites), dp)


# --- the registration ------------------------------------------------------------------------

def _requests(a: Any) -> list[tuple[str, dict[str, Any]]]:
    try:
        return [(QUANTILE_QUERY, quantile_params(str(a.get("column")), a.get("bounds"),
                                                 a.get("step")))]
    except InvalidInput:
        return []  # an unusable entry fails at the hub; nothing to permit


def run_quantile(fed: Federation, a: Analysis, spec: StudySpec) -> dict[str, Any]:
    eps = a.get("epsilon")
    dp = DPRequest(epsilon=float(eps), delta=DP_DELTA) if eps else None
    res = federated_quantiles(fed, a.get("column"), a.get("probs"), bounds=a.get("bounds"),
                              step=a.get("step"), dp=dp, study=spec.study_id)
    q = res.quantiles if res.n >= spec.min_cell else res.quantiles * np.nan
    table = pd.DataFrame({"quantile": q.to_numpy()},
                         index=pd.Index([f"{p:g}" for p in q.index], name="prob"))
    return {"tables": {"quantiles": frame_json(table)},
            "stats": {"n": res.n, "missing": res.missing, "step": res.step,
                      "low": res.bounds[0], "high": res.bounds[1],
                      "definition": "inverted_cdf on the lattice (no interpolation)",
                      "epsilon": float(eps) if eps else None, "sites": list(res.sites)}}


def pooled_quantile(a: Analysis, doc: dict[str, Any], cohorts: Sequence[Cohort],
                    holdout: pd.DataFrame | None = None) -> dict[str, Any]:
    """Pooled numpy quantiles (``inverted_cdf``) against the federated ones (validation only)."""
    values = pd.concat([c.patients[a.get("column")] for c in cohorts], ignore_index=True)
    x = pd.to_numeric(values, errors="coerce").dropna().to_numpy(dtype=float)
    probs = _probs(a.get("probs"))
    want = np.quantile(x, probs, method="inverted_cdf")
    got = frame_from_json(doc["tables"]["quantiles"])["quantile"].to_numpy(dtype=float)
    diff = float(np.max(np.abs(got - want))) if got.size == want.size else float("nan")
    return {"pooled engine": "numpy inverted_cdf",
            "max absolute difference": f"{diff:.2e}"}


KINDS = (
    AnalysisKind("quantile", {"column"}, {"probs", "bounds", "step", "epsilon", "exact"},
                 queries={QUANTILE_QUERY}, caps={QUANTILE_QUERY: 2}, run=run_quantile,
                 pooled=pooled_quantile, requests=_requests,
                 exact_option="exact", exact_queries={QUANTILE_QUERY}),
)
"""The registration of the ``quantile`` kind (listed in :data:`hemafed.study.kinds.CATALOGUE`)."""
