"""The ``Federation`` interface every analysis is written against.

An analysis asks for the *sum over sites* of a registered site query; it never sees one site's
value. Transports (Flower simulation, Flower deployment, in-process) implement this interface.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


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


@dataclass(frozen=True)
class AggregateResult:
    """What the hub learns from one secure aggregation: the sums, and how they were made."""

    values: dict[str, np.ndarray]
    sites: tuple[str, ...]
    dropped: tuple[str, ...] = ()
    round_trips: int = 0
    seconds: float = 0.0
    dp: DPRequest | None = None
    noise_std: dict[str, float] = field(default_factory=dict)
    suppressed: dict[str, np.ndarray] = field(default_factory=dict)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.values[name]


class Federation(Protocol):
    """What an analysis needs from a federation."""

    @property
    def site_ids(self) -> tuple[str, ...]: ...

    def secure_sum(self, query: str, params: Mapping[str, Any], *, study: str = "default",
                   dp: DPRequest | None = None) -> AggregateResult:
        """Run ``query`` at every site and return only the sum over sites."""
        ...
