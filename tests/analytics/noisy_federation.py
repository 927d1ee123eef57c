"""A test double that adds seeded Gaussian noise of a chosen std to every released sum.

It stands in for the DP runtime in maths tests that need a known noise scale (the real runtime
calibrates the scale from epsilon; ``LocalSumFederation(dp_seed=...)`` does the same).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hemafed.federation.api import AggregateResult


class NoisyFederation:
    def __init__(self, inner: Any, std: float, seed: int = 0) -> None:
        self.inner, self.std, self.rng = inner, std, np.random.default_rng(seed)

    @property
    def site_ids(self) -> tuple[str, ...]:
        return self.inner.site_ids

    def secure_sum(self, query: str, params: Any, *, study: str = "default",
                   dp: Any = None) -> AggregateResult:
        res = self.inner.secure_sum(query, params, study=study)
        noisy = {k: v + self.rng.normal(0, self.std, v.shape) for k, v in res.values.items()}
        return AggregateResult(noisy, res.sites, dp=dp, noise_std={k: self.std for k in noisy})
