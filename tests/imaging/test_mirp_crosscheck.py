"""hemafed's features against mirp's (EUPL-1.2, the optional extra ``imaging-crosscheck``) on
virtual volumes: every shipped feature, under the settings a study may pin.

Skipped when mirp is not installed (``make install`` installs it). mirp is never a required
dependency of hemafed. Few and bounded: mirp takes about a second per volume.
"""

from __future__ import annotations

import math

import pytest

from hemafed.imaging.radiomics import FeatureSettings, extract
from hemafed.imaging.radiomics.mirp_backend import MIRP_NAMES, extract_mirp
from hemafed.imaging.virtual import generate

pytest.importorskip("mirp")

CASES = [  # disease, spacing (z, y, x mm), settings
    ("MM", (1.0, 1.0, 1.0), FeatureSettings(bin_width=8.0, bin_lower=0.0, aggregation="merged")),
    ("SCD", (3.0, 1.0, 1.0), FeatureSettings(bin_width=8.0)),
    ("MM", (1.0, 1.0, 1.0), FeatureSettings(bin_count=16, aggregation="merged")),
    ("MM", (2.0, 1.0, 1.0), FeatureSettings(bin_width=8.0, resample_spacing=(1.5, 1.5, 1.5))),
]


@pytest.mark.slow
@pytest.mark.parametrize("disease, spacing, settings", CASES,
                         ids=["fbs-merged", "fbs-anisotropic", "fbn-merged", "resampled"])
def test_every_feature_agrees_with_mirp_on_a_virtual_volume(
        disease: str, spacing: tuple[float, float, float], settings: FeatureSettings) -> None:
    subject = generate(disease, 1, 3, seed=5)[0]
    image, mask = subject.image.array, subject.mask.array
    ours = extract(image, mask, spacing, settings)
    theirs = extract_mirp(image, mask, spacing, settings)
    assert list(theirs) == list(ours)  # same names, same order
    assert set(ours) <= set(MIRP_NAMES)
    off = {k: (ours[k], theirs[k]) for k in ours
           if not (math.isclose(ours[k], theirs[k], rel_tol=1e-3, abs_tol=1e-9)
                   or (math.isnan(ours[k]) and math.isnan(theirs[k])))}
    assert not off, off


def test_a_different_volume_would_disagree() -> None:
    """The comparison can fail: a volume with one more ROI voxel differs in many features."""
    subject = generate("MM", 1, 3, seed=5)[0]
    image, mask = subject.image.array, subject.mask.array.astype(bool)
    settings = FeatureSettings(bin_width=8.0, families=("firstorder", "morphology"))
    grown = mask.copy()
    z, y, x = (int(v) for v in zip(*mask.nonzero(), strict=True).__next__())
    grown[max(z - 1, 0):z + 2, max(y - 1, 0):y + 2, max(x - 1, 0):x + 2] = True
    ours = extract(image, grown, (1.0, 1.0, 1.0), settings)
    theirs = extract_mirp(image, mask, (1.0, 1.0, 1.0), settings)
    assert sum(not math.isclose(ours[k], theirs[k], rel_tol=1e-3) for k in ours) >= 5
