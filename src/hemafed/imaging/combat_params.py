"""The parameters of the federated ComBat queries, checked from their text alone.

:mod:`hemafed.imaging.combat` registers the queries; this module holds what a site checks of
their parameters before touching data, and what the study plan checks of a ``combat_apply``
(:func:`hemafed.imaging.spec.plan_problem`): it imports nothing of the federation, so the plan
can use it. Every problem names the parameter, never a value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hemafed.errors import InvalidInput
from hemafed.privacy.refusal import parameter_name

Params = Mapping[str, Any]

MAX_EFFECT_SPAN = 1e3
"""Largest ``|beta_kg| * range(covariate k) / range(feature g)`` a site accepts: a plausibility
limit (an honest pooled slope is bounded only by how little a covariate varies within sites),
far above real fits, which refuses a hub's arbitrary covariate effects by their parameter."""


def _names(params: Params, key: str, allow_empty: bool) -> list[str]:
    cols = params.get(key, [])
    if not isinstance(cols, list) or not all(isinstance(c, str) and c for c in cols):
        raise InvalidInput(f"parameter {key!r} must be a list of column names, got {cols!r}")
    if not cols and not allow_empty:
        raise InvalidInput(f"parameter {key!r} must name at least one column")
    return cols


def column_bounds(params: Params, columns: Sequence[str]) -> np.ndarray:
    """The public ``[low, high]`` of each of ``columns`` (a ``len(columns) x 2`` array)."""
    raw = params.get("bounds")
    if not isinstance(raw, Mapping):
        raise InvalidInput("parameter 'bounds' must map every feature and covariate to its "
                           "public [low, high]")
    out = []
    for c in columns:
        b = raw.get(c)
        if (not isinstance(b, Sequence) or len(b) != 2
                or not all(isinstance(v, int | float) and not isinstance(v, bool)
                           and math.isfinite(v) for v in b) or not b[0] < b[1]):
            raise InvalidInput(f"parameter 'bounds' must give finite [low, high] with "
                               f"low < high for column {c!r}, got {b!r}")
        out.append((float(b[0]), float(b[1])))
    return np.asarray(out, dtype=float).reshape(len(columns), 2)


def check_columns(params: Params) -> None:
    """Features, covariates and their bounds well formed (every ComBat query's own check)."""
    feats = _names(params, "features", allow_empty=False)
    covs = _names(params, "covariates", allow_empty=True)
    if set(feats) & set(covs) or len(set(feats)) != len(feats) or len(set(covs)) != len(covs):
        raise InvalidInput("parameters 'features' and 'covariates' must be distinct column "
                           "names, each listed once")
    column_bounds(params, feats + covs)
    if "beta" in params:
        try:  # a non-numeric or ragged beta is refused like a misshapen one, never a traceback
            _pooled_array(params, "beta", (len(covs), len(feats)))
        except _Problem:
            raise InvalidInput(f"parameter 'beta' must be a finite {len(covs)} x {len(feats)} "
                               "matrix (covariates x features)") from None


def _effect_problem(beta: np.ndarray, rx: np.ndarray, ry: np.ndarray) -> tuple[str, str] | None:
    """Each covariate's effect over its public range at most :data:`MAX_EFFECT_SPAN` times
    the feature's range (``beta``: covariates x features)."""
    if beta.size and not np.all(np.abs(beta) * rx[:, None] <= MAX_EFFECT_SPAN * ry[None, :]):
        return "beta", (f"parameter 'beta' must give each covariate an effect over its public "
                        f"range of at most {MAX_EFFECT_SPAN:g} times the feature's range")
    return None


def residuals_problem(params: Params) -> tuple[str, str] | None:
    """Why a ``combat_residuals`` request's ``beta`` is not one an honest moments step gives:
    missing, not finite, not of the planned shape (covariates x features), or a covariate
    effect beyond :data:`MAX_EFFECT_SPAN` feature ranges (the bound ``combat_apply`` checks
    too). Parameters alone decide, so every site finds the same; the detail names no value.

    Nothing tighter is needed for privacy: the sum over sites of the residual sums of squares
    at any ``beta`` is ``Syy - 2 beta' Sxy + beta' Sxx beta`` per feature, ``S`` the pooled
    *within-site centred* cross-products (``Sxx``, ``Sxy`` are what ``combat_moments``
    releases), so a hub's choice of ``beta`` yields pooled second moments, never one site's
    or one patient's values; the bound keeps the declared range (and a DP request's
    sensitivity) that of a plausible fit."""
    try:
        check_columns(params)
    except InvalidInput as exc:
        return parameter_name(str(exc), dict(params)), str(exc)
    feats, covs = list(params["features"]), list(params.get("covariates", []))
    if "beta" not in params:
        return "beta", "query combat_residuals needs the public 'beta' of the moments step"
    b = column_bounds(params, feats + covs)
    try:
        beta = _pooled_array(params, "beta", (len(covs), len(feats)))
    except _Problem as exc:
        return exc.args[0], exc.args[1]
    return _effect_problem(beta, b[len(feats):, 1] - b[len(feats):, 0],
                           b[:len(feats), 1] - b[:len(feats), 0])


class _Problem(Exception):
    """A pooled-parameter problem: ``(parameter, detail)``, the detail naming no value."""


def _pooled_array(params: Params, key: str, shape: tuple[int, ...]) -> np.ndarray:
    try:
        a = np.asarray(params[key], dtype=float)
        if a.size == 0 and 0 in shape:
            a = a.reshape(shape)
    except (KeyError, TypeError, ValueError):
        a = None
    if a is None or a.shape != shape:
        raise _Problem(key, f"parameter {key!r} must be a numeric array of shape {shape} (the "
                            "planned features and covariates)")
    if not np.all(np.isfinite(a)):
        raise _Problem(key, f"parameter {key!r} must be finite")
    return a


def pooled_problem(params: Params) -> tuple[str, str] | None:
    """The first reason no honest fit within the public bounds gives these pooled ComBat
    parameters (see the module docstring), as ``(parameter, detail)``; ``None`` if there is
    none. Parameters alone decide, so every site finds the same; the detail names no value."""
    try:
        check_columns(params)
    except InvalidInput as exc:
        return parameter_name(str(exc), dict(params)), str(exc)
    feats, covs = list(params["features"]), list(params.get("covariates", []))
    p, q = len(feats), len(covs)
    b = column_bounds(params, feats + covs)
    by, bx = b[:p], b[p:]
    try:
        column_bounds(params, [f"h_{f}" for f in feats if f"h_{f}" in params["bounds"]])
        alpha = _pooled_array(params, "alpha", (p,))
        beta = _pooled_array(params, "beta", (q, p))
        var = _pooled_array(params, "var_pooled", (p,))
    except InvalidInput as exc:
        return "bounds", str(exc)
    except _Problem as exc:
        return exc.args[0], exc.args[1]
    ry, rx = by[:, 1] - by[:, 0], bx[:, 1] - bx[:, 0]
    if not (np.all(var > 0) and np.all(var <= np.maximum(ry ** 2 / 4, 1.0))):
        return "var_pooled", ("parameter 'var_pooled' must be > 0 and at most the largest "
                              "variance of each feature within its public bounds")
    problem = _effect_problem(beta, rx, ry)
    if problem is not None:
        return problem
    # the range of alpha + x' beta over the covariate box must meet the feature's bounds
    lo = alpha + (np.minimum(beta * bx[:, :1], beta * bx[:, 1:]).sum(axis=0) if q else 0.0)
    hi = alpha + (np.maximum(beta * bx[:, :1], beta * bx[:, 1:]).sum(axis=0) if q else 0.0)
    if not (np.all(hi >= by[:, 0]) and np.all(lo <= by[:, 1])):
        return "alpha", ("parameter 'alpha' must put each feature's grand mean within its "
                         "public bounds for some covariate values within theirs")
    return None
