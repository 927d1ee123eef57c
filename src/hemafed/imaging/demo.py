"""Virtual imaging sites for demos, tests and benchmarks, built through the real site intake.

:func:`build_imaging_sites` makes one site directory per virtual site (clinical cohort imported
and pseudonymised by :func:`hemafed.demo.build_sites`), writes every subject's image as a real
DICOM series or NIfTI volume with a NIfTI mask, imports them with
:func:`hemafed.imaging.store.import_image`, stores findings and extracts the features.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hemafed.cohort.validate import validate_cohort
from hemafed.demo import LocalSites, build_sites
from hemafed.imaging.radiomics import FeatureSettings
from hemafed.imaging.runtime import load_imaging_queries
from hemafed.imaging.site_features import extract_site_features, import_findings
from hemafed.imaging.store import import_images, nifti_image
from hemafed.imaging.virtual import VirtualSubject, clinical_frame, generate, write_dicom_series
from hemafed.imaging.volume import Volume
from hemafed.site.store import approve_study, load_cohort
from hemafed.study.spec import StudySpec

DEFAULT_SETTINGS = FeatureSettings(bin_width=8.0, aggregation="averaged")
"""Fixed bin size 8 (intensity units), native grid, 3D averaged texture."""

FINDINGS: dict[str, list[str]] = {"SCD": [], "MM": []}
"""Non-schema imaging read-outs stored as findings (none in the demo: the silent-infarct read
is the schema field ``silent_infarct``)."""
CLINICAL = {"SCD": ["age", "hb", "sex", "silent_infarct"], "MM": ["age", "sex", "b2m", "relapse_time",
                                                "relapse_status"]}


def _save_nifti(path: Path, volume: Volume, dtype: type) -> None:
    """Hospital-side export (a temporary folder outside the site): a plain, non-atomic write."""
    import nibabel as nib

    nib.save(nifti_image(volume, dtype), str(path))


@dataclass(frozen=True)
class ImagingSites:
    """The built sites, their approved spec and the virtual subjects (ground truth)."""

    sites: LocalSites
    spec: StudySpec
    subjects: list[VirtualSubject]


def build_imaging_sites(root: Path, disease: str, n_sites: int, per_site: int | list[int],
                        seed: int, *, settings: FeatureSettings = DEFAULT_SETTINGS,
                        dicom_per_site: int = 2,
                        analysis: dict[str, Any] | None = None) -> ImagingSites:
    """Sites under ``root`` with images imported and features extracted (see module doc);
    ``analysis``: the imaging analysis of the approved spec (default :data:`DEMO_MODELS`)."""
    load_imaging_queries()
    subjects = generate(disease, n_sites, per_site, seed)
    frame = clinical_frame(subjects, disease)
    # a first spec fixes the study id (pseudonym domain); the final one, with the public bounds
    # of the features, is approved once they are extracted (see imaging_spec)
    spec = StudySpec.from_mapping({
        "study_id": f"imaging-{disease.lower()}", "requester": "imaging-demo",
        "imaging": {"modality": "MR", "settings": settings.to_dict()},
        "analyses": [{"id": "size", "kind": "describe", "columns": ["age"]}]})
    cohorts = {}
    for site, rows in frame.groupby("site", sort=True):
        cohorts[str(site)] = validate_cohort(
            rows[["patient_id", "disease", *CLINICAL[disease]]].reset_index(drop=True),
            source=f"virtual {site}")
    sites = build_sites(root / "sites", cohorts, spec)
    with tempfile.TemporaryDirectory(prefix="hemafed-images-") as tmp:
        staging = Path(tmp)
        items: dict[str, list[tuple[str, Path, Path]]] = {}
        for subj in subjects:
            todo = items.setdefault(subj.site, [])
            mask_path = staging / f"{subj.patient_id}-mask.nii"
            _save_nifti(mask_path, subj.mask, np.uint8)
            if len(todo) < dicom_per_site:
                src: Path = write_dicom_series(subj.image, staging / subj.patient_id,
                                               subj.patient_id)
            else:
                src = staging / f"{subj.patient_id}.nii"
                _save_nifti(src, subj.image, np.float32)
            todo.append((subj.patient_id, src, mask_path))
        for site, todo in items.items():
            import_images(sites.site_dirs[site], todo, study=spec.study_id)
    for site, rows in frame.groupby("site", sort=True):
        site_dir = sites.site_dirs[str(site)]
        if FINDINGS[disease]:
            import_findings(site_dir, rows, study=spec.study_id, columns=FINDINGS[disease])
        extract_site_features(site_dir, settings)
    spec = imaging_spec(disease, sites, settings, analysis)
    for site_dir in sites.site_dirs.values():  # approve it with its text: the plan binds
        approve_study(site_dir, spec, expires=dt.date.today() + dt.timedelta(days=365),
                approved_by="demo ethics committee (virtual)")
    return ImagingSites(sites, spec, subjects)


def imaging_spec(disease: str, sites: LocalSites, settings: FeatureSettings,
                 analysis: dict[str, Any] | None = None) -> StudySpec:
    """The virtual study: harmonise :data:`HARMONISED_FEATURES`, then the disease's model
    (:data:`DEMO_MODELS`).

    The public bounds are what a study declares as plausible ranges; for the virtual cohort the
    generator knows them, as the extracted range with half its span of margin on each side
    (a margin that also holds the harmonised values).
    """
    from hemafed.imaging.site_features import imaging_table

    covariates = COMBAT_COVARIATES[disease]
    table = pd.concat([imaging_table(d) for d in sites.site_dirs.values()], ignore_index=True)
    cohort = pd.concat([load_cohort(d).patients for d in sites.site_dirs.values()])
    bounds = {}
    for col, values in [*((f, table[f]) for f in HARMONISED_FEATURES),
                        *((c, cohort[c]) for c in covariates)]:
        v = values.astype(float)
        lo, hi = float(v.min()), float(v.max())
        bounds[col] = [lo - 0.5 * (hi - lo), hi + 0.5 * (hi - lo)]
    return StudySpec.from_mapping({
        "study_id": f"imaging-{disease.lower()}", "requester": "imaging-demo",
        "disease": disease,
        "imaging": {"modality": "MR", "settings": settings.to_dict(),
                    "harmonise": {"features": list(HARMONISED_FEATURES),
                                  "covariates": covariates},
                    "bounds": bounds},
        "analyses": [{"id": "size", "kind": "describe", "columns": ["age"]},
                     analysis or DEMO_MODELS[disease]]})


COMBAT_COVARIATES = {"SCD": ["age", "hb"], "MM": ["age"]}
"""Biological covariates ComBat preserves in the virtual studies."""

DEMO_MODELS: dict[str, dict[str, Any]] = {
    "SCD": {"id": "infarct", "kind": "imaging", "title": "Silent cerebral infarct: imaging + "
            "clinical logistic model", "model": "logistic", "outcome": "silent_infarct",
            "covariates": ["age", "hb"], "top_k": 2},
    "MM": {"id": "pfs", "kind": "imaging", "title": "Progression-free survival: imaging + "
           "clinical Cox model", "model": "cox", "duration": "relapse_time",
           "event": "relapse_status", "covariates": ["age", "b2m"], "horizon": 2.0, "top_k": 2},
}
"""The imaging analysis of each virtual study."""

BOOSTED_MODELS: dict[str, dict[str, Any]] = {
    "SCD": {"id": "infarct_gbdt", "kind": "imaging", "title": "Silent cerebral infarct: "
            "imaging + clinical boosted trees", "model": "gbdt", "outcome": "silent_infarct",
            "covariates": ["age", "hb"], "top_k": 2, "rounds": 10, "depth": 2, "bins": 16,
            "learning_rate": 0.3, "exact_histograms": True},
    "MM": {"id": "pfs_gbdt", "kind": "imaging", "title": "Progression-free survival: imaging + "
           "clinical boosted Cox trees", "model": "gbdt", "duration": "relapse_time",
           "event": "relapse_status", "covariates": ["age", "b2m"], "horizon": 2.0, "top_k": 2,
           "rounds": 10, "depth": 2, "bins": 16, "learning_rate": 0.3,
           "exact_histograms": True},
}
"""The boosted (``model: gbdt``) imaging analysis of each virtual study (exact histograms:
the virtual study opts out of DP; a real one sets ``noise_multiplier``)."""

HARMONISED_FEATURES: tuple[str, ...] = (
    "firstorder_mean", "firstorder_median", "firstorder_p10", "firstorder_p90",
    "firstorder_maximum", "firstorder_variance", "firstorder_skewness", "firstorder_kurtosis",
    "firstorder_interquartile_range", "firstorder_robust_mean_absolute_deviation",
    "glcm_joint_entropy", "glcm_contrast", "glcm_correlation", "glcm_inverse_difference",
    "glrlm_run_entropy", "glrlm_grey_level_non_uniformity", "glszm_zone_size_entropy",
    "glszm_large_zone_emphasis",
)
"""Intensity and texture features a scanner changes; the demo harmonises these."""
