"""Holes 5-8 of the attack review (docs/security.md): through real site directories, the real
site node and the real secure aggregation (in-process), as a hub sending only valid requests.

5. count tables outside the minimum-cell rule (``km_risk_table``): refused like any table;
6. an equivalent rewrite of a non-DP request over another participant set: refused (the
   participant rule is keyed on the study, not on the request's text);
7. a restored (deleted) ledger: the next answer is refused (``rollback``), not only at
   ``site check``;
8. a hand-written policy that omits the protective keys: protected (defaults in code).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hostile import HostileHub, decision_entry

from hemafed.cohort.demo import generate
from hemafed.cohort.partition import split_sites
from hemafed.demo import build_sites
from hemafed.errors import PolicyRefused, ProtocolError
from hemafed.federation.api import DPRequest
from hemafed.federation.queries import get_query
from hemafed.privacy.calibration import noisy_specs
from hemafed.site.audit import AuditLog
from hemafed.site.policy import SitePolicy
from hemafed.site.store import load_cohort
from hemafed.study.spec import StudySpec

SPEC = {"study_id": "holes-5-8", "requester": "tester", "analyses": [
    {"id": "d", "kind": "describe", "columns": ["age", "sex"]}]}
KM = {"duration_col": "os_time", "event_col": "os_status", "time_mapping": "up",
      "grid": [float(t) for t in range(1, 11)]}
HIST = {"column": "age", "low": 0.0, "high": 110.0, "bins": 20}


def _sites(root: Path, n_sites: int = 3, **overrides: Any) -> tuple[Any, StudySpec]:
    cohorts = split_sites(generate("MDS", 60 * n_sites, 5), n_sites, 5)
    spec = StudySpec.from_mapping(SPEC)
    # approved by hash: these requests are outside the describe plan on purpose (the plan's
    # own tests are tests/privacy/test_plan.py); the rules under test come after the plan
    return build_sites(root, cohorts, spec, store_plan=False,
                       policy_overrides={"require_plan": False, **overrides}), spec


def _ask(fed: Any, spec: StudySpec, query: str, params: dict[str, Any],
         dp: DPRequest | None = None, sites: list[str] | None = None) -> tuple[Any, HostileHub]:
    hub = HostileHub(fed, spec.study_id, spec.sha256)
    n = len(sites or fed.site_dirs)
    specs = noisy_specs(get_query(query).declare(params), dp, n)
    return hub.ask(query, params, specs=specs, dp=dp, divisor=n if dp else 1, sites=sites), hub


def _last(fed: Any, site: str) -> dict[str, Any]:
    return decision_entry(fed.site_dirs[site] / "audit.log")


def test_hole5_km_risk_table_is_under_the_minimum_cell_rule(tmp_path: Path) -> None:
    fed, spec = _sites(tmp_path / "sites", enforce_min_cell=True, min_subgroup_size=0)
    out, hub = _ask(fed, spec, "km_risk_table", KM)
    # a site's yearly event counts hold cells of 1-4 patients: the table is refused, by rule
    assert isinstance(out, PolicyRefused), out
    assert {b["name"] for b in hub.refusal_bodies()} <= {b"min_cell_size"}
    assert hub.refusal_bodies()
    assert any("count table" in _last(fed, s)["reason"] for s in fed.site_dirs)
    # the same table as a DP release is contributed
    out, _ = _ask(fed, spec, "km_risk_table", KM, DPRequest(1.0, 1e-6))
    assert not isinstance(out, Exception), out
    # at-risk counts and totals stay outside the rule (estimators need them); event and
    # concordance tables are in, decided by each statistic's declaration
    km = get_query("km_risk_table").declare(KM)
    assert [n for n, s in km.items() if s.min_cell_rule] == ["observed", "censored"]
    design = [{"kind": "numeric", "column": "age", "low": 0.0, "high": 110.0}]
    conc = get_query("cox_concordance_histogram").declare(
        {**KM, "design": design, "beta": [0.01], "lp_bins": 8})
    assert conc["events"].min_cell_rule and not conc["later"].min_cell_rule


def test_hole6_an_equivalent_rewrite_over_fewer_sites_is_refused(tmp_path: Path) -> None:
    fed, spec = _sites(tmp_path / "sites", n_sites=4)
    ids = sorted(fed.site_dirs)
    assert fed.manifest.threshold == 3
    every = {"column": "age", "low": 0, "high": 110}
    out, _ = _ask(fed, spec, "moments", every)
    assert not isinstance(out, Exception), out
    # the same statistics, written differently (110.0), without the last site: its sum by
    # difference
    rewrite = {"column": "age", "low": 0.0, "high": 110.0}
    out, _ = _ask(fed, spec, "moments", rewrite, sites=ids[:3])
    assert isinstance(out, ProtocolError), out
    first = AuditLog(fed.site_dirs[ids[0]] / "audit.log").entries()
    assert any("would give the difference by subtraction" in e["reason"] for e in first)
    # a DP release over the smaller set is still allowed: its noise is charged
    out, _ = _ask(fed, spec, "moments", rewrite, DPRequest(1.0, 1e-6), sites=ids[:3])
    assert not isinstance(out, Exception), out
    # the exact sum over every site is what was released, once
    pooled = sum(load_cohort(d).patients["age"].dropna().size for d in fed.site_dirs.values())
    again, _ = _ask(fed, spec, "moments", rewrite)
    assert again.values["n"][0] == pooled


def test_hole7_a_deleted_ledger_is_refused_at_the_next_answer(tmp_path: Path) -> None:
    fed, spec = _sites(tmp_path / "sites")
    dp = DPRequest(0.5, 1e-6)
    out, _ = _ask(fed, spec, "cohort_size", {}, dp)
    assert not isinstance(out, Exception), out
    victim = sorted(fed.site_dirs)[0]
    (fed.site_dirs[victim] / "ledger.jsonl").unlink()  # the budget would reset
    out, hub = _ask(fed, spec, "cohort_size", {}, dp)
    assert isinstance(out, PolicyRefused), out
    bodies = hub.refusal_bodies()
    assert [(b["code"], b["name"]) for b in bodies] == [(b"rollback", b"ledger")]
    entry = _last(fed, victim)
    assert entry["decision"] == "refused" and "ledger" in entry["reason"]
    assert not (fed.site_dirs[victim] / "ledger.jsonl").exists()  # nothing charged again


def test_hole8_a_policy_omitting_the_protective_keys_is_protected(tmp_path: Path) -> None:
    p = SitePolicy.from_mapping({"site_id": "A", "min_cell_size": 7})
    assert p.enforce_min_cell and p.require_plan and p.min_subgroup_size == 7
    assert SitePolicy("A").enforce_min_cell and SitePolicy("A").require_plan
    fed, spec = _sites(tmp_path / "sites")
    for d in fed.site_dirs.values():  # a hand-written policy: the keys left out
        doc = yaml.safe_load((d / "policy.yaml").read_text())
        for key in ("enforce_min_cell", "min_subgroup_size", "require_plan"):
            doc.pop(key, None)
        (d / "policy.yaml").write_text(yaml.safe_dump(doc))
    ages = [np.histogram(load_cohort(d).patients["age"].dropna(), np.linspace(0, 110, 21))[0]
            for d in fed.site_dirs.values()]
    assert any(np.any((h > 0) & (h < 5)) for h in ages)
    out, hub = _ask(fed, spec, "numeric_summary", HIST)
    assert isinstance(out, PolicyRefused), out
    # the stored-plan rule refuses first: the study was approved by hash only
    assert {b["name"] for b in hub.refusal_bodies()} == {b"no_plan"}


@pytest.mark.parametrize("query", ["km_risk_table", "cox_concordance_histogram"])
def test_hole5_every_registered_count_table_is_classified(query: str) -> None:
    """docs/queries.md lists, per query, which counts are under the minimum-cell rule."""
    text = (Path(__file__).parents[2] / "docs" / "queries.md").read_text()
    assert f"`{query}`" in text.split("## Minimum-cell rule")[1]
