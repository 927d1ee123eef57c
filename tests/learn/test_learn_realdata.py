"""The real MDS IPSS-M cohort: federated boosting equals pooled, and the IPSS-M computed at the
sites discriminates like the published IPSSM_SCORE."""

from __future__ import annotations

import numpy as np
import pytest
from lifelines.utils import concordance_index

from hemafed.cohort.partition import split_sites
from hemafed.cohort.public import read_mds_ipssm
from hemafed.learn.features import feature_spec, federated_bins
from hemafed.learn.gbdt import FederatedGBDT
from hemafed.learn.metrics import eval_grid, evaluate, ipssm_predictor
from hemafed.learn.study import pool_cohorts

FEATURES = ["age", "hb", "plt", "bm_blast", "cyto_ipssr", "gene:TP53", "gene:SF3B1",
            "gene:ASXL1", "gene:RUNX1"]


@pytest.fixture
def mds(shared_data):
    return read_mds_ipssm(shared_data / "mds-ipssm-cohort")


def test_real_cohort_federated_equals_pooled_and_ipssm(mds, make_federation) -> None:
    sites = split_sites(mds.cohort, 5, seed=0, size_skew=1.0, case_mix_shift=0.5,
                        panel_variation=True, missingness=0.1)
    fed = make_federation(sites)
    pooled = make_federation({"all": pool_cohorts(sites)})
    edges = federated_bins(fed, feature_spec(FEATURES), max_bins=16)
    kw = {"n_rounds": 3, "max_depth": 3, "learning_rate": 0.3, "grid": eval_grid(25.0)[::4]}
    a = FederatedGBDT("survival:cox", **kw).fit(fed, FEATURES, ("os_time", "os_status"),
                                               edges=edges)
    b = FederatedGBDT("survival:cox", **kw).fit(pooled, FEATURES, ("os_time", "os_status"),
                                               edges=edges)
    for ta, tb in zip(a.trees_, b.trees_, strict=True):
        assert (ta.feature, ta.threshold, ta.default_left) == (tb.feature, tb.threshold,
                                                              tb.default_left)
        np.testing.assert_allclose(ta.value, tb.value, rtol=1e-9, atol=1e-12)

    ev = evaluate(fed, ipssm_predictor(), horizon=5.0, grid=eval_grid(25.0))
    p = mds.cohort.patients.set_index(mds.cohort.ids)
    ref = mds.reference["IPSSM_SCORE"].reindex(p.index).to_numpy(dtype=float)
    t = p["os_time"].astype("Float64").to_numpy(dtype=float, na_value=np.nan)
    e = p["os_status"].astype("Float64").to_numpy(dtype=float, na_value=np.nan)
    ok = ~np.isnan(ref) & ~np.isnan(t) & ~np.isnan(e)
    published = concordance_index(t[ok], -ref[ok], e[ok])
    # the sites' own IPSS-M (panel variation makes some genes missing) discriminates as well
    assert ev.c_index == pytest.approx(published, abs=0.02)
    assert ev.n > 0.85 * ok.sum()
