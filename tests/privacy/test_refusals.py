"""What a hub learns from a refusal: a fixed code, a name and how many sites refused.

Through real site directories (policy, ledger, audit log, the site node) and secure
aggregation over the in-process transport, a hostile hub sends requests that make sites fail,
and the tests inspect exactly the bytes the sites replied. A refusal travels through the sum
(its flag block), so no reply is a refusal of its own and the hub cannot tell which site refused.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest
from hostile import HostileHub, decision_entry

from hemafed.cohort.demo import generate
from hemafed.cohort.partition import split_sites
from hemafed.demo import build_sites
from hemafed.errors import HemafedError, InvalidInput, PolicyRefused
from hemafed.federation.api import DPRequest
from hemafed.federation.queries import get_query
from hemafed.privacy.refusal import CODES
from hemafed.secure.codec import unpack_map
from hemafed.site.audit import AuditLog
from hemafed.site.store import load_cohort
from hemafed.study.spec import StudySpec

SPEC = {"study_id": "refusal-test", "requester": "tester", "analyses": [
    {"id": "size", "kind": "describe", "columns": ["age", "sex"]},
    {"id": "km", "kind": "km", "duration": "os_time", "event": "os_status"}]}


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Any:
    cohorts = split_sites(generate("MDS", 240, 5), 3, 5)
    spec = StudySpec.from_mapping(SPEC)
    return build_sites(tmp_path_factory.mktemp("refusal-sites"), cohorts, spec), spec


def _hub(sites: Any) -> HostileHub:
    fed, spec = sites
    return HostileHub(fed, spec.study_id, spec.sha256)


def _assert_fixed_vocabulary(hub: HostileHub) -> list[dict[str, bytes]]:
    bodies = hub.refusal_bodies()
    assert bodies, "expected at least one refusal"
    for body in bodies:  # read from the flag block of the sum: code, name, how many sites
        assert set(body) == {"status", "code", "name", "sites"}
        assert body["code"].decode() in CODES
    for _, envelope in hub.replies:  # every reply is a masked vector or session keys
        assert unpack_map(unpack_map(envelope)["body"]).get("status") != b"refused"
    return bodies


def _last(site_dir: Any) -> dict[str, Any]:
    log = AuditLog(site_dir / "audit.log")
    assert log.verify()
    return decision_entry(site_dir / "audit.log")


def test_a_data_dependent_error_reaches_the_hub_as_a_code_only(sites: Any) -> None:
    fed, _ = sites
    hub = _hub(sites)
    # a column that is no 0/1 event indicator: the query's error describes the site's data
    # (a grid starting after some times no longer fails: those times are counted in the
    # secure `excluded` sum, tests/privacy/test_attack_query_holes.py)
    outcome = hub.ask("km_risk_table", {"duration_col": "os_time", "event_col": "age",
                                        "grid": [3.0, 4.0, 5.0]})
    assert isinstance(outcome, PolicyRefused)
    assert "data do not fit" in str(outcome)
    bodies = _assert_fixed_vocabulary(hub)
    assert {b["code"] for b in bodies} == {b"data_do_not_fit"}
    assert {b["sites"] for b in bodies} == {str(len(fed.site_dirs)).encode()}
    everything = b"".join(envelope for _, envelope in hub.replies)
    assert b"0/1" not in everything and b"event column" not in everything
    # the detail, with the site's count, is in each site's audit log under the request id
    # the hub's message names
    named = re.search(r"request ([0-9a-f]{32})", str(outcome))
    assert named is not None, str(outcome)
    for d in fed.site_dirs.values():
        entry = _last(d)
        assert entry["request_id"] == named.group(1)
        assert "event column 'age' must be 0/1" in entry["reason"], entry["reason"]


CRASHING: list[tuple[str, dict[str, Any], DPRequest | None, str]] = [
    ("cohort_size", {}, DPRequest(1e308, 1e-6), "dp"),
    ("cohort_size", {}, DPRequest(None, 1e-6, noise_multiplier=1e308), "dp"),
    ("cohort_size", {}, DPRequest(None, 1e-6, noise_multiplier=1e-300), "dp"),
    ("moments", {"column": "age", "low": -1e308, "high": 1e308}, None, ""),
    ("moments", {"column": "age", "low": 0, "high": 1e200, "resolution": 1e-300}, None, ""),
    ("category_counts", {"column": "sex", "levels": [[1, 2], {"a": 1}]}, None, ""),
    ("numeric_summary", {"column": "age", "edges": "x" * 5000}, None, ""),
]


@pytest.mark.parametrize(("query", "params", "dp", "_name"), CRASHING)
def test_crashing_parameters_are_audited_refusals_and_the_site_keeps_running(
        sites: Any, query: str, params: dict[str, Any], dp: DPRequest | None, _name: str) -> None:
    fed, _ = sites
    hub = _hub(sites)
    counts = {s: len(AuditLog(d / "audit.log").entries()) for s, d in fed.site_dirs.items()}
    outcome = hub.ask(query, params, dp=dp, divisor=3 if dp else 1)
    assert isinstance(outcome, HemafedError), outcome
    assert isinstance(outcome, PolicyRefused | InvalidInput)
    _assert_fixed_vocabulary(hub)
    for s, d in fed.site_dirs.items():
        entries = AuditLog(d / "audit.log").entries()
        assert len(entries) > counts[s], "every site audits the refusal"
        assert decision_entry(d / "audit.log")["decision"] == "refused"
    # the same site process answers the next request
    ok = hub.ask("cohort_size", {}, specs=get_query("cohort_size").declare({}))
    assert not isinstance(ok, Exception), ok
    total = sum(len(load_cohort(d)) for d in fed.site_dirs.values())
    assert ok.values["n"] == pytest.approx(np.array([total]))


def test_hub_side_errors_carry_no_number_but_the_reference(sites: Any) -> None:
    hub = _hub(sites)
    outcome = hub.ask("moments", {"column": "age", "low": 0, "high": 10})  # ages exceed 10
    assert isinstance(outcome, PolicyRefused)
    # the only numbers: how many of the sites refused, and the request id of the audit entries
    text = re.sub(r"request [0-9a-f]{32}", "", str(outcome))
    assert re.match(r"3 of 3 sites refused: ", text), text
    assert not re.search(r"\d", text[len("3 of 3"):]), text
