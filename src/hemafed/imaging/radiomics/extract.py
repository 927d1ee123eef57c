"""Feature extraction with declared settings: resampling, discretisation, texture aggregation.

>>> import numpy as np
>>> img = np.arange(27, dtype=float).reshape(3, 3, 3); roi = np.ones((3, 3, 3), bool)
>>> f = extract(img, roi, (1.0, 1.0, 1.0), FeatureSettings(bin_width=9.0))
>>> f["firstorder_mean"], f["morphology_approximate_volume"]
(13.0, 27.0)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from hemafed.errors import InvalidInput
from hemafed.imaging.radiomics.firstorder import first_order
from hemafed.imaging.radiomics.morphology import morphology
from hemafed.imaging.radiomics.texture import texture

FAMILIES = ("firstorder", "morphology", "texture")


@dataclass(frozen=True)
class FeatureSettings:
    """The declared IBSI processing settings; they are part of every feature table's provenance.

    ``resample_spacing``: isotropic/anisotropic target voxel size in mm (z, y, x), or None to keep
    the image grid; the image is interpolated trilinearly, the mask trilinearly and kept at >= 0.5
    (IBSI 2.4, grid centres aligned). Discretisation (IBSI 2.7) is *fixed bin size*
    ``bin_width`` from ``bin_lower`` (None: the ROI minimum) or *fixed bin number* ``bin_count``;
    exactly one is given. ``aggregation`` of GLCM/GLRLM over the 13 directions: "averaged" or
    "merged". ``families`` limits what is computed.
    """

    bin_width: float | None = None
    bin_count: int | None = None
    bin_lower: float | None = None
    resample_spacing: tuple[float, float, float] | None = None
    aggregation: str = "averaged"
    families: tuple[str, ...] = FAMILIES

    def __post_init__(self) -> None:
        if (self.bin_width is None) == (self.bin_count is None):
            raise InvalidInput("feature settings: give exactly one of bin_width (fixed bin size) "
                               "and bin_count (fixed bin number)")
        if self.bin_width is not None and not self.bin_width > 0:
            raise InvalidInput(f"feature settings: bin_width must be > 0, got {self.bin_width}")
        if self.bin_count is not None and not (isinstance(self.bin_count, int)
                                               and 2 <= self.bin_count <= 1024):
            raise InvalidInput(f"feature settings: bin_count must be an int in [2, 1024], "
                               f"got {self.bin_count}")
        if self.resample_spacing is not None:
            sp = tuple(float(s) for s in self.resample_spacing)
            if len(sp) != 3 or not all(s > 0 for s in sp):
                raise InvalidInput(f"feature settings: resample_spacing must be three positive "
                                   f"mm values, got {self.resample_spacing}")
            object.__setattr__(self, "resample_spacing", sp)
        if self.aggregation not in ("averaged", "merged"):
            raise InvalidInput(f"feature settings: aggregation must be 'averaged' or 'merged', "
                               f"got {self.aggregation!r}")
        bad = set(self.families) - set(FAMILIES)
        if bad or not self.families:
            raise InvalidInput(f"feature settings: families must be among {FAMILIES}, "
                               f"got {self.families}")
        object.__setattr__(self, "families", tuple(self.families))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSettings:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise InvalidInput(f"feature settings: unknown key(s) {unknown}; known: "
                               f"{sorted(cls.__dataclass_fields__)}")
        if known.get("resample_spacing") is not None:
            known["resample_spacing"] = tuple(known["resample_spacing"])
        if "families" in known:
            known["families"] = tuple(known["families"])
        return cls(**known)


def resample(image: np.ndarray, mask: np.ndarray, spacing: tuple[float, float, float],
             target: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Trilinear resampling to ``target`` spacing, grid centres aligned (IBSI 2.4).

    With centres aligned every new voxel centre lies within half an original voxel of the
    image; there the image and the mask both take their border value (as ITK's linear
    interpolator does), so an ROI touching the image border keeps its border voxels. The mask
    is kept where its interpolated fraction is >= 0.5. Equal to SimpleITK's ``Resample``
    (``tests/imaging/test_resampling_sitk.py``).
    """
    sp, tg = np.asarray(spacing, float), np.asarray(target, float)
    shape = np.asarray(image.shape)
    new_shape = np.ceil(shape * sp / tg).astype(int)
    # voxel k of the new grid sits at original index (k - (n'-1)/2) * tg/sp + (n-1)/2
    axes = [(np.arange(n2) - (n2 - 1) / 2.0) * t / s + (n - 1) / 2.0
            for n2, t, s, n in zip(new_shape, tg, sp, shape, strict=True)]
    coords = np.meshgrid(*axes, indexing="ij")
    img = ndimage.map_coordinates(image.astype(float), coords, order=1, mode="nearest")
    msk = ndimage.map_coordinates(mask.astype(float), coords, order=1, mode="nearest")
    return img, msk >= 0.5


def discretise(values: np.ndarray, settings: FeatureSettings) -> tuple[np.ndarray, int]:
    """Grey levels 1..n of the ROI intensities, and n (IBSI 2.7)."""
    x = np.asarray(values, dtype=float)
    lo, hi = float(x.min()), float(x.max())
    if settings.bin_width is not None:
        lower = lo if settings.bin_lower is None else float(settings.bin_lower)
        if lo < lower:
            raise InvalidInput(f"feature settings: ROI intensity {lo:g} is below bin_lower "
                               f"{lower:g}; lower it or resegment")
        g = np.floor((x - lower) / settings.bin_width).astype(np.int64) + 1
        return g, int(g.max())
    assert settings.bin_count is not None
    n = settings.bin_count
    if hi == lo:
        return np.ones(x.shape, dtype=np.int64), n
    g = np.floor(n * (x - lo) / (hi - lo)).astype(np.int64) + 1
    return np.minimum(g, n), n


def extract(image: np.ndarray, mask: np.ndarray, spacing: tuple[float, float, float],
            settings: FeatureSettings) -> dict[str, float]:
    """Every feature of the ROI ``mask`` in ``image`` (arrays z, y, x; ``spacing`` in mm z, y, x).

    Returns ``{"<family>_<feature>": value}``, families ``firstorder``, ``morphology``,
    ``glcm``, ``glrlm``, ``glszm``. Raises ``InvalidInput`` for an empty ROI or mismatched arrays.
    """
    image = np.asarray(image)
    mask = np.asarray(mask).astype(bool)
    if image.shape != mask.shape or image.ndim != 3:
        raise InvalidInput(f"image {image.shape} and mask {mask.shape} must be 3-d arrays of the "
                           "same shape")
    if settings.resample_spacing is not None and tuple(spacing) != settings.resample_spacing:
        image, mask = resample(image, mask, spacing, settings.resample_spacing)
        spacing = settings.resample_spacing
    if not mask.any():
        raise InvalidInput("the segmentation mask is empty (after resampling): no ROI voxels")
    # crop to the ROI's bounding box, one voxel of margin (features do not depend on the rest)
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(0) - 1, 0)
    hi = np.minimum(idx.max(0) + 2, mask.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    image, mask = image[box].astype(float), mask[box]
    out: dict[str, float] = {}
    roi = image[mask]
    if "firstorder" in settings.families:
        out |= {f"firstorder_{k}": v for k, v in first_order(roi).items()}
    if "morphology" in settings.families:
        sp = (float(spacing[0]), float(spacing[1]), float(spacing[2]))
        out |= {f"morphology_{k}": v for k, v in morphology(mask, image, sp).items()}
    if "texture" in settings.families:
        g, n = discretise(roi, settings)
        levels = np.zeros(mask.shape, dtype=np.int64)
        levels[mask] = g
        out |= texture(levels, n, settings.aggregation)
    return {k: (float(v) if math.isfinite(v) else float("nan")) for k, v in out.items()}


def feature_names(settings: FeatureSettings) -> list[str]:
    """The feature names :func:`extract` returns for ``settings`` (in order)."""
    img = np.zeros((3, 3, 3))
    img[1, 1, 1], img[1, 1, 2] = 1.0, 2.0
    roi = np.zeros((3, 3, 3), dtype=bool)
    roi[1, 1, :] = True
    roi[1, 0, 1] = True
    return list(extract(img + 1.0, roi, (1.0, 1.0, 1.0), settings))
