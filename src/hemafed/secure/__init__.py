"""Secure aggregation: the hub learns only the sum over sites.

Bonawitz et al. (CCS 2017) secure aggregation with the SecAgg+ sparse neighbour graph of Bell et
al. (CCS 2020), on ``cryptography`` primitives: X25519, HKDF-SHA256, ChaCha20-Poly1305, an
AES-CTR mask generator, Shamir sharing over GF(2**521 - 1) and Ed25519-signed per-aggregation
keys pinned by a :class:`FederationManifest`. See ``docs/security.md`` for the threat model.

Transport-agnostic: messages are bytes, site state is an external mapping.

- hub: :class:`HubAggregation` (state machine), :func:`run_secure_sum` (driver);
- site: :func:`site_step`;
- tests: :class:`InProcessSites`;
- encoding: :class:`FixedPointLayout`.
"""

from hemafed.secure.encoding import FixedPointLayout
from hemafed.secure.hub import HubAggregation, SumOutcome, run_secure_sum
from hemafed.secure.identity import FederationManifest, SiteIdentity
from hemafed.secure.inprocess import InProcessSites, Received
from hemafed.secure.protocol import N_ROUNDS, ROUNDS, message_round
from hemafed.secure.site import Compute, site_step

__all__ = [
    "N_ROUNDS",
    "ROUNDS",
    "Compute",
    "FederationManifest",
    "FixedPointLayout",
    "HubAggregation",
    "InProcessSites",
    "Received",
    "SiteIdentity",
    "SumOutcome",
    "message_round",
    "run_secure_sum",
    "site_step",
]
