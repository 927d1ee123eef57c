"""Smoke test of benchmarks/bench_secagg_vs_flower.py: its hemafed path sums exactly, in process.

The Flower simulation parts (Ray) are too slow for unit tests; they run in the benchmark itself.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import numpy as np
import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark: Callable[[str], ModuleType]) -> ModuleType:
    return load_benchmark("bench_secagg_vs_flower")


def test_in_process_secure_sum_matches_numpy(bench: ModuleType) -> None:
    got = bench.run_ours_in_process(4, 25)
    # independent reference: add the site vectors with plain Python floats
    want = [0.0] * 25
    for i in range(4):
        for j, v in enumerate(bench.site_vector(i, 25).tolist()):
            want[j] += v
    assert got["contributors"] == 4
    assert len(got["seconds"]) == 1
    np.testing.assert_allclose(got["sum"], want, rtol=0, atol=1e-12)


def test_site_vectors_lie_on_the_resolution_grid_and_within_bounds(bench: ModuleType) -> None:
    v = bench.site_vector(3, 1000)
    assert v.min() >= bench.LOW and v.max() <= bench.HIGH
    np.testing.assert_allclose(v / bench.RESOLUTION, np.round(v / bench.RESOLUTION), atol=1e-6)
    assert not np.array_equal(v, bench.site_vector(4, 1000))  # sites differ


def test_flower_parameters_mirror_ours_at_ten_sites(bench: ModuleType) -> None:
    p = bench.flower_secagg_params(10)
    # complete graph at 10 sites: every site holds a share of every other (and its own)
    assert p["num_shares"] == 10
    assert p["reconstruction_threshold"] == 7 == bench.default_threshold(10)
    assert p["clipping_range"] == 1.0
