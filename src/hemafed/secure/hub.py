"""The hub side of secure aggregation: state machines that learn only the sum over sites.

:class:`HubSession` sets up a session (one round trip: every participant's signed session keys);
:class:`HubAggregation` runs one aggregation inside it (one round trip if one-shot, else two, or
three after a dropout): ``start()`` gives the first message for every session member, each
``receive(replies)`` takes the sites' replies to the previous messages (a missing site has
dropped out) and gives the next messages, or ``None`` when the sum is ready in ``result()``. :class:`SecureSumSession` drives both through any
transport given as an ``exchange`` function, setting up a session when needed, and
:func:`run_secure_sum` runs a single aggregation in a session of its own.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from hemafed.errors import InvalidInput, ProtocolError
from hemafed.privacy.anchors import Anchor, AnchorStore, MemoryAnchorStore
from hemafed.privacy.refusal import FLAG_SLOTS, Refusal, read_flag_block, reference_of
from hemafed.release import Statistic
from hemafed.secure import crypto, shamir
from hemafed.secure.codec import field, pack_int, pack_map, pack_names, unpack_int, unpack_map
from hemafed.secure.encoding import FixedPointLayout, specs_to_json
from hemafed.secure.graph import neighbour_graph
from hemafed.secure.identity import FederationManifest
from hemafed.secure.protocol import (
    CONSISTENCY,
    MASKED_INPUT,
    ROUND_TRIPS_PER_SUM,
    ROUNDS,
    SETUP,
    UNMASK,
    aggregation_digest,
    holder_x,
    hub_message,
    open_reply,
    pairwise_sign,
    reveals_at_consistency,
    self_seed,
    session_digest,
)

Exchange = Callable[[dict[str, bytes]], dict[str, bytes]]


@dataclass(frozen=True)
class SumOutcome:
    """The unmasked sum and who it covers.

    ``contributors`` are the sites whose inputs are in ``values``; ``dropped`` are participants
    whose inputs are not (they dropped out before sending a masked input, or missed the
    session set-up); ``round_trips`` counts hub -> sites -> hub exchanges, the session set-up
    included when this aggregation paid for it.
    """

    values: dict[str, np.ndarray]
    contributors: tuple[str, ...]
    dropped: tuple[str, ...]
    round_trips: int


def _check_id(value: bytes, what: str) -> None:
    if not 16 <= len(value) <= 64:
        raise InvalidInput(f"{what} must be 16-64 random bytes, got {len(value)}")


class HubSession:
    """A session seen from the hub: the participants' signed session keys and the graph."""

    def __init__(self, manifest: FederationManifest, participants: Sequence[str],
                 session_id: bytes | None = None, graph_seed: bytes | None = None) -> None:
        participants = sorted(participants)
        if len(set(participants)) != len(participants):
            raise InvalidInput("participants must be distinct site ids")
        unknown = [p for p in participants if p not in manifest.sites]
        if unknown:
            raise InvalidInput(f"participants {unknown} are not in manifest {manifest.name!r}")
        if len(participants) < manifest.threshold:
            raise InvalidInput(f"{len(participants)} participants is fewer than the manifest's "
                               f"threshold {manifest.threshold}")
        self.session_id = session_id if session_id is not None else os.urandom(16)
        _check_id(self.session_id, "session_id")
        self.manifest = manifest
        self.participants = participants
        n = len(participants)
        self.graph_seed = graph_seed if graph_seed is not None else os.urandom(32)
        self.graph = neighbour_graph(participants, manifest.degree_for(n), self.graph_seed)
        self.t = manifest.threshold
        self.t_share = manifest.share_threshold_for(n)
        self.digest = session_digest(manifest, self.session_id, participants, self.graph_seed)
        self.keys: dict[str, bytes] = {}           # site -> its signed session-key envelope
        self.relayed: dict[str, set[str]] = {}     # site -> neighbours whose keys it confirmed
        self.started = False
        self.next_seq = 1  # number of the next aggregation in this session

    @property
    def ready(self) -> bool:
        """Whether the session keys have been collected."""
        return bool(self.keys)

    @property
    def members(self) -> list[str]:
        """Participants that advertised session keys (the only ones asked from now on)."""
        return sorted(self.keys)

    def start(self) -> dict[str, bytes]:
        """The set-up message to every participant."""
        if self.started:
            raise ProtocolError("session already started")
        self.started = True
        msg = hub_message(self.session_id, b"", SETUP, {
            "manifest": self.manifest.fingerprint, "participants": pack_names(self.participants),
            "seed": self.graph_seed})
        return {s: msg for s in self.participants}

    def receive(self, replies: Mapping[str, bytes]) -> None:
        """Take the signed session keys; at least ``t`` participants must answer."""
        if not self.started or self.keys:
            raise ProtocolError("receive() called before start() or twice")
        unexpected = sorted(set(replies) - set(self.participants))
        if unexpected:
            raise ProtocolError(f"session keys from sites {unexpected} that were not asked")
        for s, env in replies.items():
            keys = unpack_map(open_reply(self.manifest, env, s, SETUP, self.digest).body,
                              f"session keys of site {s!r}")
            if len(field(keys, "c_pk")) != 32 or len(field(keys, "s_pk")) != 32:
                raise ProtocolError(f"site {s!r} advertised malformed session keys")
        if len(replies) < self.t:
            raise ProtocolError(
                f"only {len(replies)} of {len(self.participants)} sites answered the "
                f"{ROUNDS[SETUP]!r} step; the threshold is {self.t}; no session")
        self.keys = dict(replies)
        self.relayed = {s: set() for s in self.keys}

    def keys_for(self, site: str, live: Sequence[str]) -> dict[str, bytes]:
        """Signed keys of ``site``'s live neighbours it has not confirmed receiving yet."""
        return {v: self.keys[v] for v in sorted(self.graph[site] & set(live))
                if v not in self.relayed[site]}


class HubAggregation:
    """One secure aggregation inside a :class:`HubSession`, seen from the hub."""

    def __init__(self, session: HubSession, aggregation_id: bytes, payload: bytes,
                 specs: Mapping[str, Statistic], quorum: int | None = None,
                 one_shot: bool = False, anchors: AnchorStore | None = None,
                 references: Sequence[str] = ()) -> None:
        if not session.ready:
            raise ProtocolError("the session has no keys yet: run its set-up first")
        _check_id(aggregation_id, "aggregation_id")
        self.quorum = session.t if quorum is None else quorum
        if not session.t <= self.quorum <= len(session.members):
            raise InvalidInput(f"quorum {self.quorum} must be between the threshold {session.t} "
                               f"and the {len(session.members)} members of the session")
        self.session = session
        self.manifest = session.manifest
        self.aggregation_id = aggregation_id
        self.payload = payload
        self.participants = session.participants
        self.graph = session.graph
        self.t, self.t_share = session.t, session.t_share
        self.layout = FixedPointLayout.from_specs(specs, len(self.participants))
        self.specs_json = specs_to_json(dict(self.layout.specs))
        self.size = self.layout.size + FLAG_SLOTS  # the values, then the refusal flag block
        self.references = tuple(references)  # request id of each part: where sites audit it
        if one_shot and not session.manifest.complete_graph(len(session.participants)):
            raise InvalidInput("a one-shot aggregation needs the complete graph (every site "
                               "masks with every other); this session's graph is sparse")
        self.one_shot = one_shot
        self.seq = session.next_seq
        session.next_seq += 1
        self.digest = aggregation_digest(session.digest, aggregation_id, self.seq,
                                         self.specs_json, payload, self.quorum, one_shot)
        self.round = -1
        self.round_trips = 0
        self.live: list[str] = session.members
        self.u2: list[str] = []
        self.u3: list[str] = []
        self.sealed: dict[str, dict[str, bytes]] = {}   # sender -> recipient -> ciphertext
        self.masked_total = np.zeros(self.size, dtype=np.uint64)
        self.confirmations: dict[str, bytes] = {}
        self.reveal_early = False  # sites reveal at the consistency step (two round trips)
        self._sent_keys: dict[str, set[str]] = {}
        self._outcome: SumOutcome | None = None
        self.anchors = anchors

    # ----------------------------------------------------------------------------------------
    def start(self) -> dict[str, bytes]:
        """The request to every session member, with neighbours' keys not yet relayed."""
        if self.round != -1:
            raise ProtocolError("aggregation already started")
        self.round = MASKED_INPUT
        self.u2 = list(self.live)
        live = pack_names(self.u2)
        out = {}
        for u in self.u2:
            fields = {"live": live, "payload": self.payload, "specs": self.specs_json,
                      "quorum": pack_int(self.quorum), "seq": pack_int(self.seq),
                      "one_shot": pack_int(int(self.one_shot))}
            keys = self.session.keys_for(u, self.u2)
            if keys:
                fields["keys"] = pack_map(keys)
                self._sent_keys[u] = set(keys)
            seen = self.anchors.get(u) if self.anchors is not None else None
            if seen is not None:  # the site refuses if its audit log is behind this
                fields["anchor"] = pack_map({"seq": pack_int(seen.seq),
                                             "head": seen.head.encode("ascii")})
            out[u] = self._msg(MASKED_INPUT, fields)
        return out

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
        self.live = sorted(bodies)
        if self.round == MASKED_INPUT:
            nxt = self._on_masked(bodies)
            if nxt is None:  # one-shot: the sum is ready
                return None
        elif self.round == CONSISTENCY and self.reveal_early:
            self._on_unmask(self._confirmed(bodies, {s: replies[s] for s in bodies},
                                            "reveal"), CONSISTENCY)
            return None
        elif self.round == CONSISTENCY:
            nxt = self._on_confirmations(bodies, {s: replies[s] for s in bodies})
        else:
            self._on_unmask(bodies)
            return None
        self.round += 1
        return nxt

    def result(self) -> SumOutcome:
        """The outcome, once ``receive`` has returned ``None``."""
        if self._outcome is None:
            raise ProtocolError("the aggregation has not finished")
        return self._outcome

    # ----------------------------------------------------------------------------------------
    def _require(self, live: Sequence[str], step: int, need: int | None = None) -> None:
        need = self.t if need is None else need
        if len(live) < need:
            what = (f"the threshold is {self.t}" if need == self.t else
                    f"this aggregation needs {need} (its quorum; threshold {self.t})")
            err = ProtocolError(
                f"only {len(live)} of {len(self.participants)} sites answered the "
                f"{ROUNDS[step]!r} step; {what}; no result is released")
            err.step = step  # type: ignore[attr-defined]  # the study runner explains it
            err.survivors = tuple(self.u3 or self.live)  # type: ignore[attr-defined]
            raise err

    def _msg(self, round_no: int, fields: dict[str, bytes]) -> bytes:
        return hub_message(self.session.session_id, self.aggregation_id, round_no, fields)

    def _keep_anchor(self, site: str, reply: dict[str, bytes]) -> None:
        """Record the audit head a site signed; a head behind the last one seen is an error."""
        if self.anchors is None or "audit_seq" not in reply:
            return
        try:
            anchor = Anchor(unpack_int(reply["audit_seq"], "audit_seq"),
                            reply["audit_head"].decode("ascii"))
        except (KeyError, ValueError, UnicodeDecodeError) as exc:
            raise ProtocolError(f"site {site!r} sent a malformed audit head: {exc}") from exc
        seen = self.anchors.get(site)
        why = anchor.behind(seen) if seen is not None else None
        if why is None and seen is not None and anchor.seq > seen.seq \
                and reply.get("audit_at_seen", b"").decode("ascii", "replace") != seen.head:
            why = (f"its audit log no longer holds entry {seen.seq} as the hub saw it: the "
                   f"log was restored or rewritten and has grown since")
        if why is not None:
            raise ProtocolError(f"site {site!r}: {why}")
        self.anchors.put(site, anchor)

    def _on_masked(self, bodies: dict[str, bytes]) -> dict[str, bytes] | None:
        for s, body in sorted(bodies.items()):
            reply = unpack_map(body, f"masked input of site {s!r}")
            # the site verified every key relayed to it (else it would not have answered)
            self.session.relayed[s] |= self._sent_keys.get(s, set())
            self._keep_anchor(s, reply)
            if field(reply, "status") == b"refused":
                try:
                    refusal = Refusal.from_wire(reply)
                except ValueError as exc:
                    raise ProtocolError(f"site {s!r} sent a malformed refusal: {exc}") from exc
                raise refusal.exception(s)
            raw = field(reply, "vector")
            if len(raw) != 8 * self.size:
                raise ProtocolError(f"site {s!r} sent a masked vector of {len(raw)} bytes, "
                                    f"expected {8 * self.size}")
            if not self.one_shot:
                sealed = unpack_map(field(reply, "shares"), f"shares of site {s!r}")
                if set(sealed) != self.graph[s] & set(self.u2):
                    raise ProtocolError(f"site {s!r} sent shares to the wrong set of sites")
                self.sealed[s] = sealed
            self.masked_total += np.frombuffer(raw, dtype="<u8")
        self._require(self.live, MASKED_INPUT, self.quorum)
        if self.one_shot:
            missing = sorted(set(self.u2) - set(self.live))
            if missing:
                raise ProtocolError(
                    f"one-shot aggregation: sites {missing} did not answer, so their pairwise "
                    f"masks stay in the others' vectors and no sum can be recovered; nothing "
                    f"was revealed (repeat it as a recoverable aggregation)")
            values = self._decode(self.masked_total, len(self.u2))
            self._outcome = SumOutcome(values, tuple(self.u2), tuple(
                s for s in self.participants if s not in self.u2), self.round_trips)
            return None
        self.u3 = list(self.live)
        self.reveal_early = reveals_at_consistency(self.manifest, len(self.participants),
                                                   self.u2, self.u3)
        live = pack_names(self.u3)
        out = {}
        for v in self.u3:
            senders = sorted(self.graph[v] & set(self.u3))
            out[v] = self._msg(CONSISTENCY, {
                "live": live, "shares": pack_map({u: self.sealed[u][v] for u in senders})})
        return out

    def _confirmed(self, bodies: dict[str, bytes], envelopes: dict[str, bytes],
                   key: str | None = None) -> dict[str, bytes]:
        """Check every site confirmed the survivor list; return their ``key`` fields."""
        expected = pack_names(self.u3)
        out = {}
        for s, body in bodies.items():
            reply = unpack_map(body, f"confirmation of site {s!r}")
            if field(reply, "survivors") != expected:
                raise ProtocolError(f"site {s!r} confirmed a different survivor list")
            self.confirmations[s] = envelopes[s]
            if key is not None:
                out[s] = field(reply, key, f"confirmation of site {s!r}")
        return out

    def _on_confirmations(self, bodies: dict[str, bytes],
                          envelopes: dict[str, bytes]) -> dict[str, bytes]:
        self._confirmed(bodies, envelopes)
        self._require(self.live, CONSISTENCY)
        u4 = set(self.live)
        live = pack_names(self.live)
        out = {}
        for u in self.live:
            signers = (self.graph[u] | {u}) & u4
            if len(signers) < self.t_share:
                continue  # this site cannot be convinced; it is treated as silent
            out[u] = self._msg(UNMASK, {"live": live, "signatures": pack_map(
                {w: self.confirmations[w] for w in signers})})
        self._require(list(out), CONSISTENCY)
        self.live = sorted(out)
        return out

    def _on_unmask(self, bodies: dict[str, bytes], step: int = UNMASK) -> None:
        self._require(self.live, step)
        u3 = set(self.u3)
        dropped = set(self.u2) - u3
        shares: dict[tuple[str, str], dict[int, int]] = {}  # (owner, "" | peer) -> shares
        for holder, body in bodies.items():
            revealed = unpack_map(body, f"shares revealed by site {holder!r}")
            x = holder_x(self.participants, holder)
            for owner, item_bytes in revealed.items():
                if owner not in u3 or owner not in self.graph[holder] | {holder}:
                    raise ProtocolError(f"site {holder!r} revealed shares of site {owner!r}, "
                                        f"which is not a surviving neighbour of it")
                item = unpack_map(item_bytes, f"shares revealed by site {holder!r}")
                shares.setdefault((owner, ""), {})[x] = shamir.share_from_bytes(
                    field(item, "b"))
                for peer, share in unpack_map(field(item, "s")).items():
                    if peer not in dropped or peer not in self.graph[owner]:
                        raise ProtocolError(f"site {holder!r} revealed a pairwise-seed share of "
                                            f"sites {owner!r} and {peer!r}, which is not owed")
                    shares.setdefault((owner, peer), {})[x] = shamir.share_from_bytes(share)
        total = self.masked_total.copy()
        for u in self.u3:
            b_seed = self._reconstruct(shares, u, "", "self-mask seed")
            total -= crypto.mask(self_seed(b_seed, self.digest), self.size)
            for w in sorted(self.graph[u] & dropped):
                seed = self._reconstruct(shares, u, w, f"pairwise seed with dropped site {w!r}")
                m = crypto.mask(seed, self.size)
                if pairwise_sign(u, w) > 0:
                    total -= m
                else:
                    total += m
        values = self._decode(total, len(self.u3))
        self._outcome = SumOutcome(values, tuple(self.u3),
                                   tuple(s for s in self.participants if s not in u3),
                                   self.round_trips)

    def _decode(self, total: np.ndarray, n_sites: int) -> dict[str, np.ndarray]:
        """The summed values, unless the flag block says some sites refused: then nothing is
        released and the refusal is raised, naming the rule and how many sites, not which."""
        try:
            pooled = read_flag_block(total[self.layout.size:], n_sites)
        except ValueError as exc:
            raise ProtocolError(f"the sites' refusal flags do not add up: {exc}; nothing is "
                                f"released") from exc
        if pooled is not None:
            raise pooled.exception(reference_of(self.references, pooled))
        return self.layout.decode_sum(total[:self.layout.size], n_sites)

    def _reconstruct(self, shares: dict[tuple[str, str], dict[int, int]], owner: str,
                     peer: str, what: str) -> bytes:
        got = shares.get((owner, peer), {})
        if len(got) < self.t_share:
            raise ProtocolError(
                f"cannot recover the {what} of site {owner!r}: only {len(got)} of its share "
                f"holders answered the unmasking step; {self.t_share} are needed")
        return shamir.reconstruct(got, self.t_share)


class SecureSumSession:
    """Secure sums over ``participants`` through ``exchange``, sharing one session's keys.

    The first sum sets the session up (one extra round trip). After an aggregation in which a
    participant was missing, the next sum sets up a fresh session, so that a site that was only
    briefly away is asked again; a protocol failure also starts a fresh session. With
    ``one_shot=True`` (and the complete graph) each sum is a one-shot aggregation: one round trip,
    and a ``ProtocolError`` if any site does not answer (the caller repeats it, e.g. with
    ``one_shot`` switched off).
    """

    def __init__(self, exchange: Exchange, manifest: FederationManifest,
                 participants: Sequence[str], one_shot: bool = False,
                 anchors: AnchorStore | None = None) -> None:
        self.exchange = exchange
        self.anchors: AnchorStore = anchors if anchors is not None else MemoryAnchorStore()
        self.one_shot = one_shot
        self.manifest = manifest
        self.participants = sorted(participants)
        self._session: HubSession | None = None
        self._unbilled_setup = 0  # set-up round trip not yet counted in an outcome
        self.sessions = 0
        self.exchanges = 0  # every round trip made, failed aggregations included

    def _setup(self) -> HubSession:
        session = HubSession(self.manifest, self.participants)
        self._session = None
        self.exchanges += 1
        session.receive(self.exchange(session.start()))
        self._session = session
        self._unbilled_setup = 1
        self.sessions += 1
        return session

    def reset(self) -> None:
        """Drop the current session: the next sum sets up a fresh one over ``participants``."""
        self._session = None

    def members(self) -> list[str]:
        """The sites of the current session (set up now if there is none): who the next
        aggregation asks, e.g. to size DP noise shares before the request is written."""
        session = self._session if self._session is not None else self._setup()
        return session.members

    def secure_sum(self, aggregation_id: bytes, payload: bytes,
                   specs: Mapping[str, Statistic], quorum: int | None = None,
                   references: Sequence[str] = ()) -> SumOutcome:
        """One aggregation; raises what the hub raises (refusals, too few sites).

        ``quorum`` (default: the manifest threshold ``t``) is the least number of sites whose
        inputs the sum must cover; sites refuse to reveal anything for fewer. ``references``
        (the request id of each batch part) name, in a refusal, where the sites audited it.
        """
        FixedPointLayout.from_specs(specs, len(self.participants))  # capacity, before any message
        session = self._session if self._session is not None else self._setup()
        extra, self._unbilled_setup = self._unbilled_setup, 0
        try:
            one_shot = self.one_shot and self.manifest.complete_graph(len(session.participants))
            hub = HubAggregation(session, aggregation_id, payload, specs, quorum, one_shot,
                                 anchors=self.anchors, references=references)
            messages: dict[str, bytes] | None = hub.start()
            while messages is not None:
                if hub.round_trips >= ROUND_TRIPS_PER_SUM:
                    raise ProtocolError("protocol did not finish in the expected number of "
                                        "rounds")
                self.exchanges += 1
                messages = hub.receive(self.exchange(messages))
        except ProtocolError:
            self._session = None
            raise
        outcome = hub.result()
        if outcome.dropped:
            self._session = None
        return dataclasses.replace(outcome, round_trips=outcome.round_trips + extra)


def run_secure_sum(exchange: Exchange, manifest: FederationManifest, aggregation_id: bytes,
                   payload: bytes, specs: Mapping[str, Statistic],
                   participants: Sequence[str]) -> SumOutcome:
    """One aggregation in a session of its own through ``exchange`` (three or four round trips)."""
    return SecureSumSession(exchange, manifest, participants).secure_sum(aggregation_id, payload,
                                                                         specs)
