"""Seeded virtual imaging cohorts: real DICOM series and NIfTI volumes with masks, per-site scanners.

Two kinds of subject, small on purpose (tests stay fast):

* **SCD brain MRI** (FLAIR-like): a brain ellipsoid with grey/white matter; the ROI mask is the
  white matter. A patient with a *silent cerebral infarct* has 1-3 small hyperintense lesions in
  it; the probability rises with age and falls with haemoglobin (as in SIT-trial cohorts).
* **MM bone marrow** (T1-like): a vertebral-body-like marrow cylinder (the ROI) with focal
  hypointense lesions whose number grows with a latent tumour burden; progression-free survival
  (``relapse_time``/``relapse_status``) has a hazard rising with that burden and beta-2m.

Each site has a scanner: an intensity scale and offset, noise, and a blur (resolution) applied to
every image it produces, strong enough that un-harmonised radiomic features tell sites apart.
Everything is deterministic given the seed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from hemafed.errors import InvalidInput
from hemafed.imaging.volume import Volume

SHAPE = (12, 28, 28)
"""Voxels (z, y, x) of every virtual volume."""
SPACING = (3.0, 1.0, 1.0)


@dataclass(frozen=True)
class Scanner:
    """One site's scanner: ``intensity = scale * true + offset``, blurred, plus Gaussian noise."""

    scale: float
    offset: float
    noise: float
    blur: float
    manufacturer: str

    def __post_init__(self) -> None:
        if not (self.scale > 0 and self.noise >= 0 and self.blur >= 0):
            raise InvalidInput(f"scanner: scale > 0, noise >= 0, blur >= 0 expected, got {self}")

    def acquire(self, truth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        img = ndimage.gaussian_filter(truth, sigma=(0.0, self.blur, self.blur)) if self.blur else truth
        img = self.scale * img + self.offset
        return np.clip(img + rng.normal(0.0, self.noise, size=truth.shape), 0.0, None)


def site_scanners(n_sites: int, seed: int) -> list[Scanner]:
    """``n_sites`` distinct scanners (strong, deterministic differences)."""
    rng = np.random.default_rng(seed)
    makers = ["Siemens", "GE", "Philips", "Canon", "United"]
    out = []
    for s in range(n_sites):
        out.append(Scanner(scale=float(0.7 + 0.8 * s / max(n_sites - 1, 1) + rng.normal(0, 0.03)),
                           offset=float(rng.uniform(0, 30)), noise=float(3.0 + 3.0 * (s % 3)),
                           blur=float([0.0, 1.0, 0.5, 1.4, 0.25][s % 5]),
                           manufacturer=makers[s % 5]))
    return out


def _ellipsoid(shape: tuple[int, int, int], centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
    z, y, x = np.indices(shape, dtype=float)
    return (((z - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2
            + ((x - centre[2]) / radii[2]) ** 2) <= 1.0


def _smooth_field(rng: np.random.Generator, amplitude: float) -> np.ndarray:
    return amplitude * ndimage.gaussian_filter(rng.normal(size=SHAPE), 2.0) * 4.0


def brain(rng: np.random.Generator, infarct: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(truth, white-matter mask)`` of one SCD brain; lesions if ``infarct``."""
    c = np.array(SHAPE, float) / 2 - 0.5 + rng.normal(0, 0.4, 3)
    head = _ellipsoid(SHAPE, c, np.array([5.6, 12.5, 11.0]) * rng.uniform(0.95, 1.05))
    wm = _ellipsoid(SHAPE, c, np.array([4.2, 9.0, 8.0]) * rng.uniform(0.92, 1.08))
    truth = np.where(head, 70.0, 5.0)
    truth[wm] = 100.0
    truth = truth + _smooth_field(rng, 3.0) * head
    inside = np.argwhere(ndimage.binary_erosion(wm, iterations=2))
    # infarcts: 1-3 small, variably hyperintense foci; mimics (perivascular spaces, artefacts)
    # in half of the others, so no single feature separates the classes
    if infarct:
        foci = [(float(rng.uniform(106.0, 132.0)), float(rng.uniform(0.7, 1.5)))
                for _ in range(int(rng.integers(1, 4)))]
    else:
        foci = ([(float(rng.uniform(104.0, 128.0)), float(rng.uniform(0.7, 1.3)))]
                if rng.random() < 0.5 else [])
    for level, radius in foci:
        centre = inside[rng.integers(len(inside))].astype(float)
        lesion = _ellipsoid(SHAPE, centre, np.array([0.8, 1.0, 1.0]) * radius)
        truth[lesion & wm] = level
    return truth, wm


def marrow(rng: np.random.Generator, n_lesions: int) -> tuple[np.ndarray, np.ndarray]:
    """``(truth, marrow mask)`` of one vertebral-body-like marrow with ``n_lesions`` focal lesions."""
    z, y, x = np.indices(SHAPE, dtype=float)
    cy, cx = SHAPE[1] / 2 - 0.5 + rng.normal(0, 0.5), SHAPE[2] / 2 - 0.5 + rng.normal(0, 0.5)
    radius = rng.uniform(9.0, 10.5)
    cyl = ((y - cy) ** 2 + (x - cx) ** 2 <= radius ** 2) & (z >= 1) & (z <= SHAPE[0] - 2)
    cortex = ((y - cy) ** 2 + (x - cx) ** 2 <= (radius + 1.5) ** 2) & (z >= 0) & (z <= SHAPE[0] - 1)
    truth = np.where(cortex, 30.0, 10.0)
    truth[cyl] = 100.0 + rng.normal(0, 4)
    truth = truth + _smooth_field(rng, 4.0) * cyl
    inside = np.argwhere(ndimage.binary_erosion(cyl, iterations=1))
    for _ in range(n_lesions):
        centre = inside[rng.integers(len(inside))].astype(float)
        lesion = _ellipsoid(SHAPE, centre, np.array([0.7, 1.0, 1.0]) * rng.uniform(1.5, 3.0))
        truth[lesion & cyl] = 40.0
    return truth, cyl


@dataclass(frozen=True)
class VirtualSubject:
    """One virtual patient: clinical row, acquired image and its ROI mask."""

    site: str
    patient_id: str
    image: Volume
    mask: Volume
    clinical: dict[str, object]


def generate(disease: str, sites: int, per_site: int | list[int], seed: int,
             ) -> list[VirtualSubject]:
    """Subjects of ``disease`` ("SCD" or "MM") over ``sites`` sites, deterministic by ``seed``."""
    if disease not in ("SCD", "MM"):
        raise InvalidInput(f"virtual imaging cohorts exist for SCD and MM, not {disease!r}")
    sizes = [per_site] * sites if isinstance(per_site, int) else list(per_site)
    if len(sizes) != sites or min(sizes) < 3:
        raise InvalidInput(f"per_site must give >= 3 patients for each of {sites} sites")
    scanners = site_scanners(sites, seed + 1)
    rng = np.random.default_rng(seed)
    subjects: list[VirtualSubject] = []
    start = dt.date(2024, 1, 1)
    for s, (n, scanner) in enumerate(zip(sizes, scanners, strict=True)):
        site = f"site{s + 1}"
        for k in range(n):
            pid = f"{site}-P{k + 1:04d}"
            sex = str(rng.choice(["M", "F"]))
            if disease == "SCD":
                # binary fractions (exact in float32, as neuroCombat's design matrix is)
                age = float(np.round(rng.uniform(5.0, 18.0) * 4) / 4)
                hb = float(np.round(np.clip(rng.normal(8.5, 1.2), 5.0, 12.5) * 8) / 8)
                # site case-mix differs a little (biology, which harmonisation must keep)
                logit = -0.4 + 0.18 * (age - 11.5) - 0.7 * (hb - 8.5) + 0.15 * (s - 2)
                infarct = bool(rng.random() < 1 / (1 + np.exp(-logit)))
                truth, roi = brain(rng, infarct)
                clinical: dict[str, object] = {"age": age, "hb": hb, "sex": sex,
                                               "silent_infarct": infarct}
            else:
                age = float(np.round(np.clip(rng.normal(66.0, 9.0), 35.0, 90.0) * 4) / 4)
                burden = float(rng.normal(0.0, 1.0))
                b2m = float(np.round(np.exp(1.2 + 0.35 * burden + rng.normal(0, 0.3)), 2))
                truth, roi = marrow(rng, int(rng.poisson(np.exp(0.9 + 0.7 * burden))))
                hazard = 0.25 * np.exp(0.75 * burden + 0.02 * (age - 66.0))
                t_event = rng.exponential(1.0 / hazard)
                t_cens = rng.uniform(1.0, 6.0)
                clinical = {"age": age, "sex": sex, "b2m": b2m,
                            # whole days, in years of 365.25 days (the survival time lattice)
                            "relapse_time": max(round(min(t_event, t_cens) * 365.25), 1) / 365.25,
                            "relapse_status": bool(t_event <= t_cens)}
            img = scanner.acquire(truth, rng)
            meta = {"manufacturer": scanner.manufacturer, "modality": "MR",
                    "study_date": (start + dt.timedelta(days=int(rng.integers(0, 365)))
                                   ).strftime("%Y%m%d")}
            origin = (0.0, -SHAPE[1] * SPACING[1] / 2, -SHAPE[2] * SPACING[2] / 2)
            subjects.append(VirtualSubject(
                site, pid, Volume(np.round(img), SPACING, origin, source=f"virtual:{pid}",
                                  meta=meta),
                Volume(roi, SPACING, origin, source=f"virtual:{pid}:mask"), clinical))
    return subjects


def clinical_frame(subjects: list[VirtualSubject], disease: str) -> pd.DataFrame:
    """The clinical table (one row per subject, with ``site``)."""
    rows = [{"site": s.site, "patient_id": s.patient_id, "disease": disease, **s.clinical}
            for s in subjects]
    return pd.DataFrame(rows)


def write_dicom_series(volume: Volume, directory: Path, patient_id: str, *,
                       study_uid: str | None = None, description: str = "virtual") -> Path:
    """Write ``volume`` as a real single-frame MR DICOM series (one file per slice)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    directory.mkdir(parents=True, exist_ok=True)
    arr = np.asarray(volume.array)
    if arr.min() < 0 or arr.max() > 65535:
        raise InvalidInput("write_dicom_series: intensities must lie in [0, 65535]")
    pixels = np.round(arr).astype(np.uint16)
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    d = np.asarray(volume.direction)
    for k in range(arr.shape[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(directory / f"{k:04d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.PatientID = patient_id
        ds.PatientName = patient_id
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = 1
        ds.InstanceNumber = k + 1
        ds.Modality = "MR"
        ds.SeriesDescription = description
        ds.Manufacturer = str(volume.meta.get("manufacturer", "hemafed-virtual"))
        ds.StudyDate = str(volume.meta.get("study_date", "20240101"))
        pos = np.asarray(volume.origin) + d[:, 2] * k * volume.spacing[0]
        ds.ImagePositionPatient = [float(v) for v in pos]
        ds.ImageOrientationPatient = [float(v) for v in np.concatenate([d[:, 0], d[:, 1]])]
        ds.PixelSpacing = [float(volume.spacing[1]), float(volume.spacing[2])]
        ds.SliceThickness = float(volume.spacing[0])
        ds.Rows, ds.Columns = int(arr.shape[1]), int(arr.shape[2])
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = pixels[k].tobytes()
        ds.save_as(directory / f"{k:04d}.dcm", enforce_file_format=True)
    return directory
