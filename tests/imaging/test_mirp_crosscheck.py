"""Optional cross-check against mirp (EUPL-1.2, an optional extra): same features, same volume.

Skipped when mirp is not installed. mirp is never a dependency of hemafed.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest

from hemafed.imaging.radiomics import FeatureSettings, extract
from hemafed.imaging.virtual import generate

mirp = pytest.importorskip("mirp")

BW = 8.0
PAIRS = {  # hemafed name -> mirp name (3D merged texture, fixed bin size from 0)
    "firstorder_mean": "stat_mean", "firstorder_variance": "stat_var",
    "firstorder_skewness": "stat_skew", "firstorder_kurtosis": "stat_kurt",
    "firstorder_p90": "stat_p90", "firstorder_robust_mean_absolute_deviation": "stat_rmad",
    "morphology_volume": "morph_volume", "morphology_surface_area": "morph_area_mesh",
    "morphology_sphericity": "morph_sphericity",
    "glcm_joint_maximum": f"cm_joint_max_d1_3d_v_mrg_fbs_w{BW}",
    "glcm_contrast": f"cm_contrast_d1_3d_v_mrg_fbs_w{BW}",
    "glcm_joint_entropy": f"cm_joint_entr_d1_3d_v_mrg_fbs_w{BW}",
    "glcm_information_correlation_1": f"cm_info_corr1_d1_3d_v_mrg_fbs_w{BW}",
    "glrlm_short_runs_emphasis": f"rlm_sre_3d_v_mrg_fbs_w{BW}",
    "glrlm_run_entropy": f"rlm_rl_entr_3d_v_mrg_fbs_w{BW}",
    "glszm_small_zone_emphasis": f"szm_sze_3d_fbs_w{BW}",
    "glszm_zone_size_entropy": f"szm_zs_entr_3d_fbs_w{BW}",
}


@pytest.mark.slow
def test_features_agree_with_mirp_on_a_virtual_marrow_volume() -> None:
    subject = generate("MM", 1, 3, seed=5)[0]
    image, mask = subject.image.array, subject.mask.array
    ours = extract(image, mask, (1.0, 1.0, 1.0),
                   FeatureSettings(bin_width=BW, bin_lower=0.0, aggregation="merged"))
    logging.disable(logging.INFO)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = mirp.extract_features(
            image=image.astype(np.float32), mask=mask.astype(np.uint8), image_modality="ct",
            resegmentation_intensity_range=[0.0, 1e5], base_discretisation_method="fixed_bin_size",
            base_discretisation_bin_width=BW,
            base_feature_families=["statistics", "morphology", "glcm", "glrlm", "glszm"],
            num_cpus=1)[0]
    logging.disable(logging.NOTSET)
    for ours_name, mirp_name in PAIRS.items():
        if mirp_name not in theirs.columns:
            pytest.fail(f"mirp has no feature {mirp_name}")
        assert ours[ours_name] == pytest.approx(float(theirs[mirp_name].iloc[0]), rel=1e-3), \
            ours_name
