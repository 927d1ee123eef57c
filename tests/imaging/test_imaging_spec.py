"""The study spec's imaging section."""

from __future__ import annotations

import pytest

from hemafed.errors import InvalidInput
from hemafed.imaging.spec import ImagingSpec
from hemafed.study.spec import StudySpec

SECTION = {"modality": "MR", "settings": {"bin_width": 8.0, "aggregation": "merged"},
           "harmonise": {"features": ["firstorder_mean"], "covariates": ["age"]},
           "bounds": {"firstorder_mean": [0, 400], "age": [0, 25]}}


def _spec(imaging: object) -> StudySpec:
    return StudySpec.from_mapping({"study_id": "img", "imaging": imaging, "analyses": [
        {"id": "n", "kind": "describe", "columns": ["age"]}]})


def test_imaging_section_is_validated_and_hashed() -> None:
    spec = _spec(SECTION)
    img = ImagingSpec.from_mapping(spec.raw["imaging"])
    assert img.settings.aggregation == "merged" and img.bounds["age"] == (0.0, 25.0)
    other = _spec({**SECTION, "settings": {"bin_width": 4.0}})
    assert other.sha256 != spec.sha256  # sites approve the settings with the spec


@pytest.mark.parametrize("bad, reason", [
    ({**SECTION, "modality": "US"}, "modality"),
    ({**SECTION, "settings": {"bin_width": 1, "bin_count": 8}}, "exactly one"),
    ({**SECTION, "bounds": {"firstorder_mean": [0, 400]}}, "'age' needs"),
    ({**SECTION, "colour": "red"}, "unknown key 'colour'"),
])
def test_bad_imaging_sections_are_refused(bad: dict, reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason):
        _spec(bad)
