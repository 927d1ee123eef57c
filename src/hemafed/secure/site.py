"""The site side of secure aggregation: one pure step function over external state.

``site_step(message, state, identity, manifest, compute)`` handles one hub message and returns
the site's reply. All protocol state lives in ``state`` (a mutable mapping of bytes, e.g. Flower's
per-node context), so the same function serves Flower, the in-process driver and tests: the
session (its private keys and the verified, agreed keys of its neighbours) and the aggregation in
progress. A site checks everything it is told: the manifest fingerprint, signatures of its
neighbours' keys, the authenticity of shares, that at least the aggregation's quorum (``>= t``)
of sites remain at each step, and, before revealing pairwise seeds, that enough sites signed the
same survivor list. It reveals, for each
survivor, the shares of its self-mask seed and of its pairwise seeds with the sites that dropped
(never anything that unmasks a survivor's input alone), and answers each step at most once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, MutableMapping

import numpy as np

from hemafed.errors import InvalidInput, ProtocolError
from hemafed.privacy.refusal import (
    VISIBLE_CODES,
    Refusal,
    flag_block,
    random_values,
    refusal_of,
)
from hemafed.release import Statistic
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
    CONSISTENCY,
    MASKED_INPUT,
    PROTOCOL,
    ROUNDS,
    SETUP,
    UNMASK,
    aggregation_digest,
    holder_x,
    open_reply,
    pairwise_seed,
    pairwise_sign,
    reveals_at_consistency,
    seal_reply,
    self_seed,
    session_digest,
    share_aad,
    share_key,
)

Compute = Callable[[bytes, int], tuple[dict[str, np.ndarray], dict[str, Statistic]]]
"""``compute(payload, quorum)``: the site's values and declarations for one request. ``quorum``
is the least number of sites whose inputs any sum released from this aggregation covers (the
site enforces it before revealing anything), for example to size a DP noise share."""

log = logging.getLogger(__name__)

SESSION = "hemafed.secagg.session"
CURRENT = "hemafed.secagg.current"
SEEN = "hemafed.secagg.seen"
_SEEN_KEPT = 10_000


def site_step(message: bytes, state: MutableMapping[str, bytes], identity: SiteIdentity,
              manifest: FederationManifest, compute: Compute) -> bytes:
    """Handle one hub message of a secure aggregation; return the signed reply.

    ``compute(payload, quorum)`` is called once per aggregation, at the masked-input step, and
    returns the site's values and their declared statistics. If it raises anything (a policy
    refusal, an exhausted budget, invalid input, any other error), the site still follows the
    whole protocol: its masked vector carries uniformly random elements in place of its values
    and, in the flag block, the fixed code and name of the
    :class:`~hemafed.privacy.refusal.Refusal` that the site node attached (a bare
    ``internal_error`` otherwise), never the exception's text; the hub learns from the sum how
    many sites refused and under which rule, not which ones. Only a refusal under
    :data:`~hemafed.privacy.refusal.VISIBLE_CODES` (or of the hub's own malformed declarations)
    is a signed refusal of the site's own. A forged, replayed, tampered or out-of-order message
    raises ``ProtocolError`` and the site answers nothing.
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
    if round_no == SETUP:
        return _setup(msg, state, identity, manifest)
    if SESSION not in state or field(msg, "session") != unpack_map(state[SESSION])["sid"]:
        raise ProtocolError(f"site {identity.site_id!r}: a {_round_name(round_no)} message for "
                            f"a session this site does not hold (stale, replayed, or the site "
                            f"restarted); the hub must set up a new session")
    session = _Session(unpack_map(state[SESSION]), identity, manifest)
    if round_no == MASKED_INPUT:
        _remember(state, identity.site_id, b"aggregation id", field(msg, "agg"))
        state.pop(CURRENT, None)  # a new aggregation ends any unfinished one
        reply, cur = session.masked_input(msg, compute)
        state[SESSION] = pack_map(session.data)
        if cur is not None:
            state[CURRENT] = pack_map(cur)
        return reply
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
    if round_no == CONSISTENCY:
        reply, revealed = session.consistency(msg, cur, compute)
        if revealed:  # the aggregation is over at this site
            del state[CURRENT]
        else:
            cur["next"] = pack_int(UNMASK)
            state[CURRENT] = pack_map(cur)
    else:
        reply = session.unmask(msg, cur)
        del state[CURRENT]
    return reply


def _round_name(round_no: int) -> str:
    return f"'{ROUNDS[round_no]}'" if 0 <= round_no < len(ROUNDS) else f"round-{round_no}"


def _remember(state: MutableMapping[str, bytes], me: str, kind: bytes, value: bytes) -> None:
    """Refuse an id used before (sessions and aggregations are never replayed)."""
    if not 16 <= len(value) <= 64:
        raise ProtocolError(f"site {me!r}: {kind.decode()} must be 16-64 bytes")
    seen = unpack_list(state[SEEN]) if SEEN in state else []
    tag = crypto.sha256(kind, value)
    if tag in seen:
        raise ProtocolError(f"site {me!r}: {kind.decode()} was already used; a replayed "
                            f"{kind.decode().split()[0]} is rejected")
    state[SEEN] = pack_list([*seen[-(_SEEN_KEPT - 1):], tag])


def _setup(msg: dict[str, bytes], state: MutableMapping[str, bytes],
           identity: SiteIdentity, manifest: FederationManifest) -> bytes:
    me = identity.site_id
    if field(msg, "manifest") != manifest.fingerprint:
        raise ProtocolError(f"site {me!r}: the hub uses another federation manifest than ours "
                            f"({manifest.name!r}); compare manifest fingerprints")
    sid = field(msg, "session")
    participants = unpack_names(field(msg, "participants"))
    if me not in participants:
        raise ProtocolError(f"site {me!r}: asked to join a session it is not a participant of")
    unknown = sorted(set(participants) - set(manifest.sites))
    if unknown or len(set(participants)) != len(participants):
        raise ProtocolError(f"site {me!r}: participants {unknown} are not in the manifest or "
                            f"are repeated")
    if len(participants) < manifest.threshold:
        raise ProtocolError(f"site {me!r}: only {len(participants)} participants; the threshold "
                            f"is {manifest.threshold}")
    _remember(state, me, b"session id", sid)
    seed = field(msg, "seed")
    digest = session_digest(manifest, sid, participants, seed)
    c_sk, c_pk = crypto.new_x25519()
    s_sk, s_pk = crypto.new_x25519()
    state.pop(CURRENT, None)
    state[SESSION] = pack_map({
        "sid": sid, "digest": digest, "participants": pack_names(participants), "seed": seed,
        "c_sk": c_sk, "s_sk": s_sk, "peers": pack_map({})})
    return seal_reply(identity, SETUP, digest, pack_map({"c_pk": c_pk, "s_pk": s_pk}))


class _Session:
    """A site's session: its keys, its neighbours and their agreed secrets, over ``data``."""

    def __init__(self, data: dict[str, bytes], identity: SiteIdentity,
                 manifest: FederationManifest) -> None:
        self.data = data
        self.identity = identity
        self.me = identity.site_id
        self.manifest = manifest
        self.participants = unpack_names(data["participants"])
        n = len(self.participants)
        self.neighbours = neighbour_graph(self.participants, manifest.degree_for(n),
                                          data["seed"])[self.me]
        self.t = manifest.threshold
        self.t_share = manifest.share_threshold_for(n)
        self.peers = {v: unpack_map(b) for v, b in unpack_map(data["peers"]).items()}

    def _error(self, text: str) -> ProtocolError:
        return ProtocolError(f"site {self.me!r}: {text}")

    def _live(self, msg: dict[str, bytes], step: int, within: list[str],
              quorum: int) -> list[str]:
        live = unpack_names(field(msg, "live"))
        if len(set(live)) != len(live) or not set(live) <= set(within):
            raise self._error(f"the hub's live list at the {_round_name(step)} step is malformed")
        if self.me not in live:
            raise self._error(f"the hub's live list at the {_round_name(step)} step omits this "
                              f"site")
        if len(live) < quorum:
            raise self._error(f"only {len(live)} of {len(self.participants)} sites remain at the "
                              f"{_round_name(step)} step; this aggregation needs {quorum} "
                              f"(threshold {self.t}); aggregation abandoned, nothing revealed")
        return live

    def _learn_keys(self, keys: dict[str, bytes]) -> None:
        """Verify neighbours' signed session keys and keep the agreed secrets."""
        c_sk = crypto.load_x25519(self.data["c_sk"])
        s_sk = crypto.load_x25519(self.data["s_sk"])
        for v, envelope in sorted(keys.items()):
            if v not in self.neighbours:
                raise self._error(f"the hub sent the keys of non-neighbour {v!r}")
            body = unpack_map(open_reply(self.manifest, envelope, v, SETUP,
                                         self.data["digest"]).body, f"keys of site {v!r}")
            c_pk, s_pk = field(body, "c_pk"), field(body, "s_pk")
            if len(c_pk) != 32 or len(s_pk) != 32:
                raise self._error(f"site {v!r} advertised malformed public keys")
            self.peers[v] = {"c": crypto.agree(c_sk, c_pk), "s": crypto.agree(s_sk, s_pk)}
        self.data["peers"] = pack_map({v: pack_map(p) for v, p in self.peers.items()})

    def masked_input(self, msg: dict[str, bytes], compute: Compute
                     ) -> tuple[bytes, dict[str, bytes] | None]:
        """Reply with the masked input and the sealed self-mask shares; return the new state."""
        agg = field(msg, "agg")
        specs_json, payload = field(msg, "specs"), field(msg, "payload")
        quorum = unpack_int(field(msg, "quorum"), "quorum")
        if quorum < self.t:
            raise self._error(f"the hub asked for a quorum of {quorum}, below the manifest's "
                              f"threshold {self.t}")
        seq = unpack_int(field(msg, "seq"), "seq")
        last = unpack_int(self.data["last_seq"]) if "last_seq" in self.data else 0
        if seq <= last:
            raise self._error(f"aggregation number {seq} of this session is not after the last "
                              f"one answered ({last}): replayed or stale; rejected")
        one_shot = unpack_int(field(msg, "one_shot"), "one_shot")
        if one_shot not in (0, 1):
            raise self._error(f"the hub's one_shot flag must be 0 or 1, got {one_shot}")
        if one_shot and not self.manifest.complete_graph(len(self.participants)):
            raise self._error("a one-shot aggregation needs every site to mask with every other "
                              "(the complete graph); this session uses a sparse graph")
        digest = aggregation_digest(self.data["digest"], agg, seq, specs_json, payload, quorum,
                                    bool(one_shot))
        live = self._live(msg, MASKED_INPUT, self.participants, quorum)
        if "keys" in msg:
            self._learn_keys(unpack_map(field(msg, "keys"), "neighbour keys"))
        # from here on this number is used: masks of a later message must differ
        self.data["last_seq"] = pack_int(seq)
        live_nb = sorted(self.neighbours & set(live))
        unknown = [v for v in live_nb if v not in self.peers]
        if unknown:
            raise self._error(f"the hub lists live neighbours {unknown} whose session keys it "
                              f"never relayed")
        holders = [*live_nb, self.me]
        if len(holders) < self.t_share:
            raise self._error(f"only {len(holders) - 1} neighbours are live; "
                              f"{self.t_share - 1} are needed to share secrets")
        seen_seq: int | None = None
        seen_head = ""
        if "anchor" in msg:
            seen = unpack_map(field(msg, "anchor"), "anchor")
            seen_seq = unpack_int(field(seen, "seq"), "anchor seq")
            seen_head = field(seen, "head").decode("ascii", "replace")
        try:
            layout = FixedPointLayout.from_specs(specs_from_json(specs_json),
                                                 len(self.participants))
        except InvalidInput as exc:  # the hub's own declarations: nothing of this site's data
            exc.refusal = Refusal("invalid_parameter", "specs")  # type: ignore[attr-defined]
            return self._visible_refusal(exc, compute, payload, digest, seen_seq), None
        refusal: Refusal | None = None
        part = 0
        try:
            encoded = self._encoded(layout, specs_json, compute, payload, quorum, live,
                                    bool(one_shot), seen_seq, seen_head)
        except Exception as raised:  # any failure is a refusal; only its fixed code leaves
            failure = _audited(raised, compute, payload)
            log.info("site %s: refused aggregation: %s", self.me, failure)
            refusal = refusal_of(failure)
            if refusal.code in VISIBLE_CODES:
                return self._visible_refusal(failure, compute, payload, digest, seen_seq), None
            # the refusal travels in the flag block of the sum; in place of its values the site
            # sends uniformly random ring elements, so the unmasked sum is uniformly random
            encoded = random_values(layout.size)
            part = _refused_part(failure)
        block = flag_block(refusal, part)
        encoded = np.concatenate([encoded, block])
        size = encoded.size
        seeds = {v: pairwise_seed(self.peers[v]["s"], digest, self.me, v) for v in live_nb}
        if one_shot:
            # pairwise masks only: they cancel in the sum over everyone asked, and nothing is
            # ever revealed for this aggregation (it ends here at this site)
            y = encoded + self._pairwise_masks(seeds, size)
            body = pack_map({"status": b"ok", "vector": y.astype("<u8").tobytes(),
                             **_audit_head(compute, seen_seq)})
            return seal_reply(self.identity, MASKED_INPUT, digest, body), None
        b_seed = os.urandom(shamir.SECRET_BYTES)
        xs = {h: holder_x(self.participants, h) for h in holders}
        # Shamir-share the self-mask seed and this aggregation's pairwise seeds, so that the
        # masks can be removed even if this site drops after sending its input.
        b_shares = shamir.split(b_seed, list(xs.values()), self.t_share)
        s_shares = {v: shamir.split(seeds[v], list(xs.values()), self.t_share) for v in live_nb}

        def bundle(h: str) -> bytes:
            return pack_map({"b": shamir.share_to_bytes(b_shares[xs[h]]), "s": pack_map(
                {v: shamir.share_to_bytes(s_shares[v][xs[h]]) for v in live_nb})})

        sealed = {v: crypto.seal(share_key(self.peers[v]["c"], digest, self.me, v), bundle(v),
                                 share_aad(digest, self.me, v))
                  for v in live_nb}
        y = encoded + crypto.mask(self_seed(b_seed, digest), size)
        y += self._pairwise_masks(seeds, size)
        body = pack_map({"status": b"ok", "vector": y.astype("<u8").tobytes(),
                         "shares": pack_map(sealed), **_audit_head(compute, seen_seq)})
        cur = {"agg": agg, "digest": digest, "next": pack_int(CONSISTENCY),
               "u2": pack_names(live), "quorum": pack_int(quorum), "payload": payload,
               "held": pack_map({self.me: bundle(self.me)})}
        return seal_reply(self.identity, MASKED_INPUT, digest, body), cur

    def _encoded(self, layout: FixedPointLayout, specs_json: bytes, compute: Compute,
                 payload: bytes, quorum: int, live: list[str], one_shot: bool,
                 seen_seq: int | None, seen_head: str) -> np.ndarray:
        """This site's encoded values for the request (raises whatever refuses it)."""
        check_anchor = getattr(compute, "check_anchor", None)
        if seen_seq is not None and callable(check_anchor):
            check_anchor(payload, seen_seq, seen_head)
        guard = getattr(compute, "guard_participants", None)
        if one_shot and callable(guard):  # released over exactly this live list
            guard(payload, live, True, "one-shot")
        values, specs = compute(payload, quorum)
        if specs_to_json(specs) != specs_json:
            mismatch = InvalidInput(f"site {self.me!r}: the statistics it declares differ "
                                    f"from those the hub asked for; check that site and hub "
                                    f"run the same query version")
            mismatch.refusal = Refusal("invalid_parameter", "specs")  # type: ignore[attr-defined]
            raise mismatch
        return layout.encode(values, where=f"site {self.me!r}")

    def _visible_refusal(self, exc: BaseException, compute: Compute, payload: bytes,
                         digest: bytes, seen_seq: int | None) -> bytes:
        """A signed refusal of this site's own (only for :data:`VISIBLE_CODES` and the hub's
        malformed declarations: nothing computed from patient data)."""
        exc = _audited(exc, compute, payload)
        refused = {**refusal_of(exc).to_wire(), **_audit_head(compute, seen_seq)}
        return seal_reply(self.identity, MASKED_INPUT, digest, pack_map(refused))

    def _pairwise_masks(self, seeds: dict[str, bytes], size: int) -> np.ndarray:
        """Sum of this site's signed pairwise masks (mod 2**64)."""
        total = np.zeros(size, dtype=np.uint64)
        for v, seed in seeds.items():
            m = crypto.mask(seed, size)
            if pairwise_sign(self.me, v) > 0:
                total += m
            else:
                total -= m
        return total

    def consistency(self, msg: dict[str, bytes], cur: dict[str, bytes],
                    compute: Compute | None = None) -> tuple[bytes, bool]:
        """Keep the shares from the survivors; sign the survivor list (and reveal, when safe).

        Returns the reply and whether it revealed the shares (the aggregation is then over here).
        """
        digest = cur["digest"]
        asked = unpack_names(cur["u2"])
        survivors = self._live(msg, CONSISTENCY, asked, unpack_int(cur["quorum"]))
        senders = sorted(self.neighbours & set(survivors))
        sealed = unpack_map(field(msg, "shares"), "shares")
        if set(sealed) != set(senders):
            raise self._error("the shares forwarded by the hub do not match its survivor list")
        held = unpack_map(cur["held"])
        for u in senders:
            data = crypto.open_sealed(share_key(self.peers[u]["c"], digest, u, self.me),
                                      sealed[u], share_aad(digest, u, self.me),
                                      f"site {self.me!r}: shares from site {u!r}")
            bundle = unpack_map(data, f"shares from site {u!r}")
            shamir.share_from_bytes(field(bundle, "b"))
            for share in unpack_map(field(bundle, "s")).values():
                shamir.share_from_bytes(share)
            held[u] = data
        cur["held"] = pack_map(held)
        cur["u3"] = pack_names(sorted(survivors))
        guard = getattr(compute, "guard_participants", None)
        if callable(guard) and "payload" in cur:
            # the sum is released over the survivors this site signs: refuse another set
            try:
                guard(cur["payload"], sorted(survivors), False, "recoverable")
            except Exception as exc:
                raise self._error(f"refused to confirm the survivor list: "
                                  f"{refusal_of(exc).reason}; nothing is revealed") from exc
        body = {"survivors": cur["u3"]}
        reveal = reveals_at_consistency(self.manifest, len(self.participants), asked, survivors)
        if reveal:
            # semi-honest hub, or nobody dropped: only self-mask shares are revealed
            body["reveal"] = self._reveal(cur)
        return seal_reply(self.identity, CONSISTENCY, digest, pack_map(body)), reveal

    def unmask(self, msg: dict[str, bytes], cur: dict[str, bytes]) -> bytes:
        """Reveal the shares that remove the survivors' self masks and masks with dropped sites."""
        digest = cur["digest"]
        survivors = unpack_names(cur["u3"])
        # what is revealed depends only on the stored survivor list, already checked against the
        # quorum; the live list here only needs enough share holders
        self._live(msg, UNMASK, survivors, self.t)
        signatures = unpack_map(field(msg, "signatures"), "survivor-list signatures")
        allowed = self.neighbours | {self.me}
        for w, envelope in signatures.items():
            if w not in allowed:
                raise self._error(f"the hub forwarded a survivor-list signature of non-neighbour "
                                  f"{w!r}")
            body = unpack_map(open_reply(self.manifest, envelope, w, CONSISTENCY, digest).body)
            if field(body, "survivors") != cur["u3"]:
                raise self._error(f"site {w!r} signed a different survivor list: the hub "
                                  f"showed sites different lists; nothing is revealed")
        if len(signatures) < self.t_share:
            raise self._error(f"only {len(signatures)} sites confirmed the survivor list; "
                              f"{self.t_share} are needed before revealing shares")
        return seal_reply(self.identity, UNMASK, digest, self._reveal(cur))

    def _reveal(self, cur: dict[str, bytes]) -> bytes:
        """The shares this site reveals once the survivor list is settled.

        Bundles are held only from survivors. For each, the share of its self-mask seed and the
        shares of its pairwise seeds with the sites that dropped: the masks of a survivor with
        other survivors are never revealed, nor anything of a dropped site.
        """
        gone = set(unpack_names(cur["u2"])) - set(unpack_names(cur["u3"]))
        out: dict[str, bytes] = {}
        for u, data in unpack_map(cur["held"]).items():
            bundle = unpack_map(data)
            seeds = {w: v for w, v in unpack_map(bundle["s"]).items() if w in gone}
            out[u] = pack_map({"b": bundle["b"], "s": pack_map(seeds)})
        return pack_map(out)


def _audited(exc: BaseException, compute: Compute, payload: bytes) -> BaseException:
    """``exc`` with an audited refusal: one the site node did not audit yet (it happened outside
    the node) is audited by the compute's owner, when it can (the site runtime does)."""
    if refusal_of(exc).audit_ref or getattr(exc, "refusal_audited", False):
        return exc
    exc.refusal = Refusal(  # type: ignore[attr-defined]
        "data_do_not_fit" if "outside its declared bounds" in str(exc)
        else refusal_of(exc).code, refusal_of(exc).name)
    report = getattr(compute, "audit_refusal", None)
    if callable(report):
        part = getattr(exc, "refusal_part", None)
        exc = report(payload, exc)
        if part is not None:
            exc.refusal_part = part  # type: ignore[attr-defined]
    exc.refusal_audited = True  # type: ignore[attr-defined]
    return exc


def _refused_part(exc: BaseException) -> int:
    """The batch part a refusal was made at (0 for a single request)."""
    part = getattr(exc, "refusal_part", 0)
    return part if isinstance(part, int) and part >= 0 else 0


def _audit_head(compute: Compute, seen_seq: int | None) -> dict[str, bytes]:
    """The site's current audit head ``(seq, hash)`` for its signed reply, when the compute
    has an audit log (the site runtime does): the hub keeps the last one it saw. With the
    hub's last-seen sequence number, also the hash of that entry in this site's log now, so
    the hub can tell a log that grew from one that was rolled back and grew again."""
    head = getattr(compute, "audit_head", None)
    if not callable(head):
        return {}
    seq, digest = head()
    out = {"audit_seq": pack_int(int(seq)), "audit_head": str(digest).encode("ascii")}
    hash_at = getattr(compute, "audit_hash_at", None)
    if seen_seq is not None and callable(hash_at):
        out["audit_at_seen"] = str(hash_at(seen_seq) or "").encode("ascii")
    return out
