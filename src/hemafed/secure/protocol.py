"""Shared definitions of the hemafed secure-aggregation protocol (hub and site agree on these).

The protocol is Bonawitz et al. (CCS 2017) with the SecAgg+ neighbour graph of Bell et al.
(CCS 2020). It runs in five hub -> sites -> hub round trips:

0. *advertise keys*: the hub sends the request (opaque payload, declared statistics, participants,
   graph seed); each site answers with two fresh X25519 public keys, signed with its identity key;
1. *share keys*: each site gets its neighbours' signed keys, checks the signatures against the
   manifest, and sends each neighbour (through the hub, AEAD-encrypted) Shamir shares of its
   self-mask seed ``b_u`` and of its mask-agreement private key ``s_u``;
2. *masked input*: each site gets the encrypted shares addressed to it, computes its statistics
   and sends ``x_u + PRG(b_u) + sum_v +/-PRG(s_uv)`` mod 2**64 (or a signed refusal);
3. *consistency check*: each site signs the list of sites whose masked input the hub holds;
4. *unmasking*: each site sees enough of those signatures on the same list, then reveals, for
   each neighbour, the share of ``b`` (neighbour survived) or of ``s`` (neighbour dropped),
   never both.

Every site reply is an *envelope* signed with the site's identity key over the manifest
fingerprint, the aggregation's session digest, the round and the site id, so a reply cannot be
forged, moved to another round, or replayed into another aggregation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from hemafed.errors import ProtocolError
from hemafed.secure import crypto
from hemafed.secure.codec import field, pack_int, pack_map, pack_names, unpack_int, unpack_map
from hemafed.secure.identity import FederationManifest, SiteIdentity, verify_signature

PROTOCOL = b"hemafed-secagg/1"
ROUNDS = ("advertise keys", "share keys", "masked input", "consistency check", "unmasking")
N_ROUNDS = len(ROUNDS)

ADVERTISE, SHARE_KEYS, MASKED_INPUT, CONSISTENCY, UNMASK = range(N_ROUNDS)


def session_digest(manifest: FederationManifest, aggregation_id: bytes,
                   participants: Sequence[str], specs_json: bytes, payload: bytes,
                   graph_seed: bytes) -> bytes:
    """What one aggregation is: bound into every signature, key derivation and AEAD."""
    return crypto.sha256(PROTOCOL, manifest.fingerprint, aggregation_id,
                         pack_names(sorted(participants)), specs_json,
                         crypto.sha256(payload), graph_seed)


def hub_message(aggregation_id: bytes, round_no: int, fields: dict[str, bytes]) -> bytes:
    """A hub -> site message."""
    return pack_map({"proto": PROTOCOL, "agg": aggregation_id, "round": pack_int(round_no),
                     **fields})


def message_round(message: bytes) -> int:
    """Round number of a hub -> site message (for transports and test drivers)."""
    return unpack_int(field(unpack_map(message), "round"), "round")


def _signed_part(site: str, round_no: int, digest: bytes, body: bytes) -> bytes:
    return pack_map({"proto": PROTOCOL, "site": site.encode("utf-8"),
                     "round": pack_int(round_no), "digest": digest, "body": body})


def seal_reply(identity: SiteIdentity, round_no: int, digest: bytes, body: bytes) -> bytes:
    """A site's signed reply envelope."""
    signed = _signed_part(identity.site_id, round_no, digest, body)
    return pack_map({"signed": signed, "sig": identity.sign(b"hemafed-secagg-reply" + signed)})


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
    return Reply(site, round_no, field(inner, "body", what))


def holder_x(participants: Sequence[str], site: str) -> int:
    """Public Shamir x-coordinate of a share holder: its 1-based rank among the participants."""
    return sorted(participants).index(site) + 1


def share_key(private: bytes | X25519PrivateKey, peer_public: bytes, digest: bytes, sender: str,
              recipient: str) -> bytes:
    """AEAD key for shares sent from ``sender`` to ``recipient`` (direction-specific)."""
    return crypto.hkdf(crypto.agree(private, peer_public), digest,
                       b"hemafed-secagg share " + pack_names([sender, recipient]))


def share_aad(digest: bytes, sender: str, recipient: str) -> bytes:
    """Associated data of one encrypted share bundle."""
    return pack_map({"digest": digest, "from": sender.encode(), "to": recipient.encode()})


def pairwise_seed(private: bytes | X25519PrivateKey, peer_public: bytes, digest: bytes, a: str, b: str) -> bytes:
    """Mask seed shared by sites ``a`` and ``b`` (symmetric in the pair)."""
    return crypto.hkdf(crypto.agree(private, peer_public), digest,
                       b"hemafed-secagg pairwise mask " + pack_names(sorted([a, b])))


def self_seed(b_seed: bytes, digest: bytes) -> bytes:
    """Mask seed of a site's self mask."""
    return crypto.hkdf(b_seed, digest, b"hemafed-secagg self mask")


def pairwise_sign(me: str, peer: str) -> int:
    """+1 when ``me`` adds the pairwise mask, -1 when it subtracts it."""
    return 1 if me < peer else -1
