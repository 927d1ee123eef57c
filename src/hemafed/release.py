"""What a site releases: the declared statistics of a query and the DP settings of a release.

Value types shared by every layer (the secure aggregation encodes :class:`Statistic` arrays,
privacy calibrates noise from them, the site checks and the hub sums them). This module imports
nothing else from hemafed, so the cryptography does not depend on the haematology schema.

>>> Statistic((3,), 0.0, 100.0, resolution=1.0, is_count=True).size
3
>>> DPRequest(epsilon=1.0).delta
1e-06
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["MAX_STEPS", "DPRequest", "Statistic", "encodable_resolution"]


MAX_STEPS = 2**90
"""Most fixed-point steps one element may span: secure aggregation encodes a wide element as
two 48-bit limbs (:mod:`hemafed.secure.encoding`), so up to 2**96 steps, summed exactly."""


def encodable_resolution(low: float, high: float, requested: float) -> float:
    """``requested``, coarsened if ``[low, high]`` would need more than :data:`MAX_STEPS` steps."""
    return max(float(requested), (float(high) - float(low)) / MAX_STEPS)


@dataclass(frozen=True)
class Statistic:
    """Declared output array of a site query.

    Every element of a site's array lies in ``[low, high]``; values are encoded with
    ``resolution`` (the fixed-point step; 1 for counts). A requested resolution finer than
    ``(high - low) / MAX_STEPS`` is coarsened to that, once, here, so every declared statistic
    is encodable and hub and sites agree on the step. ``sensitivity`` is the L2 change of the
    whole array when one patient is added or removed (for DP noise calibration); ``is_count``
    marks released counts.

    ``cells`` says whether the site's minimum-cell rule (``enforce_min_cell``) applies to a
    count: ``True`` for a frequency table released cell by cell, ``False`` for a total or an
    at-risk count an estimator needs. Left ``None``, it follows from the declaration: a count of
    more than one cell that one patient changes by at most 1 in L2 (each patient in one cell)
    is a frequency table; a single total, or a count one patient enters many cells of (at-risk
    and comparable counts, sensitivity above 1), is not (:attr:`min_cell_rule`). The event
    counts per grid time of the Cox-type estimators are such tables on any grid, the plan's
    lattice included: the hub sees them pooled next to the events' covariate sums, so a time
    with one event would give that patient's covariates (docs/security.md, attack L).
    """

    shape: tuple[int, ...]
    low: float
    high: float
    resolution: float = 1.0
    sensitivity: float = 1.0
    is_count: bool = False
    cells: bool | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not all(isinstance(d, int) and d >= 0 for d in self.shape):
            raise ValueError(f"shape must be non-negative ints, got {self.shape}")
        if not (np.isfinite(self.low) and np.isfinite(self.high)) or self.low > self.high:
            raise ValueError(f"bounds must be finite with low <= high, got [{self.low}, {self.high}]")
        if not self.resolution > 0:
            raise ValueError(f"resolution must be > 0, got {self.resolution}")
        object.__setattr__(self, "resolution",
                           encodable_resolution(self.low, self.high, self.resolution))
        if self.sensitivity < 0:
            raise ValueError(f"sensitivity must be >= 0, got {self.sensitivity}")

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def min_cell_rule(self) -> bool:
        """Whether the site's minimum-cell rule applies to this statistic (see ``cells``)."""
        if not self.is_count:
            return False
        if self.cells is not None:
            return self.cells
        return self.size > 1 and self.sensitivity <= 1.0


@dataclass(frozen=True)
class DPRequest:
    """Ask for a differentially private release with Gaussian noise.

    Give either ``epsilon`` (noise calibrated so that this one release is (epsilon, delta)-DP) or
    ``noise_multiplier`` (noise standard deviation = noise_multiplier x L2 sensitivity, as
    mechanisms like MST/AIM or DP-SGD choose it). Either way every site's ledger charges the
    Gaussian mechanism event before anything is released.
    """

    epsilon: float | None = None
    delta: float = 1e-6
    noise_multiplier: float | None = None

    def __post_init__(self) -> None:
        if (self.epsilon is None) == (self.noise_multiplier is None):
            raise ValueError("give exactly one of epsilon or noise_multiplier")
        if self.epsilon is not None and not self.epsilon > 0:
            raise ValueError(f"epsilon must be > 0, got {self.epsilon}")
        if self.noise_multiplier is not None and not self.noise_multiplier > 0:
            raise ValueError(f"noise_multiplier must be > 0, got {self.noise_multiplier}")
        if not 0 < self.delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {self.delta}")
