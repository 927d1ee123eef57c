"""Fixtures of the secure-aggregation tests: small federations of in-process sites."""

from __future__ import annotations

import numpy as np
import pytest
from secagg_helpers import Values

from hemafed.federation.queries import Statistic
from hemafed.secure import SiteIdentity


@pytest.fixture(scope="session")
def ten_identities() -> dict[str, SiteIdentity]:
    return {f"site{i:02d}": SiteIdentity.generate(f"site{i:02d}") for i in range(10)}


@pytest.fixture
def mixed_values() -> tuple[Values, dict[str, Statistic]]:
    """Ten sites with integer counts and 1e-4-resolution floats, both within bounds."""
    rng = np.random.default_rng(20261127)
    specs = {"counts": Statistic((40,), 0, 5000),
             "score": Statistic((2, 15), -3.0, 3.0, 1e-4)}
    values = {f"site{i:02d}": {
        "counts": rng.integers(0, 5001, 40).astype(float),
        "score": np.round(rng.uniform(-3, 3, (2, 15)), 4)} for i in range(10)}
    return values, specs
