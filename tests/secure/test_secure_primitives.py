"""Shamir sharing, the neighbour graph, the codec, identities and the manifest."""

from __future__ import annotations

import itertools
import os

import pytest

from hemafed.errors import CryptoError, InvalidInput, ProtocolError
from hemafed.secure import FederationManifest, SiteIdentity
from hemafed.secure.codec import pack_map, unpack_map
from hemafed.secure.crypto import mask
from hemafed.secure.graph import neighbour_graph
from hemafed.secure.shamir import reconstruct, split


def test_any_t_shares_recover_the_secret_and_fewer_do_not() -> None:
    secret = os.urandom(32)
    xs = [1, 2, 3, 4, 5]
    shares = split(secret, xs, threshold=3)
    for subset in itertools.combinations(xs, 3):
        assert reconstruct({x: shares[x] for x in subset}, 3) == secret
    with pytest.raises(ProtocolError, match="need 3 shares"):
        reconstruct({1: shares[1], 2: shares[2]}, 3)
    # two shares interpolated as if the threshold were 2 give a different value
    wrong = sum(1 for a, b in itertools.combinations(xs, 2)
                if _interpolate_or_none({a: shares[a], b: shares[b]}) == secret)
    assert wrong == 0


def _interpolate_or_none(points: dict[int, int]) -> bytes | None:
    try:
        return reconstruct(points, 2)
    except ProtocolError:
        return None


def test_hand_computed_share_values() -> None:
    # threshold 1: f(x) = secret for every x
    secret = (5).to_bytes(32, "big")
    assert split(secret, [1, 9], threshold=1) == {1: 5, 9: 5}
    # a line through (0, 5) and (1, 12) has f(2) = 19
    assert reconstruct({1: 12, 2: 19}, 2) == secret
    assert reconstruct({1: 12, 3: 26}, 2) == secret


def test_graph_is_symmetric_regular_and_deterministic() -> None:
    names = [f"s{i:03d}" for i in range(50)]
    g = neighbour_graph(names, 8, b"seed-1")
    assert all(len(nb) == 8 and s not in nb for s, nb in g.items())
    assert all(s in g[v] for s, nb in g.items() for v in nb)
    assert neighbour_graph(list(reversed(names)), 8, b"seed-1") == g
    assert neighbour_graph(names, 8, b"seed-2") != g
    complete = neighbour_graph(names[:5], 8, b"x")
    assert all(len(nb) == 4 for nb in complete.values())


def test_masks_are_deterministic_per_seed_and_differ_across_seeds() -> None:
    a, b = os.urandom(32), os.urandom(32)
    assert (mask(a, 1000) == mask(a, 1000)).all()
    assert (mask(a, 1000) != mask(b, 1000)).mean() > 0.99
    assert (mask(a, 10) == mask(a, 1000)[:10]).all()


def test_codec_rejects_garbage() -> None:
    data = pack_map({"a": b"1", "b": b""})
    assert unpack_map(data) == {"a": b"1", "b": b""}
    for bad in (data[:-1], data + b"x", b"nonsense", b""):
        with pytest.raises(ProtocolError):
            unpack_map(bad)


def test_manifest_round_trip_fingerprint_and_checks(tmp_path) -> None:
    ids = [SiteIdentity.generate(s) for s in ("a", "b", "c")]
    m = FederationManifest.build("net", ids, threshold=2, neighbour_degree=4)
    m.save(tmp_path / "manifest.json")
    again = FederationManifest.load(tmp_path / "manifest.json")
    assert again == m and again.fingerprint == m.fingerprint
    assert FederationManifest.build("net", ids, threshold=3).fingerprint != m.fingerprint
    with pytest.raises(InvalidInput, match="threshold must be an integer >= 2"):
        FederationManifest.build("net", ids, threshold=1)
    with pytest.raises(InvalidInput, match="exceeds"):
        FederationManifest.build("net", ids, threshold=4)
    with pytest.raises(InvalidInput, match="even"):
        FederationManifest.build("net", ids, threshold=2, neighbour_degree=3)
    with pytest.raises(InvalidInput, match=r"bad\.json"):
        FederationManifest.from_json('{"format": "x"}', source="bad.json")


def test_identity_pem_round_trip(tmp_path) -> None:
    ident = SiteIdentity.generate("site-a")
    ident.save(tmp_path / "id.pem", passphrase=b"pw")
    loaded = SiteIdentity.load("site-a", tmp_path / "id.pem", passphrase=b"pw")
    assert loaded.public_bytes == ident.public_bytes
    with pytest.raises(CryptoError, match=r"id\.pem"):
        SiteIdentity.load("site-a", tmp_path / "id.pem", passphrase=b"wrong")
    with pytest.raises(InvalidInput, match="site id"):
        SiteIdentity.generate("bad id!")
