"""A federation whose sums are the exact fixed-point arithmetic of secure aggregation.

Each site's query result is encoded with :class:`hemafed.secure.encoding.FixedPointLayout` (the
bounds and resolution its ``Statistic`` declarations give), the integer vectors are added modulo
2**64 and the total is decoded: what :class:`hemafed.federation.runtime.SecureFederation` returns,
since its pairwise masks cancel exactly in that sum. It leaves out masking, policy and transport
(tested in tests/federation) so that the statistics suites can run many federations quickly while
still seeing every rounding and every bound check of the secure path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hemafed.cohort.model import Cohort
from hemafed.federation.api import AggregateResult
from hemafed.federation.queries import get_query
from hemafed.secure.encoding import FixedPointLayout


class FixedPointFederation:
    """Sites are cohorts in memory; ``secure_sum`` is the decoded modular sum of their encodings."""

    def __init__(self, cohorts: Mapping[str, Cohort] | Sequence[Cohort]) -> None:
        if not isinstance(cohorts, Mapping):
            cohorts = {f"site{i:02d}": c for i, c in enumerate(cohorts)}
        self._cohorts = dict(cohorts)
        self.calls: list[tuple[str, dict[str, Any]]] = []

    @property
    def site_ids(self) -> tuple[str, ...]:
        return tuple(self._cohorts)

    def secure_sum(self, query: str, params: Mapping[str, Any], *, study: str = "default",
                   dp: Any = None) -> AggregateResult:
        assert dp is None, "no DP in this double"
        q = get_query(query)
        q.check(params)
        self.calls.append((query, dict(params)))
        layout = FixedPointLayout.from_specs(q.declare(params), len(self._cohorts))
        total = np.zeros(layout.size, dtype=np.uint64)
        for site_id, cohort in self._cohorts.items():
            total += layout.encode(q.run(cohort, params, site_id=site_id), site_id)
        return AggregateResult(layout.decode_sum(total, len(self._cohorts)), self.site_ids)
