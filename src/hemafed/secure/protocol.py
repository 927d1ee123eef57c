"""Shared definitions of the hemafed secure-aggregation protocol (hub and site agree on these).

The protocol is Bonawitz et al. (CCS 2017) with the SecAgg+ neighbour graph of Bell et al.
(CCS 2020), with the key advertisement amortised over a *session* (one study run):

0. *session keys* (once per session): the hub sends the participants and the graph seed; each
   site answers with two fresh X25519 public keys, signed with its identity key. The hub relays
   each site's neighbours' signed keys with the site's first aggregation message.

Then each aggregation costs two or three hub -> sites -> hub round trips:

1. *masked input*: the hub sends the request (opaque payload, declared statistics), the live
   list and the aggregation's *quorum* ``q`` (``t <= q``: the least number of sites whose inputs
   any released sum must cover); each site computes its statistics, draws a fresh self-mask
   seed ``b_u``, and sends ``x_u + PRG(b_u) + sum_v +/-PRG(s_uv)`` mod 2**64, where ``s_uv`` is
   derived from the pair's session key agreement *and this aggregation's digest*, together with
   AEAD-encrypted Shamir shares of ``b_u`` and of the ``s_uv`` for its live neighbours; a
   refusing site sends the same, with uniformly random values and its refusal in the flag
   block that ends every input (:mod:`hemafed.privacy.refusal`), so the hub learns from the sum
   how many sites refused, not which (only a ``rollback`` is a signed refusal of its own);
2. *consistency check*: each site gets the shares addressed to it from the sites whose masked
   input arrived (the survivors) and signs the survivor list. When nobody dropped since step 1
   and every site shares with every other (the complete graph), the site reveals its self-mask
   shares in this reply and the aggregation ends here: see :func:`reveals_at_consistency`;
3. *unmasking* (only after a dropout, or on a sparse graph): each site sees enough signatures
   on the same list, then reveals, for each neighbour, its share of ``b`` (neighbour survived)
   or this aggregation's pairwise seed with it (neighbour dropped), never both.

A *one-shot* aggregation (complete graph only, chosen by the hub per aggregation and bound into
its digest) is step 1 alone, without self mask or shares: each site sends
``x_u + sum_v +/-PRG(s_uv)``, the pairwise masks cancel in the sum over everyone asked, and no
secret is ever revealed, so one round trip suffices; a site that does not answer makes the whole
sum unrecoverable (its masks stay in the others' vectors), and the hub repeats the request as a
recoverable aggregation (:class:`hemafed.federation.runtime.SecureFederation` does).

Because the pairwise seeds are fresh per aggregation and revealed per pair, revealing the seeds
of a site that dropped in one aggregation reveals nothing about its masks in any other, so the
session keys survive dropouts. Every site reply is an *envelope* signed with the site's identity
key over the session or aggregation digest, the round and the site id, so a reply cannot be
forged, moved to another round, or replayed into another aggregation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hemafed.errors import ProtocolError
from hemafed.secure import crypto
from hemafed.secure.codec import field, pack_int, pack_map, pack_names, unpack_int, unpack_map
from hemafed.secure.identity import FederationManifest, SiteIdentity, verify_signature

PROTOCOL = b"hemafed-secagg/3"
ROUNDS = ("session keys", "masked input", "consistency check", "unmasking")
N_ROUNDS = len(ROUNDS)
ROUND_TRIPS_PER_SUM = N_ROUNDS - 1
"""Most round trips of one aggregation once its session is set up (the setup costs one more):
three after a dropout or on a sparse graph, two otherwise (:func:`reveals_at_consistency`)."""

SETUP, MASKED_INPUT, CONSISTENCY, UNMASK = range(N_ROUNDS)


def session_digest(manifest: FederationManifest, session_id: bytes,
                   participants: Sequence[str], graph_seed: bytes) -> bytes:
    """What one session is: bound into the signatures of the session keys."""
    return crypto.sha256(PROTOCOL, b"session", manifest.fingerprint, session_id,
                         pack_names(sorted(participants)), graph_seed)


def aggregation_digest(session: bytes, aggregation_id: bytes, seq: int, specs_json: bytes,
                       payload: bytes, quorum: int, one_shot: bool = False) -> bytes:
    """What one aggregation is: bound into every signature, key derivation and AEAD.

    ``seq`` is the aggregation's number in its session, strictly increasing at every site, so no
    two aggregations of a session ever share a digest (hence pairwise seeds), whatever a site
    remembers of past aggregation ids.
    """
    return crypto.sha256(PROTOCOL, b"aggregation", session, aggregation_id, pack_int(seq),
                         specs_json, crypto.sha256(payload), pack_int(quorum),
                         b"one-shot" if one_shot else b"recoverable")


def reveals_at_consistency(manifest: FederationManifest, n_participants: int,
                           asked: Sequence[str], survivors: Sequence[str]) -> bool:
    """Whether sites reveal their shares in the consistency step (two round trips, not three).

    Always in the semi-honest model. Against a malicious hub, only when every site shares with
    every other (complete graph) and the survivor list equals the list asked at the masked-input
    step (``asked``, each site's own view): then a site reveals only self-mask shares, of sites
    its own view says are live, and no pairwise-seed share at all. A hub that shows some sites
    "nobody dropped" (they reveal ``b_u`` shares) and others "u dropped" (they reveal seeds of
    ``u``'s masks only after ``t`` signatures on that list) needs ``t`` revealers of each kind
    for the same ``u``, from disjoint sets of honest sites (each answers the consistency step
    once): with ``c`` colluding sites that takes ``2 t <= n + c``, exactly the condition under
    which the consistency check itself fails (two lists, each signed by ``t``). So skipping the
    check when nobody dropped costs nothing against that bound; docs/security.md gives the
    argument.
    """
    if manifest.semi_honest:
        return True
    return manifest.complete_graph(n_participants) and sorted(asked) == sorted(survivors)


def hub_message(session_id: bytes, aggregation_id: bytes, round_no: int,
                fields: dict[str, bytes]) -> bytes:
    """A hub -> site message (``aggregation_id`` is empty for the session set-up)."""
    return pack_map({"proto": PROTOCOL, "session": session_id, "agg": aggregation_id,
                     "round": pack_int(round_no), **fields})


def message_round(message: bytes) -> int:
    """Round number of a hub -> site message (for transports and test drivers)."""
    return unpack_int(field(unpack_map(message), "round"), "round")


def _signed_part(site: str, round_no: int, digest: bytes, body: bytes) -> bytes:
    # The body (up to megabytes of masked vector) is signed through its SHA-256: Ed25519 would
    # hash it twice with SHA-512, several times slower than one SHA-256 pass.
    return pack_map({"proto": PROTOCOL, "site": site.encode("utf-8"),
                     "round": pack_int(round_no), "digest": digest,
                     "body_sha256": crypto.sha256(body)})


def seal_reply(identity: SiteIdentity, round_no: int, digest: bytes, body: bytes) -> bytes:
    """A site's signed reply envelope: ``body`` and a signature binding it to this step."""
    signed = _signed_part(identity.site_id, round_no, digest, body)
    return pack_map({"signed": signed, "sig": identity.sign(b"hemafed-secagg-reply" + signed),
                     "body": body})


@dataclass(frozen=True)
class Reply:
    """A verified reply envelope."""

    site: str
    round_no: int
    body: bytes


def open_reply(manifest: FederationManifest, envelope: bytes, site: str, round_no: int,
               digest: bytes) -> Reply:
    """Verify an envelope claimed to come from ``site`` for ``round_no`` of this aggregation."""
    what = f"reply of site {site!r} to the {ROUNDS[round_no]} step"
    outer = unpack_map(envelope, what)
    signed = field(outer, "signed", what)
    if site not in manifest.sites:
        raise ProtocolError(f"{what}: site is not in the federation manifest")
    if not verify_signature(manifest.sites[site], field(outer, "sig", what),
                            b"hemafed-secagg-reply" + signed):
        raise ProtocolError(f"{what}: signature does not verify against the site's pinned "
                            f"identity key (forged or tampered)")
    inner = unpack_map(signed, what)
    if field(inner, "proto", what) != PROTOCOL:
        raise ProtocolError(f"{what}: unknown protocol version")
    if field(inner, "site", what) != site.encode("utf-8"):
        raise ProtocolError(f"{what}: signed by the right key but names another site")
    if field(inner, "digest", what) != digest:
        raise ProtocolError(f"{what}: belongs to another aggregation (replayed or stale)")
    got_round = unpack_int(field(inner, "round", what), what)
    if got_round != round_no:
        raise ProtocolError(f"{what}: was signed for round {got_round}, not {round_no}")
    body = field(outer, "body", what)
    if crypto.sha256(body) != field(inner, "body_sha256", what):
        raise ProtocolError(f"{what}: the body does not match its signature (forged or "
                            f"tampered)")
    return Reply(site, round_no, body)


def holder_x(participants: Sequence[str], site: str) -> int:
    """Public Shamir x-coordinate of a share holder: its 1-based rank among the participants."""
    return sorted(participants).index(site) + 1


def share_key(agreed: bytes, digest: bytes, sender: str, recipient: str) -> bytes:
    """AEAD key for shares sent from ``sender`` to ``recipient`` in one aggregation.

    ``agreed`` is the X25519 shared secret of the pair's session ``c`` keys; the key is
    direction-specific and fresh per aggregation (the digest is the HKDF salt).
    """
    return crypto.hkdf(agreed, digest, b"hemafed-secagg share " + pack_names([sender, recipient]))


def share_aad(digest: bytes, sender: str, recipient: str) -> bytes:
    """Associated data of one encrypted share bundle."""
    return pack_map({"digest": digest, "from": sender.encode(), "to": recipient.encode()})


def pairwise_seed(agreed: bytes, digest: bytes, a: str, b: str) -> bytes:
    """Mask seed shared by sites ``a`` and ``b`` in one aggregation (symmetric in the pair).

    ``agreed`` is the X25519 shared secret of the pair's session ``s`` keys. Revealing the seed
    of one aggregation (when a neighbour dropped) says nothing about any other aggregation's.
    """
    return crypto.hkdf(agreed, digest, b"hemafed-secagg pairwise mask " + pack_names(sorted([a, b])))


def self_seed(b_seed: bytes, digest: bytes) -> bytes:
    """Mask seed of a site's self mask."""
    return crypto.hkdf(b_seed, digest, b"hemafed-secagg self mask")


def pairwise_sign(me: str, peer: str) -> int:
    """+1 when ``me`` adds the pairwise mask, -1 when it subtracts it."""
    return 1 if me < peer else -1
