"""A 3-d image volume with its geometry, the unit every imaging step passes around.

Arrays are indexed (z, y, x): slices first. ``spacing`` is (z, y, x) in mm; ``origin`` is the
patient-space (LPS, mm) position of voxel (0, 0, 0); ``direction`` is the 3x3 matrix whose
columns are the patient-space unit vectors of the x, y and z voxel axes (DICOM row, column and
slice directions).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hemafed.errors import InvalidInput

SPACING_TOL = 1e-3
"""Relative tolerance on spacings, and absolute (mm) on positions, for geometry checks."""
DIRECTION_TOL = 1e-4


@dataclass(frozen=True)
class Volume:
    """An image (float) or mask (bool) volume with its patient-space geometry.

    ``source`` names where it came from (a file or directory) for messages; ``meta`` holds
    DICOM metadata (study/series UIDs, modality, dates ...) when the source had any.
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, ...] = (0.0, 0.0, 0.0)
    direction: tuple[tuple[float, ...], ...] = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    source: str = "volume"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.array.ndim != 3 or min(self.array.shape) < 1:
            raise InvalidInput(f"{self.source}: a volume must be a non-empty 3-d array, got "
                               f"shape {self.array.shape}")
        sp = tuple(float(s) for s in self.spacing)
        if len(sp) != 3 or not all(np.isfinite(s) and s > 0 for s in sp):
            raise InvalidInput(f"{self.source}: voxel spacing must be three positive numbers, "
                               f"got {self.spacing}")
        d = np.asarray(self.direction, dtype=float)
        if d.shape != (3, 3) or not np.allclose(d.T @ d, np.eye(3), atol=1e-3):
            raise InvalidInput(f"{self.source}: the orientation is not orthonormal "
                               f"(direction {d.tolist()})")
        object.__setattr__(self, "spacing", sp)
        object.__setattr__(self, "origin", tuple(float(o) for o in self.origin))
        object.__setattr__(self, "direction", tuple(tuple(float(v) for v in r) for r in d))

    @property
    def shape(self) -> tuple[int, int, int]:
        z, y, x = self.array.shape
        return int(z), int(y), int(x)

    def check_same_grid(self, other: Volume) -> None:
        """``InvalidInput`` naming ``other.source`` unless both volumes share one voxel grid."""
        problems = []
        if self.shape != other.shape:
            problems.append(f"size {other.shape} differs from the image's {self.shape}")
        if not np.allclose(self.spacing, other.spacing, rtol=SPACING_TOL):
            problems.append(f"spacing {other.spacing} mm differs from the image's {self.spacing}")
        if not np.allclose(self.origin, other.origin, atol=max(SPACING_TOL, 1e-2)):
            problems.append(f"origin {other.origin} differs from the image's {self.origin}")
        if not np.allclose(self.direction, other.direction, atol=DIRECTION_TOL):
            problems.append("orientation differs from the image's")
        if problems:
            raise InvalidInput(f"{other.source}: mask does not match the image geometry of "
                               f"{self.source}: {'; '.join(problems)}")
