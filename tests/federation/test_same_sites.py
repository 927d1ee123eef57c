"""Same sites, every round: a site dropping in the middle of a Newton fit restarts the fit on
the survivors, whose result is the survivors' pooled fit (lifelines), never a mixture."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from hemafed.cohort.demo import generate
from hemafed.cohort.partition import split_sites
from hemafed.demo import build_sites
from hemafed.errors import SitesChanged
from hemafed.federation.inprocess import run_in_process
from hemafed.federation.runtime import SecureFederation
from hemafed.site.store import load_cohort
from hemafed.study.site_runtime import site_handler
from hemafed.study.spec import StudySpec

FORMULA = ["age", "hb", "bm_blast"]
SPEC = {"study_id": "same-sites", "requester": "tester", "analyses": [
    {"id": "cox", "kind": "cox", "duration": "os_time", "event": "os_status",
     "formula": " + ".join(FORMULA)},
    {"id": "size", "kind": "describe", "columns": ["age"], "bounds": {"age": [0, 120]}}]}
# exchanges of the study: 0 session set-up, 1 the Cox time grid, 2 Newton round 1 (beta = 0),
# 3 Newton round 2 ...: a site missing from exchange 3 on drops after the first Newton round
AFTER_FIRST_ROUND = 3


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Any:
    cohorts = split_sites(generate("MDS", 700, 23), 5, 23, size_skew=0.4)
    spec = StudySpec.from_mapping(SPEC)
    # a restart on the survivors sends the first rounds' requests again over fewer sites: the
    # sites' differencing rule refuses that unless their officer allows it (docs/security.md)
    return build_sites(tmp_path_factory.mktemp("same-sites"), cohorts, spec,
                       policy_overrides={"refuse_differencing": False}), spec


def _pooled_cox(site_dirs: list[Any]) -> pd.Series:
    from lifelines import CoxPHFitter

    frame = pd.concat([load_cohort(d).patients for d in site_dirs], ignore_index=True)
    data = frame[[*FORMULA, "os_time", "os_status"]].astype(float).dropna()
    fit = CoxPHFitter().fit(data, "os_time", "os_status",
                            fit_options={"precision": 1e-14, "r_precision": 1e-15})
    return fit.params_


def _run(sites: Any, drop: Any) -> dict[str, Any]:
    fed, spec = sites
    config = {"spec": dict(spec.raw), "manifest": fed.manifest.to_json()}
    return run_in_process("hemafed.study.hub:study_hub_main", site_handler, fed.site_configs(),
                          config, drop=drop)


def _coef(doc: dict[str, Any]) -> np.ndarray:
    table = doc["tables"]["summary"]
    return np.asarray(pd.DataFrame(table["data"], columns=table["columns"])["coef"], dtype=float)


def test_a_site_dropping_after_the_first_newton_round_restarts_on_the_survivors(sites: Any
                                                                                ) -> None:
    fed, _ = sites
    gone = sorted(fed.site_dirs)[1]
    results = _run(sites, lambda i, s: s == gone and i >= AFTER_FIRST_ROUND)
    cox = results["analyses"][0]
    assert cox["status"] == "ok", cox.get("error")
    survivors = sorted(s for s in fed.site_dirs if s != gone)
    assert cox["restarts"] == [{"after secure sums": 2, "from sites": sorted(fed.site_dirs),
                                "to sites": survivors}]
    assert cox["provenance"]["sites covered"] == survivors
    pooled_survivors = _pooled_cox([fed.site_dirs[s] for s in survivors])
    pooled_all = _pooled_cox(list(fed.site_dirs.values()))
    np.testing.assert_allclose(_coef(cox), pooled_survivors.to_numpy(), rtol=1e-6)
    assert not np.allclose(_coef(cox), pooled_all.to_numpy(), rtol=1e-3)  # it could disagree
    # the next analysis runs on the survivors too, and says so
    assert results["analyses"][1]["provenance"]["sites covered"] == survivors
    assert results["sites at the end"] == survivors


def test_below_quorum_the_analysis_fails_clearly(sites: Any) -> None:
    fed, _ = sites
    assert fed.manifest.threshold == 4
    gone = sorted(fed.site_dirs)[:2]
    results = _run(sites, lambda i, s: s in gone and i >= AFTER_FIRST_ROUND)
    cox = results["analyses"][0]
    assert cox["status"] == "failed"
    assert "threshold" in cox["error"] and "coef" not in cox


def test_a_later_sum_over_other_sites_raises_sites_changed(sites: Any) -> None:
    fed, spec = sites
    late = sorted(fed.site_dirs)[3]

    def hub(exchange: Any, site_ids: list[str], config: dict[str, Any]) -> Any:
        secure = SecureFederation(exchange, fed.manifest, site_ids=site_ids,
                                  spec_sha256=spec.sha256, requester="tester")
        secure.secure_sum("cohort_size", {}, study=spec.study_id)
        try:
            secure.secure_sum("cohort_size", {}, study=spec.study_id)
        except SitesChanged as exc:
            return {"fixed": list(exc.fixed), "survivors": list(exc.survivors), "text": str(exc)}
        return None

    # exchanges: 0 set-up, 1 first one-shot sum, 2 second (late missing), 3 set-up, 4-5 repeat
    out = run_in_process(hub, site_handler, fed.site_configs(), {},
                         drop=lambda i, s: s == late and i >= 2)
    assert out["fixed"] == sorted(fed.site_dirs)
    assert out["survivors"] == sorted(s for s in fed.site_dirs if s != late)
    assert f"dropped ['{late}']" in out["text"]
