"""Post-processing of differentially private releases, and the record of how noise was calibrated.

The analyst asks for ``DPRequest(epsilon, delta)``; it is passed to
``Federation.secure_sum(..., dp=...)`` and the *runtime* adds calibrated Gaussian noise at the
sites and charges every site's ledger. What is left for an analysis is post-processing (which
costs no privacy): keep released numbers consistent (counts are not negative, survival curves do
not rise, cumulative incidences stay in [0, 1] and do not fall), and say in the result how the
noise was calibrated.

>>> clamp_counts(np.array([-0.4, 2.6]))
array([0. , 2.6])
>>> monotone_nonincreasing(np.array([1.0, 0.8, 0.85, 0.5])).tolist()
[1.0, 0.8, 0.8, 0.5]
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hemafed.federation.api import AggregateResult, DPRequest


@dataclass(frozen=True)
class NoiseRecord:
    """How the released sums of one analysis were made private (empty when they were not).

    ``noise_std`` maps ``query.statistic`` to the standard deviation of the Gaussian noise the
    runtime added to that released sum; ``releases`` counts secure sums (each one is charged to
    every site's ledger at the requested epsilon and delta).
    """

    epsilon: float | None = None
    delta: float | None = None
    releases: int = 0
    noise_std: dict[str, float] = field(default_factory=dict)

    @property
    def private(self) -> bool:
        return self.epsilon is not None

    def to_dict(self) -> dict[str, Any]:
        return {"epsilon": self.epsilon, "delta": self.delta, "releases": self.releases,
                "noise_std": dict(self.noise_std)}


def noise_record(results: Iterable[tuple[str, AggregateResult]],
                 requested: DPRequest | None = None) -> NoiseRecord:
    """Collect the noise calibration of several ``(query name, result)`` releases."""
    noise: dict[str, float] = {}
    dp = requested
    releases = 0
    for name, res in results:
        releases += 1
        dp = res.dp if res.dp is not None else dp
        for stat, std in res.noise_std.items():
            noise[f"{name}.{stat}"] = float(std)
    if dp is None:
        return NoiseRecord(releases=releases)
    return NoiseRecord(dp.epsilon, dp.delta, releases, noise)


def clamp_counts(values: np.ndarray) -> np.ndarray:
    """Noisy counts below zero become zero (a count cannot be negative)."""
    return np.maximum(np.asarray(values, dtype=float), 0.0)


def monotone_nonincreasing(curve: np.ndarray) -> np.ndarray:
    """The running minimum along the last axis (a survival curve never rises)."""
    return np.minimum.accumulate(np.asarray(curve, dtype=float), axis=-1)


def monotone_nondecreasing(curve: np.ndarray) -> np.ndarray:
    """The running maximum along the last axis (a cumulative incidence never falls)."""
    return np.maximum.accumulate(np.asarray(curve, dtype=float), axis=-1)


def nearest_psd(matrix: np.ndarray, floor: float = 1e-9) -> np.ndarray:
    """Symmetrise a noisy information (Hessian) matrix and lift its eigenvalues to at least
    ``floor`` times the largest, so that it can be inverted as a covariance would require."""
    m = np.asarray(matrix, dtype=float)
    sym = (m + m.T) / 2.0
    vals, vecs = np.linalg.eigh(sym)
    top = max(float(vals.max(initial=0.0)), 0.0)
    lifted = np.maximum(vals, floor * top if top > 0 else floor)
    return (vecs * lifted) @ vecs.T


def clip_probability(values: np.ndarray) -> np.ndarray:
    """Clip to [0, 1]."""
    return np.clip(np.asarray(values, dtype=float), 0.0, 1.0)
