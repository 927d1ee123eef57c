"""Radiomic feature tables and imaging findings kept at the site, joined to its cohort.

``<site>/imaging/features.parquet``: one row per patient (pseudonym) with the IBSI features of
their imported ROI and the settings that produced them (``settings.json`` beside it).
``<site>/imaging/findings.parquet``: radiology read-outs per patient (e.g. ``silent_infarct``
from the MRI report), imported from a CSV of hospital ids and pseudonymised on import.

:func:`imaging_cohort` is the site's cohort with those columns added, which is what imaging
site queries (ComBat, the univariate screen, logistic/Cox on features) run on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from hemafed import atomic
from hemafed.cohort.model import Cohort
from hemafed.errors import InvalidInput
from hemafed.imaging.radiomics import FeatureSettings, extract
from hemafed.imaging.store import IMAGING_DIR, load_image, read_index
from hemafed.site.pseudonym import Pseudonymiser
from hemafed.site.store import site_secret

log = logging.getLogger(__name__)

FEATURES_FILE = "features.parquet"
FINDINGS_FILE = "findings.parquet"
HARMONISED_FILE = "harmonised.parquet"
HARMONISED_PREFIX = "h_"
"""Harmonised copies of features are stored as ``h_<feature>`` beside the raw ones."""
SETTINGS_FILE = "settings.json"
COMBAT_FILE = "combat.json"
"""The pooled ComBat parameters the site last harmonised with (what the hub sent)."""


def _write_parquet(path: Path, frame: pd.DataFrame) -> None:
    atomic.write_with(path, lambda fh: frame.to_parquet(fh, index=False))


def extract_site_features(site_dir: str | Path, settings: FeatureSettings) -> pd.DataFrame:
    """Features of every imported image (first image per patient), stored atomically."""
    site = Path(site_dir)
    index = read_index(site)
    if index.empty:
        raise InvalidInput(f"{site}: no images imported yet (hemafed site import-images)")
    rows = []
    for pseudonym, image_id in index[["pseudonym", "image_id"]].drop_duplicates(
            "pseudonym").itertuples(index=False):
        image, mask = load_image(site, str(pseudonym), str(image_id))
        feats = extract(image.array, mask.array, image.spacing, settings)
        rows.append({"patient_id": str(pseudonym), "image_id": str(image_id), **feats})
    table = pd.DataFrame(rows)
    _write_parquet(site / IMAGING_DIR / FEATURES_FILE, table)
    atomic.write_text(site / IMAGING_DIR / SETTINGS_FILE,
                      json.dumps(settings.to_dict(), indent=1))
    log.info("extracted %d features for %d patients", table.shape[1] - 2, len(table))
    return table


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


def imaging_table(site_dir: str | Path) -> pd.DataFrame:
    """Features and findings of the site's patients (``patient_id`` = pseudonym)."""
    d = Path(site_dir) / IMAGING_DIR
    frames = [pd.read_parquet(d / f) for f in (FEATURES_FILE, FINDINGS_FILE, HARMONISED_FILE)
              if (d / f).is_file()]
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


def store_harmonisation(site_dir: str | Path, cohort: Cohort,
                        params: Mapping[str, object]) -> Cohort:
    """At a site: harmonise its own features in ``cohort`` with the pooled ComBat ``params``
    the hub sent (:meth:`~hemafed.imaging.combat.FederatedComBat.site_parameters`), store them
    as ``h_<feature>`` (atomically) and return ``cohort`` with the new harmonised columns.

    The site's own ComBat estimates (gamma, delta and their EB posteriors) stay here.
    """
    from hemafed.imaging.combat import FederatedComBat

    model = FederatedComBat.from_parameters(params)
    p = cohort.patients
    base = Cohort(p.drop(columns=[c for c in p.columns if c.startswith(HARMONISED_PREFIX)]),
                  cohort.mutations, dict(cohort.panels))
    frame, _ = model.transform(base.patients)
    imaged = base.patients[model.features].notna().all(axis=1).to_numpy()
    out = pd.DataFrame({"patient_id": frame["patient_id"].astype(str)})
    for f in model.features:
        out[HARMONISED_PREFIX + f] = frame[f].astype(float).to_numpy()
    out = out[imaged].reset_index(drop=True)
    d = Path(site_dir) / IMAGING_DIR
    _write_parquet(d / HARMONISED_FILE, out)
    atomic.write_text(d / COMBAT_FILE, json.dumps(dict(params), indent=1, default=str))
    return imaging_cohort(base, out)


def apply_harmonisation(site_dir: str | Path, params: Mapping[str, object]) -> pd.DataFrame:
    """:func:`store_harmonisation` on the site's stored cohort and features (an operator's or a
    test's direct call; in a study the site does it on answering ``combat_apply``)."""
    from hemafed.site.store import load_cohort

    site = Path(site_dir)
    table = imaging_table(site)
    table = table.drop(columns=[c for c in table.columns if c.startswith(HARMONISED_PREFIX)])
    cohort = store_harmonisation(site, imaging_cohort(load_cohort(site), table), params)
    h = [c for c in cohort.patients.columns if c.startswith(HARMONISED_PREFIX)]
    return pd.read_parquet(site / IMAGING_DIR / HARMONISED_FILE, columns=["patient_id", *h])
