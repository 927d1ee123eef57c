"""Federated Gray's test against ``cmprsk::cuminc``'s ``Tests`` (statistic and p-value).

mgus2: progression (``amlt_*``) and death as competing causes, compared by sex (2 groups) and
by age tertile (3 groups, in the ``cyto_ipssr`` column), over 2, 5 and 10 uneven sites.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fixed_point_federation import FixedPointFederation
from r_datasets import needs_r, r_frames, run_r_batch, split_uneven

from hemafed.analytics.competing import first_cause
from hemafed.analytics.graytest import federated_gray_test, gray_test
from hemafed.errors import InvalidInput

CAUSES = [("amlt_time", "amlt_status"), ("os_time", "os_status")]
TERTILES = ("Good", "Intermediate", "Poor")
R_CUMINC = """
ci <- cuminc(d$ftime, d$fstatus, d$grp)
out <- data.frame(stat = ci$Tests[, "stat"], pv = ci$Tests[, "pv"], df = ci$Tests[, "df"])
"""


def with_tertiles(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    cuts = np.quantile(df["age"], [1 / 3, 2 / 3])
    out["cyto_ipssr"] = np.array(TERTILES)[np.searchsorted(cuts, df["age"], side="right")]
    return out


def r_frame(sites: dict, group: str) -> pd.DataFrame:
    pooled = pd.concat([c.patients for c in sites.values()], ignore_index=True)
    cc = pooled.dropna(subset=["amlt_time", "amlt_status", "os_time", "os_status"]).copy()
    time, cause = first_cause(cc[["amlt_time", "os_time"]].to_numpy(float),
                              cc[["amlt_status", "os_status"]].astype(float).to_numpy())
    cc["ftime"], cc["fstatus"], cc["grp"] = time, cause, cc[group].astype(str)
    return cc


@needs_r
@pytest.mark.slow
def test_gray_test_equals_cuminc_over_uneven_sites() -> None:
    df = with_tertiles(r_frames()["mgus2"])
    splits = {n: split_uneven(df, n) for n in (2, 5, 10)}
    groups = {"sex": ("M", "F"), "cyto_ipssr": TERTILES}
    refs = run_r_batch({f"{n}-{g}": (R_CUMINC, r_frame(s, g))
                        for n, s in splits.items() for g in groups})
    for n, sites in splits.items():
        for g, levels in groups.items():
            ref = refs[f"{n}-{g}"]
            for cause in (1, 2):
                res = federated_gray_test(FixedPointFederation(sites), CAUSES, g, levels,
                                          cause=cause, steps_per_unit=12.0)
                assert res.statistic == pytest.approx(ref["stat"].iloc[cause - 1], rel=1e-9)
                assert res.p == pytest.approx(ref["pv"].iloc[cause - 1], rel=1e-6, abs=1e-12)  # R: 1 - pchisq
                assert res.df == int(ref["df"].iloc[cause - 1]) == len(levels) - 1
                assert len(res.sites) == n


def test_identical_groups_score_zero_and_one_group_is_refused() -> None:
    at_risk = np.array([[10.0, 8, 5], [10.0, 8, 5]])
    d1 = np.array([[1.0, 1, 0], [1.0, 1, 0]])
    d2 = np.array([[1.0, 0, 1], [1.0, 0, 1]])
    score, var = gray_test(at_risk, d1, d2)
    assert score == pytest.approx([0.0], abs=1e-12) and var[0, 0] > 0
    with pytest.raises(InvalidInput, match="two groups"):
        gray_test(at_risk[:1], d1[:1], d2[:1])
