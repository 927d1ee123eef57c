"""The study pins the feature library (``imaging.features.library``) and settings: the plan
refuses a request naming others, a site refuses when its stored features were computed
otherwise, and a site without mirp says how to install it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from hemafed.errors import HemafedError, InvalidInput
from hemafed.imaging.combat import FederatedComBat
from hemafed.imaging.demo import ImagingSites
from hemafed.imaging.radiomics import FeatureSettings
from hemafed.imaging.radiomics.library import extract_with
from hemafed.imaging.site_features import (
    PROVENANCE_RULE,
    FeatureProvenanceError,
    check_study_provenance,
    extract_site_features,
    stored_provenance,
)
from hemafed.imaging.spec import ImagingSpec, plan_parts
from hemafed.imaging.store import IMAGING_DIR
from hemafed.site.studies import store_spec
from hemafed.study.plan import StudyPlan
from hemafed.study.spec import StudySpec

SECTION = {"modality": "MR", "settings": {"bin_width": 8.0, "aggregation": "merged"},
           "harmonise": {"features": ["firstorder_mean", "glcm_contrast"],
                         "covariates": ["age"]},
           "bounds": {"firstorder_mean": [0, 400], "glcm_contrast": [0, 50], "age": [0, 25]}}


def _spec(imaging: dict[str, Any]) -> StudySpec:
    return StudySpec.from_mapping({"study_id": "img", "imaging": imaging, "analyses": [
        {"id": "n", "kind": "describe", "columns": ["age"]}]})


def test_library_defaults_to_hemafed_and_is_part_of_the_approved_hash() -> None:
    plain = _spec(SECTION)
    assert ImagingSpec.from_mapping(plain.raw["imaging"]).library == "hemafed"
    pinned = _spec({**SECTION, "features": {"library": "mirp"}})
    assert ImagingSpec.from_mapping(pinned.raw["imaging"]).library == "mirp"
    assert pinned.sha256 != plain.sha256
    assert plan_parts(pinned.raw).library == "mirp"


@pytest.mark.parametrize("bad, reason", [
    ({"library": "pyradiomics"}, "library must be one of hemafed, mirp"),
    ({"library": "mirp", "version": "2.5"}, "unknown key 'version'"),
    ("mirp", "must be a mapping"),
])
def test_bad_feature_sections_are_refused(bad: object, reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason):
        _spec({**SECTION, "features": bad})


def test_plan_refuses_a_request_naming_another_library_or_settings() -> None:
    plan = StudyPlan.from_spec(_spec({**SECTION, "features": {"library": "mirp"}}))
    base = {"features": ["firstorder_mean", "glcm_contrast"], "covariates": ["age"],
            "bounds": {k: list(v) for k, v in SECTION["bounds"].items()},  # type: ignore[attr-defined]
            "max_patients": 1_000_000}
    assert plan.check("combat_moments", {**base, "library": "mirp"}, False) is None
    assert plan.check("combat_moments", base, False) is None  # naming none is the plan's
    assert plan.check("combat_moments", {**base, "library": "hemafed"}, False)[0] == "library"
    own = FeatureSettings.from_dict(SECTION["settings"]).to_dict()  # type: ignore[arg-type]
    assert plan.check("combat_moments", {**base, "settings": own}, False) is None
    other = {**own, "bin_width": 4.0}
    assert plan.check("combat_moments", {**base, "settings": other}, False)[0] == "settings"


def _site_with_table(tmp: Path, provenance: dict[str, Any] | None, spec: StudySpec) -> Path:
    site = tmp / "site"
    (site / IMAGING_DIR).mkdir(parents=True)
    store_spec(site, spec)  # where the site keeps the approved text
    pd.DataFrame({"patient_id": ["p1"], "image_id": ["i1"], "firstorder_mean": [1.0]}) \
        .to_parquet(site / IMAGING_DIR / "features.parquet")
    if provenance is not None:
        (site / IMAGING_DIR / "settings.json").write_text(json.dumps(provenance))
    return site


def test_site_refuses_a_study_whose_library_or_settings_its_features_were_not_computed_with(
        tmp_path: Path) -> None:
    spec = _spec({**SECTION, "features": {"library": "mirp"}})
    settings = FeatureSettings.from_dict(SECTION["settings"]).to_dict()  # type: ignore[arg-type]
    ok = _site_with_table(tmp_path / "ok", {**settings, "library": "mirp",
                                            "library_version": "2.5.0"}, spec)
    check_study_provenance(ok, "img")  # the study's library and settings: answered
    assert stored_provenance(ok) == {"library": "mirp", "settings": settings}
    for name, prov in (("ours", {**settings, "library": "hemafed"}),
                       ("older", dict(settings)),  # a table of earlier versions: hemafed
                       ("bins", {**settings, "bin_width": 4.0, "library": "mirp"}),
                       ("broken", None)):
        site = _site_with_table(tmp_path / name, prov, spec)
        with pytest.raises(FeatureProvenanceError, match="extract-features SITE --study img"
                           ) as exc:
            check_study_provenance(site, "img")
        assert exc.value.site_rule == PROVENANCE_RULE
    # a study without an imaging section, or an unknown study, is not the rule's business
    check_study_provenance(tmp_path / "ours" / "site", "another-study")


def test_sites_refuse_combat_naming_another_library_over_secure_sums(
        scd_sites: ImagingSites, secure_run: Any) -> None:
    ispec = ImagingSpec.from_mapping(scd_sites.spec.raw["imaging"])
    study = scd_sites.spec.study_id

    def body(fed: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for library in ("hemafed", "mirp"):
            try:
                FederatedComBat().fit(fed, ispec.features, ispec.covariates, ispec.bounds,
                                      study=study, library=library)
                out[library] = None
            except HemafedError as exc:
                out[library] = str(exc)
        return out

    out = secure_run(scd_sites, body)
    assert out["hemafed"] is None  # the study's library (the default)
    assert out["mirp"] is not None and "plan" in out["mirp"] and "'library'" in out["mirp"]


def test_sites_refuse_when_a_site_computed_with_another_library(
        scd_sites: ImagingSites, secure_run: Any) -> None:
    ispec = ImagingSpec.from_mapping(scd_sites.spec.raw["imaging"])
    study = scd_sites.spec.study_id
    path = next(iter(scd_sites.sites.site_dirs.values())) / IMAGING_DIR / "settings.json"
    saved = path.read_text()
    path.write_text(json.dumps({**json.loads(saved), "library": "mirp"}))
    try:
        def body(fed: Any) -> str | None:
            try:
                FederatedComBat().fit(fed, ispec.features, ispec.covariates, ispec.bounds,
                                      study=study)
            except HemafedError as exc:
                return str(exc)
            return None

        msg = secure_run(scd_sites, body)
    finally:
        path.write_text(saved)
    assert msg is not None and PROVENANCE_RULE in msg, msg


def test_a_site_without_mirp_is_told_to_install_the_extra(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mirp", None)  # import mirp -> ImportError
    img = np.arange(27, dtype=float).reshape(3, 3, 3)
    with pytest.raises(InvalidInput, match=r"install hemafed\[imaging-crosscheck\]"):
        extract_with("mirp", img, np.ones((3, 3, 3), bool), (1.0, 1.0, 1.0),
                     FeatureSettings(bin_width=9.0))
    site = tmp_path / "site"
    site.mkdir()
    with pytest.raises(InvalidInput, match=r"install hemafed\[imaging-crosscheck\]"):
        extract_site_features(site, FeatureSettings(bin_width=8.0), "mirp")
    assert not any(site.rglob("*"))  # nothing written
