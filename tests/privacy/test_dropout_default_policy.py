"""Dropout under the protective defaults, and the hub side of the participants rule.

With the default policy (``refuse_differencing: true``, the study-keyed participants rule) a
site lost in the middle of a fit cannot be replaced by a re-run over the survivors: the sites
refuse it. The user must be told that, and what to do, not "only 0 of 5 sites answered the
'consistency check' step". And a site missing from a federation's first sum is never asked
again by that federation (its study's participants are fixed when the first sum covers them).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from hemafed.cohort.demo import generate
from hemafed.cohort.partition import split_sites
from hemafed.demo import build_sites
from hemafed.federation.inprocess import run_in_process
from hemafed.federation.runtime import SecureFederation
from hemafed.site.audit import AuditLog
from hemafed.site.store import load_cohort
from hemafed.study.site_runtime import site_handler
from hemafed.study.spec import StudySpec

FORMULA = ["age", "hb", "bm_blast"]
SPEC = {"study_id": "dropout-default", "requester": "tester", "analyses": [
    {"id": "cox", "kind": "cox", "duration": "os_time", "event": "os_status",
     "formula": " + ".join(FORMULA)}]}
# exchanges: 0 session set-up, 1 the Cox time grid, 2 Newton round 1, 3 Newton round 2 ...
AFTER_FIRST_ROUND = 3


@pytest.fixture(scope="module")
def default_sites(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Five real site directories under the default differencing rule (not overridden)."""
    cohorts = split_sites(generate("MDS", 600, 31), 5, 31, size_skew=0.4)
    spec = StudySpec.from_mapping(SPEC)
    fed = build_sites(tmp_path_factory.mktemp("dropout-default"), cohorts, spec)
    return fed, spec


def _run_study(fed: Any, spec: StudySpec, drop: Any) -> dict[str, Any]:
    config = {"spec": dict(spec.raw), "manifest": fed.manifest.to_json()}
    return run_in_process("hemafed.study.hub:study_hub_main", site_handler, fed.site_configs(),
                          config, drop=drop)


def test_a_mid_fit_dropout_under_the_default_policy_says_what_happened(default_sites: Any
                                                                       ) -> None:
    fed, spec = default_sites
    ids = sorted(fed.site_dirs)
    gone = ids[1]
    results = _run_study(fed, spec, lambda i, s: s == gone and i >= AFTER_FIRST_ROUND)
    cox = results["analyses"][0]
    assert cox["status"] == "failed", cox
    error = cox["error"]
    # what happened: the fit lost that site, and the rule the sites applied
    assert f"lost site(s) ['{gone}']" in error
    assert "'participants'" in error
    # what the user can do
    assert "refuse_differencing: false" in error and "DP" in error
    # not the bare protocol text
    assert "sites answered the" not in error
    assert "coef" not in cox.get("tables", {}).get("summary", {}).get("columns", [])
    # the sites did refuse, under the participants rule (the refusal is in their audit logs)
    refused = [s for s in ids if s != gone and any(
        "[policy:participants " in str(e["reason"])
        for e in AuditLog(fed.site_dirs[s] / "audit.log").entries())]
    assert refused, "no site refused under the participants rule"


def test_the_message_is_only_for_the_participants_refusal(tmp_path: Any) -> None:
    """With ``refuse_differencing: false`` the same dropout restarts on the survivors (no
    DropoutRefused), and the fit is the survivors' pooled fit (lifelines)."""
    from lifelines import CoxPHFitter

    cohorts = split_sites(generate("MDS", 600, 31), 5, 31, size_skew=0.4)
    spec = StudySpec.from_mapping(SPEC)
    fed = build_sites(tmp_path / "sites", cohorts, spec,
                      policy_overrides={"refuse_differencing": False})
    ids = sorted(fed.site_dirs)
    gone = ids[1]
    cox = _run_study(fed, spec, lambda i, s: s == gone and i >= AFTER_FIRST_ROUND)["analyses"][0]
    assert cox["status"] == "ok", cox.get("error")
    survivors = [s for s in ids if s != gone]
    assert cox["provenance"]["sites covered"] == survivors
    frame = pd.concat([load_cohort(fed.site_dirs[s]).patients for s in survivors],
                      ignore_index=True)
    data = frame[[*FORMULA, "os_time", "os_status"]].astype(float).dropna()
    pooled = CoxPHFitter().fit(data, "os_time", "os_status").params_.to_numpy()
    table = cox["tables"]["summary"]
    coef = np.asarray(pd.DataFrame(table["data"], columns=table["columns"])["coef"], dtype=float)
    np.testing.assert_allclose(coef, pooled, rtol=1e-4)


def test_a_site_missing_from_the_first_sum_is_not_asked_again(tmp_path: Any) -> None:
    """Hub side of the participants rule: the federation's later sums (and sessions) go to the
    first sum's contributors only, even when the missing site is back online."""
    spec = StudySpec.from_mapping({"study_id": "hub-side-participants", "requester": "tester",
                                   "analyses": [{"id": "d", "kind": "describe",
                                                 "columns": ["age", "sex"]}]})
    fed = build_sites(tmp_path / "sites", split_sites(generate("MDS", 200, 8), 4, 8), spec)
    ids = sorted(fed.site_dirs)
    late = ids[3]
    before = len(AuditLog(fed.site_dirs[late] / "audit.log").entries())
    sent: list[set[str]] = []

    def hub(exchange: Any, site_ids: list[str], config: dict[str, Any]) -> Any:
        def recording(messages: dict[str, bytes]) -> dict[str, bytes]:
            sent.append(set(messages))
            return exchange(messages)

        secure = SecureFederation(recording, fed.manifest, site_ids=site_ids,
                                  spec_sha256=spec.sha256, requester="tester")
        first = secure.secure_sum("cohort_size", {}, study=spec.study_id)
        n_first = len(sent)
        second = secure.secure_sum("cohort_size", {}, study=spec.study_id)
        return {"first": list(first.sites), "second": list(second.sites),
                "n_first": n_first, "n_first_value": float(first.values["n"][0]),
                "n_second_value": float(second.values["n"][0])}

    # the late site misses the session set-up (exchange 0) of the first sum, then is back
    out = run_in_process(hub, site_handler, fed.site_configs(), {},
                         drop=lambda i, s: s == late and i == 0)
    others = [s for s in ids if s != late]
    assert out["first"] == others and out["second"] == others
    assert all(late not in asked for asked in sent[out["n_first"]:]), sent
    expected = sum(len(load_cohort(fed.site_dirs[s])) for s in others)
    assert out["n_first_value"] == out["n_second_value"] == expected
    # the late site was never asked anything: no new entry in its audit log
    assert len(AuditLog(fed.site_dirs[late] / "audit.log").entries()) == before

