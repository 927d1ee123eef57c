"""An approved study is a plan: the site refuses, by plan element, every request outside it.

Sites are real site directories with the spec stored at approval (as `hemafed site approve`
does); requests go through the real site node and secure aggregation (in-process transport).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hostile import HostileHub, decision_entry
from typer.testing import CliRunner

from hemafed.analytics.design import parse_formula
from hemafed.cli import app
from hemafed.cohort.demo import generate
from hemafed.cohort.partition import split_sites
from hemafed.demo import build_sites
from hemafed.errors import InvalidInput, PolicyRefused
from hemafed.federation.queries import get_query
from hemafed.site.request import SiteRequest
from hemafed.site.store import init_site, load_cohort, open_node
from hemafed.site.studies import spec_path
from hemafed.study.plan import MAX_PATIENTS, NEWTON_CAP, StudyPlan
from hemafed.study.spec import StudySpec

SPEC = {"study_id": "describe-age", "requester": "tester", "analyses": [
    {"id": "age", "kind": "describe", "columns": ["age", "sex"]},
    {"id": "logit", "kind": "logistic", "outcome": "os_status", "formula": "age + hb"}]}


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Any:
    cohorts = split_sites(generate("MDS", 240, 9), 3, 9)
    spec = StudySpec.from_mapping(SPEC)
    return build_sites(tmp_path_factory.mktemp("plan-sites"), cohorts, spec), spec


def _hub(sites: Any) -> HostileHub:
    fed, spec = sites
    return HostileHub(fed, spec.study_id, spec.sha256)


def _codes(hub: HostileHub) -> set[tuple[bytes, bytes]]:
    return {(b["code"], b["name"]) for b in hub.refusal_bodies()}


def _specs(query: str, params: dict[str, Any]) -> Any:
    return get_query(query).declare(params)


def test_the_planned_histogram_runs_and_a_finer_one_is_refused(sites: Any) -> None:
    fed, _ = sites
    hub = _hub(sites)
    planned = {"column": "age", "low": 0.0, "high": 110.0, "bins": 20}
    ok = hub.ask("numeric_summary", planned, specs=_specs("numeric_summary", planned))
    assert not isinstance(ok, Exception), ok
    pooled = np.concatenate([load_cohort(d).patients["age"].dropna().to_numpy(dtype=float)
                             for d in fed.site_dirs.values()])
    assert ok.values["n"][0] == pooled.size
    fine = {**planned, "bins": 10_000}
    out = hub.ask("numeric_summary", fine, specs=_specs("numeric_summary", fine))
    assert isinstance(out, PolicyRefused) and "outside the approved study plan" in str(out)
    assert _codes(hub) == {(b"outside_plan", b"bins")}
    for d in fed.site_dirs.values():
        last = decision_entry(d / "audit.log")
        assert last["decision"] == "refused" and "10000" in last["reason"]


@pytest.mark.parametrize(("query", "params", "element"), [
    ("numeric_summary", {"column": "plt", "low": 0.0, "high": 3000.0, "bins": 20}, b"column"),
    ("crosstab", {"row": "sex", "col": "age"}, b"query"),
    ("category_counts", {"column": "sex", "levels": ["M"]}, b"levels"),
    ("logistic_newton", {"outcome": "os_status", "beta": [0.0, 0.0],
                         "design": parse_formula("age").to_params()}, b"design"),
])
def test_requests_outside_the_plan_are_refused_by_element(sites: Any, query: str,
                                                          params: dict[str, Any],
                                                          element: bytes) -> None:
    hub = _hub(sites)
    out = hub.ask(query, params)
    assert isinstance(out, PolicyRefused)
    assert _codes(hub) == {(b"outside_plan", element)}


def test_moving_a_bound_is_no_oracle_on_a_sites_largest_value(sites: Any) -> None:
    fed, _ = sites
    site_max = {s: float(load_cohort(d).patients["age"].max()) for s, d in fed.site_dirs.items()}
    top = max(site_max.values())
    answers = []
    for high in (top - 0.5, top + 0.5):  # below and above the largest age
        hub = _hub(sites)
        params = {"column": "age", "low": 0.0, "high": high, "bins": 20}
        out = hub.ask("numeric_summary", params, specs=_specs("numeric_summary", params))
        answers.append((type(out).__name__, sorted(_codes(hub))))
    # the same refusal whichever side of the data the bound lies: nothing to bisect on
    assert answers[0] == answers[1] == ("PolicyRefused", [(b"outside_plan", b"bounds")])


def test_max_patients_is_no_oracle_on_a_sites_cohort_size(sites: Any) -> None:
    fed, _ = sites
    n = min(len(load_cohort(d)) for d in fed.site_dirs.values())
    answers = []
    for bound in (n - 1, n + 1):
        hub = _hub(sites)
        params = {"max_patients": bound}
        out = hub.ask("cohort_size", params, specs=_specs("cohort_size", params))
        answers.append((type(out).__name__, sorted(_codes(hub))))
    assert answers[0] == answers[1] == ("PolicyRefused", [(b"outside_plan", b"max_patients")])
    ok = _hub(sites).ask("cohort_size", {"max_patients": MAX_PATIENTS},
                         specs=_specs("cohort_size", {}))
    assert not isinstance(ok, Exception)


def test_newton_rounds_are_capped_and_repeats_are_free(sites: Any) -> None:
    fed, spec = sites
    node = open_node(next(iter(fed.site_dirs.values())))
    design = parse_formula("age + hb").to_params()

    def ask(i: int, beta: list[float]) -> Any:
        return node.answer(SiteRequest(f"r{i}", spec.study_id, spec.sha256, "logistic_newton",
                                       "1", {"outcome": "os_status", "design": design,
                                             "beta": beta}, "hub"))

    for i in range(NEWTON_CAP):
        ask(i, [0.0, 0.001 * i, 0.0])
    ask(999, [0.0, 0.0, 0.0])  # the first round again: not a new round
    with pytest.raises(PolicyRefused) as err:
        ask(1000, [0.5, 0.5, 0.5])
    assert err.value.refusal.code == "outside_plan" and err.value.refusal.name == "rounds"
    # an iterated vector of the wrong width, or a huge one, is refused too
    with pytest.raises(PolicyRefused):
        ask(1001, [0.0] * 7)
    with pytest.raises(PolicyRefused):
        ask(1002, [0.0, 1e9, 0.0])


def test_two_processes_of_one_site_share_the_round_cap(sites: Any, tmp_path: Path) -> None:
    # two workers answering for one site (or a simulation's actors) count the plan's rounds
    # together: each reads what the other wrote to the audit log, not a count of its own
    import shutil
    fed, spec = sites
    site_dir = tmp_path / "two"
    shutil.copytree(list(fed.site_dirs.values())[1], site_dir)
    first, second = open_node(site_dir), open_node(site_dir)
    design = parse_formula("age + hb").to_params()

    def ask(node: Any, i: int) -> Any:
        return node.answer(SiteRequest(f"t{i}", spec.study_id, spec.sha256, "logistic_newton",
                                       "1", {"outcome": "os_status", "design": design,
                                             "beta": [0.0, 0.001 * i, 0.0]}, "hub"))

    ask(second, 0)  # the second worker has read the log once
    for i in range(1, NEWTON_CAP):
        ask(first, i)
    ask(second, 0)  # a repeat is still free
    with pytest.raises(PolicyRefused) as err:
        ask(second, NEWTON_CAP)
    assert (err.value.refusal.code, err.value.refusal.name) == ("outside_plan", "rounds")
    # a log cut under a worker is counted again from its start, not from a stale offset
    log = site_dir / "audit.log"
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:2]))
    assert second._seen(spec.study_id, "logistic_newton") <= {
        m.group(1) for m in map(_plan_key, lines[:2]) if m}


def _plan_key(line: bytes) -> Any:
    import re
    return re.search(r"; params ([0-9a-f]{16})$", json.loads(line)["reason"])


def test_a_stored_spec_edited_after_approval_stops_the_study(sites: Any, tmp_path: Path) -> None:
    fed, spec = sites
    import shutil
    site_dir = tmp_path / "copy"
    shutil.copytree(next(iter(fed.site_dirs.values())), site_dir)
    path = spec_path(site_dir, spec.study_id)
    doc = json.loads(path.read_text())
    doc["analyses"][0]["columns"] = ["age", "hb"]
    path.write_text(json.dumps(doc))
    node = open_node(site_dir)
    with pytest.raises(PolicyRefused) as err:
        node.answer(SiteRequest("x", spec.study_id, spec.sha256, "cohort_size", "1", {}, "hub"))
    assert err.value.refusal.name == "plan_mismatch"


def test_site_approve_stores_the_spec_and_require_plan_refuses_without_it(
        tmp_path: Path) -> None:
    site_dir = tmp_path / "s"
    init_site(site_dir, "s")  # the template sets require_plan: true
    policy = yaml.safe_load((site_dir / "policy.yaml").read_text())
    spec = StudySpec.from_mapping(SPEC)
    policy["studies"] = [{"study_id": spec.study_id, "spec_sha256": spec.sha256,
                          "expires": "2999-01-01", "approved_by": "hash only"}]
    (site_dir / "policy.yaml").write_text(yaml.safe_dump(policy))
    request = SiteRequest("x", spec.study_id, spec.sha256, "cohort_size", "1", {}, "hub")
    with pytest.raises(PolicyRefused) as err:
        open_node(site_dir).answer(request)
    assert err.value.refusal.name == "no_plan"
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(SPEC))
    res = CliRunner().invoke(app, ["site", "approve", str(site_dir), str(spec_file),
                                   "--expires", (dt.date.today() + dt.timedelta(days=30))
                                   .isoformat(), "--approved-by", "ethics 2026-1"])
    assert res.exit_code == 0, res.output
    assert spec.sha256 in res.output and "numeric_summary" in res.output
    assert open_node(site_dir).answer(request)["n"][0] == 0  # empty cohort, but answered
    bad = CliRunner().invoke(app, ["site", "approve", str(site_dir), str(spec_file),
                                   "--expires", "soon", "--approved-by", "x"])
    assert bad.exit_code == 1 and "YYYY-MM-DD" in bad.output


def test_plan_derivation_uses_the_spec_alone() -> None:
    spec = StudySpec.from_mapping(SPEC)
    plan = StudyPlan.from_spec(spec)
    assert plan == StudyPlan.from_spec(StudySpec.from_mapping(json.loads(json.dumps(SPEC))))
    assert plan.bounds["age"] == (0.0, 110.0) and plan.bins == frozenset({20})
    with pytest.raises(InvalidInput):
        StudySpec.from_mapping({"study_id": "x"})
