"""The minimum-cell rule and the Cox fit's per-time event counts (issue 13, security row 3).

Through real site directories under the shipped policy template (minimum-cell rule on,
``min_cell_size`` 5, plans required), the real site node and secure aggregation: a non-DP Cox
fit whose spec fixes a public ``lattice`` is refused ``min_cell_size`` on small cohorts (its
per-time event counts stay under the rule on the lattice too: the same reply carries the
events' per-time covariate sums, attack L of the fourth review); with the rule off the lattice
fit equals lifelines on the pooled rows with times rounded up to the lattice; the same fit on a
grid the hub chose is refused under the minimum-cell rule, and a lattice finer than the site's
``max_lattice_steps_per_unit`` is refused naming that parameter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from hemafed.analytics.cox import FederatedCoxPH
from hemafed.analytics.survival_grid import lattice_grid
from hemafed.cohort.demo import generate
from hemafed.cohort.partition import split_sites
from hemafed.demo import LocalSites, build_sites
from hemafed.errors import HemafedError
from hemafed.federation.inprocess import run_in_process
from hemafed.federation.runtime import SecureFederation
from hemafed.secure.identity import FederationManifest
from hemafed.site import policy as site_policy
from hemafed.site.audit import AuditLog
from hemafed.site.store import load_cohort
from hemafed.study.site_runtime import site_handler
from hemafed.study.spec import StudySpec

FORMULA = ["age", "hb"]
PROTECTIVE = ("min_cell_size", "enforce_min_cell", "min_subgroup_size", "max_cells",
              "require_dp", "refuse_differencing", "allow_non_secure", "privacy_budget",
              "require_plan")


def _spec(study_id: str, lattice: float | None) -> StudySpec:
    cox: dict[str, Any] = {"id": "cox", "kind": "cox", "duration": "os_time",
                           "event": "os_status", "formula": " + ".join(FORMULA)}
    if lattice is not None:
        cox["lattice"] = lattice
    return StudySpec.from_mapping({"study_id": study_id, "requester": "tester",
                                   "analyses": [cox]})


def _template_sites(root: Path, spec: StudySpec, **policy: Any) -> LocalSites:
    """Three small sites (about 40 patients each) under the template's protective settings
    (``policy`` replaces some of them)."""
    template = yaml.safe_load(site_policy._TEMPLATE.format(site_id="template"))
    assert template["enforce_min_cell"] is True and template["min_cell_size"] == 5
    assert template["max_lattice_steps_per_unit"] == 12
    cohorts = split_sites(generate("MDS", 120, 13), 3, 13)
    return build_sites(root, cohorts, spec,
                       policy_overrides={**{k: template[k] for k in PROTECTIVE}, **policy})


def _run_study(fed: LocalSites, spec: StudySpec) -> dict[str, Any]:
    config = {"spec": dict(spec.raw), "manifest": fed.manifest.to_json()}
    result = run_in_process("hemafed.study.hub:study_hub_main", site_handler,
                            fed.site_configs(), config)
    return result["analyses"][0]


def _refusals(fed: LocalSites) -> list[str]:
    return [str(e["reason"]) for d in fed.site_dirs.values()
            for e in AuditLog(d / "audit.log").entries() if "[policy:" in str(e["reason"])]


@pytest.fixture(scope="module")
def monthly(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalSites, StudySpec]:
    spec = _spec("lattice-monthly", 12)
    return _template_sites(tmp_path_factory.mktemp("lattice"), spec), spec


def test_a_non_dp_cox_on_the_plan_lattice_is_refused_on_small_template_sites(
        monthly: tuple[LocalSites, StudySpec]) -> None:
    fed, spec = monthly
    # each site's own events per month hold cells of 1 to 4 patients: the rule refuses them,
    # on the lattice as on any grid
    for d in fed.site_dirs.values():
        p = load_cohort(d).patients.dropna(subset=[*FORMULA, "os_time", "os_status"])
        months = np.ceil(p.loc[p["os_status"] > 0, "os_time"].astype(float) * 12 - 1e-7)
        counts = months.value_counts()
        assert ((counts > 0) & (counts < 5)).any()
    before = len(_refusals(fed))
    cox = _run_study(fed, spec)
    assert cox["status"] == "failed"
    assert "min_cell_size" in cox["error"], cox["error"]
    new = _refusals(fed)[before:]
    assert new and all("[policy:min_cell_size" in r for r in new), new


def test_a_non_dp_cox_on_the_plan_lattice_equals_lifelines_with_the_rule_off(
        tmp_path: Path) -> None:
    from lifelines import CoxPHFitter

    spec = _spec("lattice-monthly-off", 12)
    fed = _template_sites(tmp_path, spec, enforce_min_cell=False)
    cox = _run_study(fed, spec)
    assert cox["status"] == "ok", cox.get("error")
    summary = pd.DataFrame(**{k: cox["tables"]["summary"][k]
                              for k in ("data", "index", "columns")})
    pooled = pd.concat([load_cohort(d).patients for d in fed.site_dirs.values()],
                       ignore_index=True).dropna(subset=[*FORMULA, "os_time", "os_status"])
    frame = pooled[FORMULA].astype(float).copy()
    # each time moved up to the end of its month (computed here, not by hemafed)
    frame["T"] = np.ceil(pooled["os_time"].astype(float).to_numpy() * 12 - 1e-7) / 12
    frame["E"] = pooled["os_status"].astype(float).to_numpy()
    ref = CoxPHFitter().fit(frame, "T", "E", fit_options={"precision": 1e-14})
    np.testing.assert_allclose(summary["coef"].astype(float).to_numpy(),
                               ref.params_[FORMULA].to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(summary["se(coef)"].astype(float).to_numpy(),
                               ref.standard_errors_[FORMULA].to_numpy(), rtol=1e-6)
    assert cox["stats"]["n"] == len(frame)
    assert "concordance" not in cox["stats"]  # its histogram is a released table
    # the study's own pooled reference (demo and report) rounds the times the same way
    from hemafed.study.pooled import compare

    check = compare(spec.analyses[0], cox, [load_cohort(d) for d in fed.site_dirs.values()])
    assert check is not None
    assert float(check["max relative difference, coefficients"]) < 1e-5


def _hub_grid_fit(exchange: Any, site_ids: list[str], config: dict[str, Any]) -> str:
    """A hub fitting the approved Cox model on a grid of its own choosing (weekly)."""
    spec = StudySpec.from_mapping(config["spec"])
    federation = SecureFederation(exchange, FederationManifest.from_json(config["manifest"]),
                                  site_ids=site_ids, spec_sha256=spec.sha256,
                                  requester=spec.requester)
    try:
        FederatedCoxPH().fit(federation, "os_time", "os_status", " + ".join(FORMULA),
                             grid=lattice_grid(52.0), time_mapping="up", concordance=False,
                             study=spec.study_id)
    except HemafedError as exc:
        return str(exc)
    return "answered"


def test_the_same_cox_on_a_hub_chosen_finer_grid_is_refused_naming_the_rule(
        monthly: tuple[LocalSites, StudySpec]) -> None:
    fed, spec = monthly
    config = {"spec": dict(spec.raw), "manifest": fed.manifest.to_json()}
    before = len(_refusals(fed))
    out = run_in_process(_hub_grid_fit, site_handler, fed.site_configs(), config)
    assert out != "answered"
    assert "min_cell_size" in out, out
    new = _refusals(fed)[before:]
    assert new and all("[policy:min_cell_size" in r for r in new), new


def test_a_lattice_finer_than_the_policy_cap_is_refused_naming_the_parameter(
        tmp_path: Path) -> None:
    spec = _spec("lattice-weekly", 52)
    fed = _template_sites(tmp_path, spec)
    cox = _run_study(fed, spec)
    assert cox["status"] == "failed"
    assert "max_lattice_steps_per_unit" in cox["error"], cox["error"]
    refusals = _refusals(fed)
    assert refusals and all("[policy:max_lattice_steps_per_unit" in r for r in refusals)


def test_the_plan_lattice_is_the_whole_lattice_moved_up() -> None:
    from hemafed.study.plan import StudyPlan

    plan = StudyPlan.from_spec(_spec("lattice-plan", 12))
    month = lattice_grid(12.0)
    assert "up" in plan.time_mappings
    assert plan.on_plan_lattice({"grid": month, "time_mapping": "up"}) == 12.0
    # a part of the lattice, another public lattice, or another mapping is not the plan's
    assert plan.on_plan_lattice({"grid": month[:-1], "time_mapping": "up"}) is None
    assert plan.on_plan_lattice({"grid": month[::3], "time_mapping": "up"}) is None
    assert plan.on_plan_lattice({"grid": lattice_grid(4.0), "time_mapping": "up"}) is None
    assert plan.on_plan_lattice({"grid": month, "time_mapping": "exact"}) is None
    assert plan.on_plan_lattice({"grid": "x", "time_mapping": "up"}) is None
    for junk in (10**400, float("nan"), True):
        assert plan.on_plan_lattice({"grid": [junk] * len(month), "time_mapping": "up"}) is None
    # a spec without a lattice has none (and no ``up`` mapping)
    bare = StudyPlan.from_spec(_spec("lattice-none", None))
    assert bare.on_plan_lattice({"grid": month, "time_mapping": "up"}) is None
    assert "up" not in bare.time_mappings


@pytest.mark.parametrize("value", [7, 0.5, True, "12"])
def test_a_lattice_must_be_a_public_one(value: Any) -> None:
    from hemafed.errors import InvalidInput

    with pytest.raises(InvalidInput, match="lattice must be one of the public lattices"):
        _spec("lattice-bad", value)


def test_the_policy_cap_is_read_and_checked() -> None:
    from hemafed.errors import InvalidInput

    policy = site_policy.SitePolicy.from_mapping({"site_id": "s"})
    assert policy.max_lattice_steps_per_unit == 12.0
    weekly = site_policy.SitePolicy.from_mapping({"site_id": "s",
                                                  "max_lattice_steps_per_unit": 52})
    assert weekly.max_lattice_steps_per_unit == 52.0
    assert site_policy.SitePolicy.from_mapping(weekly.to_mapping()) == weekly
    with pytest.raises(InvalidInput, match="max_lattice_steps_per_unit"):
        site_policy.SitePolicy.from_mapping({"site_id": "s", "max_lattice_steps_per_unit": 0})
