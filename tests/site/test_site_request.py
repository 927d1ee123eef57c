"""Tests of SiteRequest's canonical JSON form."""

from __future__ import annotations

import hashlib
import json

import pytest

from hemafed.errors import InvalidInput
from hemafed.federation.api import DPRequest
from hemafed.site.request import SiteRequest


def _req() -> SiteRequest:
    return SiteRequest("r1", "S1", "ab" * 32, "moments", "1",
                       {"high": 20, "column": "hb", "low": 0}, "alice", DPRequest(0.5, 1e-6), 3)


def test_canonical_json_round_trips_and_hashes_stably() -> None:
    r = _req()
    raw = r.to_json()
    assert raw.startswith(b'{"dp":{"delta":1e-06,"epsilon":0.5,"noise_multiplier":null},'
                          b'"noise_share_divisor":3,')
    assert b" " not in raw and SiteRequest.from_json(raw) == r
    reordered = json.dumps(json.loads(raw), indent=2).encode()  # any JSON layout parses back
    assert SiteRequest.from_json(reordered).to_json() == raw
    assert r.sha256 == hashlib.sha256(raw).hexdigest() and hash(r) == hash(_req())


@pytest.mark.parametrize(("raw", "needle"), [
    (b"not json", "not valid JSON"),
    (b"[]", "must be a JSON object"),
    (b'{"request_id": "r"}', "missing"),
])
def test_malformed_requests_are_refused(raw: bytes, needle: str) -> None:
    with pytest.raises(InvalidInput, match=needle):
        SiteRequest.from_json(raw)


def test_bad_fields_are_refused() -> None:
    obj = json.loads(_req().to_json())
    obj["noise_share_divisor"] = 0
    with pytest.raises(InvalidInput, match="noise_share_divisor"):
        SiteRequest.from_json(json.dumps(obj))
    obj["noise_share_divisor"] = 1
    obj["dp"] = {"epsilon": None, "delta": 1e-6, "noise_multiplier": 2.5}
    assert SiteRequest.from_json(json.dumps(obj)).dp == DPRequest(None, 1e-6, 2.5)
    obj["dp"] = {"epsilon": -1, "delta": 1e-6}
    with pytest.raises(InvalidInput, match="'dp' is malformed"):
        SiteRequest.from_json(json.dumps(obj))
    with pytest.raises(InvalidInput, match="plain JSON"):
        SiteRequest("r", "S", "", "q", "1", {"x": object()})
