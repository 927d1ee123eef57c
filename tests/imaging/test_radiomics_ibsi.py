"""Every shipped radiomic feature against the IBSI digital-phantom reference values, computed by
hemafed and by mirp (the two libraries a study may pin)."""

from __future__ import annotations

import numpy as np
import pytest

from hemafed.errors import InvalidInput
from hemafed.imaging.radiomics import FeatureSettings, extract, feature_names
from hemafed.imaging.radiomics.ibsi_phantom import (
    REFERENCE,
    SPACING,
    phantom,
    published_precision,
    texture_reference,
    within_tolerance,
)
from hemafed.imaging.radiomics.library import extract_with


@pytest.fixture(scope="module", params=[("hemafed", "averaged"), ("hemafed", "merged"),
                                        ("mirp", "averaged"), ("mirp", "merged")],
                ids=lambda p: "-".join(p))
def phantom_features(request: pytest.FixtureRequest) -> tuple[str, dict[str, float]]:
    """The phantom's features computed by both libraries a study may pin (mirp: when the
    ``imaging-crosscheck`` extra is installed, as ``make install`` does)."""
    library, aggregation = request.param
    if library == "mirp":
        pytest.importorskip("mirp")
    image, mask = phantom()
    settings = FeatureSettings(bin_width=1.0, aggregation=aggregation)
    return aggregation, extract_with(library, image, mask, SPACING, settings)


def test_phantom_has_74_roi_voxels_with_levels_1_to_6() -> None:
    image, mask = phantom()
    assert image.shape == (4, 5, 4) and mask.sum() == 74
    assert sorted(set(image[mask].astype(int))) == [1, 3, 4, 6]


def test_every_shipped_feature_has_an_ibsi_reference(
        phantom_features: tuple[str, dict[str, float]]) -> None:
    aggregation, features = phantom_features
    reference = REFERENCE | texture_reference(aggregation)
    assert set(features) == set(reference)


@pytest.mark.parametrize("name", sorted(REFERENCE | texture_reference("averaged")))
def test_feature_within_ibsi_tolerance(name: str,
                                       phantom_features: tuple[str, dict[str, float]]) -> None:
    aggregation, features = phantom_features
    code, value, tol = (REFERENCE | texture_reference(aggregation))[name]
    assert within_tolerance(features[name], value, tol), (
        f"{name} ({code}, 3D {aggregation}): {features[name]:.6g}, IBSI {value} +- "
        f"{max(tol, published_precision(value)):.3g}")


def test_tolerance_rule_rejects_a_one_percent_error() -> None:
    assert within_tolerance(0.5034, 0.503, 0.0)
    assert not within_tolerance(0.503 * 1.01, 0.503, 0.0)
    assert not within_tolerance(556 + 4.5, 556, 4.0)


def test_fixed_bin_number_6_equals_the_phantom_as_is() -> None:
    # IBSI: FBN with 6 bins does not alter the phantom, so texture features are unchanged
    image, mask = phantom()
    fbs = extract(image, mask, SPACING, FeatureSettings(bin_width=1.0, families=("texture",)))
    fbn = extract(image, mask, SPACING, FeatureSettings(bin_count=6, families=("texture",)))
    # FBN maps 1..6 onto 6 equal bins of width 5/6: 1->1, 3->3, 4->4, 6->6 (the top is closed)
    for k in fbs:
        assert fbn[k] == pytest.approx(fbs[k], rel=1e-12), k


def test_resampling_to_half_spacing_keeps_shape_and_intensity_of_a_cube() -> None:
    image = np.zeros((12, 12, 12))
    image[3:9, 3:9, 3:9] = 10.0
    mask = image > 0
    settings = FeatureSettings(bin_width=1.0, resample_spacing=(1.0, 1.0, 1.0),
                               families=("firstorder", "morphology"))
    f = extract(image, mask, (2.0, 2.0, 2.0), settings)
    # a 12 mm cube: voxel-counted volume 1728 mm^3 on either grid; intensity 10 inside
    assert f["morphology_approximate_volume"] == pytest.approx(12.0 ** 3, rel=0.05)
    assert f["firstorder_median"] == pytest.approx(10.0)


def test_settings_and_inputs_are_checked() -> None:
    with pytest.raises(InvalidInput, match="exactly one of bin_width"):
        FeatureSettings()
    with pytest.raises(InvalidInput, match="aggregation"):
        FeatureSettings(bin_width=1.0, aggregation="2D")
    with pytest.raises(InvalidInput, match="empty"):
        extract(np.zeros((3, 3, 3)), np.zeros((3, 3, 3), bool), (1, 1, 1),
                FeatureSettings(bin_width=1.0))
    assert FeatureSettings.from_dict(FeatureSettings(bin_count=8).to_dict()) == \
        FeatureSettings(bin_count=8)
    assert len(feature_names(FeatureSettings(bin_width=1.0))) == 96
