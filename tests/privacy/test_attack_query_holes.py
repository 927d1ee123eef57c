"""Holes 1-4 of the attack review (docs/security.md, issue 13), closed.

A curious hub sends only protocol-valid requests through real site directories (policy, plan,
ledger, audit log, the site node) and secure aggregation over the in-process transport:

1. a survival grid that starts after some times (or misses an event time) must not make one
   site refuse: the times go to the secure ``excluded`` sum, grids and time mappings are pinned
   by the plan, and a refusal after the plan check uses up a plan round;
2. the boosting histograms' bounds must not follow a hub-supplied events total;
3. boosting histograms are DP (unless the spec opts out) on the spec's fixed bins;
4. an extreme Cox/logistic coefficient is refused from the parameters alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hostile import HostileHub

from hemafed.analytics.design import parse_formula
from hemafed.cohort.demo import generate
from hemafed.cohort.partition import split_sites
from hemafed.demo import build_sites
from hemafed.errors import HemafedError, InvalidInput, PolicyRefused
from hemafed.federation.api import DPRequest
from hemafed.federation.queries import get_query
from hemafed.learn.gbdt import Outcome, default_grid
from hemafed.learn.trees import TreeBuilder
from hemafed.privacy.calibration import noisy_specs
from hemafed.site.audit import AuditLog
from hemafed.site.node import SiteNode
from hemafed.site.request import SiteRequest
from hemafed.site.store import load_cohort, open_node
from hemafed.study.plan import StudyPlan
from hemafed.study.spec import StudySpec

SPEC = {"study_id": "attack-holes", "requester": "tester", "analyses": [
    {"id": "age", "kind": "describe", "columns": ["age", "sex"]},
    {"id": "km", "kind": "km", "duration": "os_time", "event": "os_status"},
    {"id": "cox", "kind": "cox", "duration": "os_time", "event": "os_status",
     "formula": "age + hb"},
    {"id": "logit", "kind": "logistic", "outcome": "os_status", "formula": "age + hb"},
    {"id": "boost", "kind": "gbdt", "duration": "os_time", "event": "os_status",
     "features": "age + hb", "rounds": 2, "depth": 2}]}

COX_SUMS = get_query("cox_risk_set_sums").version
KM = {"duration_col": "os_time", "event_col": "os_status"}
DP = DPRequest(noise_multiplier=50.0, delta=1e-9)


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Any:
    cohorts = split_sites(generate("MDS", 240, 13), 3, 13)
    spec = StudySpec.from_mapping(SPEC)
    return build_sites(tmp_path_factory.mktemp("attack-sites"), cohorts, spec), spec


def _hub(sites: Any) -> HostileHub:
    fed, spec = sites
    return HostileHub(fed, spec.study_id, spec.sha256)


def _codes(hub: HostileHub) -> set[tuple[bytes, bytes]]:
    return {(b["code"], b["name"]) for b in hub.refusal_bodies()}


def _cohorts(sites: Any) -> list[Any]:
    fed, _ = sites
    return [load_cohort(d) for d in fed.site_dirs.values()]


# --- hole 1: survival grids -------------------------------------------------------------------

def test_a_grid_starting_after_some_times_is_answered_with_them_excluded(sites: Any) -> None:
    # the review's probe: a grid starting at 3 years used to make each site with an earlier
    # event refuse, by name (a per-site yes/no answer; bisection gives its first event time)
    grid = [3.0, 4.0, 5.0]
    params = KM | {"grid": grid}
    hub = _hub(sites)
    out = hub.ask("km_risk_table", params, specs=get_query("km_risk_table").declare(params))
    assert not isinstance(out, Exception), out
    assert hub.refusal_bodies() == []
    # hand count: every complete case with an event off the grid is excluded, at every site
    off = 0
    for c in _cohorts(sites):
        t, e = c.patients["os_time"].to_numpy(float), c.patients["os_status"].to_numpy(float)
        ok = ~(np.isnan(t) | np.isnan(e))
        on = np.isclose(t[:, None], np.array(grid)[None, :], rtol=1e-9, atol=0).any(axis=1)
        off += int((ok & (e == 1) & ~on).sum()) + int((~ok).sum())
    assert off > 0
    assert out.values["excluded"][0] == pytest.approx(off)
    assert out.values["n"][0] == pytest.approx(sum(len(c) for c in _cohorts(sites)) - off)


def test_the_plan_pins_the_time_mapping_and_the_lattice(sites: Any) -> None:
    first = min(float(np.nanmin(c.patients["os_time"].to_numpy(float))) for c in _cohorts(sites))
    answers = []
    # 'down' with a grid starting below / above the smallest follow-up time: the same answer
    for start in (0.0, round(first * 365.25 + 1) / 365.25):
        params = KM | {"grid": [start, 5.0], "time_mapping": "down"}
        hub = _hub(sites)
        out = hub.ask("km_risk_table", params, specs=get_query("km_risk_table").declare(params))
        answers.append((type(out).__name__, sorted(_codes(hub))))
    assert answers[0] == answers[1] == ("PolicyRefused", [(b"outside_plan", b"time_mapping")])
    # a grid point off every public lattice (finer than a day) is refused by the plan
    params = KM | {"grid": [1.0, 2.0001]}
    hub = _hub(sites)
    hub.ask("km_risk_table", params, specs=get_query("km_risk_table").declare(params))
    assert _codes(hub) == {(b"outside_plan", b"grid")}


def test_a_refusal_after_the_plan_check_uses_up_a_plan_round(sites: Any) -> None:
    fed, spec = sites
    site_dir = next(iter(fed.site_dirs.values()))
    node = open_node(site_dir)
    cap = StudyPlan.from_spec(spec).cap("km_risk_table")

    def ask(rid: str, params: dict[str, Any], on: SiteNode) -> Any:
        try:
            return on.answer(SiteRequest(rid, spec.study_id, spec.sha256, "km_risk_table",
                                         "1", params, "hub"))
        except HemafedError as exc:
            return exc

    # 'age' as the event column: the site's data do not fit (ages are not 0/1); each grid
    # is a new distinct request
    used = len(node._seen(spec.study_id, "km_risk_table"))
    for i in range(cap - used):
        out = ask(f"probe{i}", {"duration_col": "os_time", "event_col": "age",
                                "grid": [1.0 + i]}, node)
        assert isinstance(out, InvalidInput) and out.refusal.code == "data_do_not_fit"
    # the plan's rounds are used up by the refusals: a new request is refused by the plan,
    # also by a node restarted from the same directory (the count is in the audit log)
    for on in (node, open_node(site_dir)):
        out = ask("after", KM | {"grid": [2.0, 3.0]}, on)
        assert isinstance(out, PolicyRefused), out
        assert (out.refusal.code, out.refusal.name) == ("outside_plan", "rounds")
    marked = [e for e in AuditLog(site_dir / "audit.log").entries()
              if e["decision"] == "refused" and "data_do_not_fit" in e["reason"]]
    assert len(marked) == cap - used and all("; params " in e["reason"] for e in marked)


# --- holes 2 and 3: boosting histograms -----------------------------------------------------

def _boost_params(sites: Any, **extra: Any) -> dict[str, Any]:
    design = parse_formula("age + hb")
    outcome = Outcome("survival:cox", duration_col="os_time", event_col="os_status",
                      grid=default_grid())
    common = {"design": design.to_params(), "outcome": outcome.to_params(),
              "model": {"base": 0.0, "trees": []}}
    hub = _hub(sites)
    risk = hub.ask("gbdt_cox_risk_sets", common,
                   specs=get_query("gbdt_cox_risk_sets").declare(common))
    assert not isinstance(risk, Exception), risk
    s0, d = risk.values["s0"], risk.values["d"]
    with np.errstate(divide="ignore", invalid="ignore"):
        ra, rb = np.where(d > 0, d / s0, 0.0), np.where(d > 0, d / s0**2, 0.0)
    # the spec's fixed bins: 32 equal-width bins over each feature's public bounds
    cuts = [list(np.linspace(lo, hi, 33)[1:-1].round(12)) for lo, hi in design.bounds]
    return common | {"risk_a": np.cumsum(ra).tolist(), "risk_b": np.cumsum(rb).tolist(),
                     "edges": {"names": list(design.names), "cuts": cuts},
                     "tree": TreeBuilder().freeze().to_params(), "frontier": [0]} | extra


def test_a_hub_events_total_is_no_oracle_on_a_sites_cohort_size(sites: Any) -> None:
    small = min(len(c) for c in _cohorts(sites))
    specs = get_query("gbdt_histograms").declare(_boost_params(sites))
    answers = []
    for total in (1.0, float(small - 1), float(small + 1), 1e6):
        params = _boost_params(sites, events_total=total)
        hub = _hub(sites)
        out = hub.ask("gbdt_histograms", params, specs=noisy_specs(specs, DP, 3), dp=DP,
                      divisor=3)
        answers.append((type(out).__name__, sorted(_codes(hub))))
    # the same refusal whatever the hub's number: the typed parameters know no such key, and
    # the declared bounds come from the public max_patients alone
    assert all(a == answers[0] for a in answers), answers
    assert answers[0] == ("InvalidInput", [(b"invalid_parameter", b"events_total")])


def test_boosting_histograms_are_dp_on_the_specs_bins(sites: Any) -> None:
    params = _boost_params(sites)
    specs = get_query("gbdt_histograms").declare(params)
    hub = _hub(sites)
    hub.ask("gbdt_histograms", params, specs=specs)  # exact, with no opt-out in the spec
    assert _codes(hub) == {(b"outside_plan", b"dp")}
    # hub-chosen edges: one cut between two ages makes a histogram of a handful of patients
    narrow = params | {"edges": {"names": ["age", "hb"], "cuts": [[70.0, 70.5], [10.0]]}}
    hub = _hub(sites)
    hub.ask("gbdt_histograms", narrow, dp=DP, divisor=3,
            specs=noisy_specs(get_query("gbdt_histograms").declare(narrow), DP, 3))
    assert _codes(hub) == {(b"outside_plan", b"edges")}
    # the spec can opt out explicitly; the plan then allows exact histograms
    raw = {**SPEC, "analyses": [*SPEC["analyses"][:-1],
                                {**SPEC["analyses"][-1], "exact_histograms": True}]}
    assert "gbdt_histograms" not in StudyPlan.from_spec(StudySpec.from_mapping(raw)).dp_required
    assert "gbdt_histograms" in StudyPlan.from_spec(StudySpec.from_mapping(SPEC)).dp_required


# --- hole 4: extreme coefficients -------------------------------------------------------------

def test_an_extreme_cox_beta_is_refused_by_name(sites: Any) -> None:
    design = parse_formula("age + hb").to_params()
    base = KM | {"grid": [1.0, 2.0, 3.0], "design": design}
    hub = _hub(sites)
    ok = hub.ask("cox_risk_set_sums", base | {"beta": [0.05, -0.1]}, version=COX_SUMS,
                 specs=get_query("cox_risk_set_sums").declare(base | {"beta": [0.05, -0.1]}))
    assert not isinstance(ok, Exception), ok
    # age's public bounds are [0, 110]: a coefficient of 5/year puts e^275 between the
    # youngest and the oldest patient, so a risk-set sum is the oldest patient's own value
    extreme = base | {"beta": [5.0, 0.0]}
    hub = _hub(sites)
    # the typed parameters refuse it at the hub's own declare too: send it with the shapes of
    # a valid request, so the site's refusal is what is tested
    with pytest.raises(InvalidInput, match="'beta'"):
        get_query("cox_risk_set_sums").declare(extreme)
    out = hub.ask("cox_risk_set_sums", extreme, version=COX_SUMS,
                  specs=get_query("cox_risk_set_sums").declare(base | {"beta": [0.05, -0.1]}))
    assert isinstance(out, HemafedError)
    assert _codes(hub) == {(b"invalid_parameter", b"beta")}


@pytest.mark.parametrize(("beta", "allowed"), [([0.0, 150.0, -150.0], True),
                                                ([0.0, 250.0, 0.0], False)])
def test_logistic_scaled_coefficients_are_bounded(sites: Any, beta: list[float],
                                                 allowed: bool) -> None:
    fed, spec = sites
    node = open_node(next(iter(fed.site_dirs.values())))
    request = SiteRequest(f"logit-{beta[1]}", spec.study_id, spec.sha256, "logistic_newton", "1",
                          {"outcome": "os_status", "design": parse_formula("age + hb")
                           .to_params(), "beta": beta}, "hub")
    if allowed:
        assert node.answer(request).values["n"][0] > 0
    else:
        with pytest.raises(InvalidInput) as err:
            node.answer(request)
        assert (err.value.refusal.code, err.value.refusal.name) == ("invalid_parameter", "beta")


def test_every_query_taking_a_coefficient_vector_bounds_it() -> None:
    design = parse_formula("age + hb")
    grid = {"grid": [1.0, 2.0]}
    wide = [5.0, 0.0]  # |5.0| x 55 > 200
    cases = {
        "cox_site_derivatives": KM | grid | {"design": design.to_params(), "beta": wide},
        "cox_concordance_histogram": KM | grid | {"design": design.to_params(), "beta": wide},
        "finegray_sums": {"causes": [["os_time", "os_status"]], "cause": 1, **grid,
                          "design": design.to_params(), "beta": wide,
                          "cens_surv": [1.0, 1.0], "time_index": [0, 1]},
        "cox_start_stop_sums": KM | grid | {"design": design.to_params(),
                                            "switch": ["amlt_time", "amlt_status"],
                                            "beta": [*wide, 0.0]},
        "iptw_cox_sums": KM | grid | {"design": design.to_params(), "treatment": "sex",
                                      "gamma": [0.0, 0.0, 0.0], "beta": [500.0]},
    }
    for query, params in cases.items():
        with pytest.raises(InvalidInput, match=r"parameter '(beta|gamma)'"):
            get_query(query).check(params)
    big_leaf = {"feature": [-1], "threshold": [0.0], "default_left": [True], "left": [-1],
                "right": [-1], "value": [250.0]}
    outcome = Outcome("survival:cox", duration_col="os_time", event_col="os_status",
                      grid=default_grid())
    with pytest.raises(InvalidInput, match="parameter 'model'"):
        get_query("gbdt_cox_risk_sets").check({"design": design.to_params(),
                                               "outcome": outcome.to_params(),
                                               "model": {"base": 0.0, "trees": [big_leaf]}})
