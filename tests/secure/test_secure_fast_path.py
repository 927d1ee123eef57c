"""Two round trips when nobody dropped; the consistency check after a dropout; the quorum.

Against a malicious hub, sites skip the consistency check only when the hub's survivor list is
the list it asked (nobody dropped) on the complete graph: they then reveal self-mask shares
and no pairwise-seed share. These tests check that path, that a hub which shows some sites "nobody
dropped" and others "site00 dropped" collects only self-mask shares (the second group refuses
to reveal), that sparse graphs and dropouts keep the check, and that the per-aggregation quorum
is enforced by every site.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from secagg_helpers import build_sites

from hemafed.errors import InvalidInput, ProtocolError
from hemafed.federation.queries import Statistic
from hemafed.secure import FederationManifest, HubAggregation, HubSession, InProcessSites
from hemafed.secure.codec import pack_int, pack_map, pack_names, unpack_map
from hemafed.secure.protocol import CONSISTENCY, MASKED_INPUT, UNMASK, hub_message

SPECS = {"n": Statistic((4,), 0, 100)}


def _five(ten_identities, **kw) -> InProcessSites:
    names = list(ten_identities)[:5]
    values = {s: {"n": np.arange(4, dtype=float) + i} for i, s in enumerate(names)}
    return build_sites(values, SPECS, identities={s: ten_identities[s] for s in names}, **kw)


def _started(sites: InProcessSites, quorum: int | None = None) -> HubAggregation:
    session = HubSession(sites.manifest, sorted(sites.states))
    session.receive(sites(session.start()))
    return HubAggregation(session, os.urandom(16), b"", SPECS, quorum)


def _body(reply: bytes) -> dict[str, bytes]:
    return unpack_map(unpack_map(reply)["body"])


def test_nobody_dropped_two_round_trips_and_only_self_mask_shares(ten_identities) -> None:
    sites = _five(ten_identities, threshold=3)
    out = sites.secure_sum(os.urandom(16), b"", SPECS)
    assert out.round_trips == 3 and out.values["n"].tolist() == [10.0, 15.0, 20.0, 25.0]
    rounds = [r.round_no for r in sites.received]
    assert UNMASK not in rounds and rounds.count(CONSISTENCY) == 5
    for r in sites.received:
        if r.round_no == CONSISTENCY:
            revealed = unpack_map(_body(r.reply)["reveal"])
            assert sorted(revealed) == sorted(sites.states)  # a b-share of every site
            for item in revealed.values():
                assert unpack_map(unpack_map(item)["s"]) == {}  # no pairwise-seed share


def test_a_dropout_or_a_sparse_graph_keeps_the_consistency_check(ten_identities) -> None:
    dropped = _five(ten_identities, threshold=3, drop_at={MASKED_INPUT: {"site01"}})
    out = dropped.secure_sum(os.urandom(16), b"", SPECS)
    assert out.round_trips == 4 and out.dropped == ("site01",)
    assert out.values["n"].tolist() == [9.0, 13.0, 17.0, 21.0]
    names = list(ten_identities)
    values = {s: {"n": np.full(4, float(i))} for i, s in enumerate(names)}
    sparse = build_sites(values, SPECS, threshold=6, degree=4, identities=ten_identities)
    out = sparse.secure_sum(os.urandom(16), b"", SPECS)
    assert out.round_trips == 4 and out.values["n"].tolist() == [45.0] * 4
    assert any(r.round_no == UNMASK for r in sparse.received)


def test_hub_splitting_views_gets_self_mask_shares_only(ten_identities) -> None:
    """The hub tells site00-02 that nobody dropped (they reveal their b-shares, site00's among
    them) and site03-04 that site00 dropped, to get site00's pairwise seeds from them too. With
    2t > n the second group is too small to reach t signatures: it reveals nothing."""
    sites = _five(ten_identities, threshold=3)
    hub = _started(sites)
    nxt = hub.receive(sites(hub.start()))
    assert nxt is not None and hub.reveal_early
    early = sites({s: nxt[s] for s in ("site00", "site01", "site02")})
    for reply in early.values():
        for item in unpack_map(_body(reply)["reveal"]).values():
            assert unpack_map(unpack_map(item)["s"]) == {}
    lie = ["site01", "site02", "site03", "site04"]
    signed = {}
    for s in ("site03", "site04"):
        shares = unpack_map(unpack_map(nxt[s])["shares"])
        fields = {"live": pack_names(lie),
                  "shares": pack_map({u: shares[u] for u in lie if u != s})}
        signed[s] = sites({s: hub_message(hub.session.session_id, hub.aggregation_id,
                                          CONSISTENCY, fields)})[s]
        assert "reveal" not in _body(signed[s])  # someone "dropped": sign, reveal nothing yet
    unmask = hub_message(hub.session.session_id, hub.aggregation_id, UNMASK,
                         {"live": pack_names(lie), "signatures": pack_map(signed)})
    with pytest.raises(ProtocolError, match="only 2 sites confirmed"):
        sites({"site03": unmask})
    # the fast-path replies signed the full list, so they cannot be passed off as confirmations
    forged = dict(signed, site01=early["site01"])
    unmask = hub_message(hub.session.session_id, hub.aggregation_id, UNMASK,
                         {"live": pack_names(lie), "signatures": pack_map(forged)})
    with pytest.raises(ProtocolError, match="signed a different survivor list"):
        sites({"site03": unmask})
    # and a site that answered the fast path has finished this aggregation
    with pytest.raises(ProtocolError, match="no aggregation in progress"):
        sites({"site01": unmask})


def test_quorum_reaches_compute_and_is_enforced(ten_identities) -> None:
    seen: list[int] = []
    ids = [ten_identities[s] for s in list(ten_identities)[:5]]
    manifest = FederationManifest.build("q", ids, threshold=3)

    def compute(payload: bytes, quorum: int):
        seen.append(quorum)
        return {"n": np.ones(4)}, SPECS

    sites = InProcessSites(ids, manifest, {i.site_id: compute for i in ids})
    assert sites.secure_sum(os.urandom(16), b"", SPECS).values["n"].tolist() == [5.0] * 4
    assert seen == [3] * 5  # default: the threshold
    hub = _started(sites, quorum=5)
    replies = sites(hub.start())
    assert seen[5:] == [5] * 5
    # the hub stops when fewer than the quorum answered ...
    with pytest.raises(ProtocolError, match=r"needs 5 \(its quorum; threshold 3\)"):
        hub.receive({s: r for s, r in replies.items() if s != "site04"})
    # ... and a hub that carries on anyway is refused by every site
    live = pack_names(["site00", "site01", "site02", "site03"])
    lying = hub_message(hub.session.session_id, hub.aggregation_id, CONSISTENCY,
                        {"live": live, "shares": pack_map({})})
    with pytest.raises(ProtocolError, match="this aggregation needs 5"):
        sites({"site00": lying})


def test_quorum_outside_its_range_is_refused(ten_identities) -> None:
    sites = _five(ten_identities, threshold=3)
    with pytest.raises(InvalidInput, match="quorum 6 must be between the threshold 3 and the 5"):
        _started(sites, quorum=6)
    hub = _started(sites)
    low = unpack_map(hub.start()["site00"])
    low["quorum"] = pack_int(2)
    with pytest.raises(ProtocolError, match="quorum of 2, below the manifest's threshold 3"):
        sites({"site00": pack_map(low)})


def test_a_quorum_changed_in_transit_breaks_the_site_reply(ten_identities) -> None:
    sites = _five(ten_identities, threshold=3)
    hub = _started(sites, quorum=4)
    messages = hub.start()
    changed = unpack_map(messages["site02"])
    changed["quorum"] = pack_int(3)
    messages["site02"] = pack_map(changed)
    with pytest.raises(ProtocolError, match=r"site 'site02'.*another aggregation"):
        hub.receive(sites(messages))


def _one_shot_sites(ten_identities, **kw) -> tuple[InProcessSites, dict[str, float]]:
    names = list(ten_identities)[:5]
    values = {s: {"n": np.arange(4, dtype=float) * 2 + i} for i, s in enumerate(names)}
    sites = build_sites(values, SPECS, identities={s: ten_identities[s] for s in names}, **kw)
    return sites, {s: float(v["n"][0]) for s, v in values.items()}


def test_one_shot_sum_is_one_round_trip_and_reveals_nothing(ten_identities) -> None:
    from hemafed.secure import SecureSumSession

    sites, _ = _one_shot_sites(ten_identities, threshold=3)
    sums = SecureSumSession(sites, sites.manifest, sorted(sites.states), one_shot=True)
    first = sums.secure_sum(os.urandom(16), b"", SPECS)
    agg = os.urandom(16)
    second = sums.secure_sum(agg, b"", SPECS)
    assert (first.round_trips, second.round_trips) == (2, 1)  # set-up + 1, then 1
    assert second.values["n"].tolist() == [10.0, 20.0, 30.0, 40.0]  # sum of 2k + i over 5 sites
    assert {r.round_no for r in sites.received} == {0, MASKED_INPUT}
    for r in sites.received:
        if r.round_no == MASKED_INPUT:
            assert set(_body(r.reply)) == {"status", "vector"}  # no shares: nothing to reveal
    # the site has finished: no step of this aggregation follows
    assert sums._session is not None
    late = hub_message(sums._session.session_id, agg, CONSISTENCY,
                       {"live": pack_names(sorted(sites.states)), "shares": pack_map({})})
    with pytest.raises(ProtocolError, match="no aggregation in progress"):
        sites({"site00": late})


def test_one_shot_sum_with_a_missing_site_fails_cleanly(ten_identities) -> None:
    sites, _ = _one_shot_sites(ten_identities, threshold=3)
    session = HubSession(sites.manifest, sorted(sites.states))
    session.receive(sites(session.start()))
    hub = HubAggregation(session, os.urandom(16), b"", SPECS, one_shot=True)
    replies = sites(hub.start())
    del replies["site01"]
    with pytest.raises(ProtocolError, match=r"one-shot aggregation: sites \['site01'\] did not "
                                            r"answer.*nothing was revealed"):
        hub.receive(replies)
    # the other four vectors still carry their masks with site01: their sum is not the sum
    total = sum(np.frombuffer(_body(r)["vector"], dtype="<u8") for r in replies.values())
    values = total[:hub.layout.size]  # then the refusal flag block
    assert not np.array_equal(hub.layout.decode_sum(values, 4)["n"], [9.0, 17.0, 25.0, 33.0])


def test_one_shot_needs_the_complete_graph(ten_identities) -> None:
    names = list(ten_identities)
    values = {s: {"n": np.ones(4)} for s in names}
    sparse = build_sites(values, SPECS, threshold=6, degree=4, identities=ten_identities)
    session = HubSession(sparse.manifest, names)
    session.receive(sparse(session.start()))
    with pytest.raises(InvalidInput, match="one-shot aggregation needs the complete graph"):
        HubAggregation(session, os.urandom(16), b"", SPECS, one_shot=True)
    # a hub that sends the flag anyway is refused by the site (no pairwise mask with most sites)
    hub = HubAggregation(session, os.urandom(16), b"", SPECS)
    message = unpack_map(hub.start()["site00"])
    message["one_shot"] = pack_int(1)
    with pytest.raises(ProtocolError, match="needs every site to mask with every other"):
        sparse({"site00": pack_map(message)})
