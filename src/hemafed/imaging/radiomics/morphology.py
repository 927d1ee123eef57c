"""IBSI morphological features (IBSI 3.1) of the ROI mask, on a marching-cubes mesh.

The mesh is the 0.5 iso-surface of the zero-padded mask (scikit-image's Lewiner marching
cubes) in millimetres; volume is the signed sum of the tetrahedra to the origin, area the sum of
the triangles. Axis lengths come from the covariance of the voxel centres (IBSI 3.1.13-17).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial import ConvexHull

CODES: dict[str, str] = {
    "volume": "RNU0", "approximate_volume": "YEKZ", "surface_area": "C0JK",
    "surface_to_volume_ratio": "2PR5", "compactness_1": "SKGS", "compactness_2": "BQWJ",
    "spherical_disproportion": "KRCK", "sphericity": "QCFX", "asphericity": "25C7",
    "centre_of_mass_shift": "KLMA", "maximum_3d_diameter": "L0JK",
    "major_axis_length": "TDIC", "minor_axis_length": "P9VJ", "least_axis_length": "7J51",
    "elongation": "Q3CK", "flatness": "N17B", "volume_density_aabb": "PBX1",
    "area_density_aabb": "R59B", "volume_density_convex_hull": "R3ER",
    "area_density_convex_hull": "7T7F", "integrated_intensity": "99N0",
}
"""Feature name -> IBSI identifier."""


def _mesh(mask: np.ndarray, spacing: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    from skimage.measure import marching_cubes

    padded = np.pad(mask.astype(np.float32), 1)
    verts, faces, _, _ = marching_cubes(padded, level=0.5, spacing=spacing,
                                        method="lewiner", allow_degenerate=True)
    return verts, faces


def _mesh_volume_area(verts: np.ndarray, faces: np.ndarray) -> tuple[float, float]:
    a, b, c = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    volume = abs(float(np.sum(np.einsum("ij,ij->i", a, np.cross(b, c)))) / 6.0)
    area = float(np.sum(np.linalg.norm(np.cross(b - a, c - a), axis=1)) / 2.0)
    return volume, area


def _max_diameter(points: np.ndarray) -> float:
    hull = points[ConvexHull(points).vertices] if len(points) > 4 else points
    diff = hull[:, None, :] - hull[None, :, :]
    return float(np.sqrt((diff ** 2).sum(-1).max()))


def morphology(mask: np.ndarray, image: np.ndarray, spacing: tuple[float, float, float],
               ) -> dict[str, float]:
    """Morphological features of a boolean ``mask`` (z, y, x) with voxel ``spacing`` in mm.

    ``image`` gives the intensities for the centre-of-mass shift and integrated intensity.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.sum() < 1:
        raise ValueError("morphological features need at least one voxel in the ROI")
    sp = np.asarray(spacing, dtype=float)
    verts, faces = _mesh(mask, spacing)
    volume, area = _mesh_volume_area(verts, faces)
    n_vox = int(mask.sum())
    approx_volume = n_vox * float(np.prod(sp))
    pts = np.argwhere(mask) * sp
    geometric = pts.mean(axis=0)
    weights = image[mask].astype(float)
    weighted = (pts * weights[:, None]).sum(0) / weights.sum() if weights.sum() != 0 else geometric
    if n_vox > 1:
        eig = np.sort(np.linalg.eigvalsh(np.cov(pts.T)))[::-1]
        eig = np.clip(eig, 0.0, None)
    else:
        eig = np.zeros(3)
    major, minor, least = (4.0 * math.sqrt(e) for e in eig)
    extent = verts.max(0) - verts.min(0)
    aabb_volume = float(np.prod(extent))
    aabb_area = 2.0 * float(extent[0] * extent[1] + extent[1] * extent[2] + extent[0] * extent[2])
    hull = ConvexHull(verts)
    sphere = (36.0 * math.pi * volume ** 2) ** (1.0 / 3.0)
    return {
        "volume": volume,
        "approximate_volume": approx_volume,
        "surface_area": area,
        "surface_to_volume_ratio": area / volume,
        "compactness_1": volume / (math.sqrt(math.pi) * area ** 1.5),
        "compactness_2": 36.0 * math.pi * volume ** 2 / area ** 3,
        "spherical_disproportion": area / sphere,
        "sphericity": sphere / area,
        "asphericity": (area ** 3 / (36.0 * math.pi * volume ** 2)) ** (1.0 / 3.0) - 1.0,
        "centre_of_mass_shift": float(np.linalg.norm(geometric - weighted)),
        "maximum_3d_diameter": _max_diameter(verts),
        "major_axis_length": major,
        "minor_axis_length": minor,
        "least_axis_length": least,
        "elongation": math.sqrt(eig[1] / eig[0]) if eig[0] > 0 else 0.0,
        "flatness": math.sqrt(eig[2] / eig[0]) if eig[0] > 0 else 0.0,
        "volume_density_aabb": volume / aabb_volume if aabb_volume > 0 else 0.0,
        "area_density_aabb": area / aabb_area if aabb_area > 0 else 0.0,
        "volume_density_convex_hull": volume / float(hull.volume),
        "area_density_convex_hull": area / float(hull.area),
        "integrated_intensity": volume * float(weights.mean()),
    }
