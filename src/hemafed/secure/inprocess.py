"""An in-process transport for tests and benchmarks: every site is a ``site_step`` call.

``InProcessSites`` holds the sites' identities, their protocol state dicts and their compute
functions, and routes the hub's messages through the very same :func:`site_step` a deployment
runs (masking included). Hooks let tests drop sites at a given step and record every byte the
hub receives.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from hemafed.release import Statistic
from hemafed.secure.hub import SecureSumSession, SumOutcome
from hemafed.secure.identity import FederationManifest, SiteIdentity
from hemafed.secure.protocol import message_round
from hemafed.secure.site import Compute, site_step


@dataclass(frozen=True)
class Received:
    """One reply the hub received: at which round, from which site, what bytes."""

    round_no: int
    site: str
    reply: bytes


class InProcessSites:
    """Sites in this process, reachable through ``__call__(messages) -> replies``.

    ``drop_at`` maps a round number (0 session keys, 1 masked input, 2 consistency check,
    3 unmasking) to sites that stop answering from that round on.
    ``received`` records every reply, in order, as the hub saw it.
    """

    def __init__(self, identities: Iterable[SiteIdentity], manifest: FederationManifest,
                 computes: Mapping[str, Compute],
                 drop_at: Mapping[int, Iterable[str]] | None = None) -> None:
        self.identities = {i.site_id: i for i in identities}
        self.manifest = manifest
        self.computes = dict(computes)
        self.states: dict[str, dict[str, bytes]] = {s: {} for s in self.identities}
        self.drop_at = {r: set(sites) for r, sites in (drop_at or {}).items()}
        self.received: list[Received] = []
        self._sessions: dict[tuple[str, ...], SecureSumSession] = {}

    def dropped_by(self, round_no: int) -> set[str]:
        """Sites that do not answer at ``round_no``."""
        return set().union(*(s for r, s in self.drop_at.items() if r <= round_no))

    def __call__(self, messages: Mapping[str, bytes]) -> dict[str, bytes]:
        replies: dict[str, bytes] = {}
        for site, message in messages.items():
            round_no = message_round(message)
            if site in self.dropped_by(round_no):
                continue
            reply = site_step(message, self.states[site], self.identities[site], self.manifest,
                              self.computes[site])
            self.received.append(Received(round_no, site, reply))
            replies[site] = reply
        return replies

    def secure_sum(self, aggregation_id: bytes, payload: bytes, specs: Mapping[str, Statistic],
                   participants: Iterable[str] | None = None) -> SumOutcome:
        """Run one aggregation over these sites (all of them unless ``participants``).

        Aggregations over the same participants share a session, as a hub's study run does.
        """
        chosen = tuple(sorted(participants if participants is not None else self.identities))
        if chosen not in self._sessions:
            self._sessions[chosen] = SecureSumSession(self, self.manifest, chosen)
        return self._sessions[chosen].secure_sum(aggregation_id, payload, specs)
