"""The SecAgg+ neighbour graph: who shares keys and masks with whom.

With n sites, full Bonawitz SecAgg has every pair of sites agree on a mask, costing O(n) work
and messages per site. Bell et al. (CCS 2020) show that a random sparse graph of degree
O(log n) suffices. We use a random k-regular ring (a Harary graph over a random ordering of the
sites): sites are placed on a ring in an order drawn from a public seed, and each is joined to
its k/2 nearest neighbours on each side. The seed travels in the aggregation's first message, so
every party derives the same graph. When k >= n - 1 the graph is complete (plain SecAgg).

>>> g = neighbour_graph(["a", "b", "c", "d", "e", "f"], 2, b"seed")
>>> sorted(len(v) for v in g.values())
[2, 2, 2, 2, 2, 2]
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence

import numpy as np


def neighbour_graph(participants: Sequence[str], degree: int,
                    seed: bytes) -> dict[str, frozenset[str]]:
    """Neighbours of each participant (never including itself); symmetric by construction."""
    return _graph(tuple(sorted(participants)), degree, seed)


@functools.lru_cache(maxsize=64)
def _graph(names: tuple[str, ...], degree: int, seed: bytes) -> dict[str, frozenset[str]]:
    n = len(names)
    if degree >= n - 1:
        everyone = frozenset(names)
        return {s: everyone - {s} for s in names}
    if degree < 2 or degree % 2:
        raise ValueError(f"degree must be even and >= 2, got {degree}")
    # The graph is public: a seeded statistical shuffle is enough here (no secrecy needed).
    rng = np.random.Generator(np.random.PCG64(
        int.from_bytes(hashlib.sha256(b"hemafed-secagg-graph" + seed).digest()[:16], "big")))
    order = [names[i] for i in rng.permutation(n)]
    half = degree // 2
    neighbours: dict[str, set[str]] = {s: set() for s in names}
    for pos, site in enumerate(order):
        for step in range(1, half + 1):
            other = order[(pos + step) % n]
            neighbours[site].add(other)
            neighbours[other].add(site)
    return {s: frozenset(v) for s, v in neighbours.items()}
