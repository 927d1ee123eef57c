"""In-process transport and the transport contract (fast, no Flower runtime)."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import pytest
from probe_reference import expected_sums, expected_vector

from hemafed.errors import InvalidInput, ProtocolError
from hemafed.federation.inprocess import run_in_process
from hemafed.federation.transport import (
    Exchange,
    SiteHandler,
    check_sites,
    decode_result,
    encode_result,
    load_hub_main,
    site_config,
)

PROBE_HUB = "hemafed.federation.flower.probe:probe_hub"
PROBE_HANDLER = "hemafed.federation.flower.probe:probe_handler"


def sites(n: int) -> list[dict[str, Any]]:
    return [site_config(f"/sites/site-{i}", f"site-{i}") for i in range(n)]


def test_probe_sums_and_state_over_three_rounds() -> None:
    ids = [f"site-{i}" for i in range(10)]
    result = run_in_process(PROBE_HUB, PROBE_HANDLER, sites(10), {"rounds": 3})
    assert result["sites"] == ids
    for r, rnd in enumerate(result["rounds"]):
        assert rnd["answered"] == ids
        assert rnd["sum"] == expected_sums(ids, r)
    assert result["counts"] == {sid: 3 for sid in ids}


def test_failing_and_dropped_sites_are_missing_and_state_rolls_back() -> None:
    cfg = sites(4)
    cfg[1]["probe_fail"] = True
    # site-2 misses exchange 1 only: its counter must not count the missed message
    result = run_in_process(PROBE_HUB, PROBE_HANDLER, cfg, {"rounds": 3},
                            drop=lambda index, sid: index == 1 and sid == "site-2")
    answered = [rnd["answered"] for rnd in result["rounds"]]
    assert answered == [["site-0", "site-2", "site-3"], ["site-0", "site-3"],
                        ["site-0", "site-2", "site-3"]]
    assert result["rounds"][1]["sum"] == expected_sums(["site-0", "site-3"], 1)
    assert result["counts"] == {"site-0": 3, "site-2": 2, "site-3": 3}


def test_raise_errors_surfaces_handler_bugs() -> None:
    cfg = sites(2)
    cfg[0]["probe_fail"] = True
    with pytest.raises(ProtocolError, match="probe asked to fail"):
        run_in_process(PROBE_HUB, PROBE_HANDLER, cfg, {"rounds": 1}, raise_errors=True)


def _echo_factory(site: dict[str, Any]) -> SiteHandler:
    def handle(message: bytes, state: MutableMapping[str, bytes]) -> bytes:
        state["seen"] = state.get("seen", b"") + message
        return site["site_id"].encode() + b":" + state["seen"]
    return handle


def test_state_is_per_site_and_bytes_results_survive() -> None:
    def hub(exchange: Exchange, site_ids: list[str], config: dict[str, Any]) -> Any:
        exchange({"a": b"1", "b": b"x"})
        second = exchange({"a": b"2"})
        return {"second": second, "tuple": (1, 2)}

    result = run_in_process(hub, _echo_factory, [site_config("/d/a"), site_config("/d/b")], {})
    assert result == {"second": {"a": b"a:12"}, "tuple": [1, 2]}


def test_exchange_rejects_unknown_sites_and_non_bytes() -> None:
    def unknown(exchange: Exchange, site_ids: list[str], config: dict[str, Any]) -> Any:
        return exchange({"nowhere": b""})

    def not_bytes(exchange: Exchange, site_ids: list[str], config: dict[str, Any]) -> Any:
        return exchange({"a": "text"})  # type: ignore[dict-item]

    one = [site_config("/d/a")]
    with pytest.raises(ProtocolError, match="nowhere"):
        run_in_process(unknown, _echo_factory, one, {})
    with pytest.raises(ProtocolError, match="must be bytes"):
        run_in_process(not_bytes, _echo_factory, one, {})


def test_state_must_hold_bytes() -> None:
    def bad_factory(site: dict[str, Any]) -> SiteHandler:
        def handle(message: bytes, state: MutableMapping[str, bytes]) -> bytes:
            state["n"] = 3  # type: ignore[assignment]
            return b""
        return handle

    def hub(exchange: Exchange, site_ids: list[str], config: dict[str, Any]) -> Any:
        return exchange({"a": b""})

    with pytest.raises(ProtocolError, match="non-bytes state"):
        run_in_process(hub, bad_factory, [site_config("/d/a")], {})


def test_result_codec_round_trips_nested_bytes() -> None:
    value = {"k": [b"\x00\xff", {"n": 1.5}], "b": b""}
    assert decode_result(encode_result(value)) == value
    assert decode_result(encode_result(b"raw")) == b"raw"
    with pytest.raises(InvalidInput, match="JSON-able"):
        encode_result({"x": object()})


def test_specs_and_site_lists_are_checked() -> None:
    with pytest.raises(InvalidInput, match="module:function"):
        load_hub_main("no_colon")
    with pytest.raises(InvalidInput, match="cannot import"):
        load_hub_main("hemafed.not_a_module:main")
    with pytest.raises(InvalidInput, match="has no"):
        load_hub_main("hemafed.federation.flower.probe:nothing")
    with pytest.raises(InvalidInput, match="twice"):
        check_sites([site_config("/x/a"), site_config("/y/a")])
    with pytest.raises(InvalidInput, match="site id"):
        site_config("/x/bad id")
    assert expected_vector("a", 0) != expected_vector("b", 0)
