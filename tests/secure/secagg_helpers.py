"""Helpers of the secure-aggregation tests: build small federations of in-process sites."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from hemafed.federation.queries import Statistic
from hemafed.secure import FederationManifest, InProcessSites, SiteIdentity

Values = dict[str, dict[str, np.ndarray]]


def constant_compute(values: dict[str, np.ndarray], specs: dict[str, Statistic]
                     ) -> Callable[[bytes, int], tuple[dict[str, np.ndarray], dict[str, Statistic]]]:
    """A site compute function that returns fixed values whatever the payload."""
    def compute(payload: bytes, quorum: int) -> tuple[dict[str, np.ndarray], dict[str, Statistic]]:
        return values, specs
    return compute


def build_sites(values: Values, specs: dict[str, Statistic], threshold: int,
                degree: int | None = None, drop_at: dict[int, set[str]] | None = None,
                identities: dict[str, SiteIdentity] | None = None) -> InProcessSites:
    ids = identities or {s: SiteIdentity.generate(s) for s in values}
    manifest = FederationManifest.build("test", ids.values(), threshold=threshold,
                                        neighbour_degree=degree)
    computes = {s: constant_compute(v, specs) for s, v in values.items()}
    return InProcessSites(ids.values(), manifest, computes, drop_at=drop_at)
