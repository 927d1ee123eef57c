"""A trusted single-process federation that sums site query results in the clear.

For unit tests of the statistics (the maths is checked against pooled references without a
network) and for computing pooled references. It runs the same registered site queries as every
other transport, but without masking, policy or DP: it is never what a deployment uses.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hemafed.cohort.model import Cohort
from hemafed.errors import InvalidInput
from hemafed.federation.api import AggregateResult, DPRequest
from hemafed.federation.queries import get_query
from hemafed.privacy.calibration import release_noise_std


class LocalSumFederation:
    """Sites are cohorts in memory; ``secure_sum`` returns the plain sum of their query results.

    ``min_cell``: the class minimum every in-memory site applies to a non-DP request, as a site
    node under ``enforce_min_cell`` does (0, the default: none)."""

    def __init__(self, cohorts: Mapping[str, Cohort] | Sequence[Cohort],
                 dp_seed: int | None = None, min_cell: int = 0) -> None:
        if not isinstance(cohorts, Mapping):
            cohorts = {f"site{i:02d}": c for i, c in enumerate(cohorts)}
        if not cohorts:
            raise InvalidInput("a federation needs at least one site")
        self._cohorts = dict(cohorts)
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._rng = np.random.default_rng(dp_seed) if dp_seed is not None else None
        self._min_cell = min_cell

    @property
    def site_ids(self) -> tuple[str, ...]:
        return tuple(self._cohorts)

    def secure_sum(self, query: str, params: Mapping[str, Any], *, study: str = "default",
                   dp: DPRequest | None = None) -> AggregateResult:
        if dp is not None and self._rng is None:
            raise InvalidInput("LocalSumFederation adds DP noise only when built with dp_seed "
                               "(a test double); real releases go through a site runtime")
        start = time.perf_counter()
        q = get_query(query)
        self.calls.append((query, dict(params)))
        total: dict[str, np.ndarray] | None = None
        for site_id, cohort in self._cohorts.items():
            out = q.run(cohort, params, site_id=site_id,
                        min_cell=self._min_cell if dp is None else 0)
            total = out if total is None else {k: total[k] + out[k] for k in total}
        assert total is not None
        noise_std: dict[str, float] = {}
        if dp is not None and self._rng is not None:
            noise_std = release_noise_std(q.declare(params), dp)
            total = {k: v + self._rng.normal(0.0, noise_std[k], size=v.shape)
                     for k, v in total.items()}
        return AggregateResult(total, self.site_ids, round_trips=1,
                               seconds=time.perf_counter() - start, dp=dp, noise_std=noise_std)
