"""The site side of secure aggregation: one pure step function over external state.

``site_step(message, state, identity, manifest, compute)`` handles one hub message and returns
the site's reply. All protocol state lives in ``state`` (a mutable mapping of bytes, e.g. Flower's
per-node context), so the same function serves Flower, the in-process driver and tests. A site
checks everything it is told: the manifest fingerprint, signatures of its neighbours' keys, the
authenticity of shares, that at least ``t`` sites remain at each step, and, before revealing
anything, that enough sites signed the same survivor list. It reveals, for each peer, the share
of the self-mask seed or of the mask key, never both, and answers each step at most once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, MutableMapping

import numpy as np

from hemafed.errors import BudgetExhausted, HemafedError, InvalidInput, PolicyRefused, ProtocolError
from hemafed.federation.queries import Statistic
from hemafed.secure import crypto, shamir
from hemafed.secure.codec import (
    field,
    pack_int,
    pack_list,
    pack_map,
    pack_names,
    unpack_int,
    unpack_list,
    unpack_map,
    unpack_names,
)
from hemafed.secure.encoding import FixedPointLayout, specs_from_json, specs_to_json
from hemafed.secure.graph import neighbour_graph
from hemafed.secure.identity import FederationManifest, SiteIdentity
from hemafed.secure.protocol import (
    ADVERTISE,
    CONSISTENCY,
    MASKED_INPUT,
    PROTOCOL,
    ROUNDS,
    SHARE_KEYS,
    UNMASK,
    holder_x,
    open_reply,
    pairwise_seed,
    pairwise_sign,
    seal_reply,
    self_seed,
    session_digest,
    share_aad,
    share_key,
)

Compute = Callable[[bytes], tuple[dict[str, np.ndarray], dict[str, Statistic]]]

CURRENT = "hemafed.secagg.current"
SEEN = "hemafed.secagg.seen"
_SEEN_KEPT = 10_000


def site_step(message: bytes, state: MutableMapping[str, bytes], identity: SiteIdentity,
              manifest: FederationManifest, compute: Compute) -> bytes:
    """Handle one hub message of a secure aggregation; return the signed reply.

    ``compute(payload)`` is called once, at the masked-input step, and returns the site's values
    and their declared statistics. If it raises a ``HemafedError`` (a policy refusal, an
    exhausted budget, invalid input), the reply is a signed refusal carrying the reason. A forged,
    replayed, tampered or out-of-order message raises ``ProtocolError`` and the site answers
    nothing.
    """
    msg = unpack_map(message, "hub message")
    if field(msg, "proto") != PROTOCOL:
        raise ProtocolError(f"site {identity.site_id!r}: unknown protocol "
                            f"{field(msg, 'proto')!r}")
    if identity.site_id not in manifest.sites:
        raise InvalidInput(f"site {identity.site_id!r} is not in manifest {manifest.name!r}")
    if manifest.sites[identity.site_id] != identity.public_bytes:
        raise InvalidInput(f"site {identity.site_id!r}: identity key does not match the one "
                           f"pinned in manifest {manifest.name!r}")
    round_no = unpack_int(field(msg, "round"), "round")
    if round_no == ADVERTISE:
        return _advertise(msg, state, identity, manifest)
    if CURRENT not in state:
        raise ProtocolError(f"site {identity.site_id!r}: no aggregation in progress for a "
                            f"{_round_name(round_no)} message")
    cur = unpack_map(state[CURRENT], "site state")
    if field(msg, "agg") != cur["agg"]:
        raise ProtocolError(f"site {identity.site_id!r}: message belongs to another aggregation "
                            f"(replayed or stale); rejected")
    expected = unpack_int(cur["next"])
    if round_no != expected:
        raise ProtocolError(f"site {identity.site_id!r}: got a {_round_name(round_no)} message "
                            f"but expected {_round_name(expected)}; each step is answered once")
    ctx = _Context(cur, identity, manifest)
    if round_no == SHARE_KEYS:
        reply = ctx.share_keys(msg)
    elif round_no == MASKED_INPUT:
        reply = ctx.masked_input(msg, compute)
    elif round_no == CONSISTENCY:
        reply = ctx.consistency(msg)
    else:
        reply = ctx.unmask(msg)
    if ctx.finished:
        del state[CURRENT]
    else:
        cur["next"] = pack_int(round_no + 1)
        state[CURRENT] = pack_map(cur)
    return reply


def _round_name(round_no: int) -> str:
    return f"'{ROUNDS[round_no]}'" if 0 <= round_no < len(ROUNDS) else f"round-{round_no}"


def _advertise(msg: dict[str, bytes], state: MutableMapping[str, bytes],
               identity: SiteIdentity, manifest: FederationManifest) -> bytes:
    me = identity.site_id
    if field(msg, "manifest") != manifest.fingerprint:
        raise ProtocolError(f"site {me!r}: the hub uses another federation manifest than ours "
                            f"({manifest.name!r}); compare manifest fingerprints")
    agg = field(msg, "agg")
    if not 16 <= len(agg) <= 64:
        raise ProtocolError(f"site {me!r}: aggregation id must be 16-64 bytes")
    participants = unpack_names(field(msg, "participants"))
    if me not in participants:
        raise ProtocolError(f"site {me!r}: asked to join an aggregation it is not a participant of")
    unknown = sorted(set(participants) - set(manifest.sites))
    if unknown or len(set(participants)) != len(participants):
        raise ProtocolError(f"site {me!r}: participants {unknown} are not in the manifest or "
                            f"are repeated")
    if len(participants) < manifest.threshold:
        raise ProtocolError(f"site {me!r}: only {len(participants)} participants; the threshold "
                            f"is {manifest.threshold}")
    specs_json = field(msg, "specs")
    FixedPointLayout.from_specs(specs_from_json(specs_json), len(participants))
    seen = unpack_list(state[SEEN]) if SEEN in state else []
    tag = crypto.sha256(b"aggregation id", agg)
    if tag in seen:
        raise ProtocolError(f"site {me!r}: aggregation id was already used; a replayed "
                            f"aggregation is rejected")
    state[SEEN] = pack_list([*seen[-(_SEEN_KEPT - 1):], tag])
    payload, seed = field(msg, "payload"), field(msg, "seed")
    digest = session_digest(manifest, agg, participants, specs_json, payload, seed)
    c_sk, c_pk = crypto.new_x25519()
    s_sk, s_pk = crypto.new_x25519()
    state[CURRENT] = pack_map({
        "agg": agg, "digest": digest, "next": pack_int(SHARE_KEYS),
        "participants": pack_names(participants), "seed": seed, "payload": payload,
        "specs": specs_json, "c_sk": c_sk, "s_sk": s_sk})
    return seal_reply(identity, ADVERTISE, digest, pack_map({"c_pk": c_pk, "s_pk": s_pk}))


class _Context:
    """One step of one aggregation at one site, over the decoded state ``cur``."""

    def __init__(self, cur: dict[str, bytes], identity: SiteIdentity,
                 manifest: FederationManifest) -> None:
        self.cur = cur
        self.identity = identity
        self.me = identity.site_id
        self.manifest = manifest
        self.digest = cur["digest"]
        self.participants = unpack_names(cur["participants"])
        n = len(self.participants)
        self.graph = neighbour_graph(self.participants, manifest.degree_for(n), cur["seed"])
        self.neighbours = self.graph[self.me]
        self.t = manifest.threshold
        self.t_share = manifest.share_threshold_for(n)
        self.finished = False
        self.c_sk = crypto.load_x25519(cur["c_sk"])
        self.s_sk = crypto.load_x25519(cur["s_sk"])

    def _error(self, text: str) -> ProtocolError:
        return ProtocolError(f"site {self.me!r}: {text}")

    def _live(self, msg: dict[str, bytes], step: int) -> list[str]:
        live = unpack_names(field(msg, "live"))
        if len(set(live)) != len(live) or not set(live) <= set(self.participants):
            raise self._error(f"the hub's live list at the {_round_name(step)} step is malformed")
        if self.me not in live:
            raise self._error(f"the hub's live list at the {_round_name(step)} step omits this "
                              f"site")
        if len(live) < self.t:
            raise self._error(f"only {len(live)} of {len(self.participants)} sites remain at the "
                              f"{_round_name(step)} step; the threshold is {self.t}; "
                              f"aggregation abandoned")
        return live

    def share_keys(self, msg: dict[str, bytes]) -> bytes:
        live = self._live(msg, SHARE_KEYS)
        live_nb = sorted(self.neighbours & set(live))
        keys = unpack_map(field(msg, "keys"), "neighbour keys")
        if set(keys) != set(live_nb):
            raise self._error("the hub sent keys of sites other than this site's live neighbours")
        peers: dict[str, bytes] = {}
        for v in live_nb:
            body = unpack_map(open_reply(self.manifest, keys[v], v, ADVERTISE, self.digest).body,
                              f"keys of site {v!r}")
            c_pk, s_pk = field(body, "c_pk"), field(body, "s_pk")
            if len(c_pk) != 32 or len(s_pk) != 32:
                raise self._error(f"site {v!r} advertised malformed public keys")
            peers[v] = pack_map({"c_pk": c_pk, "s_pk": s_pk})
        holders = [*live_nb, self.me]
        if len(holders) < self.t_share:
            raise self._error(f"only {len(holders) - 1} neighbours are live; "
                              f"{self.t_share - 1} are needed to share secrets")
        b_seed = os.urandom(shamir.SECRET_BYTES)
        xs = {h: holder_x(self.participants, h) for h in holders}
        b_shares = shamir.split(b_seed, list(xs.values()), self.t_share)
        s_shares = shamir.split(self.cur["s_sk"], list(xs.values()), self.t_share)
        out: dict[str, bytes] = {}
        for v in live_nb:
            bundle = pack_map({"b": shamir.share_to_bytes(b_shares[xs[v]]),
                               "s": shamir.share_to_bytes(s_shares[xs[v]])})
            c_pk = unpack_map(peers[v])["c_pk"]
            key = share_key(self.c_sk, c_pk, self.digest, self.me, v)
            out[v] = crypto.seal(key, bundle, share_aad(self.digest, self.me, v))
        self.cur.update({
            "b": b_seed, "peers": pack_map(peers),
            "held": pack_map({self.me: pack_map({
                "b": shamir.share_to_bytes(b_shares[xs[self.me]]),
                "s": shamir.share_to_bytes(s_shares[xs[self.me]])})})})
        return seal_reply(self.identity, SHARE_KEYS, self.digest, pack_map(out))

    def masked_input(self, msg: dict[str, bytes], compute: Compute) -> bytes:
        live = self._live(msg, MASKED_INPUT)
        peers = unpack_map(self.cur["peers"])
        senders = sorted(self.neighbours & set(live))
        if not set(senders) <= set(peers):
            raise self._error("the hub lists live neighbours that never advertised keys")
        sealed = unpack_map(field(msg, "shares"), "shares")
        if set(sealed) != set(senders):
            raise self._error("the shares forwarded by the hub do not match its live list")
        held = unpack_map(self.cur["held"])
        for u in senders:
            key = share_key(self.c_sk, unpack_map(peers[u])["c_pk"], self.digest, u,
                            self.me)
            bundle = unpack_map(crypto.open_sealed(key, sealed[u],
                                                   share_aad(self.digest, u, self.me),
                                                   f"site {self.me!r}: shares from site {u!r}"))
            shamir.share_from_bytes(field(bundle, "b"))
            shamir.share_from_bytes(field(bundle, "s"))
            held[u] = pack_map({"b": bundle["b"], "s": bundle["s"]})
        self.cur["held"] = pack_map(held)
        self.cur["u2"] = pack_names(live)
        specs_json = self.cur["specs"]
        try:
            layout = FixedPointLayout.from_specs(specs_from_json(specs_json),
                                                 len(self.participants))
            values, specs = compute(self.cur["payload"])
            if specs_to_json(specs) != specs_json:
                raise InvalidInput(f"site {self.me!r}: the statistics it declares differ from "
                                   f"those the hub asked for; check that site and hub run the "
                                   f"same query version")
            encoded = layout.encode(values, where=f"site {self.me!r}")
        except HemafedError as exc:
            self.finished = True
            return seal_reply(self.identity, MASKED_INPUT, self.digest, _refusal(exc))
        y = encoded + crypto.mask(self_seed(self.cur["b"], self.digest), layout.size)
        for v in senders:
            seed = pairwise_seed(self.s_sk, unpack_map(peers[v])["s_pk"], self.digest,
                                 self.me, v)
            if pairwise_sign(self.me, v) > 0:
                y += crypto.mask(seed, layout.size)
            else:
                y -= crypto.mask(seed, layout.size)
        body = pack_map({"status": b"ok", "vector": y.astype("<u8").tobytes()})
        return seal_reply(self.identity, MASKED_INPUT, self.digest, body)

    def consistency(self, msg: dict[str, bytes]) -> bytes:
        survivors = self._live(msg, CONSISTENCY)
        if not set(survivors) <= set(unpack_names(self.cur["u2"])):
            raise self._error("the hub's survivor list names sites that never shared keys")
        self.cur["u3"] = pack_names(sorted(survivors))
        return seal_reply(self.identity, CONSISTENCY, self.digest,
                          pack_map({"survivors": self.cur["u3"]}))

    def unmask(self, msg: dict[str, bytes]) -> bytes:
        confirmed = self._live(msg, UNMASK)
        survivors = set(unpack_names(self.cur["u3"]))
        if not set(confirmed) <= survivors:
            raise self._error("the hub's unmasking list names sites outside the survivor list")
        signatures = unpack_map(field(msg, "signatures"), "survivor-list signatures")
        allowed = self.neighbours | {self.me}
        for w, envelope in signatures.items():
            if w not in allowed:
                raise self._error(f"the hub forwarded a survivor-list signature of non-neighbour "
                                  f"{w!r}")
            body = unpack_map(open_reply(self.manifest, envelope, w, CONSISTENCY,
                                         self.digest).body)
            if field(body, "survivors") != self.cur["u3"]:
                raise self._error(f"site {w!r} signed a different survivor list: the hub "
                                  f"showed sites different lists; nothing is revealed")
        if len(signatures) < self.t_share:
            raise self._error(f"only {len(signatures)} sites confirmed the survivor list; "
                              f"{self.t_share} are needed before revealing shares")
        held = unpack_map(self.cur["held"])
        u2 = set(unpack_names(self.cur["u2"]))
        out: dict[str, bytes] = {}
        for w, bundle_bytes in held.items():
            if w not in u2:
                continue
            bundle = unpack_map(bundle_bytes)
            # Reveal b_w for a survivor, s_w for a dropped site: never both for the same peer.
            kind = "b" if w in survivors else "s"
            out[w] = pack_map({"kind": kind.encode(), "share": bundle[kind]})
        self.finished = True
        return seal_reply(self.identity, UNMASK, self.digest, pack_map(out))


def _refusal(exc: HemafedError) -> bytes:
    if isinstance(exc, BudgetExhausted):
        kind, reason = "BudgetExhausted", exc.reason
    elif isinstance(exc, PolicyRefused):
        kind, reason = "PolicyRefused", exc.reason
    elif isinstance(exc, InvalidInput):
        kind, reason = "InvalidInput", str(exc)
    else:
        kind, reason = "PolicyRefused", f"{type(exc).__name__}: {exc}"
    return pack_map({"status": b"refused", "error": kind.encode(),
                     "reason": reason.encode("utf-8")})
