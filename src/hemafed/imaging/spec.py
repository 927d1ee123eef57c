"""The ``imaging`` section of a study spec: what sites extract and harmonise, declared publicly.

Example (YAML)::

    imaging:
      modality: MR
      settings: {bin_width: 8.0, aggregation: averaged}     # IBSI processing, see FeatureSettings
      harmonise:
        features: [firstorder_mean, glcm_contrast]
        covariates: [age, hb]                               # biology ComBat preserves
      bounds:                                               # public ranges of every column used
        firstorder_mean: [0, 400]
        glcm_contrast: [0, 50]
        age: [0, 25]
        hb: [4, 14]

The section is part of the spec the sites approve (its hash covers it), so the settings and
bounds are fixed before any site computes anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hemafed.errors import InvalidInput
from hemafed.imaging.intake import SUPPORTED_MODALITIES
from hemafed.imaging.radiomics import FeatureSettings

_KEYS = {"modality", "settings", "harmonise", "bounds"}


@dataclass(frozen=True)
class ImagingSpec:
    """A validated ``imaging`` section."""

    modality: str
    settings: FeatureSettings
    features: tuple[str, ...]
    covariates: tuple[str, ...]
    bounds: Mapping[str, tuple[float, float]]

    @classmethod
    def from_mapping(cls, raw: Any) -> ImagingSpec:
        problems = imaging_problems(raw)
        if problems:
            raise InvalidInput("study spec imaging section: " + "; ".join(problems))
        h = raw.get("harmonise") or {}
        return cls(str(raw.get("modality", "MR")), FeatureSettings.from_dict(raw["settings"]),
                   tuple(h.get("features", ())), tuple(h.get("covariates", ())),
                   {k: (float(v[0]), float(v[1])) for k, v in (raw.get("bounds") or {}).items()})


def imaging_problems(raw: Any) -> list[str]:
    """Every problem of an ``imaging`` section (empty when it is valid)."""
    if not isinstance(raw, Mapping):
        return ["imaging: expected a mapping"]
    out = [f"imaging: unknown key {k!r}" for k in sorted(set(raw) - _KEYS)]
    if str(raw.get("modality", "MR")) not in SUPPORTED_MODALITIES:
        out.append(f"imaging.modality must be one of {', '.join(SUPPORTED_MODALITIES)}")
    try:
        FeatureSettings.from_dict(dict(raw.get("settings") or {}))
    except (InvalidInput, TypeError) as exc:
        out.append(f"imaging.settings: {exc}")
    h = raw.get("harmonise") or {}
    bounds = raw.get("bounds") or {}
    if not isinstance(h, Mapping) or not isinstance(bounds, Mapping):
        return [*out, "imaging.harmonise and imaging.bounds must be mappings"]
    for col in [*h.get("features", []), *h.get("covariates", [])]:
        b = bounds.get(col)
        if not (isinstance(b, list) and len(b) == 2 and all(isinstance(v, int | float) for v in b)
                and b[0] < b[1]):
            out.append(f"imaging.bounds: column {col!r} needs [low, high] with low < high")
    return out
