"""The site-alone / federated / pooled / published study design on small virtual sites."""

from __future__ import annotations

import numpy as np
import pytest

from hemafed.cohort.demo import generate
from hemafed.cohort.partition import split_sites
from hemafed.errors import InvalidInput
from hemafed.learn.study import compare_site_federated_pooled, holdout_split, pool_cohorts

FEATURES = ["age", "hb", "plt", "bm_blast", "gene:TP53", "cyto_ipssr"]


@pytest.fixture(scope="module")
def sites() -> dict:
    return split_sites(generate("MDS", 600, seed=8), 3, seed=1, size_skew=1.0,
                       case_mix_shift=0.4, panel_variation=True)


def test_study_design(sites) -> None:
    res = compare_site_federated_pooled(sites, FEATURES, ("os_time", "os_status"), 0.3, 0,
                                        n_rounds=6, max_depth=2, n_boot=100)
    table = res.table
    assert list(table.index) == list(sites)
    assert {"c_site_alone", "c_federated", "c_pooled", "c_published"} <= set(table.columns)
    # held-out parts: 30% of each site, all arms on the same patients
    for site, cohort in sites.items():
        assert table.loc[site, "n_test"] <= round(0.3 * len(cohort))
        assert table.loc[site, "n_train"] == len(cohort) - round(0.3 * len(cohort))
    s = res.summary
    # federated and pooled are the same model, so their C-indices agree exactly
    assert s["diff_fed_pooled"] == pytest.approx(0.0, abs=1e-12)
    assert s["diff_fed_site_low"] <= s["diff_fed_site"] <= s["diff_fed_site_high"]
    assert s["c_federated"] == pytest.approx(table["c_federated"].mean())
    assert 0.55 < s["c_federated"] < 0.95 and 0.55 < s["c_published"] < 0.95
    assert set(res.overall.index) == {"federated", "pooled", "published"}
    assert res.overall.loc["federated", "c_index"] == pytest.approx(
        res.overall.loc["pooled", "c_index"])
    assert len(res.round_seconds) == 6
    assert "federated - site alone" in res.report()
    # the diagonal of the cross-site table is each site's own held-out C-index
    assert res.cross_site.shape == (3, 3)
    np.testing.assert_allclose(np.diag(res.cross_site.to_numpy()), table["c_site_alone"])
    assert 0.4 < s["c_site_alone_elsewhere"] < 0.95


def test_holdout_and_pooling_errors(sites) -> None:
    train, test = holdout_split(sites["site01"], 0.25, 3)
    assert len(train) + len(test) == len(sites["site01"])
    assert not set(train.ids) & set(test.ids)
    with pytest.raises(InvalidInput, match="holdout_fraction"):
        holdout_split(sites["site01"], 1.5, 0)
    with pytest.raises(InvalidInput, match="two sites"):
        compare_site_federated_pooled({"a": sites["site01"]}, FEATURES)
    with pytest.raises(InvalidInput, match="duration_col, event_col"):
        compare_site_federated_pooled(sites, FEATURES, "os_status")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="two sites"):
        pool_cohorts({"a": sites["site01"], "b": sites["site01"]})
    pooled = pool_cohorts(sites)
    assert len(pooled) == sum(len(c) for c in sites.values())
    assert np.array_equal(np.sort(pooled.ids), np.sort(np.concatenate(
        [c.ids.to_numpy() for c in sites.values()])))
