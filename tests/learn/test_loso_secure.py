"""Pooled leave-one-site-out through the real secure runtime, in process: real site directories
(policy, ledger, audit), fold models trained by secure sums over the other sites, one secure sum
over all sites; it equals the plain-sum result on the same site cohorts, every site audits the
release, and a hub cannot spoof a site's id nor ask for a one-site release."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

import hemafed.learn.validation  # noqa: F401  (registers the query before the sites' policies)
from hemafed.cohort.demo import generate
from hemafed.cohort.partition import split_sites
from hemafed.demo import LocalSites, build_sites
from hemafed.errors import InvalidInput
from hemafed.federation.inprocess import run_in_process
from hemafed.federation.queries import SITE_ID_PARAM
from hemafed.federation.runtime import SecureFederation
from hemafed.learn.gbdt import default_grid
from hemafed.learn.metrics import column_predictor
from hemafed.learn.validation import (
    leave_one_site_out,
    local_federations,
    pooled_leave_one_site_out,
)
from hemafed.site.audit import AuditLog
from hemafed.site.store import load_cohort
from hemafed.study.derived import with_derived_scores
from hemafed.study.site_runtime import site_handler
from hemafed.study.spec import StudySpec

FEATURES = ["age", "hb", "plt", "bm_blast", "gene:TP53"]
OUTCOME = ("os_time", "os_status")
GRID = default_grid(25.0)
KW: dict[str, Any] = {"n_rounds": 3, "max_depth": 2, "learning_rate": 0.3, "max_bins": 8}
SPEC = StudySpec.from_mapping({
    "study_id": "loso-test", "requester": "tester",
    # the sites' plan: a boosted survival model on these features (and its validation)
    "analyses": [{"id": "gbdt", "kind": "gbdt", "duration": OUTCOME[0], "event": OUTCOME[1],
                  "features": " + ".join(FEATURES), "bins": KW["max_bins"],
                  "exact_histograms": True}]})


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> LocalSites:
    sites = split_sites(generate("MDS", 450, seed=5), 3, seed=2, size_skew=0.5)
    fed = build_sites(tmp_path_factory.mktemp("loso-sites"), sites, SPEC)
    # leave-one-site-out trains and evaluates the same requests over different site subsets,
    # a differencing pattern the sites refuse by default (docs/security.md): these sites allow it
    for d in fed.site_dirs.values():
        policy = yaml.safe_load((d / "policy.yaml").read_text())
        policy["refuse_differencing"] = False
        (d / "policy.yaml").write_text(yaml.safe_dump(policy))
    return fed


def _run(fed: LocalSites, body: Any, **kw: Any) -> Any:
    def hub(exchange: Any, site_ids: list[str], config: dict[str, Any]) -> Any:
        def federation_for(ids: Any) -> SecureFederation:
            return SecureFederation(exchange, fed.manifest, site_ids=list(ids),
                                    spec_sha256=SPEC.sha256, requester="tester")
        return body(federation_for, sorted(site_ids))

    return run_in_process(hub, site_handler, fed.site_configs(), {}, **kw)


def test_pooled_loso_through_secure_aggregation_equals_plain_sums(fed: LocalSites) -> None:
    assert fed.manifest.threshold == 2  # a one-site aggregation is impossible here

    def body(federation_for: Any, ids: list[str]) -> dict[str, Any]:
        res = pooled_leave_one_site_out(federation_for, ids, FEATURES, OUTCOME, grid=GRID,
                                        study=SPEC.study_id, **KW)
        return {"c": res.c_index, "comparable": res.comparable, "n": res.n,
                "events": res.events, "sites": list(res.sites)}

    secure = _run(fed, body)
    cohorts = {s: with_derived_scores(load_cohort(d)) for s, d in sorted(fed.site_dirs.items())}
    plain = pooled_leave_one_site_out(local_federations(cohorts), list(cohorts), FEATURES,
                                      OUTCOME, grid=GRID, **KW)
    assert secure["sites"] == sorted(fed.site_dirs)
    assert (secure["comparable"], secure["n"], secure["events"]) == (
        plain.comparable, plain.n, plain.events)
    # fixed-point secure sums may move leaf values by ~1e-9, never the ranking of these risks
    assert secure["c"] == pytest.approx(plain.c_index, abs=1e-9)
    for d in fed.site_dirs.values():
        log = AuditLog(d / "audit.log")
        assert log.verify()
        last = log.entries()[-1]
        assert last["query"] == "learn_loso_concordance@1" and last["decision"] == "allowed"
        assert SITE_ID_PARAM not in last["params"] and set(last["params"]["models"]) == set(
            fed.site_dirs)


def test_hub_cannot_spoof_a_site_id_through_the_runtime(fed: LocalSites) -> None:
    ids = sorted(fed.site_dirs)
    params = {"duration_col": "os_time", "event_col": "os_status",
              "grid": [float(t) for t in GRID],
              "models": {s: column_predictor("age", 0.0, 120.0) for s in ids},
              SITE_ID_PARAM: ids[0]}
    with pytest.raises(InvalidInput, match="parameter '_site_id' is invalid"):
        _run(fed, lambda federation_for, site_ids: federation_for(site_ids).secure_sum(
            "learn_loso_concordance", params, study=SPEC.study_id), raise_errors=True)
    for d in fed.site_dirs.values():
        last = AuditLog(d / "audit.log").entries()[-1]
        assert last["decision"] == "refused" and "reserved" in last["reason"]


def test_per_site_release_is_refused_before_training_on_a_secure_federation(
        fed: LocalSites) -> None:
    def never(messages: dict[str, bytes]) -> dict[str, bytes]:
        raise AssertionError("nothing may be sent")

    def federation_for(ids: Any) -> SecureFederation:
        return SecureFederation(never, fed.manifest, site_ids=list(ids))

    with pytest.raises(InvalidInput, match="single-site aggregate"):
        leave_one_site_out(federation_for, sorted(fed.site_dirs), FEATURES, OUTCOME, grid=GRID)

