"""The hub side of secure aggregation: a state machine that learns only the sum over sites.

``HubAggregation(...).start()`` gives the first message for every participant; each
``receive(replies)`` takes the sites' replies to the previous messages (a missing site has
dropped out) and gives the next messages, or ``None`` when the sum is ready in ``result()``.
``run_secure_sum`` drives the machine through any transport given as an ``exchange`` function.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from hemafed.errors import BudgetExhausted, InvalidInput, PolicyRefused, ProtocolError
from hemafed.federation.queries import Statistic
from hemafed.secure import crypto, shamir
from hemafed.secure.codec import field, pack_map, pack_names, unpack_map
from hemafed.secure.encoding import FixedPointLayout, specs_to_json
from hemafed.secure.graph import neighbour_graph
from hemafed.secure.identity import FederationManifest
from hemafed.secure.protocol import (
    ADVERTISE,
    CONSISTENCY,
    MASKED_INPUT,
    N_ROUNDS,
    ROUNDS,
    SHARE_KEYS,
    UNMASK,
    holder_x,
    hub_message,
    open_reply,
    pairwise_seed,
    pairwise_sign,
    self_seed,
    session_digest,
)

Exchange = Callable[[dict[str, bytes]], dict[str, bytes]]


@dataclass(frozen=True)
class SumOutcome:
    """The unmasked sum and who it covers.

    ``contributors`` are the sites whose inputs are in ``values``; ``dropped`` are participants
    whose inputs are not (they dropped out before sending a masked input); ``round_trips``
    counts hub -> sites -> hub exchanges.
    """

    values: dict[str, np.ndarray]
    contributors: tuple[str, ...]
    dropped: tuple[str, ...]
    round_trips: int


class HubAggregation:
    """One secure aggregation, seen from the hub."""

    def __init__(self, manifest: FederationManifest, aggregation_id: bytes, payload: bytes,
                 specs: Mapping[str, Statistic], participants: Sequence[str],
                 graph_seed: bytes | None = None) -> None:
        if not 16 <= len(aggregation_id) <= 64:
            raise InvalidInput(f"aggregation_id must be 16-64 random bytes, got "
                               f"{len(aggregation_id)}")
        participants = sorted(participants)
        if len(set(participants)) != len(participants):
            raise InvalidInput("participants must be distinct site ids")
        unknown = [p for p in participants if p not in manifest.sites]
        if unknown:
            raise InvalidInput(f"participants {unknown} are not in manifest {manifest.name!r}")
        if len(participants) < manifest.threshold:
            raise InvalidInput(f"{len(participants)} participants is fewer than the manifest's "
                               f"threshold {manifest.threshold}")
        self.manifest = manifest
        self.aggregation_id = aggregation_id
        self.payload = payload
        self.participants = participants
        n = len(participants)
        self.layout = FixedPointLayout.from_specs(specs, n)
        self.specs_json = specs_to_json(dict(self.layout.specs))
        self.graph_seed = graph_seed if graph_seed is not None else os.urandom(32)
        self.graph = neighbour_graph(participants, manifest.degree_for(n), self.graph_seed)
        self.t = manifest.threshold
        self.t_share = manifest.share_threshold_for(n)
        self.digest = session_digest(manifest, aggregation_id, participants, self.specs_json,
                                     payload, self.graph_seed)
        self.round = -1
        self.round_trips = 0
        self.live: list[str] = list(participants)
        self.keys: dict[str, bytes] = {}          # site -> signed key envelope (round 0)
        self.s_pk: dict[str, bytes] = {}
        self.sealed: dict[str, dict[str, bytes]] = {}   # sender -> recipient -> ciphertext
        self.u2: list[str] = []
        self.u3: list[str] = []
        self.masked_total = np.zeros(self.layout.size, dtype=np.uint64)
        self.confirmations: dict[str, bytes] = {}
        self.revealed: dict[str, dict[str, tuple[str, int]]] = {}  # holder -> owner -> share
        self._outcome: SumOutcome | None = None

    # ----------------------------------------------------------------------------------------
    def start(self) -> dict[str, bytes]:
        """First message to every participant: the request and the session parameters."""
        if self.round != -1:
            raise ProtocolError("aggregation already started")
        self.round = ADVERTISE
        msg = hub_message(self.aggregation_id, ADVERTISE, {
            "manifest": self.manifest.fingerprint, "participants": pack_names(self.participants),
            "payload": self.payload, "specs": self.specs_json, "seed": self.graph_seed})
        return {s: msg for s in self.participants}

    def receive(self, replies: Mapping[str, bytes]) -> dict[str, bytes] | None:
        """Take the replies to the last messages; return the next messages or ``None`` at the end."""
        if self.round < 0 or self._outcome is not None:
            raise ProtocolError("receive() called before start() or after the result")
        unexpected = sorted(set(replies) - set(self.live))
        if unexpected:
            raise ProtocolError(f"replies from sites {unexpected} that were not asked at the "
                                f"{ROUNDS[self.round]!r} step")
        bodies = {s: open_reply(self.manifest, env, s, self.round, self.digest).body
                  for s, env in replies.items()}
        self.round_trips += 1
        handler = (self._on_keys, self._on_shares, self._on_masked, self._on_confirmations,
                   self._on_unmask)[self.round]
        self.live = sorted(bodies)
        nxt = handler(bodies, {s: replies[s] for s in bodies})
        if nxt is None:
            return None
        self.round += 1
        return nxt

    def result(self) -> SumOutcome:
        """The outcome, once ``receive`` has returned ``None``."""
        if self._outcome is None:
            raise ProtocolError("the aggregation has not finished")
        return self._outcome

    # ----------------------------------------------------------------------------------------
    def _require(self, live: Sequence[str], step: int) -> None:
        if len(live) < self.t:
            raise ProtocolError(
                f"only {len(live)} of {len(self.participants)} sites answered the "
                f"{ROUNDS[step]!r} step; the threshold is {self.t}; no result is released")

    def _msg(self, round_no: int, fields: dict[str, bytes]) -> bytes:
        return hub_message(self.aggregation_id, round_no, fields)

    def _on_keys(self, bodies: dict[str, bytes], envelopes: dict[str, bytes]) -> dict[str, bytes]:
        self._require(self.live, ADVERTISE)
        for s, body in bodies.items():
            keys = unpack_map(body, f"keys of site {s!r}")
            self.s_pk[s] = field(keys, "s_pk")
            self.keys[s] = envelopes[s]
        live = pack_names(self.live)
        out = {}
        for u in self.live:
            nb = self.graph[u] & set(self.live)
            out[u] = self._msg(SHARE_KEYS, {"live": live,
                                            "keys": pack_map({v: self.keys[v] for v in nb})})
        return out

    def _on_shares(self, bodies: dict[str, bytes], _: dict[str, bytes]) -> dict[str, bytes]:
        self._require(self.live, SHARE_KEYS)
        u1 = set(self.keys)
        for u, body in bodies.items():
            sealed = unpack_map(body, f"shares of site {u!r}")
            if set(sealed) != self.graph[u] & u1:
                raise ProtocolError(f"site {u!r} sent shares to the wrong set of sites")
            self.sealed[u] = sealed
        self.u2 = list(self.live)
        live = pack_names(self.u2)
        out = {}
        for v in self.u2:
            senders = self.graph[v] & set(self.u2)
            out[v] = self._msg(MASKED_INPUT, {
                "live": live, "shares": pack_map({u: self.sealed[u][v] for u in senders})})
        return out

    def _on_masked(self, bodies: dict[str, bytes], _: dict[str, bytes]) -> dict[str, bytes]:
        for s, body in sorted(bodies.items()):
            reply = unpack_map(body, f"masked input of site {s!r}")
            if field(reply, "status") == b"refused":
                kind = field(reply, "error").decode("utf-8", "replace")
                reason = field(reply, "reason").decode("utf-8", "replace")
                if kind == "BudgetExhausted":
                    raise BudgetExhausted(s, reason)
                if kind == "InvalidInput":
                    raise InvalidInput(f"site {s!r} could not compute its input: {reason}")
                raise PolicyRefused(s, reason)
            raw = field(reply, "vector")
            if len(raw) != 8 * self.layout.size:
                raise ProtocolError(f"site {s!r} sent a masked vector of {len(raw)} bytes, "
                                    f"expected {8 * self.layout.size}")
            self.masked_total += np.frombuffer(raw, dtype="<u8")
        self._require(self.live, MASKED_INPUT)
        self.u3 = list(self.live)
        msg = self._msg(CONSISTENCY, {"live": pack_names(self.u3)})
        return {s: msg for s in self.u3}

    def _on_confirmations(self, bodies: dict[str, bytes],
                          envelopes: dict[str, bytes]) -> dict[str, bytes]:
        expected = pack_names(self.u3)
        for s, body in bodies.items():
            if field(unpack_map(body), "survivors") != expected:
                raise ProtocolError(f"site {s!r} confirmed a different survivor list")
            self.confirmations[s] = envelopes[s]
        self._require(self.live, CONSISTENCY)
        u4 = set(self.live)
        live = pack_names(self.live)
        out = {}
        for u in self.live:
            signers = (self.graph[u] | {u}) & u4
            if len(signers) < self.t_share:
                continue  # this site cannot be convinced; it is treated as dropped
            out[u] = self._msg(UNMASK, {"live": live, "signatures": pack_map(
                {w: self.confirmations[w] for w in signers})})
        self._require(list(out), CONSISTENCY)
        self.live = sorted(out)
        return out

    def _on_unmask(self, bodies: dict[str, bytes], _: dict[str, bytes]) -> None:
        self._require(self.live, UNMASK)
        u3 = set(self.u3)
        shares: dict[str, dict[int, int]] = {}
        for holder, body in bodies.items():
            revealed = unpack_map(body, f"shares revealed by site {holder!r}")
            x = holder_x(self.participants, holder)
            for owner, item_bytes in revealed.items():
                item = unpack_map(item_bytes)
                kind = field(item, "kind").decode()
                if owner not in self.graph[holder] | {holder}:
                    raise ProtocolError(f"site {holder!r} revealed a share of site {owner!r}, "
                                        f"which never shared with it")
                if owner not in self.u2 or kind != ("b" if owner in u3 else "s"):
                    raise ProtocolError(f"site {holder!r} revealed a share of the wrong kind "
                                        f"for site {owner!r}")
                shares.setdefault(owner, {})[x] = shamir.share_from_bytes(field(item, "share"))
        total = self.masked_total.copy()
        for u in self.u3:
            b_seed = self._reconstruct(u, shares, "self-mask seed")
            total -= crypto.mask(self_seed(b_seed, self.digest), self.layout.size)
        for v in sorted(set(self.u2) - u3):
            s_sk = self._reconstruct(v, shares, "mask key")
            if crypto.x25519_public(s_sk) != self.s_pk[v]:
                raise ProtocolError(f"the reconstructed mask key of dropped site {v!r} does not "
                                    f"match the key it signed: a share holder lied")
            s_key = crypto.load_x25519(s_sk)
            for u in sorted(self.graph[v] & u3):
                m = crypto.mask(pairwise_seed(s_key, self.s_pk[u], self.digest, u, v),
                                self.layout.size)
                if pairwise_sign(u, v) > 0:
                    total -= m
                else:
                    total += m
        values = self.layout.decode_sum(total, len(self.u3))
        self._outcome = SumOutcome(values, tuple(self.u3),
                                   tuple(s for s in self.participants if s not in u3),
                                   self.round_trips)
        return None

    def _reconstruct(self, owner: str, shares: dict[str, dict[int, int]], what: str) -> bytes:
        got = shares.get(owner, {})
        if len(got) < self.t_share:
            raise ProtocolError(
                f"cannot recover the {what} of site {owner!r}: only {len(got)} of its share "
                f"holders answered the unmasking step; {self.t_share} are needed")
        return shamir.reconstruct(got, self.t_share)


def run_secure_sum(exchange: Exchange, manifest: FederationManifest, aggregation_id: bytes,
                   payload: bytes, specs: Mapping[str, Statistic],
                   participants: Sequence[str]) -> SumOutcome:
    """Run one aggregation through ``exchange`` (messages by site -> replies by site)."""
    hub = HubAggregation(manifest, aggregation_id, payload, specs, participants)
    messages: dict[str, bytes] | None = hub.start()
    while messages is not None:
        if hub.round_trips >= N_ROUNDS:
            raise ProtocolError("protocol did not finish in the expected number of rounds")
        messages = hub.receive(exchange(messages))
    return hub.result()
