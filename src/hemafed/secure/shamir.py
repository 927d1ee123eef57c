"""Shamir secret sharing of 32-byte secrets over the prime field GF(2**521 - 1).

A secret is split into shares ``(x, f(x))`` of a random polynomial ``f`` of degree ``t - 1`` with
``f(0) = secret``; any ``t`` shares give the secret back by Lagrange interpolation at 0, fewer
reveal nothing about it. The field is larger than 2**256, so every 32-byte secret is a field
element. Holders are identified by public x-coordinates 1, 2, ... (never 0).

>>> shares = split(b"k" * 32, [1, 2, 3], threshold=2)
>>> reconstruct({1: shares[1], 3: shares[3]}, threshold=2) == b"k" * 32
True
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence

from hemafed.errors import ProtocolError

PRIME = 2**521 - 1
SHARE_BYTES = 66
SECRET_BYTES = 32


def split(secret: bytes, xs: Sequence[int], threshold: int) -> dict[int, int]:
    """Share ``secret`` among holders ``xs`` so that any ``threshold`` of them recover it."""
    if len(secret) != SECRET_BYTES:
        raise ValueError(f"secret must be {SECRET_BYTES} bytes, got {len(secret)}")
    if not 1 <= threshold <= len(xs):
        raise ValueError(f"threshold must be in [1, {len(xs)}], got {threshold}")
    if len(set(xs)) != len(xs) or any(not 0 < x < PRIME for x in xs):
        raise ValueError("share x-coordinates must be distinct and non-zero")
    coeffs = [int.from_bytes(secret, "big")] + [secrets.randbelow(PRIME)
                                                 for _ in range(threshold - 1)]
    shares = {}
    for x in xs:
        acc = 0
        for c in reversed(coeffs):  # Horner
            acc = (acc * x + c) % PRIME
        shares[x] = acc
    return shares


def reconstruct(shares: Mapping[int, int], threshold: int) -> bytes:
    """Recover the secret from at least ``threshold`` shares ``{x: y}``."""
    if len(shares) < threshold:
        raise ProtocolError(f"need {threshold} shares to reconstruct, got {len(shares)}")
    points = sorted(shares.items())[:threshold]
    secret = 0
    for i, (xi, yi) in enumerate(points):
        num, den = 1, 1
        for j, (xj, _) in enumerate(points):
            if i != j:
                num = num * (-xj) % PRIME
                den = den * (xi - xj) % PRIME
        secret = (secret + yi * num * pow(den, -1, PRIME)) % PRIME
    if secret >= 2 ** (8 * SECRET_BYTES):
        raise ProtocolError("reconstructed secret is out of range: shares are inconsistent")
    return secret.to_bytes(SECRET_BYTES, "big")


def share_to_bytes(y: int) -> bytes:
    """Fixed-width encoding of a share value."""
    return y.to_bytes(SHARE_BYTES, "big")


def share_from_bytes(data: bytes) -> int:
    """Inverse of :func:`share_to_bytes`; rejects values outside the field."""
    if len(data) != SHARE_BYTES:
        raise ProtocolError(f"a share must be {SHARE_BYTES} bytes, got {len(data)}")
    y = int.from_bytes(data, "big")
    if y >= PRIME:
        raise ProtocolError("share value is outside the field")
    return y
