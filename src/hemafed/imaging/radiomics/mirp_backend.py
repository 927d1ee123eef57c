"""The same features computed by mirp (EUPL-1.2; the optional extra ``imaging-crosscheck``).

mirp is a maintained IBSI-compliant library (Zwanenburg et al.); it cannot be a required
dependency of an Apache-2.0 project, so it is imported only when a study asks for it
(``imaging.features.library: mirp``) and a site without it is told to install
``hemafed[imaging-crosscheck]``. :func:`extract_mirp` takes the same arrays and
:class:`~hemafed.imaging.radiomics.FeatureSettings` as :func:`~hemafed.imaging.radiomics.extract`
and returns the same feature names (:data:`MIRP_NAMES` maps each to mirp's), so a feature table
reads alike whichever library computed it.

Settings map onto mirp's: fixed bin size from ``bin_lower`` (mirp's lower bound of the
resegmentation range; ``None``: the ROI minimum, as ours) or fixed bin number; trilinear
resampling (``spline_order=1``, no anti-aliasing, mask kept at >= 0.5, grid centres aligned);
GLCM/GLRLM ``3d_average`` or ``3d_volume_merge``; GLSZM ``3d``; GLCM distance 1.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import warnings
from typing import Any

import numpy as np

from hemafed.errors import InvalidInput
from hemafed.imaging.radiomics.extract import FeatureSettings

INSTALL_HINT = "install hemafed[imaging-crosscheck] (mirp) to compute features with mirp"
MIRP_VERSION_RANGE = ">=2.5,<2.6"
"""The mirp releases the extra pins (2.6 needs pandas >= 3, which hemafed does not yet support)."""

_FIRSTORDER = {
    "mean": "stat_mean", "variance": "stat_var", "skewness": "stat_skew",
    "kurtosis": "stat_kurt", "median": "stat_median", "minimum": "stat_min",
    "p10": "stat_p10", "p90": "stat_p90", "maximum": "stat_max",
    "interquartile_range": "stat_iqr", "range": "stat_range",
    "mean_absolute_deviation": "stat_mad", "robust_mean_absolute_deviation": "stat_rmad",
    "median_absolute_deviation": "stat_medad", "coefficient_of_variation": "stat_cov",
    "quartile_coefficient_of_dispersion": "stat_qcod", "energy": "stat_energy",
    "root_mean_square": "stat_rms",
}
_MORPHOLOGY = {
    "volume": "morph_volume", "approximate_volume": "morph_vol_approx",
    "surface_area": "morph_area_mesh", "surface_to_volume_ratio": "morph_av",
    "compactness_1": "morph_comp_1", "compactness_2": "morph_comp_2",
    "spherical_disproportion": "morph_sph_dispr", "sphericity": "morph_sphericity",
    "asphericity": "morph_asphericity", "centre_of_mass_shift": "morph_com",
    "maximum_3d_diameter": "morph_diam", "major_axis_length": "morph_pca_maj_axis",
    "minor_axis_length": "morph_pca_min_axis", "least_axis_length": "morph_pca_least_axis",
    "elongation": "morph_pca_elongation", "flatness": "morph_pca_flatness",
    "volume_density_aabb": "morph_vol_dens_aabb", "area_density_aabb": "morph_area_dens_aabb",
    "volume_density_convex_hull": "morph_vol_dens_conv_hull",
    "area_density_convex_hull": "morph_area_dens_conv_hull",
    "integrated_intensity": "morph_integ_int",
}
_GLCM = {
    "joint_maximum": "joint_max", "joint_average": "joint_avg", "joint_variance": "joint_var",
    "joint_entropy": "joint_entr", "difference_average": "diff_avg",
    "difference_variance": "diff_var", "difference_entropy": "diff_entr",
    "sum_average": "sum_avg", "sum_variance": "sum_var", "sum_entropy": "sum_entr",
    "angular_second_moment": "energy", "contrast": "contrast", "dissimilarity": "dissimilarity",
    "inverse_difference": "inv_diff", "normalised_inverse_difference": "inv_diff_norm",
    "inverse_difference_moment": "inv_diff_mom",
    "normalised_inverse_difference_moment": "inv_diff_mom_norm",
    "inverse_variance": "inv_var", "correlation": "corr", "autocorrelation": "auto_corr",
    "cluster_tendency": "clust_tend", "cluster_shade": "clust_shade",
    "cluster_prominence": "clust_prom", "information_correlation_1": "info_corr1",
    "information_correlation_2": "info_corr2",
}
_GLRLM = {
    "short_runs_emphasis": "sre", "long_runs_emphasis": "lre",
    "low_grey_level_run_emphasis": "lgre", "high_grey_level_run_emphasis": "hgre",
    "short_run_low_grey_level_emphasis": "srlge", "short_run_high_grey_level_emphasis": "srhge",
    "long_run_low_grey_level_emphasis": "lrlge", "long_run_high_grey_level_emphasis": "lrhge",
    "grey_level_non_uniformity": "glnu", "normalised_grey_level_non_uniformity": "glnu_norm",
    "run_length_non_uniformity": "rlnu", "normalised_run_length_non_uniformity": "rlnu_norm",
    "run_percentage": "r_perc", "grey_level_variance": "gl_var",
    "run_length_variance": "rl_var", "run_entropy": "rl_entr",
}
_GLSZM = {
    "small_zone_emphasis": "sze", "large_zone_emphasis": "lze",
    "low_grey_level_zone_emphasis": "lgze", "high_grey_level_zone_emphasis": "hgze",
    "small_zone_low_grey_level_emphasis": "szlge",
    "small_zone_high_grey_level_emphasis": "szhge",
    "large_zone_low_grey_level_emphasis": "lzlge",
    "large_zone_high_grey_level_emphasis": "lzhge",
    "grey_level_non_uniformity": "glnu", "normalised_grey_level_non_uniformity": "glnu_norm",
    "zone_size_non_uniformity": "zsnu", "normalised_zone_size_non_uniformity": "zsnu_norm",
    "zone_percentage": "z_perc", "grey_level_variance": "gl_var",
    "zone_size_variance": "zs_var", "zone_size_entropy": "zs_entr",
}
MIRP_NAMES: dict[str, str] = {
    **{f"firstorder_{k}": v for k, v in _FIRSTORDER.items()},
    **{f"morphology_{k}": v for k, v in _MORPHOLOGY.items()},
    **{f"glcm_{k}": f"cm_{v}" for k, v in _GLCM.items()},
    **{f"glrlm_{k}": f"rlm_{v}" for k, v in _GLRLM.items()},
    **{f"glszm_{k}": f"szm_{v}" for k, v in _GLSZM.items()},
}
"""hemafed feature name -> mirp's feature stem (texture columns carry a settings suffix)."""


class _SpacedArray:
    """A numpy volume with its voxel spacing (mirp reads numpy arrays as 1 mm voxels)."""

    def __init__(self, array: np.ndarray, spacing: tuple[float, float, float]) -> None:
        self.array, self.spacing = array, tuple(float(s) for s in spacing)


_REGISTERED = False


def _register_spaced_arrays() -> None:
    """Teach mirp's image import (a ``functools.singledispatch``) to read :class:`_SpacedArray`
    as its numpy import does, with the spacing set: the pixels stay in memory (no file)."""
    global _REGISTERED
    if _REGISTERED:
        return
    from mirp._data_import.numpy_file import ImageNumpyFile, MaskNumpyFile
    from mirp.data_import.import_image import _import_image

    @_import_image.register(_SpacedArray)
    def _(image: _SpacedArray, is_mask: bool = False, **kwargs: Any) -> Any:
        cls = MaskNumpyFile if is_mask else ImageNumpyFile
        obj = cls(image_spacing=image.spacing, **kwargs)
        obj.image_data = obj.image_metadata = image.array
        obj.complete()
        obj.update_image_data()
        obj.check(raise_error=True, remove_metadata=False)
        return obj

    _REGISTERED = True


def _mirp() -> Any:
    try:
        import mirp
    except ImportError as exc:
        raise InvalidInput(f"the study's feature library is mirp, which is not installed: "
                           f"{INSTALL_HINT}") from exc
    return mirp


def mirp_version() -> str:
    """The installed mirp's version (refused with the install hint when absent)."""
    from importlib.metadata import version

    _mirp()
    return version("mirp")


def _column(columns: list[str], name: str, aggregation: str) -> str:
    stem = MIRP_NAMES[name]
    agg = "avg" if aggregation == "averaged" else "v_mrg"
    if name.startswith("glcm_"):
        pattern = rf"{stem}_d1(\.0)?_3d_{agg}_fb[sn]_.*"
    elif name.startswith("glrlm_"):
        pattern = rf"{stem}_3d_{agg}_fb[sn]_.*"
    elif name.startswith("glszm_"):
        pattern = rf"{stem}_3d_fb[sn]_.*"
    else:
        pattern = re.escape(stem)
    found = [c for c in columns if re.fullmatch(pattern, c)]
    if len(found) != 1:
        raise InvalidInput(f"mirp: expected one column for {name} ({stem}), found {found}")
    return found[0]


def mirp_arguments(settings: FeatureSettings, roi_minimum: float) -> dict[str, Any]:
    """mirp's ``extract_features`` keyword arguments for ``settings``."""
    families: list[str] = []
    if "firstorder" in settings.families:
        families.append("statistics")
    if "morphology" in settings.families:
        families.append("morphology")
    if "texture" in settings.families:
        families += ["glcm", "glrlm", "glszm"]
    method = "3d_average" if settings.aggregation == "averaged" else "3d_volume_merge"
    kwargs: dict[str, Any] = {
        "image_modality": "mr",
        "base_feature_families": families, "glcm_distance": 1.0,
        "glcm_spatial_method": [method], "glrlm_spatial_method": [method],
        "glszm_spatial_method": ["3d"], "num_cpus": 1,
    }
    if settings.bin_width is not None:
        lower = roi_minimum if settings.bin_lower is None else float(settings.bin_lower)
        kwargs |= {"base_discretisation_method": "fixed_bin_size",
                   "base_discretisation_bin_width": float(settings.bin_width),
                   "resegmentation_intensity_range": [lower, math.inf]}
    else:
        kwargs |= {"base_discretisation_method": "fixed_bin_number",
                   "base_discretisation_n_bins": int(settings.bin_count or 0)}
    if settings.resample_spacing is not None:
        kwargs |= {"new_spacing": [float(s) for s in settings.resample_spacing],
                   "spline_order": 1, "anti_aliasing": False,
                   "roi_interpolation_mask_inclusion_threshold": 0.5}
    return kwargs


def extract_mirp(image: np.ndarray, mask: np.ndarray, spacing: tuple[float, float, float],
                 settings: FeatureSettings) -> dict[str, float]:
    """The features :func:`~hemafed.imaging.radiomics.extract` returns, computed by mirp.

    With fixed bin size and no ``bin_lower`` the bins start at the ROI minimum (after
    resampling), as ours do. Raises ``InvalidInput`` when mirp is not installed (naming the
    extra), for an empty ROI or mismatched arrays.
    """
    from hemafed.imaging.radiomics.extract import feature_names, resample

    image = np.asarray(image, dtype=float)
    mask = np.asarray(mask).astype(bool)
    if image.shape != mask.shape or image.ndim != 3:
        raise InvalidInput(f"image {image.shape} and mask {mask.shape} must be 3-d arrays of the "
                           "same shape")
    mirp = _mirp()
    roi_min_image, roi_min_mask = image, mask
    if settings.resample_spacing is not None and tuple(spacing) != settings.resample_spacing:
        # the ROI minimum after resampling (our resampling equals ITK's, which mirp uses)
        roi_min_image, roi_min_mask = resample(image, mask, spacing, settings.resample_spacing)
    if not roi_min_mask.any():
        raise InvalidInput("the segmentation mask is empty (after resampling): no ROI voxels")
    kwargs = mirp_arguments(settings, float(roi_min_image[roi_min_mask].min()))
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _register_spaced_arrays()
            frames = mirp.extract_features(
                image=_SpacedArray(image.astype(np.float32), spacing),
                mask=_SpacedArray(mask.astype(np.uint8), spacing), **kwargs)
    finally:
        logging.disable(previous)
    if not frames:
        raise InvalidInput("mirp returned no features for this image")
    frame = frames[0]
    columns = [str(c) for c in frame.columns]
    out: dict[str, float] = {}
    for name in feature_names(dataclasses.replace(settings, resample_spacing=None)):
        value = float(frame[_column(columns, name, settings.aggregation)].iloc[0])
        out[name] = value if math.isfinite(value) else float("nan")
    return out
