"""Read medical images and segmentation masks at the site, with clear refusals.

* DICOM series (pydicom): one directory (or file list) = one series of single-frame image
  instances; slices are ordered along the slice normal, and the series is refused if a file is
  not DICOM or is corrupt, holds no image (e.g. an RT plan or structured report), has an
  unsupported modality, belongs to another series, disagrees on orientation, pixel spacing or
  size, or if slices are missing (a gap in the positions) or unevenly spaced.
* DICOM SEG masks (highdicom), aligned to the referenced series instance by instance.
* NIfTI images and masks (nibabel), geometry from the qform/sform affine (RAS converted to LPS).

Every refusal is one :class:`~hemafed.errors.InvalidInput` naming the file and the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hemafed.errors import InvalidInput
from hemafed.imaging.volume import DIRECTION_TOL, SPACING_TOL, Volume

log = logging.getLogger(__name__)

SUPPORTED_MODALITIES = ("CT", "MR", "PT")
"""DICOM modalities whose images hemafed imports (radiomics is standardised for these)."""

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def _dicom_files(source: str | Path | Iterable[str | Path]) -> list[Path]:
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        elif path.is_file():
            files = [path]
        else:
            raise InvalidInput(f"{path}: no such file or directory")
    else:
        files = [Path(p) for p in source]
    if not files:
        raise InvalidInput(f"{source}: no DICOM files found")
    return files


def _read_instance(path: Path) -> Any:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        try:
            ds = pydicom.dcmread(path)
        except InvalidDicomError:
            # older files may lack the 128-byte preamble; accept them if they parse as a dataset
            ds = pydicom.dcmread(path, force=True)
            if "SOPClassUID" not in ds:
                raise InvalidInput(f"{path}: not a DICOM file (no DICOM header, no SOP class)"
                                   ) from None
    except InvalidInput:
        raise
    except Exception as exc:  # pydicom raises many kinds for truncated or damaged files
        raise InvalidInput(f"{path}: corrupt DICOM file ({type(exc).__name__})") from None
    if "PixelData" not in ds:
        sop = getattr(ds, "SOPClassUID", None)
        name = getattr(sop, "name", str(sop)) if sop is not None else "unknown SOP class"
        raise InvalidInput(f"{path}: not an image: it holds no pixel data ({name})")
    modality = str(getattr(ds, "Modality", ""))
    if modality not in SUPPORTED_MODALITIES:
        raise InvalidInput(f"{path}: unsupported modality {modality or '(none)'!r}; hemafed "
                           f"imports {', '.join(SUPPORTED_MODALITIES)} images")
    if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
        raise InvalidInput(f"{path}: multi-frame (enhanced) image objects are not supported; "
                           "export the series as single-frame instances")
    if int(getattr(ds, "SamplesPerPixel", 1)) != 1:
        raise InvalidInput(f"{path}: colour images are not supported (SamplesPerPixel "
                           f"{ds.SamplesPerPixel})")
    for tag in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        if tag not in ds:
            raise InvalidInput(f"{path}: missing {tag}: the slice cannot be placed in space")
    return ds


def _pixels(ds: Any, path: Path) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut

    try:
        arr = ds.pixel_array
    except Exception as exc:
        raise InvalidInput(f"{path}: the pixel data cannot be decoded ({type(exc).__name__}: "
                           f"{exc})"[:300]) from None
    return np.asarray(apply_modality_lut(arr, ds), dtype=float)


def read_dicom_series(source: str | Path | Iterable[str | Path]) -> Volume:
    """One DICOM series (a directory or a list of files) as a :class:`Volume` (see module doc)."""
    files = _dicom_files(source)
    instances = [(p, _read_instance(p)) for p in files]
    first_path, first = instances[0]
    series = str(first.SeriesInstanceUID)
    row = np.asarray(first.ImageOrientationPatient[:3], dtype=float)
    col = np.asarray(first.ImageOrientationPatient[3:], dtype=float)
    normal = np.cross(row, col)
    pixel = tuple(float(v) for v in first.PixelSpacing)
    size = (int(first.Rows), int(first.Columns))
    for path, ds in instances[1:]:
        if str(ds.SeriesInstanceUID) != series:
            raise InvalidInput(f"{path}: belongs to series {ds.SeriesInstanceUID}, not {series} "
                               f"of {first_path}; import one series at a time")
        iop = np.asarray(ds.ImageOrientationPatient, dtype=float)
        if not np.allclose(iop, np.concatenate([row, col]), atol=DIRECTION_TOL):
            raise InvalidInput(f"{path}: inconsistent orientation: ImageOrientationPatient "
                               f"{iop.tolist()} differs from {first_path}")
        if not np.allclose([float(v) for v in ds.PixelSpacing], pixel, rtol=SPACING_TOL):
            raise InvalidInput(f"{path}: inconsistent pixel spacing {list(ds.PixelSpacing)} "
                               f"(first slice: {list(pixel)})")
        if (int(ds.Rows), int(ds.Columns)) != size:
            raise InvalidInput(f"{path}: slice size {ds.Rows}x{ds.Columns} differs from "
                               f"{size[0]}x{size[1]}")
    positions = [float(np.dot(np.asarray(ds.ImagePositionPatient, float), normal))
                 for _, ds in instances]
    order = np.argsort(positions)
    instances = [instances[i] for i in order]
    pos = np.asarray(positions)[order]
    if len(instances) > 1:
        gaps = np.diff(pos)
        if np.any(gaps < SPACING_TOL):
            i = int(np.argmin(gaps))
            raise InvalidInput(f"{instances[i + 1][0]}: duplicate slice position {pos[i + 1]:g} mm "
                               f"(also {instances[i][0]})")
        step = float(np.median(gaps))
        if not np.allclose(gaps, step, rtol=1e-2, atol=SPACING_TOL):
            i = int(np.argmax(np.abs(gaps - step)))
            ratio = gaps[i] / step
            what = (f"{round(ratio) - 1} missing slice(s)" if abs(ratio - round(ratio)) < 0.05
                    and ratio > 1.5 else "uneven slice spacing")
            raise InvalidInput(f"{source}: {what} between {instances[i][0].name} "
                               f"(at {pos[i]:g} mm) and {instances[i + 1][0].name} "
                               f"(at {pos[i + 1]:g} mm); the usual spacing is {step:g} mm")
    else:
        step = float(getattr(first, "SpacingBetweenSlices", 0) or
                     getattr(first, "SliceThickness", 0) or 1.0)
    array = np.stack([_pixels(ds, p) for p, ds in instances])
    top = instances[0][1]
    meta = {
        "patient_id": str(getattr(top, "PatientID", "")),
        "study_instance_uid": str(getattr(top, "StudyInstanceUID", "")),
        "series_instance_uid": series,
        "series_number": int(getattr(top, "SeriesNumber", 0) or 0),
        "modality": str(top.Modality),
        "study_date": str(getattr(top, "StudyDate", "")),
        "series_description": str(getattr(top, "SeriesDescription", "")),
        "body_part": str(getattr(top, "BodyPartExamined", "")),
        "manufacturer": str(getattr(top, "Manufacturer", "")),
        "sop_class_uid": str(top.SOPClassUID),
        "sop_instance_uids": [str(ds.SOPInstanceUID) for _, ds in instances],
        "instance_numbers": [int(getattr(ds, "InstanceNumber", i + 1) or i + 1)
                             for i, (_, ds) in enumerate(instances)],
    }
    direction = np.stack([row, col, normal], axis=1)
    src = str(source) if isinstance(source, (str, Path)) else str(files[0].parent)
    return Volume(array, (abs(step), pixel[0], pixel[1]),
                  tuple(float(v) for v in top.ImagePositionPatient),
                  tuple(tuple(r) for r in direction), src, meta)


def read_dicom_seg(path: str | Path, reference: Volume, segment: int | None = None) -> Volume:
    """A DICOM SEG mask on the grid of ``reference`` (read by :func:`read_dicom_series`).

    ``segment``: the segment number to use; None combines every segment into one ROI.
    """
    import highdicom as hd

    path = Path(path)
    try:
        seg = hd.seg.segread(path)
    except Exception as exc:
        raise InvalidInput(f"{path}: not a readable DICOM SEG object ({type(exc).__name__})"
                           ) from None
    uids = reference.meta.get("sop_instance_uids")
    if not uids:
        raise InvalidInput(f"{path}: a DICOM SEG mask needs a DICOM image series to align to")
    numbers = [segment] if segment is not None else list(seg.segment_numbers)
    try:
        pixels = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=uids, segment_numbers=numbers,
            assert_missing_frames_are_empty=True)
    except Exception as exc:
        raise InvalidInput(f"{path}: the segmentation does not reference the image series "
                           f"{reference.meta.get('series_instance_uid')} "
                           f"({type(exc).__name__})") from None
    mask = np.asarray(np.asarray(pixels).reshape(len(uids), *reference.shape[1:], -1).any(axis=-1),
                      dtype=bool)
    return Volume(mask, reference.spacing, reference.origin, reference.direction, str(path),
                  {"segment_numbers": numbers})


def read_nifti(path: str | Path) -> Volume:
    """A NIfTI-1/2 3-d volume (4-d with one volume accepted) in LPS geometry."""
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"{path}: no such file")
    try:
        img = nib.load(str(path))
    except Exception as exc:
        raise InvalidInput(f"{path}: not a readable NIfTI file ({type(exc).__name__})") from None
    return nifti_volume(img, path)


def nifti_bytes_volume(data: bytes, where: str | Path) -> Volume:
    """A NIfTI-1 volume from its (optionally gzipped) bytes, e.g. decrypted from the vault."""
    import gzip

    import nibabel as nib

    try:
        raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
        img = nib.Nifti1Image.from_bytes(raw)
    except Exception as exc:
        raise InvalidInput(f"{where}: not a readable NIfTI file ({type(exc).__name__})") from None
    return nifti_volume(img, where)


def nifti_volume(img: Any, path: str | Path) -> Volume:
    """The LPS :class:`Volume` of a loaded nibabel image (``path`` names it in errors)."""
    try:
        data = np.asarray(img.dataobj, dtype=float)
        affine = np.asarray(img.affine, dtype=float)
    except Exception as exc:
        raise InvalidInput(f"{path}: not a readable NIfTI file ({type(exc).__name__})") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InvalidInput(f"{path}: expected a 3-d volume, got shape {data.shape}")
    if not np.all(np.isfinite(data)):
        raise InvalidInput(f"{path}: the volume contains NaN or infinite values")
    lps = _RAS_TO_LPS @ affine[:3, :3]
    spacing_ijk = np.linalg.norm(lps, axis=0)
    if np.any(spacing_ijk <= 0):
        raise InvalidInput(f"{path}: degenerate affine (zero voxel size)")
    direction = lps / spacing_ijk
    origin = _RAS_TO_LPS @ affine[:3, 3]
    # nibabel indexes (i, j, k) = (x, y, z); hemafed volumes are (z, y, x)
    return Volume(np.ascontiguousarray(data.transpose(2, 1, 0)),
                  (float(spacing_ijk[2]), float(spacing_ijk[1]), float(spacing_ijk[0])),
                  tuple(float(v) for v in origin), tuple(tuple(r) for r in direction), str(path))


def read_image(source: str | Path | Sequence[str | Path]) -> Volume:
    """A NIfTI file (``.nii``/``.nii.gz``) or a DICOM series (directory, file or file list)."""
    if isinstance(source, (str, Path)) and str(source).endswith((".nii", ".nii.gz")):
        return read_nifti(source)
    return read_dicom_series(source)


def read_mask(source: str | Path, image: Volume) -> Volume:
    """The segmentation mask for ``image`` (NIfTI, DICOM SEG, or a DICOM series of labels),
    checked to lie on the image's voxel grid and to be non-empty; values > 0 are the ROI."""
    path = Path(source)
    if str(path).endswith((".nii", ".nii.gz")):
        mask = read_nifti(path)
    elif path.is_file():
        mask = read_dicom_seg(path, image)
    else:
        raise InvalidInput(f"{path}: a mask must be a NIfTI file or a DICOM SEG file")
    image.check_same_grid(mask)
    roi = mask.array > 0
    if not roi.any():
        raise InvalidInput(f"{path}: the segmentation mask is empty (no voxel > 0)")
    return Volume(roi, mask.spacing, mask.origin, mask.direction, mask.source, mask.meta)
