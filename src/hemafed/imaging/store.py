"""The site's image store: validated images and masks under ``<site>/imaging/``, never sent.

Layout::

    imaging/index.csv                      one row per imported image: pseudonym, image id, ...
    imaging/<pseudonym>/<image id>/        meta.json (+ imaging_study.json for DICOM sources)
    vault/<image id>.image.nii.gz.c4gh     the image and its mask, Crypt4GH-encrypted for the
    vault/<image id>.mask.nii.gz.c4gh      site's own key (:mod:`hemafed.site.vault`)

Pixels are kept only encrypted at rest: the NIfTI bytes are encrypted in memory into the site
vault, never written in plain; :func:`load_image` decrypts them in memory for the feature
extraction. An import reads and checks every image first (:mod:`hemafed.imaging.intake`),
encrypts the pixels into the vault, writes the metadata into a hidden staging directory, fsyncs
it and renames it into place, then rewrites the index atomically (:mod:`hemafed.atomic`): a
refused or interrupted import leaves the site directory as it was (vault entries of a failed
import are removed). The patient's hospital id is replaced by its study pseudonym
(:class:`~hemafed.site.pseudonym.Pseudonymiser` with the site secret) before anything is written.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hemafed import atomic
from hemafed.errors import InvalidInput
from hemafed.imaging.fhir import imaging_study
from hemafed.imaging.intake import read_image, read_mask
from hemafed.imaging.volume import Volume
from hemafed.site.pseudonym import Pseudonymiser
from hemafed.site.store import site_secret
from hemafed.site.store import vault as site_vault

log = logging.getLogger(__name__)

IMAGING_DIR = "imaging"
INDEX_COLUMNS = ("pseudonym", "image_id", "modality", "shape", "spacing", "source_kind")


@dataclass(frozen=True)
class ImportedImage:
    """What one import stored (no patient identifier: the pseudonym only)."""

    pseudonym: str
    image_id: str
    directory: Path
    modality: str
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]


def _affine(v: Volume) -> np.ndarray:
    """NIfTI (RAS, i=x) affine of a (z, y, x) LPS volume."""
    d = np.asarray(v.direction) * np.asarray([v.spacing[2], v.spacing[1], v.spacing[0]])
    ras = np.diag([-1.0, -1.0, 1.0])
    aff = np.eye(4)
    aff[:3, :3] = ras @ d
    aff[:3, 3] = ras @ np.asarray(v.origin)
    return aff


def nifti_image(volume: Volume, dtype: Any = np.float32) -> Any:
    """``volume`` as a nibabel ``Nifti1Image`` (qform and sform set to its LPS geometry)."""
    import nibabel as nib

    data = np.asarray(volume.array).transpose(2, 1, 0).astype(dtype)
    img = nib.Nifti1Image(data, _affine(volume))
    img.set_qform(_affine(volume), code=1)
    img.set_sform(_affine(volume), code=1)
    return img


def nifti_bytes(volume: Volume, dtype: Any = np.float32) -> bytes:
    """``volume`` as gzipped NIfTI-1 bytes."""
    return gzip.compress(nifti_image(volume, dtype).to_bytes(), compresslevel=1, mtime=0)


def write_nifti(path: Path, volume: Volume, dtype: Any = np.float32) -> None:
    """Write ``volume`` as NIfTI (atomically, fsynced)."""
    atomic.write_bytes(path, nifti_bytes(volume, dtype))


def vault_name(image_id: str, part: str) -> str:
    """The vault entry of an imported image's ``part`` (``image`` or ``mask``)."""
    return f"{image_id}.{part}.nii.gz"


def _index_path(site_dir: Path) -> Path:
    return site_dir / IMAGING_DIR / "index.csv"


def read_index(site_dir: str | Path) -> pd.DataFrame:
    """The site's image index (empty when nothing was imported)."""
    path = _index_path(Path(site_dir))
    if not path.is_file():
        return pd.DataFrame({c: pd.Series(dtype="string") for c in INDEX_COLUMNS})
    return pd.read_csv(path, dtype="string")


def import_image(site_dir: str | Path, patient_id: str, image: str | Path | Sequence[str | Path],
                 mask: str | Path, *, study: str) -> ImportedImage:
    """Validate and store one image with its mask for ``patient_id`` (pseudonymised for ``study``).

    Raises ``InvalidInput`` (naming the file and the reason) and writes nothing when the image
    or mask is refused, or when the same image was already imported for this patient.
    """
    return import_images(site_dir, [(patient_id, image, mask)], study=study)[0]


def import_images(site_dir: str | Path,
                  items: Sequence[tuple[str, str | Path | Sequence[str | Path], str | Path]], *,
                  study: str) -> list[ImportedImage]:
    """Import ``(patient_id, image, mask)`` items: all are read and checked before anything is
    written, so one refused file leaves the site unchanged; the index is rewritten once."""
    site = Path(site_dir)
    pseudonymiser = Pseudonymiser(site_secret(site))
    index = read_index(site)
    seen = set(zip(index["pseudonym"].astype(str), index["image_id"].astype(str), strict=True))
    checked = []
    for patient_id, image, mask in items:
        pseudonym = pseudonymiser.pseudonym(patient_id, study)
        vol = read_image(image)
        roi = read_mask(mask, vol)
        key = vol.meta.get("series_instance_uid") or hashlib.sha256(
            np.ascontiguousarray(vol.array).tobytes()).hexdigest()
        image_id = "img-" + hashlib.sha256(f"{pseudonym}/{key}".encode()).hexdigest()[:16]
        if (pseudonym, image_id) in seen:
            raise InvalidInput(f"{image}: this image was already imported for this patient "
                               f"({image_id}); nothing was changed")
        seen.add((pseudonym, image_id))
        checked.append((pseudonym, image_id, image, vol, roi))
    done: list[ImportedImage] = []
    rows = []
    box = site_vault(site)
    for pseudonym, image_id, image, vol, roi in checked:
        target = site / IMAGING_DIR / pseudonym / image_id
        meta = {k: v for k, v in vol.meta.items() if k != "patient_id"}  # no hospital id
        meta |= {"image_id": image_id, "pseudonym": pseudonym, "study": study,
                 "shape": list(vol.shape), "spacing": list(vol.spacing),
                 "origin": list(vol.origin), "direction": [list(r) for r in vol.direction],
                 "roi_voxels": int(roi.array.sum())}
        meta.setdefault("modality", "MR" if str(image).endswith((".nii", ".nii.gz")) else "")
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{image_id}.", dir=target.parent))
        names = [vault_name(image_id, "image"), vault_name(image_id, "mask")]
        try:
            box.add_bytes(nifti_bytes(vol), names[0])
            box.add_bytes(nifti_bytes(roi, np.uint8), names[1])
            if vol.meta.get("series_instance_uid"):
                atomic.write_text(staging / "imaging_study.json",
                                  json.dumps(imaging_study(vol.meta, pseudonym), indent=1))
            atomic.write_text(staging / "meta.json", json.dumps(meta, indent=1, default=str))
            os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            for name in names:
                box.remove(name)
            raise
        rows.append({"pseudonym": pseudonym, "image_id": image_id,
                     "modality": str(meta["modality"]), "shape": "x".join(map(str, vol.shape)),
                     "spacing": "x".join(f"{s:g}" for s in vol.spacing),
                     "source_kind": "dicom" if vol.meta.get("series_instance_uid") else "nifti"})
        done.append(ImportedImage(pseudonym, image_id, target, str(meta["modality"]), vol.shape,
                                  vol.spacing))
    if rows:
        new_index = pd.concat([index, pd.DataFrame(rows, dtype="string")], ignore_index=True)
        atomic.write_text(_index_path(site), new_index.to_csv(index=False))
    log.info("imported %d image(s)", len(done))
    return done


def load_image(site_dir: str | Path, pseudonym: str, image_id: str) -> tuple[Volume, Volume]:
    """The stored ``(image, mask)`` volumes of one imported image, decrypted from the site
    vault in memory."""
    from hemafed.imaging.intake import nifti_bytes_volume

    d = Path(site_dir) / IMAGING_DIR / pseudonym / image_id
    if not d.is_dir():
        raise InvalidInput(f"{site_dir}: no imported image {image_id} for this patient")
    box = site_vault(site_dir)
    img, msk = (nifti_bytes_volume(box.get_bytes(vault_name(image_id, part)),
                                   f"vault:{vault_name(image_id, part)}")
                for part in ("image", "mask"))
    return img, Volume(msk.array > 0, msk.spacing, msk.origin, msk.direction, msk.source)
