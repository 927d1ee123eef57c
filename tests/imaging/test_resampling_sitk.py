"""Our resampling (``hemafed.imaging.radiomics.extract.resample``) against SimpleITK.

IBSI configurations A-E need the IBSI CT phantom, which is not available offline. Instead the
rules they rely on are checked on synthetic volumes against SimpleITK's ``Resample`` (ITK
5, an independent implementation): grid centres aligned (IBSI 2.4), output size
``ceil(n * spacing / target)``, trilinear interpolation of the image, and the mask interpolated
trilinearly and kept where the fraction is >= 0.5 (the partial-volume threshold).
"""

from __future__ import annotations

import numpy as np
import pytest

from hemafed.imaging.radiomics import FeatureSettings, extract
from hemafed.imaging.radiomics.extract import resample

sitk = pytest.importorskip("SimpleITK")

TIE = 1e-9
"""Mask fractions this close to 0.5 are ties that floating-point rounding may send either way."""

CASES = [  # (shape z, y, x; spacing mm z, y, x; target spacing mm z, y, x)
    ((7, 9, 11), (3.0, 1.0, 1.0), (2.0, 2.0, 2.0)),  # thick slices to an isotropic 2 mm grid
    ((6, 8, 5), (1.0, 0.7, 1.3), (1.0, 1.0, 1.0)),  # anisotropic, up and down at once
    ((5, 6, 7), (2.0, 2.0, 2.0), (0.8, 0.9, 1.1)),  # upsampling, grid steps not dividing
    ((9, 5, 6), (1.0, 1.0, 1.0), (2.7, 2.3, 2.6)),  # strong downsampling
]


def sitk_resample(array: np.ndarray, spacing: tuple[float, ...],
                  target: tuple[float, ...]) -> np.ndarray:
    """SimpleITK trilinear resampling onto the centre-aligned grid IBSI prescribes."""
    img = sitk.GetImageFromArray(array.astype(np.float64))  # sitk index order is x, y, z
    sp = np.asarray(spacing[::-1], float)
    tg = np.asarray(target[::-1], float)
    n = np.asarray(array.shape[::-1])
    n2 = np.ceil(n * sp / tg).astype(int)
    img.SetSpacing(tuple(sp))
    origin = (sp * (n - 1) - tg * (n2 - 1)) / 2.0  # the two grids share their centre
    out = sitk.Resample(img, [int(v) for v in n2], sitk.Transform(), sitk.sitkLinear,
                        tuple(float(v) for v in origin), tuple(float(v) for v in tg),
                        img.GetDirection(), 0.0, sitk.sitkFloat64)
    return sitk.GetArrayFromImage(out)


def _volume(shape: tuple[int, int, int], seed: int, border: bool) -> tuple[np.ndarray,
                                                                           np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.normal(100.0, 20.0, shape)
    mask = rng.random(shape) < 0.6
    if not border:
        inner = np.zeros(shape, bool)
        inner[1:-1, 1:-1, 1:-1] = True
        mask &= inner
    return image, mask


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("border", [False, True], ids=["inner-roi", "roi-on-border"])
def test_resample_equals_simpleitk(case: tuple[tuple[int, int, int], tuple[float, float, float],
                                               tuple[float, float, float]],
                                   border: bool) -> None:
    shape, spacing, target = case
    image, mask = _volume(shape, seed=len(shape) * sum(shape), border=border)
    ours_image, ours_mask = resample(image, mask, spacing, target)
    ref_image = sitk_resample(image, spacing, target)
    ref_fraction = sitk_resample(mask.astype(float), spacing, target)
    assert ours_image.shape == ref_image.shape == ours_mask.shape
    np.testing.assert_allclose(ours_image, ref_image, rtol=0, atol=1e-9)
    decided = np.abs(ref_fraction - 0.5) > TIE
    assert decided.mean() > 0.8
    np.testing.assert_array_equal(ours_mask[decided], ref_fraction[decided] >= 0.5)


def test_extract_with_resampling_equals_features_of_simpleitk_grid() -> None:
    """``extract`` with ``resample_spacing`` gives the features of SimpleITK's resampled
    image and mask on their native grid (so the whole feature path uses that grid)."""
    image, mask = _volume((9, 15, 13), seed=6, border=True)  # a seed without 0.5 ties
    spacing, target = (3.0, 0.9, 1.1), (1.9, 1.6, 2.1)  # no output point half-way (no ties)
    ref_image = sitk_resample(image, spacing, target)
    ref_fraction = sitk_resample(mask.astype(float), spacing, target)
    assert not np.any(np.abs(ref_fraction - 0.5) <= TIE)
    with_resampling = extract(image, mask, spacing,
                              FeatureSettings(bin_width=10.0, resample_spacing=target))
    on_sitk_grid = extract(ref_image, ref_fraction >= 0.5, target, FeatureSettings(bin_width=10.0))
    assert with_resampling.keys() == on_sitk_grid.keys()
    for name, value in on_sitk_grid.items():
        assert with_resampling[name] == pytest.approx(value, rel=1e-9, abs=1e-9, nan_ok=True), name
