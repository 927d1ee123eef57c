"""``hemafed site import-images`` and ``hemafed site extract-features``: imaging at the site.

Mounted on the ``site`` command group by :func:`mount` (one line in :mod:`hemafed.cli`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from hemafed.errors import HemafedError, InvalidInput
from hemafed.site.store import DEFAULT_STUDY

SiteDir = Annotated[Path, typer.Argument(help="the site directory")]


def _fail(exc: HemafedError) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(1)


def read_manifest(path: Path) -> list[tuple[str, Path, Path]]:
    """``(patient_id, image, mask)`` rows of an image manifest CSV (paths relative to it)."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"{path}: cannot read the image manifest ({exc})") from None
    missing = [c for c in ("patient_id", "image", "mask") if c not in frame.columns]
    if missing:
        raise InvalidInput(f"{path}: the manifest needs columns patient_id, image, mask; "
                           f"missing {missing}")
    rows = []
    for i, r in enumerate(frame.itertuples(index=False), start=2):
        if not r.patient_id or not r.image or not r.mask:
            raise InvalidInput(f"{path}: row {i}: patient_id, image and mask must all be given")
        rows.append((str(r.patient_id), path.parent / str(r.image), path.parent / str(r.mask)))
    if not rows:
        raise InvalidInput(f"{path}: the manifest lists no images")
    return rows


def import_images_cmd(
        site_dir: SiteDir,
        manifest: Annotated[Path, typer.Argument(
            help="CSV with columns patient_id, image (DICOM series folder or NIfTI), mask "
                 "(NIfTI or DICOM SEG); paths relative to the CSV")],
        study: Annotated[str, typer.Option("--study", help="pseudonym domain (one per study)")
                         ] = DEFAULT_STUDY) -> None:
    """Validate, pseudonymise and store images with their masks (all or nothing)."""
    from hemafed.imaging.store import import_images

    try:
        done = import_images(site_dir, read_manifest(manifest), study=study)
    except HemafedError as exc:
        raise _fail(exc) from None
    typer.echo(f"imported {len(done)} image(s) into {site_dir}/imaging (study domain {study})")


def extract_features_cmd(
        site_dir: SiteDir,
        bin_width: Annotated[float | None, typer.Option(help="fixed bin size")] = None,
        bin_count: Annotated[int | None, typer.Option(help="fixed bin number")] = None,
        resample: Annotated[str | None, typer.Option(
            help="target spacing z,y,x in mm, e.g. 1,1,1 (default: native grid)")] = None,
        aggregation: Annotated[str, typer.Option(help="averaged or merged")] = "averaged",
        library: Annotated[str, typer.Option(
            help="feature library: hemafed or mirp (hemafed[imaging-crosscheck])")] = "hemafed",
        study: Annotated[str | None, typer.Option(
            help="take the library and settings the approved study pins (its imaging section); "
                 "no other option then")] = None,
) -> None:
    """Compute IBSI radiomic features of every imported image (stored at the site)."""
    from hemafed.imaging.radiomics import FeatureSettings
    from hemafed.imaging.site_features import (
        extract_site_features,
        extract_study_features,
        stored_provenance,
    )

    try:
        if study is not None:
            if (bin_width, bin_count, resample, aggregation, library) != (
                    None, None, None, "averaged", "hemafed"):
                raise InvalidInput("--study takes the library and settings from the approved "
                                   "study; give no other option with it")
            table = extract_study_features(site_dir, study)
            typer.echo(f"{len(table)} patient(s), {table.shape[1] - 2} features; "
                       f"{json.dumps(stored_provenance(site_dir))}")
            return
        spacing = None
        if resample:
            try:
                parts = tuple(float(v) for v in resample.split(","))
            except ValueError:
                raise InvalidInput(f"--resample must be z,y,x in mm, got {resample!r}") from None
            if len(parts) != 3:
                raise InvalidInput(f"--resample must be z,y,x in mm, got {resample!r}")
            spacing = (parts[0], parts[1], parts[2])
        settings = FeatureSettings(bin_width=bin_width, bin_count=bin_count,
                                   resample_spacing=spacing, aggregation=aggregation)
        table = extract_site_features(site_dir, settings, library)
    except HemafedError as exc:
        raise _fail(exc) from None
    typer.echo(f"{len(table)} patient(s), {table.shape[1] - 2} features; library {library}, "
               f"settings {json.dumps(settings.to_dict())}")


def mount(site_app: typer.Typer) -> None:
    """Add the imaging commands to the ``hemafed site`` group."""
    site_app.command("import-images")(import_images_cmd)
    site_app.command("extract-features")(extract_features_cmd)
