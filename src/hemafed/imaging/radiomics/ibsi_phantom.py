"""The IBSI 1 digital phantom (5 x 4 x 4 voxels of 2 mm) and its published reference values.

The phantom and the reference values (value, tolerance) are those of the IBSI reference manual
(Zwanenburg et al., Radiology 2020; theibsi/ibsi-doc, chapter "Image features", data
"dig. phantom"); texture values are those of the "3D, averaged", "3D, merged" and "3D" rows.
A published tolerance of 0 means the value itself, as published to 3 significant digits: a
computed value matches when it lies within half a unit of the last published digit.
"""

from __future__ import annotations

import numpy as np

SPACING = (2.0, 2.0, 2.0)

# slices z = 1..4; within a slice rows y = 1..5, columns x = 1..4
_IMAGE = [
    [[4, 4, 1, 1], [4, 4, 1, 1], [6, 6, 6, 6], [4, 1, 1, 1], [1, 1, 1, 1]],
    [[4, 1, 1, 1], [1, 1, 1, 1], [6, 3, 9, 1], [4, 1, 1, 1], [1, 1, 1, 1]],
    [[1, 1, 1, 1], [4, 1, 1, 1], [6, 6, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]],
    [[1, 1, 1, 1], [4, 4, 4, 4], [4, 4, 4, 4], [1, 1, 1, 1], [1, 1, 1, 1]],
]
_EXCLUDED = [(1, 0, 1), (1, 2, 2), (3, 3, 2), (3, 3, 3), (3, 4, 2), (3, 4, 3)]


def phantom() -> tuple[np.ndarray, np.ndarray]:
    """``(image, mask)`` arrays (z, y, x) of the digital phantom; 74 voxels in the ROI."""
    image = np.array(_IMAGE, dtype=float)
    mask = np.ones(image.shape, dtype=bool)
    for z, y, x in _EXCLUDED:
        mask[z, y, x] = False
    return image, mask


# feature -> (IBSI code, reference value, published tolerance)
REFERENCE: dict[str, tuple[str, float, float]] = {
    "firstorder_mean": ("Q4LE", 2.15, 0.0),
    "firstorder_variance": ("ECT3", 3.05, 0.0),
    "firstorder_skewness": ("KE2A", 1.08, 0.0),
    "firstorder_kurtosis": ("IPH6", -0.355, 0.0),
    "firstorder_median": ("Y12H", 1.0, 0.0),
    "firstorder_minimum": ("1GSF", 1.0, 0.0),
    "firstorder_p10": ("QG58", 1.0, 0.0),
    "firstorder_p90": ("8DWT", 4.0, 0.0),
    "firstorder_maximum": ("84IY", 6.0, 0.0),
    "firstorder_interquartile_range": ("SALO", 3.0, 0.0),
    "firstorder_range": ("2OJQ", 5.0, 0.0),
    "firstorder_mean_absolute_deviation": ("4FUA", 1.55, 0.0),
    "firstorder_robust_mean_absolute_deviation": ("1128", 1.11, 0.0),
    "firstorder_median_absolute_deviation": ("N72L", 1.15, 0.0),
    "firstorder_coefficient_of_variation": ("7TET", 0.812, 0.0),
    "firstorder_quartile_coefficient_of_dispersion": ("9S40", 0.6, 0.0),
    "firstorder_energy": ("N8CA", 567.0, 0.0),
    "firstorder_root_mean_square": ("5ZWQ", 2.77, 0.0),
    "morphology_volume": ("RNU0", 556.0, 4.0),
    "morphology_approximate_volume": ("YEKZ", 592.0, 4.0),
    "morphology_surface_area": ("C0JK", 388.0, 3.0),
    "morphology_surface_to_volume_ratio": ("2PR5", 0.698, 0.004),
    "morphology_compactness_1": ("SKGS", 0.0411, 0.0003),
    "morphology_compactness_2": ("BQWJ", 0.599, 0.004),
    "morphology_spherical_disproportion": ("KRCK", 1.19, 0.01),
    "morphology_sphericity": ("QCFX", 0.843, 0.005),
    "morphology_asphericity": ("25C7", 0.186, 0.001),
    "morphology_centre_of_mass_shift": ("KLMA", 0.672, 0.004),
    "morphology_maximum_3d_diameter": ("L0JK", 13.1, 0.1),
    "morphology_major_axis_length": ("TDIC", 11.4, 0.1),
    "morphology_minor_axis_length": ("P9VJ", 9.31, 0.06),
    "morphology_least_axis_length": ("7J51", 8.54, 0.05),
    "morphology_elongation": ("Q3CK", 0.816, 0.005),
    "morphology_flatness": ("N17B", 0.749, 0.005),
    "morphology_volume_density_aabb": ("PBX1", 0.869, 0.005),
    "morphology_area_density_aabb": ("R59B", 0.866, 0.005),
    "morphology_volume_density_convex_hull": ("R3ER", 0.961, 0.006),
    "morphology_area_density_convex_hull": ("7T7F", 1.03, 0.01),
    "morphology_integrated_intensity": ("99N0", 1.2e3, 10.0),
}

# texture: (code, 3D averaged, 3D merged); GLSZM has one 3D value
_GLCM = {
    "joint_maximum": ("GYBY", 0.503, 0.509), "joint_average": ("60VM", 2.14, 2.15),
    "joint_variance": ("UR99", 3.1, 3.13), "joint_entropy": ("TU9B", 2.4, 2.57),
    "difference_average": ("TF7R", 1.43, 1.38), "difference_variance": ("D3YU", 3.06, 3.21),
    "difference_entropy": ("NTRS", 1.56, 1.64), "sum_average": ("ZGXS", 4.29, 4.3),
    "sum_variance": ("OEEB", 7.07, 7.41), "sum_entropy": ("P6QZ", 1.92, 2.11),
    "angular_second_moment": ("8ZQL", 0.303, 0.291), "contrast": ("ACUI", 5.32, 5.12),
    "dissimilarity": ("8S9J", 1.43, 1.38), "inverse_difference": ("IB1Z", 0.677, 0.688),
    "normalised_inverse_difference": ("NDRX", 0.851, 0.856),
    "inverse_difference_moment": ("WF0Z", 0.618, 0.631),
    "normalised_inverse_difference_moment": ("1QCO", 0.898, 0.902),
    "inverse_variance": ("E8JP", 0.0604, 0.0574), "correlation": ("NI2N", 0.157, 0.183),
    "autocorrelation": ("QWB0", 5.06, 5.19), "cluster_tendency": ("DG8W", 7.07, 7.41),
    "cluster_shade": ("7NFM", 16.6, 17.4), "cluster_prominence": ("AE86", 145.0, 147.0),
    "information_correlation_1": ("R8DG", -0.157, -0.0288),
    "information_correlation_2": ("JN9H", 0.52, 0.269),
}
_GLRLM = {
    "short_runs_emphasis": ("22OV", 0.705, 0.729), "long_runs_emphasis": ("W4KF", 3.06, 2.76),
    "low_grey_level_run_emphasis": ("V3SW", 0.603, 0.607),
    "high_grey_level_run_emphasis": ("G3QZ", 9.7, 9.64),
    "short_run_low_grey_level_emphasis": ("HTZT", 0.352, 0.372),
    "short_run_high_grey_level_emphasis": ("GD3A", 8.54, 8.67),
    "long_run_low_grey_level_emphasis": ("IVPO", 2.39, 2.16),
    "long_run_high_grey_level_emphasis": ("3KUM", 17.6, 15.6),
    "grey_level_non_uniformity": ("R5YN", 21.8, 281.0),
    "normalised_grey_level_non_uniformity": ("OVBL", 0.43, 0.43),
    "run_length_non_uniformity": ("W92Y", 26.9, 328.0),
    "normalised_run_length_non_uniformity": ("IC23", 0.513, 0.501),
    "run_percentage": ("9ZK5", 0.68, 0.68), "grey_level_variance": ("8CE5", 3.46, 3.48),
    "run_length_variance": ("SXLW", 0.574, 0.598), "run_entropy": ("HJ9O", 2.43, 2.62),
}
_GLSZM = {
    "small_zone_emphasis": ("5QRC", 0.255), "large_zone_emphasis": ("48P8", 550.0),
    "low_grey_level_zone_emphasis": ("XMSY", 0.253),
    "high_grey_level_zone_emphasis": ("5GN9", 15.6),
    "small_zone_low_grey_level_emphasis": ("5RAI", 0.0256),
    "small_zone_high_grey_level_emphasis": ("HW1V", 2.76),
    "large_zone_low_grey_level_emphasis": ("YH51", 503.0),
    "large_zone_high_grey_level_emphasis": ("J17V", 1.49e3),
    "grey_level_non_uniformity": ("JNSA", 1.4),
    "normalised_grey_level_non_uniformity": ("Y1RO", 0.28),
    "zone_size_non_uniformity": ("4JP3", 1.0),
    "normalised_zone_size_non_uniformity": ("VB3A", 0.2), "zone_percentage": ("P30P", 0.0676),
    "grey_level_variance": ("BYLV", 2.64), "zone_size_variance": ("3NSA", 331.0),
    "zone_size_entropy": ("GU8N", 2.32),
}


def texture_reference(aggregation: str) -> dict[str, tuple[str, float, float]]:
    """Texture reference values for ``aggregation`` ("averaged" or "merged"), tolerance 0."""
    avg = aggregation == "averaged"
    out = {f"glcm_{n}": (c, a if avg else m, 0.0) for n, (c, a, m) in _GLCM.items()}
    out |= {f"glrlm_{n}": (c, a if avg else m, 0.0) for n, (c, a, m) in _GLRLM.items()}
    out |= {f"glszm_{n}": (c, v, 0.0) for n, (c, v) in _GLSZM.items()}
    return out


def published_precision(value: float) -> float:
    """Half a unit in the last of 3 significant digits of ``value`` (how IBSI rounds)."""
    if value == 0:
        return 0.0
    exponent = int(np.floor(np.log10(abs(value))))
    return 0.5 * 10.0 ** (exponent - 2)


def within_tolerance(computed: float, reference: float, tolerance: float) -> bool:
    """IBSI agreement: within the published tolerance, or equal at the published precision."""
    margin = max(tolerance, published_precision(reference))
    return bool(abs(computed - reference) <= margin * (1 + 1e-9))
