"""The feature library a study pins: hemafed's own IBSI implementation or mirp.

``imaging.features.library`` of a study spec names one of :data:`LIBRARIES` (default
``hemafed``); every site of the study computes its features with it and the same settings
(:mod:`hemafed.imaging.spec`). Both return the same feature names for the same settings.
"""

from __future__ import annotations

import numpy as np

from hemafed.errors import InvalidInput
from hemafed.imaging.radiomics.extract import FeatureSettings, extract

LIBRARIES = ("hemafed", "mirp")
DEFAULT_LIBRARY = "hemafed"


def check_library(library: object) -> str:
    """``library`` when it is one of :data:`LIBRARIES`, else ``InvalidInput``."""
    if not isinstance(library, str) or library not in LIBRARIES:
        raise InvalidInput(f"feature library must be one of {', '.join(LIBRARIES)}, "
                           f"got {library!r}")
    return library


def library_version(library: str) -> str:
    """The version of the library that computes the features (recorded with the table)."""
    if check_library(library) == "mirp":
        from hemafed.imaging.radiomics.mirp_backend import mirp_version

        return mirp_version()
    from hemafed import __version__

    return str(__version__)


def extract_with(library: str, image: np.ndarray, mask: np.ndarray,
                 spacing: tuple[float, float, float],
                 settings: FeatureSettings) -> dict[str, float]:
    """The features of the ROI computed by ``library`` (same names whichever it is)."""
    if check_library(library) == "mirp":
        from hemafed.imaging.radiomics.mirp_backend import extract_mirp

        return extract_mirp(image, mask, spacing, settings)
    return extract(image, mask, spacing, settings)
