"""The ``Federation`` interface every analysis is written against.

An analysis asks for the *sum over sites* of a registered site query; it never sees one site's
value. Transports (Flower simulation, Flower deployment, in-process) implement this interface.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


SumRequest = tuple[str, Mapping[str, Any], "DPRequest | None"]
"""``(query, params, dp)``: one part of a batch of secure sums."""


def secure_sums(federation: Any, parts: Sequence[SumRequest], *,
                study: str = "default") -> list[AggregateResult]:
    """The secure sums of ``parts``, in one aggregation when ``federation`` batches.

    A federation batches when it has a ``secure_sums(parts, study=...)`` method (every part is
    answered at each site exactly as if sent alone; a refused part refuses the batch). Without
    one the parts are sent one after another: the sums are the same either way.
    """
    batch = getattr(federation, "secure_sums", None)
    if callable(batch) and len(parts) > 1:
        return list(batch(list(parts), study=study))
    return [federation.secure_sum(q, p, study=study, dp=dp) for q, p, dp in parts]
