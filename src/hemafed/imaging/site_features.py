"""Radiomic feature tables and imaging findings kept at the site, joined to its cohort.

``<site>/imaging/features.parquet``: one row per patient (pseudonym) with the IBSI features of
their imported ROI and the library and settings that produced them (``settings.json`` beside
it: the IBSI settings plus ``library`` and ``library_version``). A study pins the library and
settings (``imaging.features``, ``imaging.settings``); its requests are refused at a site whose
stored table was computed otherwise (:func:`check_study_provenance`).
``<site>/imaging/findings.parquet``: radiology read-outs per patient (e.g. ``silent_infarct``
from the MRI report), imported from a CSV of hospital ids and pseudonymised on import.
``<site>/imaging/harmonised/<study>.parquet``: the harmonised ``h_<feature>`` columns one study's
``combat_apply`` stored (with the pooled parameters it accepted in ``<study>.combat.json``).

Harmonised features are kept **per study**: a study's requests read its own harmonised table
and never another study's (:func:`study_cohort`), so one study's ComBat (whose parameters the
hub computed) cannot change what another approved study's screen or model reads. A study that
never applied ComBat has no ``h_`` columns; it reads raw features only where its spec names them.

:func:`imaging_cohort` is the site's cohort with those columns added, which is what imaging
site queries (ComBat, the univariate screen, logistic/Cox on features) run on.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from hemafed import atomic
from hemafed.cohort.model import Cohort
from hemafed.errors import InvalidInput
from hemafed.imaging.radiomics import FeatureSettings
from hemafed.imaging.radiomics.library import (
    DEFAULT_LIBRARY,
    check_library,
    extract_with,
    library_version,
)
from hemafed.imaging.spec import HARMONISED_PREFIX
from hemafed.imaging.store import IMAGING_DIR, load_image, read_index
from hemafed.site.pseudonym import Pseudonymiser
from hemafed.site.store import site_secret

log = logging.getLogger(__name__)

FEATURES_FILE = "features.parquet"
FINDINGS_FILE = "findings.parquet"
HARMONISED_DIR = "harmonised"
"""Per-study harmonised tables: ``harmonised/<study>.parquet`` and ``<study>.combat.json`` (the
pooled ComBat parameters that study's hub sent and the site accepted)."""
SETTINGS_FILE = "settings.json"
_STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def _write_parquet(path: Path, frame: pd.DataFrame) -> None:
    atomic.write_with(path, lambda fh: frame.to_parquet(fh, index=False))


PROVENANCE_RULE = "imaging.features"
"""The rule a site names when its stored features are not the study's library and settings."""


class FeatureProvenanceError(InvalidInput):
    """The site's stored features were not computed with the study's library and settings."""

    site_rule = PROVENANCE_RULE


def extract_site_features(site_dir: str | Path, settings: FeatureSettings,
                          library: str = DEFAULT_LIBRARY) -> pd.DataFrame:
    """Features of every imported image (first image per patient) computed by ``library``
    (``hemafed`` or ``mirp``), stored atomically with the library and settings."""
    site = Path(site_dir)
    check_library(library)
    version = library_version(library)  # refuses mirp when it is not installed
    index = read_index(site)
    if index.empty:
        raise InvalidInput(f"{site}: no images imported yet (hemafed site import-images)")
    rows = []
    for pseudonym, image_id in index[["pseudonym", "image_id"]].drop_duplicates(
            "pseudonym").itertuples(index=False):
        image, mask = load_image(site, str(pseudonym), str(image_id))
        feats = extract_with(library, image.array, mask.array, image.spacing, settings)
        rows.append({"patient_id": str(pseudonym), "image_id": str(image_id), **feats})
    table = pd.DataFrame(rows)
    _write_parquet(site / IMAGING_DIR / FEATURES_FILE, table)
    atomic.write_text(site / IMAGING_DIR / SETTINGS_FILE,
                      json.dumps({**settings.to_dict(), "library": library,
                                  "library_version": version}, indent=1))
    log.info("extracted %d features for %d patients with %s", table.shape[1] - 2, len(table),
             library)
    return table


def stored_provenance(site_dir: str | Path) -> dict[str, object] | None:
    """``{"library", "settings"}`` of the site's stored feature table (``None``: no table).
    A table of earlier versions (settings only) was computed by hemafed."""
    d = Path(site_dir) / IMAGING_DIR
    if not (d / FEATURES_FILE).is_file():
        return None
    try:
        raw = json.loads((d / SETTINGS_FILE).read_text(encoding="utf-8"))
        library = raw.pop("library", DEFAULT_LIBRARY)
        raw.pop("library_version", None)
        settings = FeatureSettings.from_dict(raw).to_dict()
    except (OSError, ValueError, TypeError, AttributeError, InvalidInput):
        return {"library": None, "settings": None}  # unreadable: matches no study
    return {"library": library, "settings": settings}


STUDIES_DIR = "studies"
"""Where a site keeps its approved specs' text (:func:`hemafed.site.studies.spec_path`; read
here by path, because the site package imports the plan, which imports this package)."""


def study_pins(site_dir: str | Path, study: str) -> dict[str, object] | None:
    """``{"library", "settings"}`` the stored (approved) spec of ``study`` pins for its
    features, or ``None`` (no stored spec, none readable, or no imaging section). The node
    checks the stored text against the approved hash before any request runs."""
    if not isinstance(study, str) or not _STUDY_NAME.fullmatch(study):
        return None
    path = Path(site_dir) / STUDIES_DIR / f"{study}.json"
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        section = raw["imaging"] if isinstance(raw, dict) and "imaging" in raw else None
        if section is None:
            return None
        library = check_library((section.get("features") or {}).get("library",
                                                                    DEFAULT_LIBRARY))
        settings = FeatureSettings.from_dict(dict(section.get("settings") or {}))
    except (OSError, ValueError, TypeError, AttributeError, KeyError, InvalidInput):
        return None  # the node refuses a stored spec it cannot read (plan_mismatch)
    return {"library": library, "settings": settings.to_dict()}


def check_study_provenance(site_dir: str | Path, study: str) -> None:
    """Refuse (rule :data:`PROVENANCE_RULE`) when ``study`` has an imaging section and the
    site's stored features were computed with another library or other settings than the
    study pins. The message names the library and the settings, never a patient's value."""
    want = study_pins(site_dir, study)
    if want is None:
        return
    stored = stored_provenance(site_dir)
    if stored is None:
        return  # no features yet: the study's requests find no feature columns
    if stored != want:
        raise FeatureProvenanceError(
            f"study {study!r} pins feature library {want['library']!r} with settings "
            f"{json.dumps(want['settings'], sort_keys=True)}; this site's features were "
            f"computed otherwise: run `hemafed site extract-features SITE --study {study}`")


def extract_study_features(site_dir: str | Path, study: str) -> pd.DataFrame:
    """:func:`extract_site_features` with the library and settings ``study``'s approved spec
    pins (its stored text at the site)."""
    want = study_pins(site_dir, study)
    if want is None:
        raise InvalidInput(f"study {study!r}: no approved spec with an imaging section is "
                           f"stored at this site (hemafed site approve)")
    settings = want["settings"]
    assert isinstance(settings, dict)
    return extract_site_features(site_dir, FeatureSettings.from_dict(settings),
                                 str(want["library"]))


def import_findings(site_dir: str | Path, frame: pd.DataFrame, *, study: str,
                    columns: Sequence[str]) -> pd.DataFrame:
    """Store numeric imaging findings (``patient_id`` = hospital id) under their pseudonyms."""
    site = Path(site_dir)
    missing = [c for c in ["patient_id", *columns] if c not in frame.columns]
    if missing:
        raise InvalidInput(f"findings: missing column(s) {missing}")
    out = pd.DataFrame({"patient_id": [Pseudonymiser(site_secret(site)).pseudonym(str(p), study)
                                       for p in frame["patient_id"]]})
    for c in columns:
        values = pd.to_numeric(frame[c], errors="coerce")
        bad = values.isna() & frame[c].notna()
        if bad.any():
            raise InvalidInput(f"findings: column {c!r} row {int(np.flatnonzero(bad)[0]) + 2} "
                               "is not a number")
        out[c] = values.astype("Float64").to_numpy()
    if out["patient_id"].duplicated().any():
        raise InvalidInput("findings: a patient is listed twice")
    _write_parquet(site / IMAGING_DIR / FINDINGS_FILE, out)
    return out


def harmonised_path(site_dir: str | Path, study: str, suffix: str = ".parquet") -> Path:
    """Where ``study``'s harmonised features (``.parquet``) or accepted parameters
    (``.combat.json``) are kept at the site."""
    if not isinstance(study, str) or not _STUDY_NAME.fullmatch(study):
        raise InvalidInput("harmonised features: the study id must be a plain name "
                           "(letters, digits, '.', '_', '-')")
    return Path(site_dir) / IMAGING_DIR / HARMONISED_DIR / f"{study}{suffix}"


def study_harmonised(site_dir: str | Path, study: str) -> pd.DataFrame | None:
    """``study``'s own harmonised ``h_`` table at the site (``None``: it never applied ComBat)."""
    path = harmonised_path(site_dir, study)
    return pd.read_parquet(path) if path.is_file() else None


def imaging_table(site_dir: str | Path, *, study: str | None = None) -> pd.DataFrame:
    """Features and findings of the site's patients (``patient_id`` = pseudonym), with the
    harmonised features of ``study`` when given and stored (never another study's)."""
    d = Path(site_dir) / IMAGING_DIR
    frames = [pd.read_parquet(d / f) for f in (FEATURES_FILE, FINDINGS_FILE)
              if (d / f).is_file()]
    own = study_harmonised(site_dir, study) if study is not None else None
    if own is not None:
        frames.append(own)
    if not frames:
        return pd.DataFrame({"patient_id": pd.Series(dtype="string")})
    table = frames[0]
    for other in frames[1:]:
        table = table.merge(other, on="patient_id", how="outer")
    return table.drop(columns=["image_id"], errors="ignore")


def imaging_cohort(cohort: Cohort, table: pd.DataFrame) -> Cohort:
    """``cohort`` with the imaging columns of ``table`` joined on ``patient_id`` (NA: no image)."""
    clash = sorted(set(table.columns) - {"patient_id"} & set(cohort.patients.columns))
    if clash:
        raise InvalidInput(f"imaging column(s) {clash} clash with cohort columns")
    t = table.copy()
    t["patient_id"] = t["patient_id"].astype("string")
    p = cohort.patients.merge(t, on="patient_id", how="left")
    for c in t.columns:
        if c != "patient_id":
            p[c] = p[c].astype("Float64")
    return Cohort(p, cohort.mutations, dict(cohort.panels))


def without_harmonised(cohort: Cohort) -> Cohort:
    """``cohort`` without any ``h_`` column (what no study's view may inherit)."""
    p = cohort.patients
    return Cohort(p.drop(columns=[c for c in p.columns if c.startswith(HARMONISED_PREFIX)]),
                  cohort.mutations, dict(cohort.panels))


def study_cohort(site_dir: str | Path, cohort: Cohort, study: str) -> Cohort:
    """The cohort ``study``'s requests run on: ``cohort`` (features, findings) with that study's
    own harmonised features joined, and no other study's."""
    try:
        own = study_harmonised(site_dir, study)
    except InvalidInput:  # a study id no table can have: no harmonised features
        own = None
    if own is None and not any(c.startswith(HARMONISED_PREFIX) for c in cohort.patients.columns):
        return cohort  # the common case (no harmonised features anywhere): no copy per request
    base = without_harmonised(cohort)
    return base if own is None else imaging_cohort(base, own)


def store_study_table(site_dir: str | Path, study: str, table: pd.DataFrame,
                      params: Mapping[str, object]) -> None:
    """Store ``study``'s harmonised table (``patient_id`` and ``h_<feature>`` columns) and the
    pooled parameters it was made with, each atomically: what the ComBat site step
    (:func:`hemafed.imaging.combat.store_harmonisation`) computed; that study's requests read it
    (:func:`study_cohort`)."""
    path = harmonised_path(site_dir, study)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_parquet(path, table)
    atomic.write_text(harmonised_path(site_dir, study, ".combat.json"),
                      json.dumps(dict(params), indent=1, default=str))
    log.info("stored a harmonised table of %d columns for one study", table.shape[1] - 1)


