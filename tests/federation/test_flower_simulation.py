"""Flower simulation transport (Ray backend, 10 virtual sites on 2 CPUs) against in-process."""

from __future__ import annotations

from typing import Any

import pytest
from probe_reference import expected_sums

from hemafed.federation.flower.simulation import run_in_simulation
from hemafed.federation.inprocess import run_in_process
from hemafed.federation.transport import site_config

PROBE_HUB = "hemafed.federation.flower.probe:probe_hub"
PROBE_HANDLER = "hemafed.federation.flower.probe:probe_handler"
SLOW, FAILING = "site-8", "site-9"
EVERYONE = [f"site-{i}" for i in range(10)]
TIMEOUT = 8.0


def ten_sites() -> list[dict[str, Any]]:
    sites = [site_config(f"/sites/site-{i}", f"site-{i}") for i in range(10)]
    # site-8 answers round 0 after the exchange timeout (dropped), then answers in time
    sites[8].update(probe_delay=TIMEOUT + 4.0, probe_delay_rounds=[0])
    sites[9]["probe_fail"] = True  # the ClientApp raises: Flower returns an error reply
    return sites


def answered_in(round_index: int) -> list[str]:
    return [s for s in EVERYONE if s != FAILING and not (s == SLOW and round_index == 0)]


@pytest.fixture(scope="module")
def simulated() -> tuple[Any, dict[str, Any]]:
    stats: dict[str, Any] = {}
    result = run_in_simulation(PROBE_HUB, PROBE_HANDLER, ten_sites(), {"rounds": 3},
                               timeout=TIMEOUT, num_cpus=2, client_cpus=0.2, stats=stats)
    return result, stats


@pytest.mark.slow
def test_simulation_sums_state_and_drops(simulated: tuple[Any, dict[str, Any]]) -> None:
    result, stats = simulated
    assert result["sites"] == EVERYONE  # all ten identified themselves in the hello round
    for r, rnd in enumerate(result["rounds"]):
        assert rnd["answered"] == answered_in(r)
        assert rnd["sum"] == expected_sums(answered_in(r), r)
    # the counter lives in context.state: 3 means it persisted across the 3 messages
    steady = [s for s in EVERYONE if s not in (SLOW, FAILING)]
    assert {s: result["counts"][s] for s in steady} == {s: 3 for s in steady}
    assert FAILING not in result["counts"]
    assert len(stats["exchange_seconds"]) == 3
    # no keep-warm holds in simulation: one answered after the message it follows would put
    # back the node's context from before that message (Flower writes back what it started with)
    assert stats["holds_sent"] == 0
    # each drop is explained in the result: the raising site by its node's error, the late
    # one by the timeout (the hub's own log stays in Flower's process)
    why = {(d["exchange"], d["site"]): d["reason"] for d in stats["drops"]}
    assert set(why) == {(0, SLOW), (0, FAILING), (1, FAILING), (2, FAILING)}
    assert why[0, SLOW] == f"no reply within {TIMEOUT:g} s"
    assert all("probe asked to fail" in why[r, FAILING] for r in range(3))


@pytest.mark.slow
def test_in_process_gives_the_same_rounds(simulated: tuple[Any, dict[str, Any]]) -> None:
    result, _ = simulated
    # in-process has no clock: the late site is dropped with the hook instead of a timeout
    same = run_in_process(PROBE_HUB, PROBE_HANDLER, ten_sites(), {"rounds": 3},
                          drop=lambda index, site: site == SLOW and index == 0)
    assert same["sites"] == result["sites"]
    assert same["rounds"] == result["rounds"]
    # A dropped in-process message is never delivered, while Flower's late reply was still
    # handled at the site, so only the late site's counter may differ.
    assert {k: v for k, v in same["counts"].items() if k != SLOW} == \
        {k: v for k, v in result["counts"].items() if k != SLOW}
