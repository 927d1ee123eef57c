"""Extra arms of the study design: a published score given as a column predictor, pooled
reference trainers, and attaching published labels to a cohort."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines.utils import concordance_index

from hemafed.cohort.demo import generate
from hemafed.cohort.partition import split_sites
from hemafed.errors import InvalidInput
from hemafed.learn.metrics import column_predictor
from hemafed.learn.study import (
    compare_site_federated_pooled,
    holdout_split,
    pool_cohorts,
    with_score_column,
)

FEATURES = ["age", "hb", "plt", "bm_blast", "gene:TP53", "cyto_ipssr"]


@pytest.fixture(scope="module")
def sites() -> dict:
    raw = split_sites(generate("MDS", 450, seed=8), 3, seed=1, size_skew=1.0,
                      case_mix_shift=0.4)
    # a "published" score: the blast count, attached by patient id
    return {k: with_score_column(c, "blast_score", c.patients.set_index("patient_id")[
        "bm_blast"].astype(float)) for k, c in raw.items()}


def test_column_score_and_pooled_reference_arm(sites) -> None:
    calls = []

    def age_trainer(pooled):
        calls.append(len(pooled))
        return lambda cohort: cohort.patients["age"].astype(float).to_numpy()

    res = compare_site_federated_pooled(
        sites, FEATURES, ("os_time", "os_status"), 0.3, 0, n_rounds=3, max_depth=2,
        n_boot=50, published=column_predictor("blast_score", 0.0, 100.0),
        extra_arms={"age_only": age_trainer})
    # the trainer ran once, on the pooled training parts
    assert calls == [sum(len(c) - round(0.3 * len(c)) for c in sites.values())]
    for k, (site, cohort) in enumerate(sites.items()):
        _, test = holdout_split(cohort, 0.3, [0, k])
        p = test.patients
        t = p["os_time"].astype(float).to_numpy()
        e = p["os_status"].astype(float).to_numpy()
        ok = ~np.isnan(t) & ~np.isnan(e)
        # exact Harrell's C on monthly grid-mapped times ~ lifelines' on raw times
        ref = concordance_index(t[ok], -p["age"].astype(float).to_numpy()[ok], e[ok])
        assert res.table.loc[site, "c_age_only"] == pytest.approx(ref, abs=0.02)
        ref = concordance_index(t[ok], -p["bm_blast"].astype(float).to_numpy()[ok], e[ok])
        assert res.table.loc[site, "c_published"] == pytest.approx(ref, abs=0.02)
    s = res.summary
    assert s["c_age_only"] == pytest.approx(res.table["c_age_only"].mean())
    assert s["diff_fed_age_only_low"] <= s["diff_fed_age_only"] <= s["diff_fed_age_only_high"]
    assert "published" in res.overall.index


def test_arm_and_score_errors(sites) -> None:
    with pytest.raises(InvalidInput, match="taken by the study"):
        compare_site_federated_pooled(sites, FEATURES, extra_arms={"pooled": lambda c: None})
    with pytest.raises(InvalidInput, match="published must be"):
        compare_site_federated_pooled(sites, FEATURES, published="eln1999")
    one = sites["site00"] if "site00" in sites else next(iter(sites.values()))
    with pytest.raises(InvalidInput, match="already has a column"):
        with_score_column(one, "blast_score", pd.Series(dtype=float))
    tagged = with_score_column(one, "other", pd.Series({one.ids[0]: 2.0}))
    assert tagged.patients["other"].notna().sum() == 1
    assert len(pool_cohorts({"a": tagged})) == len(one)
