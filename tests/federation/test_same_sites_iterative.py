"""Same sites, every round, beyond Cox: boosting, synthesis and FedAvg training.

A site drops in the middle of each fit (the in-process ``drop=`` hook, real site directories and
secure aggregation). Under the sites' default policy the fit fails with ``DropoutRefused``
naming the participants rule; with ``refuse_differencing: false`` (or, for synthesis, whose releases are all DP, under the
default policy too) it restarts on the survivors
through the study runner's rule (:func:`hemafed.study.runner._on_fixed_sites`), and the result
equals the same fit run on the survivors alone from the start (which could disagree: it differs
from the fit over every site), states which sites it covers, and records the restart.
docs/operator-guide.md "Same sites, every round" states the rule: FedAvg restarts too.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from hemafed.cohort.demo import generate
from hemafed.cohort.partition import split_sites
from hemafed.demo import LocalSites, build_sites
from hemafed.federation.inprocess import run_in_process
from hemafed.federation.runtime import SecureFederation
from hemafed.study.runner import TrackingFederation, _on_fixed_sites
from hemafed.study.site_runtime import site_handler
from hemafed.study.spec import StudySpec

Drop = Callable[[int, str], bool] | None
RESTARTS = {"refuse_differencing": False}
# enough budget for a high-epsilon synthesis run twice (the discarded first attempt is charged)
BIG_BUDGET = {"privacy_budget": {"total": {"epsilon": 1e5, "delta": 1e-3},
                                 "per_study": {"epsilon": 1e5, "delta": 1e-3}}}

GBDT_SPEC = {"study_id": "same-sites-gbdt", "requester": "tester", "analyses": [
    {"id": "boost", "kind": "gbdt", "duration": "os_time", "event": "os_status",
     "features": "age + hb + bm_blast + gene:TP53", "rounds": 3, "depth": 2, "bins": 8,
     "learning_rate": 0.3, "exact_histograms": True}]}
SYNTH_COLUMNS = ["hb", "bm_blast", "os_status"]
SYNTH_EPSILON = 2000.0  # noise of a few hundredths of a patient per cell: the counts show
SYNTH_STUDY = "same-sites-synth"
SYNTH_SPEC = {"study_id": SYNTH_STUDY, "requester": "tester", "epsilon": SYNTH_EPSILON,
              "delta": 1e-6, "analyses": [
                  {"id": "synth", "kind": "synth", "columns": SYNTH_COLUMNS,
                   "epsilon": SYNTH_EPSILON, "delta": 1e-6, "n": 200}]}
NEURAL_STUDY = "same-sites-neural"
NEURAL_SPEC = {"study_id": NEURAL_STUDY, "requester": "tester", "analyses": [
    {"id": "size", "kind": "describe", "columns": ["age"], "bounds": {"age": [0, 120]}}]}
NEURAL_FORMULA = "age + hb + bm_blast"


def _cohorts(seed: int) -> Any:
    return split_sites(generate("MDS", 500, seed), 5, seed, size_skew=0.4)


def _study(fed: LocalSites, spec: StudySpec, drop: Drop) -> dict[str, Any]:
    """The study through the real hub entry point (``study_hub_main``), in process."""
    config = {"spec": dict(spec.raw), "manifest": fed.manifest.to_json()}
    return run_in_process("hemafed.study.hub:study_hub_main", site_handler, fed.site_configs(),
                          config, drop=drop)


def _fit_on_fixed_sites(fed: LocalSites, spec: StudySpec, fit: Callable[[Any], dict[str, Any]],
                        drop: Drop) -> dict[str, Any]:
    """One fit under the study runner's same-sites rule, as :func:`run_study` runs it."""
    analysis = spec.analyses[0]

    def hub(exchange: Any, site_ids: list[str], config: dict[str, Any]) -> Any:
        secure = SecureFederation(exchange, fed.manifest, site_ids=site_ids,
                                  spec_sha256=spec.sha256, requester="tester")
        tracker = TrackingFederation(secure)
        body, restarts = _on_fixed_sites(tracker, analysis, spec, lambda f, a, s: fit(f))
        calls = tracker.take()
        covered = sorted({tuple(c["site_ids"]) for c in calls})
        return {"body": body, "restarts": restarts, "sums cover": [list(t) for t in covered]}

    return run_in_process(hub, site_handler, fed.site_configs(), {}, drop=drop)


def _table(doc: dict[str, Any], name: str) -> pd.DataFrame:
    t = doc["tables"][name]
    return pd.DataFrame(t["data"], columns=t["columns"], index=t.get("index"))


# ------------------------------------------------------------------------------- boosting


@pytest.fixture(scope="module")
def gbdt_spec() -> StudySpec:
    return StudySpec.from_mapping(GBDT_SPEC)


def test_boosting_under_the_default_policy_fails_naming_the_rule(tmp_path: Path,
                                                                 gbdt_spec: StudySpec) -> None:
    fed = build_sites(tmp_path / "sites", _cohorts(41), gbdt_spec)
    gone = sorted(fed.site_dirs)[1]
    boost = _study(fed, gbdt_spec, lambda i, s: s == gone and i >= 4)["analyses"][0]
    assert boost["status"] == "failed", boost
    assert f"lost site(s) ['{gone}']" in boost["error"]
    assert "'participants'" in boost["error"] and "refuse_differencing: false" in boost["error"]
    assert "tables" not in boost


def test_boosting_restarts_on_the_survivors_and_equals_their_fit(tmp_path: Path,
                                                                  gbdt_spec: StudySpec) -> None:
    fed = build_sites(tmp_path / "sites", _cohorts(41), gbdt_spec, policy_overrides=RESTARTS)
    ids = sorted(fed.site_dirs)
    gone = ids[1]
    survivors = [s for s in ids if s != gone]
    everyone = _study(fed, gbdt_spec, None)["analyses"][0]
    # a few boosting rounds in (exchange 0 is the session set-up)
    restarted = _study(fed, gbdt_spec, lambda i, s: s == gone and i >= 4)["analyses"][0]
    alone = _study(fed, gbdt_spec, lambda i, s: s == gone)["analyses"][0]
    for doc in (everyone, restarted, alone):
        assert doc["status"] == "ok", doc.get("error")
    assert everyone["provenance"]["secure sums"] > 4  # the drop is in the middle of the fit
    assert restarted["restarts"] == [{"after secure sums": 3, "from sites": ids,
                                      "to sites": survivors}]
    assert "restarts" not in alone
    assert restarted["provenance"]["sites covered"] == survivors
    assert alone["provenance"]["sites covered"] == survivors
    # the restarted model is the survivors' model (exact histograms: to the last bit), not a mix
    assert restarted["provenance"]["secure sums"] == alone["provenance"]["secure sums"]
    for name in ("discrimination", "feature_importance"):
        pd.testing.assert_frame_equal(_table(restarted, name), _table(alone, name))
    # ... which could disagree: the model over every site is another one
    assert not np.allclose(_table(restarted, "feature_importance").to_numpy(float),
                           _table(everyone, "feature_importance").to_numpy(float))


# ------------------------------------------------------------------------------ synthesis


def _synth_sites(root: Path, spec: StudySpec) -> LocalSites:
    return build_sites(root, _cohorts(43), spec, policy_overrides=BIG_BUDGET)


def _mst(fed: Any) -> dict[str, Any]:
    from hemafed.synth.domain import SynthDomain
    from hemafed.synth.mst import FederatedMST

    # the study runner's synthesis (run_synth), with the released marginals kept for the test
    mst = FederatedMST(SYNTH_EPSILON, 1e-6, SYNTH_COLUMNS,
                       SynthDomain.for_columns(SYNTH_COLUMNS), iters=50)
    mst.fit(fed, study=SYNTH_STUDY)
    return {"marginals": {"/".join(m.clique) + ":" + m.phase: m.values.tolist()
                          for m in mst.measurements}}


@pytest.mark.slow
def test_synthesis_restarts_on_the_survivors_and_measures_only_them(tmp_path: Path) -> None:
    """Synthesis releases only DP marginals, which the participants rule does not pin to one
    site set (docs/security.md): under the default policy it restarts on the survivors."""
    spec = StudySpec.from_mapping(SYNTH_SPEC)
    fed = _synth_sites(tmp_path / "sites", spec)
    assert all("refuse_differencing: false" not in (d / "policy.yaml").read_text()
               for d in fed.site_dirs.values())
    ids = sorted(fed.site_dirs)
    gone = ids[2]
    survivors = [s for s in ids if s != gone]
    # MST: exchange 1 the one-way release, 2 the selection release, 3 the two-way release
    after_first = lambda i, s: s == gone and i >= 2  # noqa: E731
    restarted = _fit_on_fixed_sites(fed, spec, _mst, after_first)
    alone = _fit_on_fixed_sites(fed, spec, _mst, lambda i, s: s == gone)
    everyone = _fit_on_fixed_sites(fed, spec, _mst, None)
    assert restarted["restarts"] == [{"after secure sums": 1, "from sites": ids,
                                      "to sites": survivors}]
    assert restarted["sums cover"] == alone["sums cover"] == [survivors]
    got, ref, full = (r["body"]["marginals"] for r in (restarted, alone, everyone))
    assert got.keys() == ref.keys()
    for key in got:  # every released marginal counts the survivors (DP noise ~0.02 per cell)
        np.testing.assert_allclose(got[key], ref[key], atol=0.5, err_msg=key)
    one_way = "os_status:one_way"
    assert abs(sum(full[one_way]) - sum(got[one_way])) > 20  # the dropped site is not in it
    # and the study runner's synthesis analysis restarts the same way
    doc = _study(fed, spec, after_first)["analyses"][0]
    assert doc["status"] == "ok", doc.get("error")
    assert doc["restarts"] == restarted["restarts"]
    assert doc["provenance"]["sites covered"] == survivors
    assert doc["stats"]["synthetic patients"] == 200


# -------------------------------------------------------------------------- FedAvg training


def _deepsurv(fed: Any) -> dict[str, Any]:
    from hemafed.learn.neural import FederatedDeepSurv

    model = FederatedDeepSurv(hidden=(4,), dropout=0.0, lr=0.05, rounds=4, seed=3,
                              optimizer="sgd", batch_size=None)
    model.fit(fed, "os_time", "os_status", NEURAL_FORMULA, study=NEURAL_STUDY)
    return {"weights": json.loads(model.to_json())["weights"], "history": model.history}


@pytest.mark.slow
def test_fedavg_restarts_on_the_survivors_and_equals_their_training(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    spec = StudySpec.from_mapping(NEURAL_SPEC)
    # neural training is no study kind yet: the sites approve the study's hash (no stored plan)
    fed = build_sites(tmp_path / "sites", _cohorts(47), spec, store_plan=False,
                      policy_overrides=RESTARTS)
    ids = sorted(fed.site_dirs)
    gone = ids[3]
    survivors = [s for s in ids if s != gone]
    # exchange 1 is FedAvg round 1: the site is gone from round 2 on
    restarted = _fit_on_fixed_sites(fed, spec, _deepsurv, lambda i, s: s == gone and i >= 2)
    alone = _fit_on_fixed_sites(fed, spec, _deepsurv, lambda i, s: s == gone)
    everyone = _fit_on_fixed_sites(fed, spec, _deepsurv, None)
    assert restarted["restarts"] == [{"after secure sums": 1, "from sites": ids,
                                      "to sites": survivors}]
    assert restarted["sums cover"] == alone["sums cover"] == [survivors]
    assert restarted["body"] == alone["body"]  # FedAvg over the survivors, every round
    assert restarted["body"]["weights"] != everyone["body"]["weights"]


def test_fedavg_outside_the_runner_fails_clearly_on_a_changed_site_set(tmp_path: Path) -> None:
    """FederatedDeepSurv alone does not average over whoever answered: the round over fewer
    sites raises SitesChanged naming them (the runner turns that into the restart)."""
    pytest.importorskip("torch")
    from hemafed.errors import SitesChanged

    spec = StudySpec.from_mapping(NEURAL_SPEC)
    fed = build_sites(tmp_path / "sites", _cohorts(47), spec, store_plan=False,
                      policy_overrides=RESTARTS)
    gone = sorted(fed.site_dirs)[3]

    def hub(exchange: Any, site_ids: list[str], config: dict[str, Any]) -> Any:
        secure = SecureFederation(exchange, fed.manifest, site_ids=site_ids,
                                  spec_sha256=spec.sha256, requester="tester")
        try:
            _deepsurv(secure)
        except SitesChanged as exc:
            return {"dropped": sorted(set(exc.fixed) - set(exc.survivors)), "text": str(exc)}
        return None

    out = run_in_process(hub, site_handler, fed.site_configs(), {},
                         drop=lambda i, s: s == gone and i >= 2)
    assert out is not None, "FedAvg continued over a changed site set"
    assert out["dropped"] == [gone] and f"dropped ['{gone}']" in out["text"]


def test_fedavg_under_the_default_policy_fails_naming_the_rule(tmp_path: Path) -> None:
    """FedAvg's rounds are exact (non-DP) sums: the default participants rule refuses the
    restart over the survivors, and the runner's rule reports it as DropoutRefused."""
    pytest.importorskip("torch")
    from hemafed.errors import DropoutRefused

    spec = StudySpec.from_mapping(NEURAL_SPEC)
    fed = build_sites(tmp_path / "sites", _cohorts(47), spec, store_plan=False)
    gone = sorted(fed.site_dirs)[3]

    def hub(exchange: Any, site_ids: list[str], config: dict[str, Any]) -> Any:
        secure = SecureFederation(exchange, fed.manifest, site_ids=site_ids,
                                  spec_sha256=spec.sha256, requester="tester")
        try:
            _on_fixed_sites(TrackingFederation(secure), spec.analyses[0], spec,
                            lambda f, a, s: _deepsurv(f))
        except DropoutRefused as exc:
            return str(exc)
        return None

    error = run_in_process(hub, site_handler, fed.site_configs(), {},
                           drop=lambda i, s: s == gone and i >= 2)
    assert error is not None, "FedAvg went on after the site was lost"
    assert f"lost site(s) ['{gone}']" in error and "'participants'" in error
    assert "refuse_differencing: false" in error
