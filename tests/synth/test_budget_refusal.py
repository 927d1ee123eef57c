"""A site whose remaining privacy budget is too small refuses, and the synthesis stops clearly.

Through the real runtime: site directories made by the site intake (policy, ledger, audit log,
identity keys), secure aggregation over the in-process transport, ``SecureFederation``. One
site's per-study epsilon fits the first release of the fit and not the second.

What the runtime guarantees and what is tested:

* the hub gets no sum for the refused release: the fit raises ``BudgetExhausted`` naming the
  refusing site, the budget reason and the phase of the synthesis that could not run;
* the refusing site audits the refusal and does not charge its ledger for it (charged before
  release; the ledger refuses before recording);
* every release that was made is charged at every site; a site that answered in the same
  exchange as the refusal may hold a charge for the refused request (sites charge before they
  mask, without knowing whether the hub will be able to unmask): never more than that one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from hemafed.atomic import write_text
from hemafed.cohort.demo import generate
from hemafed.cohort.partition import split_sites
from hemafed.demo import LocalSites, build_sites
from hemafed.errors import BudgetExhausted
from hemafed.federation.inprocess import run_in_process
from hemafed.federation.runtime import SecureFederation
from hemafed.site.audit import AuditLog
from hemafed.site.ledger import PrivacyLedger, composed_epsilon
from hemafed.site.policy import SitePolicy
from hemafed.study.site_runtime import site_handler
from hemafed.study.spec import StudySpec
from hemafed.synth import FederatedAIM, FederatedMST, accounting

DELTA = 1e-6
COLUMNS = ["hb", "bm_blast", "os_status"]
SPEC = {"study_id": "synth-budget", "requester": "tester", "analyses": [
    {"id": "synth", "kind": "synth", "columns": COLUMNS}]}  # the sites' plan: synthesis


def _sites(root: Path, seed: int) -> tuple[LocalSites, StudySpec]:
    cohort = generate("MDS", 300, seed=seed)
    spec = StudySpec.from_mapping(SPEC)
    return build_sites(root, split_sites(cohort, 3, seed=seed), spec), spec


def _set_study_epsilon(site_dir: Path, epsilon: float) -> None:
    policy = yaml.safe_load((site_dir / "policy.yaml").read_text())
    policy["privacy_budget"]["per_study"]["epsilon"] = epsilon
    write_text(site_dir / "policy.yaml", yaml.safe_dump(policy, sort_keys=False))


def _fit(sites: LocalSites, spec: StudySpec, model: Any) -> Any:
    def hub(exchange: Any, site_ids: list[str], config: dict[str, Any]) -> Any:
        fed = SecureFederation(exchange, sites.manifest, site_ids=site_ids,
                               spec_sha256=spec.sha256, requester="tester")
        return model.fit(fed, study=spec.study_id).privacy()

    return run_in_process(hub, site_handler, sites.site_configs(), {})


def _ledger(site_dir: Path) -> list[Any]:
    policy = SitePolicy.load(site_dir / "policy.yaml")
    return PrivacyLedger.from_policy(site_dir / "ledger.jsonl", policy).charges()


def _first_release_epsilon(first_rho: float) -> float:
    return composed_epsilon([(accounting.noise_multiplier_for_rho(first_rho), 1)], DELTA)


@pytest.mark.parametrize("method", ["MST", "AIM"])
def test_site_short_of_budget_refuses_and_the_fit_stops(tmp_path: Path, method: str) -> None:
    sites, spec = _sites(tmp_path, seed=21)
    poor = sorted(sites.site_dirs)[1]
    if method == "MST":
        model: Any = FederatedMST(1.0, DELTA, COLUMNS, iters=50)
        assert model.rho is not None
        first_rho = model.rho / 3
    else:
        model = FederatedAIM(1.0, DELTA, COLUMNS, rounds=2, iters=50, round_iters=20)
        assert model.rho is not None
        first_rho = 0.5 * model.rho  # the one-way release, capped at half of rho (rounds < d)
    # Enough for the first release of the fit, not for the second.
    _set_study_epsilon(sites.site_dirs[poor], _first_release_epsilon(first_rho) * 1.001)

    with pytest.raises(BudgetExhausted) as info:
        _fit(sites, spec, model)
    err = info.value
    # the refusal came through the secure sum: the hub says how many sites, not which
    n = len(sites.site_dirs)
    assert err.site == "" and str(err).startswith(f"1 of {n} sites refused: ")
    assert "privacy budget exhausted" in err.reason and "synth-budget" in err.reason
    assert f"the {method} " in err.reason and "fit stopped" in err.reason
    assert not any(site in str(err) for site in sites.site_dirs)

    refusal = AuditLog(sites.site_dirs[poor] / "audit.log").entries()[-1]
    assert refusal["decision"] == "refused" and "budget exhausted" in refusal["reason"]
    assert refusal["query"] == "marginal_counts@1" and refusal["study"] == spec.study_id
    refused_id = refusal["request_id"]

    poor_charges = _ledger(sites.site_dirs[poor])
    assert len(poor_charges) == 1  # the first release only; nothing for the refused one
    assert refused_id not in {c.request_id for c in poor_charges}
    made = poor_charges[0].request_id
    for site_id, site_dir in sites.site_dirs.items():
        charges = _ledger(site_dir)
        assert charges[0].request_id == made, site_id
        assert [c.request_id for c in charges[1:]] in ([], [refused_id]), site_id


def test_aim_through_the_runtime_charges_every_ledger(tmp_path: Path) -> None:
    sites, spec = _sites(tmp_path, seed=22)
    aim = FederatedAIM(1.0, DELTA, COLUMNS, rounds=2, iters=50, round_iters=20)
    priv = _fit(sites, spec, aim)
    assert priv["rho_spent"] == pytest.approx(priv["rho"], rel=1e-9)
    nms = [r["noise_multiplier"] for r in priv["releases"]]
    for site_id, site_dir in sites.site_dirs.items():
        charges = _ledger(site_dir)
        assert [c.noise_multiplier for c in charges] == pytest.approx(nms), site_id
        spent = composed_epsilon([(c.noise_multiplier, c.count) for c in charges], DELTA)
        assert spent <= 1.0 * 1.001, site_id
        allowed = [e for e in AuditLog(site_dir / "audit.log").entries()
                   if e["query"] == "marginal_counts@1" and e["decision"] == "allowed"]
        assert len(allowed) == len(nms), site_id
        assert [e["epsilon"] for e in allowed] == pytest.approx([c.epsilon for c in charges])
