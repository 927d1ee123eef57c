"""IBSI intensity-based statistical features (IBSI 3.3) of the voxels in the intensity mask.

Computed on the (resampled, not discretised) intensities. Names are ``firstorder_<name>``; the
IBSI code of each is in :data:`CODES`.
"""

from __future__ import annotations

import numpy as np

CODES: dict[str, str] = {
    "mean": "Q4LE", "variance": "ECT3", "skewness": "KE2A", "kurtosis": "IPH6",
    "median": "Y12H", "minimum": "1GSF", "p10": "QG58", "p90": "8DWT", "maximum": "84IY",
    "interquartile_range": "SALO", "range": "2OJQ", "mean_absolute_deviation": "4FUA",
    "robust_mean_absolute_deviation": "1128", "median_absolute_deviation": "N72L",
    "coefficient_of_variation": "7TET", "quartile_coefficient_of_dispersion": "9S40",
    "energy": "N8CA", "root_mean_square": "5ZWQ",
}
"""Feature name -> IBSI identifier."""


def first_order(values: np.ndarray) -> dict[str, float]:
    """The IBSI statistical features of a 1-d array of ROI intensities (at least one voxel)."""
    x = np.asarray(values, dtype=float).ravel()
    if x.size == 0:
        raise ValueError("first-order features need at least one voxel in the ROI")
    mu = x.mean()
    dev = x - mu
    m2 = float(np.mean(dev ** 2))
    m3 = float(np.mean(dev ** 3))
    m4 = float(np.mean(dev ** 4))
    p10, p25, med, p75, p90 = np.percentile(x, [10, 25, 50, 75, 90])
    robust = x[(x >= p10) & (x <= p90)]
    sd = np.sqrt(m2)
    return {
        "mean": float(mu),
        "variance": m2,
        "skewness": m3 / m2 ** 1.5 if m2 > 0 else 0.0,
        "kurtosis": m4 / m2 ** 2 - 3.0 if m2 > 0 else 0.0,
        "median": float(med),
        "minimum": float(x.min()),
        "p10": float(p10),
        "p90": float(p90),
        "maximum": float(x.max()),
        "interquartile_range": float(p75 - p25),
        "range": float(x.max() - x.min()),
        "mean_absolute_deviation": float(np.mean(np.abs(dev))),
        "robust_mean_absolute_deviation": float(np.mean(np.abs(robust - robust.mean()))),
        "median_absolute_deviation": float(np.mean(np.abs(x - med))),
        "coefficient_of_variation": float(sd / mu) if mu != 0 else 0.0,
        "quartile_coefficient_of_dispersion": (float((p75 - p25) / (p75 + p25))
                                               if p75 + p25 != 0 else 0.0),
        "energy": float(np.sum(x ** 2)),
        "root_mean_square": float(np.sqrt(np.mean(x ** 2))),
    }
