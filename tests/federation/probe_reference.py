"""Expected probe answers, computed here independently of hemafed's probe module."""

from __future__ import annotations

import hashlib


def expected_vector(site_id: str, round_index: int) -> list[int]:
    digest = hashlib.sha256(f"{site_id}/{round_index}".encode()).digest()
    return [int.from_bytes(digest[i:i + 2], "big") % 1000 for i in (0, 2, 4)]


def expected_sums(answering: list[str], round_index: int) -> list[int]:
    total = [0, 0, 0]
    for site in answering:
        total = [a + b for a, b in zip(total, expected_vector(site, round_index), strict=True)]
    return total
