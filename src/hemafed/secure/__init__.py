"""Secure aggregation: the hub learns only the sum over sites.

Bonawitz et al. (CCS 2017) secure aggregation with the SecAgg+ sparse neighbour graph of Bell et
al. (CCS 2020), on ``cryptography`` primitives: X25519, HKDF-SHA256, ChaCha20-Poly1305, an
AES-CTR mask generator, Shamir sharing over GF(2**521 - 1) and Ed25519-signed per-session
keys pinned by a :class:`FederationManifest`. See ``docs/security.md`` for the threat model.

Transport-agnostic: messages are bytes, site state is an external mapping.

- hub: :class:`HubSession`, :class:`HubAggregation` (state machines),
  :class:`SecureSumSession` and :func:`run_secure_sum` (drivers);
- site: :func:`site_step`;
- tests: :class:`InProcessSites`;
- encoding: :class:`FixedPointLayout`.
"""

from hemafed.secure.encoding import FixedPointLayout
from hemafed.secure.hub import (
    HubAggregation,
    HubSession,
    SecureSumSession,
    SumOutcome,
    run_secure_sum,
)
from hemafed.secure.identity import FederationManifest, SiteIdentity
from hemafed.secure.inprocess import InProcessSites, Received
from hemafed.secure.protocol import N_ROUNDS, ROUND_TRIPS_PER_SUM, ROUNDS, message_round
from hemafed.secure.site import Compute, site_step

__all__ = [
    "N_ROUNDS",
    "ROUNDS",
    "ROUND_TRIPS_PER_SUM",
    "Compute",
    "FederationManifest",
    "FixedPointLayout",
    "HubAggregation",
    "HubSession",
    "InProcessSites",
    "Received",
    "SecureSumSession",
    "SiteIdentity",
    "SumOutcome",
    "message_round",
    "run_secure_sum",
    "site_step",
]
