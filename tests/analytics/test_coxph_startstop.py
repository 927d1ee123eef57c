"""Federated Cox with a time-varying covariate against R's ``coxph(Surv(start, stop, event))``.

mgus2 (R's ``survival``): death, with progression to a plasma-cell malignancy (``pstat`` at
``ptime``, here ``amlt_status``/``amlt_time``) switching on during follow-up, as
``tmerge(..., tdc(ptime))`` would build it. The split rows given to R are built here from the
pooled cohort, independently of the site code; sites are uneven (one holds a single patient,
one no event) and the sums go through the fixed-point arithmetic of secure aggregation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fixed_point_federation import FixedPointFederation
from r_datasets import needs_r, r_frames, run_r_batch, split_uneven

from hemafed.analytics.coxph_startstop import FederatedCoxTimeVarying
from hemafed.errors import InvalidInput

pytestmark = needs_r
FORMULA = "age + sex + hb"


def split_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """tmerge's split by hand: (0, s] with z = 0 and (s, T] with z = 1 after progression."""
    df = frame.dropna(subset=["age", "sex", "hb", "os_time", "os_status", "amlt_time",
                              "amlt_status"])
    rows = []
    for r in df.itertuples():
        t, s, dead = float(r.os_time), float(r.amlt_time), int(r.os_status)
        base = {"age": r.age, "sex": r.sex, "hb": r.hb}
        if r.amlt_status and s < t:
            if s > 0:
                rows.append(base | {"start": 0.0, "stop": s, "event": 0, "z": 0})
            rows.append(base | {"start": s, "stop": t, "event": dead, "z": 1})
        else:
            rows.append(base | {"start": 0.0, "stop": t, "event": dead, "z": 0})
    return pd.DataFrame(rows)


R_FIT = """
m <- coxph(Surv(start, stop, event) ~ age + factor(sex, levels = c("M", "F")) + hb + z,
           data = d, ties = "{ties}", control = coxph.control(eps = 1e-13, iter.max = 100))
out <- data.frame(coef = coef(m), se = sqrt(diag(vcov(m))), n = m$n)
"""


@pytest.fixture(scope="module")
def mgus2() -> pd.DataFrame:
    return r_frames()["mgus2"]


@pytest.mark.slow
def test_start_stop_cox_equals_r_over_uneven_sites(mgus2: pd.DataFrame) -> None:
    splits = {n: split_uneven(mgus2, n) for n in (2, 5, 10)}
    rows = split_rows(mgus2)
    refs = run_r_batch({ties: (R_FIT.replace("{ties}", ties), rows)
                        for ties in ("efron", "breslow")})
    for n, sites in splits.items():
        for ties, ref in refs.items():
            tv = FederatedCoxTimeVarying(ties=ties).fit(
                FixedPointFederation(sites), "os_time", "os_status", FORMULA,
                switch=("amlt_time", "amlt_status"), steps_per_unit=12.0)
            assert list(tv.params_.index) == ["age", "sex[F]", "hb", "amlt_status(t)"]
            np.testing.assert_allclose(tv.params_.to_numpy(), ref["coef"], rtol=1e-6,
                                       err_msg=f"{n} sites {ties}")
            np.testing.assert_allclose(tv.standard_errors_.to_numpy(), ref["se"], rtol=1e-6,
                                       err_msg=f"{n} sites {ties}")
            assert tv.rows_ == len(rows) == int(ref["n"].iloc[0])  # R's n counts rows
            assert tv.n_ + tv.excluded_ == len(mgus2) and tv.n_ < tv.rows_
    assert tv.summary.loc["amlt_status(t)", "exp(coef)"] > 1  # progression raises mortality
    assert '"cox_time_varying"' in tv.to_json()


def test_bad_switch_columns_are_named(mgus2: pd.DataFrame) -> None:
    sites = split_uneven(mgus2, 2)
    with pytest.raises(InvalidInput, match="'nowhere'"):
        FederatedCoxTimeVarying().fit(FixedPointFederation(sites), "os_time", "os_status",
                                      FORMULA, switch=("nowhere", "amlt_status"),
                                      steps_per_unit=12.0)


@pytest.mark.parametrize(("change", "match"), [
    ({"stop": [1.0, 1.0, 3.0]}, "start must be below stop"),
    ({"start": [0.0, 0.5, 0.0]}, "overlap"),
    ({"event": [1, 1, 0]}, "last interval"),
    ({"event": [0, 2, 0]}, "must be 0 or 1"),
    ({"start": [-1.0, 1.0, 0.0]}, "start must be >= 0"),
])
def test_long_format_rows_are_checked(change: dict, match: str) -> None:
    from hemafed.analytics.coxph_startstop import check_long_format

    good = pd.DataFrame({"patient_id": ["a", "a", "b"], "start": [0.0, 1.0, 0.0],
                         "stop": [1.0, 2.0, 3.0], "event": [0, 1, 0]})
    assert check_long_format(good)["patient_id"].tolist() == ["a", "a", "b"]
    with pytest.raises(InvalidInput, match=match):
        check_long_format(good.assign(**change))
    with pytest.raises(InvalidInput, match="lack the column"):
        check_long_format(good.drop(columns="stop"))
