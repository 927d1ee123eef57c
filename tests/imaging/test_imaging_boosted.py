"""Boosted imaging models (``model: gbdt``): harmonised features + clinical covariates in the
federated GBDT; federated equals the pooled model built from the same summed histograms."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pytest

from hemafed.cohort.model import Cohort
from hemafed.federation.local import LocalSumFederation
from hemafed.imaging.combat import FederatedComBat, apply_harmonisation
from hemafed.imaging.demo import BOOSTED_MODELS, ImagingSites, imaging_spec
from hemafed.imaging.models import fit_boosted_model
from hemafed.imaging.site_features import imaging_cohort, imaging_table
from hemafed.imaging.spec import ImagingSpec
from hemafed.learn.features import fixed_bins
from hemafed.learn.gbdt import FederatedGBDT
from hemafed.site.store import approve_study, load_cohort
from hemafed.study.plan import StudyPlan


def _harmonised(built: ImagingSites) -> tuple[dict[str, Cohort], ImagingSpec,
                                              dict[str, tuple[float, float]]]:
    ispec = ImagingSpec.from_mapping(built.spec.raw["imaging"])
    cohorts = {s: imaging_cohort(load_cohort(d), imaging_table(d))
               for s, d in built.sites.site_dirs.items()}
    combat = FederatedComBat().fit(LocalSumFederation(cohorts), ispec.features,
                                   ispec.covariates, ispec.bounds)
    for d in built.sites.site_dirs.values():
        apply_harmonisation(d, {**combat.site_parameters(), "bounds": dict(ispec.bounds)},
                            study="local-boosted")
    cohorts = {s: imaging_cohort(load_cohort(d), imaging_table(d, study="local-boosted"))
               for s, d in built.sites.site_dirs.items()}
    return cohorts, ispec, {**ispec.bounds, **ispec.harmonised_bounds()}


def _pooled(cohorts: dict[str, Cohort]) -> Cohort:
    import pandas as pd

    first = next(iter(cohorts.values()))
    return Cohort(pd.concat([c.patients for c in cohorts.values()], ignore_index=True),
                  first.mutations.iloc[0:0], dict(first.panels))


def _same_trees(a: FederatedGBDT, b: FederatedGBDT) -> None:
    assert len(a.trees_) == len(b.trees_)
    for ta, tb in zip(a.trees_, b.trees_, strict=True):
        assert ta.feature == tb.feature and ta.threshold == tb.threshold
        assert ta.default_left == tb.default_left and (ta.left, ta.right) == (tb.left, tb.right)
        np.testing.assert_allclose(ta.value, tb.value, rtol=1e-9, atol=1e-12)


KW = {"top_k": 2, "rounds": 5, "depth": 2, "bins": 16, "learning_rate": 0.3}


@pytest.mark.parametrize("disease", ["SCD", "MM"])
def test_federated_boosted_equals_pooled_from_the_same_histograms(
        disease: str, scd_sites: ImagingSites, mm_sites: ImagingSites) -> None:
    built = scd_sites if disease == "SCD" else mm_sites
    cohorts, ispec, bounds = _harmonised(built)
    cands = ["h_" + f for f in ispec.features]
    if disease == "SCD":
        outcome: Any = "silent_infarct"
        clinical = ["age", "hb"]
    else:
        outcome, clinical = ("relapse_time", "relapse_status"), ["age", "b2m"]
    fed = fit_boosted_model(LocalSumFederation(cohorts), outcome, clinical, cands, bounds, **KW)
    pooled = fit_boosted_model(LocalSumFederation({"pooled": _pooled(cohorts)}), outcome,
                               clinical, cands, bounds, **KW)
    assert fed.features == pooled.features  # the same screen
    _same_trees(fed.model, pooled.model)
    assert isinstance(fed.model, FederatedGBDT)
    assert sum(t.n_leaves for t in fed.model.trees_) > KW["rounds"]  # the trees really split
    # the edges are the design's fixed public bins (what the plan permits), not data quantiles
    assert fed.model.edges_ == fixed_bins(fed.spec, KW["bins"])
    everyone = _pooled(cohorts)
    np.testing.assert_allclose(fed.model.predict_margin(everyone),
                               pooled.model.predict_margin(everyone), atol=1e-9)
    # a control that could disagree: one site alone grows different trees
    site, alone_cohort = next(iter(cohorts.items()))
    alone = FederatedGBDT(fed.model.objective, n_rounds=KW["rounds"], max_depth=KW["depth"],
                          learning_rate=KW["learning_rate"]).fit(
        LocalSumFederation({site: alone_cohort}), fed.spec, outcome, edges=fed.model.edges_)
    assert any(a.value != b.value for a, b in zip(fed.model.trees_, alone.trees_, strict=True))


def test_spec_validates_boosting_options() -> None:
    from hemafed.imaging.spec import imaging_problems

    section = {"settings": {"bin_width": 8.0}, "harmonise": {"features": ["a", "b"]},
               "bounds": {"a": [0, 1], "b": [0, 1]}}
    good = {"kind": "imaging", "model": "gbdt", "outcome": "silent_infarct",
            "exact_histograms": True}
    assert imaging_problems(section, [good]) == []
    no_dp = {k: v for k, v in good.items() if k != "exact_histograms"}
    assert any("noise_multiplier" in p for p in imaging_problems(section, [no_dp]))
    assert imaging_problems(section, [{**no_dp, "noise_multiplier": 1.2}]) == []
    assert any("depth" in p for p in imaging_problems(section, [{**good, "depth": 40}]))


@pytest.mark.slow
def test_boosted_imaging_study_runs_under_the_plan(scd_sites: ImagingSites) -> None:
    """`study run`'s path with ``model: gbdt``: the sites' plan permits exactly the spec's
    fixed bins; the result equals the same steps over local sums."""
    from hemafed.demo import run_study_on
    from hemafed.study.report import build_report
    from hemafed.study.runner import frame_from_json

    spec = imaging_spec("SCD", scd_sites.sites, _settings(scd_sites),
                        BOOSTED_MODELS["SCD"])
    for d in scd_sites.sites.site_dirs.values():
        approve_study(d, spec, expires=dt.date.today() + dt.timedelta(days=30),
                      approved_by="test ethics committee")
    try:
        plan = StudyPlan.from_spec(spec)
        assert "gbdt_histograms" in plan.queries and plan.edges
        results = run_study_on("inprocess", spec, scd_sites.sites)
    finally:  # the session's other tests run the original spec
        for d in scd_sites.sites.site_dirs.values():
            approve_study(d, scd_sites.spec, expires=dt.date.today() + dt.timedelta(days=365),
                          approved_by="demo ethics committee (virtual)")
    doc = next(a for a in results["analyses"] if a["kind"] == "imaging")
    assert doc["status"] == "ok", doc.get("error")
    cohorts, ispec, bounds = _harmonised(scd_sites)
    a = BOOSTED_MODELS["SCD"]
    local = fit_boosted_model(LocalSumFederation(cohorts), "silent_infarct", ["age", "hb"],
                              ["h_" + f for f in ispec.features], bounds, top_k=a["top_k"],
                              rounds=a["rounds"], depth=a["depth"], bins=a["bins"],
                              learning_rate=a["learning_rate"])
    assert doc["stats"]["features chosen"] == ", ".join(local.features)
    assert doc["stats"]["boosting rounds"] == a["rounds"]
    gains = frame_from_json(doc["tables"]["feature_importance"]).iloc[:, 0]
    np.testing.assert_allclose(gains.sort_index().to_numpy(),
                               local.model.feature_importances_.sort_index().to_numpy(),
                               rtol=1e-6)
    assert "total split gain" in build_report(results).render()


def _settings(built: ImagingSites) -> Any:
    from hemafed.imaging.radiomics import FeatureSettings

    return FeatureSettings.from_dict(dict(built.spec.raw["imaging"]["settings"]))
