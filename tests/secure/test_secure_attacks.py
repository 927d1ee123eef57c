"""An actively malicious hub (or network) is caught: forged keys, replays, tampering, lies."""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import pytest
from secagg_helpers import build_sites

from hemafed.errors import ProtocolError
from hemafed.federation.queries import Statistic
from hemafed.secure import (
    HubAggregation,
    HubSession,
    InProcessSites,
    SiteIdentity,
    crypto,
    site_step,
)
from hemafed.secure.codec import pack_map, pack_names, unpack_map
from hemafed.secure.protocol import (
    CONSISTENCY,
    MASKED_INPUT,
    SETUP,
    UNMASK,
    hub_message,
    open_reply,
    seal_reply,
)

SPECS = {"n": Statistic((4,), 0, 100)}
Tamper = Callable[[int, str, bytes], bytes]


@pytest.fixture
def sites(ten_identities) -> InProcessSites:
    names = list(ten_identities)[:5]
    values = {s: {"n": np.arange(4, dtype=float) + i} for i, s in enumerate(names)}
    return build_sites(values, SPECS, threshold=3,
                       identities={s: ten_identities[s] for s in names})


def _session(sites: InProcessSites, tamper: Tamper | None = None) -> HubSession:
    session = HubSession(sites.manifest, sorted(sites.states))
    messages = session.start()
    if tamper is not None:
        messages = {s: tamper(SETUP, s, m) for s, m in messages.items()}
    session.receive(sites(messages))
    return session


def _run(sites: InProcessSites, tamper: Tamper | None = None, agg: bytes | None = None,
         session: HubSession | None = None) -> tuple[HubAggregation, list[dict[str, bytes]]]:
    """Drive a session set-up and one aggregation, letting ``tamper(round, site, message)``
    rewrite hub messages; returns the hub and the messages sent, by round."""
    session = session or _session(sites, tamper)
    hub = HubAggregation(session, agg or os.urandom(16), b"", SPECS)
    sent: list[dict[str, bytes]] = [{}]
    messages = hub.start()
    round_no = MASKED_INPUT
    while messages is not None:
        if tamper is not None:
            messages = {s: tamper(round_no, s, m) for s, m in messages.items()}
        sent.append(messages)
        messages = hub.receive(sites(messages))
        round_no += 1
    return hub, sent


def _rewrite(message: bytes, key: str, new: bytes) -> bytes:
    fields = unpack_map(message)
    fields[key] = new
    return pack_map(fields)


def test_honest_run_sums(sites) -> None:
    hub, _ = _run(sites)
    assert hub.result().values["n"].tolist() == [10.0, 15.0, 20.0, 25.0]


def test_forged_key_signature_is_rejected(sites) -> None:
    impostor = SiteIdentity.generate("site01")  # claims site01's name, wrong key

    def forge(round_no: int, site: str, message: bytes) -> bytes:
        if round_no != MASKED_INPUT or site != "site00":
            return message
        keys = unpack_map(unpack_map(message)["keys"])
        digest = unpack_map(unpack_map(keys["site01"])["signed"])["digest"]
        body = pack_map({"c_pk": os.urandom(32), "s_pk": os.urandom(32)})
        keys["site01"] = seal_reply(impostor, SETUP, digest, body)
        return _rewrite(message, "keys", pack_map(keys))

    with pytest.raises(ProtocolError, match=r"site 'site01'.*pinned identity key"):
        _run(sites, forge)


def test_substituted_key_under_a_valid_signature_is_rejected(sites) -> None:
    def swap(round_no: int, site: str, message: bytes) -> bytes:
        if round_no != MASKED_INPUT or site != "site00":
            return message
        keys = unpack_map(unpack_map(message)["keys"])
        envelope = unpack_map(keys["site02"])
        envelope["body"] = pack_map({"c_pk": os.urandom(32), "s_pk": os.urandom(32)})
        keys["site02"] = pack_map(envelope)
        return _rewrite(message, "keys", pack_map(keys))

    with pytest.raises(ProtocolError, match="forged or tampered"):
        _run(sites, swap)


def test_keys_replayed_from_an_older_session_are_rejected(sites) -> None:
    _, old = _run(sites)
    old_keys = unpack_map(old[MASKED_INPUT]["site00"])["keys"]

    def replay(round_no: int, site: str, message: bytes) -> bytes:
        if round_no == MASKED_INPUT and site == "site00":
            return _rewrite(message, "keys", old_keys)
        return message

    with pytest.raises(ProtocolError, match="another aggregation"):
        _run(sites, replay)


def test_message_of_an_older_aggregation_and_reused_ids_are_rejected(sites) -> None:
    session = _session(sites)
    _, old = _run(sites, session=session)
    hub = HubAggregation(session, os.urandom(16), b"", SPECS)
    hub.receive(sites(hub.start()))
    with pytest.raises(ProtocolError, match="another aggregation"):
        sites({"site00": old[CONSISTENCY]["site00"]})
    with pytest.raises(ProtocolError, match="aggregation id was already used"):
        sites({"site03": old[MASKED_INPUT]["site03"]})
    setup = HubSession(sites.manifest, sorted(sites.states), session_id=session.session_id)
    with pytest.raises(ProtocolError, match="session id was already used"):
        sites({"site03": setup.start()["site03"]})


def test_site_reply_replayed_to_the_hub_is_rejected(sites) -> None:
    session = _session(sites)
    first = HubAggregation(session, os.urandom(16), b"", SPECS)
    old_replies = sites(first.start())
    second = HubAggregation(session, os.urandom(16), b"", SPECS)
    replies = sites(second.start())
    replies["site04"] = old_replies["site04"]
    with pytest.raises(ProtocolError, match=r"site 'site04'.*another aggregation"):
        second.receive(replies)


def test_tampered_share_ciphertext_is_rejected(sites) -> None:
    def flip(round_no: int, site: str, message: bytes) -> bytes:
        if round_no != CONSISTENCY or site != "site03":
            return message
        shares = unpack_map(unpack_map(message)["shares"])
        ct = bytearray(shares["site01"])
        ct[-5] ^= 0x01
        shares["site01"] = bytes(ct)
        return _rewrite(message, "shares", pack_map(shares))

    with pytest.raises(ProtocolError, match="failed authentication"):
        _run(sites, flip)


def test_misrouted_ciphertext_is_rejected(sites) -> None:
    def misroute(round_no: int, site: str, message: bytes) -> bytes:
        if round_no != CONSISTENCY or site != "site03":
            return message
        shares = unpack_map(unpack_map(message)["shares"])
        shares["site01"], shares["site02"] = shares["site02"], shares["site01"]
        return _rewrite(message, "shares", pack_map(shares))

    with pytest.raises(ProtocolError, match="failed authentication"):
        _run(sites, misroute)


def test_tampered_masked_input_is_rejected_by_the_hub(sites) -> None:
    hub = HubAggregation(_session(sites), os.urandom(16), b"", SPECS)
    replies = sites(hub.start())
    envelope = unpack_map(replies["site02"])
    body = unpack_map(envelope["body"])
    body["vector"] = bytes(len(body["vector"]))
    envelope["body"] = pack_map(body)
    replies["site02"] = pack_map(envelope)
    with pytest.raises(ProtocolError, match=r"site 'site02'.*forged or tampered"):
        hub.receive(replies)
    # re-signing the new body's hash without the site's key fails the signature instead
    signed = unpack_map(envelope["signed"])
    signed["body_sha256"] = crypto.sha256(envelope["body"])
    envelope["signed"] = pack_map(signed)
    replies["site02"] = pack_map(envelope)
    with pytest.raises(ProtocolError, match=r"site 'site02'.*pinned identity key"):
        open_reply(sites.manifest, replies["site02"], "site02", MASKED_INPUT, hub.digest)


def _advance_to_unmask(sites: InProcessSites) -> tuple[HubAggregation, dict[str, bytes]]:
    """An aggregation in which site02 dropped after the request: it needs the check."""
    hub = HubAggregation(_session(sites), os.urandom(16), b"", SPECS)
    replies = sites(hub.start())
    del replies["site02"]
    messages = hub.receive(replies)
    assert messages is not None and not hub.reveal_early
    messages = hub.receive(sites(messages))
    assert messages is not None
    return hub, messages


def test_site_reveals_nothing_when_shown_different_survivor_lists(sites) -> None:
    hub, messages = _advance_to_unmask(sites)
    # a malicious hub tells site04 that site00 dropped, to get site04's pairwise-seed shares
    # of site00's masks: site04 must refuse because the others signed a list with site00 in it.
    lie = [s for s in hub.u3 if s != "site00"]
    with pytest.raises(ProtocolError, match=r"expected 'unmasking'; each step is answered once"):
        # a second consistency message is out of order: each step is answered once
        sites({"site04": hub_message(hub.session.session_id, hub.aggregation_id, CONSISTENCY,
                                     {"live": pack_names(lie)})})
    signatures = unpack_map(unpack_map(messages["site04"])["signatures"])
    forged_list = seal_reply(sites.identities["site01"], CONSISTENCY, hub.digest,
                             pack_map({"survivors": pack_names(lie)}))
    signatures["site01"] = forged_list
    bad = _rewrite(messages["site04"], "signatures", pack_map(signatures))
    with pytest.raises(ProtocolError, match="signed a different survivor list"):
        sites({"site04": bad})


def test_too_few_confirmations_reveal_nothing(sites) -> None:
    _, messages = _advance_to_unmask(sites)
    signatures = unpack_map(unpack_map(messages["site04"])["signatures"])
    few = {s: signatures[s] for s in sorted(signatures)[:2]}
    bad = _rewrite(messages["site04"], "signatures", pack_map(few))
    with pytest.raises(ProtocolError, match="only 2 sites confirmed"):
        sites({"site04": bad})


def test_each_site_unmasks_once(sites) -> None:
    hub, messages = _advance_to_unmask(sites)
    assert hub.receive(sites(messages)) is None
    with pytest.raises(ProtocolError, match="no aggregation in progress"):
        sites({"site00": messages["site00"]})


def test_hub_claiming_too_few_live_sites_is_refused_by_the_site(sites) -> None:
    def shrink(round_no: int, site: str, message: bytes) -> bytes:
        if round_no == MASKED_INPUT and site == "site00":
            return _rewrite(message, "live", pack_names(["site00", "site01"]))
        return message

    with pytest.raises(ProtocolError, match="only 2 of 5 sites remain"):
        _run(sites, shrink)


def test_wrong_manifest_is_rejected(sites, ten_identities) -> None:
    message = HubSession(sites.manifest, sorted(sites.states)).start()["site00"]
    from hemafed.secure import FederationManifest
    other = FederationManifest.build("other", [ten_identities[s] for s in sites.states], 3)
    with pytest.raises(ProtocolError, match="another federation manifest"):
        site_step(message, {}, ten_identities["site00"], other, sites.computes["site00"])


def test_unmasking_never_reveals_what_unmasks_one_survivor(ten_identities) -> None:
    """With dropouts, sites reveal self-mask shares of survivors and pairwise-seed shares of
    survivors with dropped sites only: never a seed between two survivors."""
    names = list(ten_identities)[:6]
    values = {s: {"n": np.arange(4, dtype=float) + i} for i, s in enumerate(names)}
    sites = build_sites(values, SPECS, threshold=3, drop_at={MASKED_INPUT: {"site02"}},
                        identities={s: ten_identities[s] for s in names})
    out = sites.secure_sum(os.urandom(16), b"", SPECS)
    assert out.dropped == ("site02",)
    for r in sites.received:
        if r.round_no == UNMASK:
            body = unpack_map(unpack_map(r.reply)["body"])
            assert "site02" not in body  # nothing of the dropped site's self mask
            for item in body.values():
                assert set(unpack_map(unpack_map(item)["s"])) == {"site02"}


def test_an_aggregation_replayed_after_the_site_forgot_its_id_is_rejected(sites) -> None:
    """Sites remember the last 10,000 aggregation ids; a hub that floods them out and replays an
    aggregation would get the same pairwise seeds again, and could then collect both kinds of
    share for one site across the two runs. The session's strictly increasing aggregation number
    (bound into the digest) refuses the replay whatever the site remembers."""
    from hemafed.secure.site import SEEN

    session = _session(sites)
    _, old = _run(sites, session=session)
    _run(sites, session=session)
    for state in sites.states.values():
        state.pop(SEEN)  # the ids were evicted
    with pytest.raises(ProtocolError, match=r"aggregation number 1 .* not after the last one "
                                            r"answered \(2\): replayed or stale"):
        sites({"site03": old[MASKED_INPUT]["site03"]})
