"""IBSI texture matrices and features: GLCM (3.6), GLRLM (3.7), GLSZM (3.8), in 3D.

Input is the discretised ROI: an int array (z, y, x) with grey levels ``1..n_levels`` inside the
ROI and 0 outside. GLCM and GLRLM use the 13 unique directions of the 26-neighbourhood (GLCM at
Chebyshev distance 1, symmetric). ``aggregation="averaged"`` computes the features per direction
and averages them (IBSI "3D, averaged"); ``"merged"`` sums the 13 matrices first ("3D, merged").
GLSZM zones are 26-connected. Logarithms are base 2, as in IBSI.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

DIRECTIONS: tuple[tuple[int, int, int], ...] = (
    (0, 0, 1), (0, 1, 0), (0, 1, 1), (0, 1, -1), (1, 0, 0), (1, 0, 1), (1, 0, -1),
    (1, 1, 0), (1, -1, 0), (1, 1, 1), (1, 1, -1), (1, -1, 1), (1, -1, -1),
)
"""The 13 unique (dz, dy, dx) offsets of the 26-neighbourhood."""

GLCM_CODES: dict[str, str] = {
    "joint_maximum": "GYBY", "joint_average": "60VM", "joint_variance": "UR99",
    "joint_entropy": "TU9B", "difference_average": "TF7R", "difference_variance": "D3YU",
    "difference_entropy": "NTRS", "sum_average": "ZGXS", "sum_variance": "OEEB",
    "sum_entropy": "P6QZ", "angular_second_moment": "8ZQL", "contrast": "ACUI",
    "dissimilarity": "8S9J", "inverse_difference": "IB1Z",
    "normalised_inverse_difference": "NDRX", "inverse_difference_moment": "WF0Z",
    "normalised_inverse_difference_moment": "1QCO", "inverse_variance": "E8JP",
    "correlation": "NI2N", "autocorrelation": "QWB0", "cluster_tendency": "DG8W",
    "cluster_shade": "7NFM", "cluster_prominence": "AE86",
    "information_correlation_1": "R8DG", "information_correlation_2": "JN9H",
}
GLRLM_CODES: dict[str, str] = {
    "short_runs_emphasis": "22OV", "long_runs_emphasis": "W4KF",
    "low_grey_level_run_emphasis": "V3SW", "high_grey_level_run_emphasis": "G3QZ",
    "short_run_low_grey_level_emphasis": "HTZT", "short_run_high_grey_level_emphasis": "GD3A",
    "long_run_low_grey_level_emphasis": "IVPO", "long_run_high_grey_level_emphasis": "3KUM",
    "grey_level_non_uniformity": "R5YN", "normalised_grey_level_non_uniformity": "OVBL",
    "run_length_non_uniformity": "W92Y", "normalised_run_length_non_uniformity": "IC23",
    "run_percentage": "9ZK5", "grey_level_variance": "8CE5", "run_length_variance": "SXLW",
    "run_entropy": "HJ9O",
}
GLSZM_CODES: dict[str, str] = {
    "small_zone_emphasis": "5QRC", "large_zone_emphasis": "48P8",
    "low_grey_level_zone_emphasis": "XMSY", "high_grey_level_zone_emphasis": "5GN9",
    "small_zone_low_grey_level_emphasis": "5RAI", "small_zone_high_grey_level_emphasis": "HW1V",
    "large_zone_low_grey_level_emphasis": "YH51", "large_zone_high_grey_level_emphasis": "J17V",
    "grey_level_non_uniformity": "JNSA", "normalised_grey_level_non_uniformity": "Y1RO",
    "zone_size_non_uniformity": "4JP3", "normalised_zone_size_non_uniformity": "VB3A",
    "zone_percentage": "P30P", "grey_level_variance": "BYLV", "zone_size_variance": "3NSA",
    "zone_size_entropy": "GU8N",
}


def _shifted(a: np.ndarray, d: tuple[int, ...], fill: int = 0) -> np.ndarray:
    """``out[v] = a[v + d]`` (``fill`` where ``v + d`` is outside the array)."""
    out = np.full_like(a, fill)
    src, dst = [], []
    for k, n in zip(d, a.shape, strict=True):
        if k >= 0:
            src.append(slice(k, n))
            dst.append(slice(0, n - k))
        else:
            src.append(slice(0, n + k))
            dst.append(slice(-k, n))
    out[tuple(dst)] = a[tuple(src)]
    return out


def _entropy(p: np.ndarray) -> float:
    q = p[p > 0]
    return float(-np.sum(q * np.log2(q)))


# --- GLCM ---------------------------------------------------------------------------------------

def glcm_matrix(levels: np.ndarray, n_levels: int, d: tuple[int, int, int]) -> np.ndarray:
    """Symmetric co-occurrence counts (``n_levels`` x ``n_levels``) for offset ``d``."""
    nb = _shifted(levels, d)
    ok = (levels > 0) & (nb > 0)
    i, j = levels[ok] - 1, nb[ok] - 1
    m = np.zeros((n_levels, n_levels))
    np.add.at(m, (i, j), 1.0)
    return m + m.T


def glcm_features(counts: np.ndarray) -> dict[str, float]:
    """The IBSI GLCM features of one (or a merged) co-occurrence count matrix."""
    ng = counts.shape[0]
    p = counts / counts.sum()
    g = np.arange(1, ng + 1, dtype=float)
    i, j = np.meshgrid(g, g, indexing="ij")
    pi, pj = p.sum(1), p.sum(0)
    diff = np.abs(i - j).astype(int)
    p_minus = np.bincount(diff.ravel(), weights=p.ravel(), minlength=ng)
    k_minus = np.arange(ng, dtype=float)
    summ = (i + j).astype(int)
    p_plus = np.bincount(summ.ravel(), weights=p.ravel(), minlength=2 * ng + 1)
    k_plus = np.arange(2 * ng + 1, dtype=float)
    mu = float(np.sum(i * p))
    mu_i, mu_j = float(np.sum(g * pi)), float(np.sum(g * pj))
    sd_i = float(np.sqrt(np.sum((g - mu_i) ** 2 * pi)))
    sd_j = float(np.sqrt(np.sum((g - mu_j) ** 2 * pj)))
    mu_d = float(np.sum(k_minus * p_minus))
    mu_s = float(np.sum(k_plus * p_plus))
    hxy = _entropy(p)
    hx = _entropy(pi)
    outer = np.outer(pi, pj)
    nz = p > 0
    hxy1 = float(-np.sum(p[nz] * np.log2(outer[nz])))
    hxy2 = _entropy(outer)
    cluster = i + j - mu_i - mu_j
    return {
        "joint_maximum": float(p.max()),
        "joint_average": mu,
        "joint_variance": float(np.sum((i - mu) ** 2 * p)),
        "joint_entropy": hxy,
        "difference_average": mu_d,
        "difference_variance": float(np.sum((k_minus - mu_d) ** 2 * p_minus)),
        "difference_entropy": _entropy(p_minus),
        "sum_average": mu_s,
        "sum_variance": float(np.sum((k_plus - mu_s) ** 2 * p_plus)),
        "sum_entropy": _entropy(p_plus),
        "angular_second_moment": float(np.sum(p ** 2)),
        "contrast": float(np.sum((i - j) ** 2 * p)),
        "dissimilarity": float(np.sum(np.abs(i - j) * p)),
        "inverse_difference": float(np.sum(p / (1.0 + np.abs(i - j)))),
        "normalised_inverse_difference": float(np.sum(p / (1.0 + np.abs(i - j) / ng))),
        "inverse_difference_moment": float(np.sum(p / (1.0 + (i - j) ** 2))),
        "normalised_inverse_difference_moment": float(np.sum(p / (1.0 + (i - j) ** 2 / ng ** 2))),
        "inverse_variance": float(np.sum(p_minus[1:] / k_minus[1:] ** 2)),
        "correlation": (float((np.sum(i * j * p) - mu_i * mu_j) / (sd_i * sd_j))
                        if sd_i > 0 and sd_j > 0 else 1.0),
        "autocorrelation": float(np.sum(i * j * p)),
        "cluster_tendency": float(np.sum(cluster ** 2 * p)),
        "cluster_shade": float(np.sum(cluster ** 3 * p)),
        "cluster_prominence": float(np.sum(cluster ** 4 * p)),
        "information_correlation_1": (hxy - hxy1) / hx if hx > 0 else 0.0,
        "information_correlation_2": float(np.sqrt(max(0.0, 1.0 - np.exp(-2.0 * (hxy2 - hxy))))),
    }


# --- GLRLM and GLSZM share their feature formulas ----------------------------------------------

def _run_or_zone_features(m: np.ndarray, n_voxels: float, prefix: str) -> dict[str, float]:
    """Features of a grey-level x length (or zone-size) count matrix (IBSI 3.7 / 3.8)."""
    ns = float(m.sum())
    i = np.arange(1, m.shape[0] + 1, dtype=float)[:, None]
    j = np.arange(1, m.shape[1] + 1, dtype=float)[None, :]
    ri, rj = m.sum(1), m.sum(0)
    p = m / ns
    mu_i, mu_j = float(np.sum(i * p)), float(np.sum(j * p))
    unit = "run" if prefix == "run" else "zone"
    s, big = ("short", "long") if unit == "run" else ("small", "large")
    runs = "runs" if unit == "run" else "zone"
    out = {
        f"{s}_{runs}_emphasis": float(np.sum(m / j ** 2) / ns),
        f"{big}_{runs}_emphasis": float(np.sum(m * j ** 2) / ns),
        f"low_grey_level_{unit}_emphasis": float(np.sum(m / i ** 2) / ns),
        f"high_grey_level_{unit}_emphasis": float(np.sum(m * i ** 2) / ns),
        f"{s}_{unit}_low_grey_level_emphasis": float(np.sum(m / (i ** 2 * j ** 2)) / ns),
        f"{s}_{unit}_high_grey_level_emphasis": float(np.sum(m * i ** 2 / j ** 2) / ns),
        f"{big}_{unit}_low_grey_level_emphasis": float(np.sum(m * j ** 2 / i ** 2) / ns),
        f"{big}_{unit}_high_grey_level_emphasis": float(np.sum(m * i ** 2 * j ** 2) / ns),
        "grey_level_non_uniformity": float(np.sum(ri ** 2) / ns),
        "normalised_grey_level_non_uniformity": float(np.sum(ri ** 2) / ns ** 2),
        "grey_level_variance": float(np.sum((i - mu_i) ** 2 * p)),
    }
    length = "run_length" if unit == "run" else "zone_size"
    out |= {
        f"{length}_non_uniformity": float(np.sum(rj ** 2) / ns),
        f"normalised_{length}_non_uniformity": float(np.sum(rj ** 2) / ns ** 2),
        f"{unit}_percentage": ns / n_voxels,
        f"{length}_variance": float(np.sum((j - mu_j) ** 2 * p)),
        f"{'run' if unit == 'run' else 'zone_size'}_entropy": _entropy(p),
    }
    return out


def glrlm_matrix(levels: np.ndarray, n_levels: int, d: tuple[int, int, int]) -> np.ndarray:
    """Run-length counts (``n_levels`` x longest possible run) along direction ``d``."""
    inside = levels > 0
    same_next = inside & (_shifted(levels, d) == levels)        # run continues at v + d
    prev = tuple(-k for k in d)
    starts = inside & ~(_shifted(levels, prev) == levels)       # predecessor is not this level
    longest = max(levels.shape)
    length = np.ones(levels.shape, dtype=np.int64)
    alive = same_next.copy()
    step = 1
    while alive.any() and step < longest:
        length += alive
        step += 1
        alive &= _shifted(same_next, tuple(k * (step - 1) for k in d)).astype(bool)
    m = np.zeros((n_levels, longest))
    np.add.at(m, (levels[starts] - 1, length[starts] - 1), 1.0)
    return m


def glszm_matrix(levels: np.ndarray, n_levels: int) -> np.ndarray:
    """Zone counts (``n_levels`` x largest zone) of 26-connected same-level zones."""
    structure = np.ones((3, 3, 3), dtype=bool)
    sizes: list[tuple[int, int]] = []
    for g in range(1, n_levels + 1):
        labelled, n = ndimage.label(levels == g, structure=structure)
        if n:
            counts = np.bincount(labelled.ravel())[1:]
            sizes.extend((g, int(c)) for c in counts)
    largest = max((s for _, s in sizes), default=1)
    m = np.zeros((n_levels, largest))
    for g, s in sizes:
        m[g - 1, s - 1] += 1.0
    return m


def texture(levels: np.ndarray, n_levels: int, aggregation: str = "averaged",
            ) -> dict[str, float]:
    """``glcm_*``, ``glrlm_*`` and ``glszm_*`` features of a discretised ROI."""
    if aggregation not in ("averaged", "merged"):
        raise ValueError(f"aggregation must be 'averaged' or 'merged', got {aggregation!r}")
    levels = np.asarray(levels, dtype=np.int64)
    n_vox = float((levels > 0).sum())
    out: dict[str, float] = {}
    cms = [glcm_matrix(levels, n_levels, d) for d in DIRECTIONS]
    rls = [glrlm_matrix(levels, n_levels, d) for d in DIRECTIONS]
    cms = [c for c in cms if c.sum() > 0]
    if aggregation == "merged":
        glcm = glcm_features(np.sum(cms, axis=0)) if cms else {}
        width = max(r.shape[1] for r in rls)
        merged = np.sum([np.pad(r, ((0, 0), (0, width - r.shape[1]))) for r in rls], axis=0)
        glrlm = _run_or_zone_features(merged, n_vox * len(rls), "run")
    else:
        per = [glcm_features(c) for c in cms]
        glcm = {k: float(np.mean([f[k] for f in per])) for k in per[0]} if per else {}
        per_r = [_run_or_zone_features(r, n_vox, "run") for r in rls]
        glrlm = {k: float(np.mean([f[k] for f in per_r])) for k in per_r[0]}
    if not glcm:  # a single-voxel ROI has no neighbour pairs: IBSI leaves the features undefined
        glcm = dict.fromkeys(GLCM_CODES, float("nan"))
    out |= {f"glcm_{k}": v for k, v in glcm.items()}
    out |= {f"glrlm_{k}": v for k, v in glrlm.items()}
    glszm = _run_or_zone_features(glszm_matrix(levels, n_levels), n_vox, "zone")
    out |= {f"glszm_{k}": v for k, v in glszm.items()}
    return out
