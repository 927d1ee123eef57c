"""The ``Federation`` interface every analysis is written against.

An analysis asks for the *sum over sites* of a registered site query; it never sees one site's
value. Transports (Flower simulation, Flower deployment, in-process) implement this interface.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from hemafed.release import DPRequest as DPRequest


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
