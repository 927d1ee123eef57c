"""The Cox maths both sides share: packing of symmetric blocks, the public linear-predictor
bands and their recombination, and the log partial likelihood with its derivatives from
(pooled) risk-set sums. Pure functions of arrays; no query is registered here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np


def upper_index(p: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of the upper triangle (diagonal included) of a ``p x p`` matrix,
    the order in which symmetric ``S2`` blocks are packed (``p (p + 1) / 2`` numbers)."""
    return np.triu_indices(p)


def unpack_upper(packed: np.ndarray, p: int) -> np.ndarray:
    """``(..., p (p + 1) / 2)`` packed upper triangles back to symmetric ``(..., p, p)``."""
    iu, ju = upper_index(p)
    full = np.zeros((*packed.shape[:-1], p, p))
    full[..., iu, ju] = packed
    full[..., ju, iu] = packed
    return full


BAND_WIDTH = 16.0
"""Width (in units of the linear predictor) of one band of :func:`lp_bands`: within a band
``exp(x beta - centre)`` lies in ``[exp(-8), exp(8)]``, so the finest encodable resolution keeps
even a lone patient's term to ~1e-13 relative, whatever the design's bounds."""

BOUND_SLACK = 1e-9
"""Relative slack on the band sums' upper bounds (``exp(x beta - centre)`` may exceed its bound
by rounding when a value sits on its declared bound)."""


def lp_bands(half_width: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, float]:
    """Centres of the public linear-predictor bands at ``beta``, and their half-width.

    The centred linear predictor lies in ``[-A, A]`` with ``A = sum |beta_j| half_width_j``
    (public: design bounds and beta). It is cut into ``ceil(2A / BAND_WIDTH)`` equal bands; one
    band (centre 0, the former scheme) when ``2A <= 16``. A site reports every risk-set sum per
    band, each patient's term scaled by ``exp(-centre)`` of its band, so every reported number
    is bounded by the number of patients times ``exp(8)`` (times the covariate bounds) rather
    than by ``exp(A)``: the fixed-point encoding then keeps float precision relative to each
    band's actual size, which wide public bounds (``exp(A)`` of 1e30 and more) used to
    destroy. The hub recombines the bands exactly (:func:`combine_bands`).
    """
    a = float(np.sum(np.abs(np.asarray(beta, dtype=float)) * np.asarray(half_width)))
    nb = max(1, math.ceil(2.0 * a / BAND_WIDTH - 1e-12))
    half = a / nb
    return -a + (2 * np.arange(nb) + 1) * half, half


def combine_bands(sums: Mapping[str, np.ndarray], bands: tuple[np.ndarray, float]
                  ) -> dict[str, np.ndarray]:
    """Add the per-band risk-set sums (band-major first axis) into per-stratum sums.

    Each (stratum, time) row is scaled by ``exp(-log_scale)``, ``log_scale`` (returned, shaped
    like ``d``) being the centre of the highest band with patients at risk in that row, so nothing
    overflows or underflows however wide the bands span; ratios (gradient, Hessian) do not
    change and :func:`cox_derivatives` adds ``-d * log_scale`` per row to the log-likelihood.
    """
    tops = bands[0]
    nb = tops.size
    s0 = np.asarray(sums["s0"])
    s0 = s0.reshape(nb, s0.shape[0] // nb, *s0.shape[1:])
    lifted = np.where(s0 > 0, tops.reshape(-1, *([1] * (s0.ndim - 1))), -np.inf)
    row_top = lifted.max(axis=0)
    row_top = np.where(np.isfinite(row_top), row_top, 0.0)
    gap = tops.reshape(-1, *([1] * (s0.ndim - 1))) - row_top[None]
    weights = np.where(gap <= 0, np.exp(np.minimum(gap, 0.0)), 0.0)
    out = dict(sums)
    for name in ("s0", "s1", "s2", "e0", "e1", "e2"):
        if name in sums:
            v = np.asarray(sums[name])
            v = v.reshape(nb, v.shape[0] // nb, *v.shape[1:])
            w = weights.reshape(*weights.shape, *([1] * (v.ndim - weights.ndim)))
            out[name] = (w * v).sum(axis=0)
    out["log_scale"] = row_top
    return out


def exp_bound(half_width: np.ndarray, beta: np.ndarray) -> tuple[float, float]:
    """Public bounds ``(max |x - center|, max exp(x beta))`` from the design bounds and beta.

    >>> exp_bound(np.array([1.0, 2.0]), np.array([0.5, -0.25]))
    (2.0, 2.718281828459045)
    """
    hw = np.asarray(half_width, dtype=float)
    return float(hw.max()), float(np.exp(np.sum(np.abs(np.asarray(beta, dtype=float)) * hw)))


def finest_resolution(low: float, high: float) -> float:
    """The finest fixed-point step the two-limb encoding takes for ``[low, high]`` (with a
    factor-4 margin below :data:`hemafed.federation.queries.MAX_STEPS`)."""
    return max((float(high) - float(low)) / 2.0**88, 1e-300)


def expand_cox_sums(sums: Mapping[str, np.ndarray], grid_size: int,
                    time_index: Sequence[int] | np.ndarray | None = None,
                    tie_index: Sequence[int] | np.ndarray | None = None
                    ) -> dict[str, np.ndarray]:
    """Pooled ``cox_risk_set_sums`` back on the whole grid with full ``p x p`` blocks.

    Rows that were not requested are zero, which is exact as long as ``time_index`` holds every
    grid time with a pooled event and ``tie_index`` every one with two or more (Efron's tie
    terms vanish for a single event).
    """
    p = sums["s1"].shape[-1]
    t_idx = np.arange(grid_size) if time_index is None else np.asarray(time_index, dtype=np.intp)
    e_idx = t_idx if tie_index is None else np.asarray(tie_index, dtype=np.intp)
    out: dict[str, np.ndarray] = {}
    for name, idx in (("s0", t_idx), ("s1", t_idx), ("s2", t_idx), ("d", t_idx),
                      ("xsum", t_idx), ("e0", e_idx), ("e1", e_idx), ("e2", e_idx)):
        if name not in sums:
            continue
        val = sums[name]
        if name in ("s2", "e2"):
            val = unpack_upper(val, p)
        full = np.zeros((val.shape[0], grid_size, *val.shape[2:]))
        full[:, idx] = val
        out[name] = full
    return out


def cox_derivatives(sums: Mapping[str, np.ndarray], beta: np.ndarray,
                    efron: bool) -> tuple[float, np.ndarray, np.ndarray]:
    """Log partial likelihood, gradient and Hessian from (pooled) risk-set sums, exactly.

    ``sums`` hold full ``p x p`` blocks ``s2``/``e2`` (see :func:`expand_cox_sums`).
    Breslow: ``sum_j [xsum_j b - d_j log S0_j]``; Efron replaces ``d_j log S0_j`` by
    ``sum_{l<d_j} log(S0_j - l/d_j E0_j)`` (and likewise for the derivatives).
    """
    d = sums["d"].reshape(-1)
    keep = d > 0
    d = d[keep]
    p = beta.size
    s0 = sums["s0"].reshape(-1)[keep]
    s1 = sums["s1"].reshape(-1, p)[keep]
    s2 = sums["s2"].reshape(-1, p, p)[keep]
    xsum = sums["xsum"].reshape(-1, p)[keep]
    scale = np.broadcast_to(np.asarray(sums.get("log_scale", 0.0)), sums["d"].shape)
    loglik = float(np.sum(xsum @ beta)) - float(np.sum(d * scale.reshape(-1)[keep]))
    grad = xsum.sum(axis=0)
    hess = np.zeros((p, p))
    if not efron:
        loglik -= float(np.sum(d * np.log(s0)))
        a = s1 / s0[:, None]
        grad = grad - np.sum(d[:, None] * a, axis=0)
        hess -= np.einsum("k,kij->ij", d / s0, s2) - np.einsum("k,ki,kj->ij", d, a, a)
        return loglik, grad, hess
    e0 = sums["e0"].reshape(-1)[keep]
    e1 = sums["e1"].reshape(-1, p)[keep]
    e2 = sums["e2"].reshape(-1, p, p)[keep]
    for ell in range(int(d.max()) if d.size else 0):
        live = d > ell
        f = ell / d[live]
        phi = s0[live] - f * e0[live]
        a = (s1[live] - f[:, None] * e1[live]) / phi[:, None]
        b2 = s2[live] - f[:, None, None] * e2[live]
        loglik -= float(np.sum(np.log(phi)))
        grad = grad - a.sum(axis=0)
        hess -= np.einsum("k,kij->ij", 1.0 / phi, b2) - np.einsum("ki,kj->ij", a, a)
    return loglik, grad, hess


def event_means(sums: Mapping[str, np.ndarray], efron: bool) -> np.ndarray:
    """Per stratum and grid time, the expected covariate of an event under the model,
    ``E[x | R(t_j)]`` (Efron: the average over the tied events of the Efron-weighted means, as
    lifelines' Schoenfeld residuals use). Zero where there is no event."""
    d = sums["d"]
    s0, s1 = sums["s0"], sums["s1"]
    out = np.zeros(s1.shape)
    has = d > 0
    if not efron:
        out[has] = s1[has] / s0[has][:, None]
        return out
    dd, e0, e1 = d[has], sums["e0"][has], sums["e1"][has]
    acc = np.zeros((dd.size, s1.shape[-1]))
    for ell in range(int(dd.max()) if dd.size else 0):
        live = dd > ell
        f = ell / dd[live]
        phi = s0[has][live] - f * e0[live]
        acc[live] += (s1[has][live] - f[:, None] * e1[live]) / phi[:, None]
    out[has] = acc / dd[:, None]
    return out


