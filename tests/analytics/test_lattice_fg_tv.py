"""Fine-Gray and time-varying Cox on a public lattice (``lattice=``) against R, heavy ties.

mgus2 (R's ``survival``) over 5 uneven sites (one a single patient, one without any event),
through the exact fixed-point arithmetic of secure aggregation, on the quarterly lattice: every
time moved up to the end of its quarter, so many events, censorings and switches tie. R gets the
pooled complete cases with the times rounded here (``np.ceil``), not by hemafed: ``crr`` for
Fine-Gray, ``coxph(Surv(start, stop, event))`` on the rows split at the rounded switch time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fixed_point_federation import FixedPointFederation
from r_datasets import needs_r, r_frames, run_r_batch, split_uneven

from hemafed.analytics.coxph_startstop import FederatedCoxTimeVarying
from hemafed.analytics.finegray import FederatedFineGray
from hemafed.federation.api import AggregateResult

pytestmark = [needs_r, pytest.mark.slow]
QUARTER = 4.0
CAUSES = [("amlt_time", "amlt_status"), ("os_time", "os_status")]
COLUMNS = ["age", "sex", "hb", "amlt_time", "amlt_status", "os_time", "os_status"]


def _up(t: np.ndarray) -> np.ndarray:
    return np.ceil(np.asarray(t, dtype=float) * QUARTER - 1e-7) / QUARTER


class _NoHistogram(FixedPointFederation):
    """Fails the test if the fit asks for a time histogram (the lattice needs none)."""

    def secure_sum(self, query: str, params: Mapping[str, Any], *, study: str = "default",
                   dp: Any = None) -> AggregateResult:
        assert query != "time_histogram", "a lattice fit asked for a time histogram"
        return super().secure_sum(query, params, study=study, dp=dp)


@pytest.fixture(scope="module")
def mgus2() -> pd.DataFrame:
    return r_frames()["mgus2"]


def test_fine_gray_on_a_lattice_equals_crr_on_rounded_times(mgus2: pd.DataFrame) -> None:
    cc = mgus2.dropna(subset=COLUMNS).reset_index(drop=True)
    aml, dead = cc["amlt_status"].to_numpy() == 1, cc["os_status"].to_numpy() == 1
    t_aml, t_os = cc["amlt_time"].to_numpy(float), cc["os_time"].to_numpy(float)
    time = np.where(aml, t_aml, np.where(dead, t_os, np.minimum(t_aml, t_os)))
    frame = cc[["age", "sex", "hb"]].assign(ftime=_up(time),
                                            fstatus=np.where(aml, 1, np.where(dead, 2, 0)))
    assert frame["ftime"].nunique() < 0.5 * len(frame)  # heavy ties
    ref = run_r_batch({"crr": (
        'X <- model.matrix(~ age + factor(sex, levels = c("M", "F")) + hb, d)[, -1]\n'
        "f <- crr(d$ftime, d$fstatus, X, failcode = 1, gtol = 1e-13)\n"
        "out <- data.frame(coef = f$coef, se = sqrt(diag(f$var)), n = f$n)", frame)})["crr"]
    fg = FederatedFineGray().fit(_NoHistogram(split_uneven(mgus2, 5)), "age + sex + hb",
                                 CAUSES, lattice=QUARTER)
    assert fg.params_ is not None
    np.testing.assert_allclose(fg.params_.to_numpy(), ref["coef"], rtol=1e-6)
    np.testing.assert_allclose(fg.standard_errors_.to_numpy(), ref["se"], rtol=1e-6)
    assert fg.n_ == int(ref["n"].iloc[0])


def test_cox_tv_on_a_lattice_equals_coxph_on_rows_split_at_rounded_times(
        mgus2: pd.DataFrame) -> None:
    cc = mgus2.dropna(subset=COLUMNS).reset_index(drop=True)
    rows = []
    for r in cc.itertuples():
        t, s = float(_up(np.array([r.os_time]))[0]), float(_up(np.array([r.amlt_time]))[0])
        base = {"age": r.age, "sex": r.sex, "hb": r.hb}
        if r.amlt_status == 1 and s < t:
            if s > 0:
                rows.append(base | {"start": 0.0, "stop": s, "event": 0, "z": 0})
            rows.append(base | {"start": s, "stop": t, "event": int(r.os_status), "z": 1})
        else:
            rows.append(base | {"start": 0.0, "stop": t, "event": int(r.os_status), "z": 0})
    split = pd.DataFrame(rows)
    ref = run_r_batch({"coxph": (
        'm <- coxph(Surv(start, stop, event) ~ age + factor(sex, levels = c("M", "F")) + hb + z,\n'
        "           data = d, ties = 'efron', control = coxph.control(eps = 1e-13, iter.max = 100))\n"
        "out <- data.frame(coef = coef(m), se = sqrt(diag(vcov(m))), n = m$n)", split)})["coxph"]
    tv = FederatedCoxTimeVarying().fit(_NoHistogram(split_uneven(mgus2, 5)), "os_time",
                                       "os_status", "age + sex + hb",
                                       switch=("amlt_time", "amlt_status"), lattice=QUARTER)
    assert tv.params_ is not None
    np.testing.assert_allclose(tv.params_.to_numpy(), ref["coef"], rtol=1e-6)
    np.testing.assert_allclose(tv.standard_errors_.to_numpy(), ref["se"], rtol=1e-6)
    assert tv.rows_ == len(split) == int(ref["n"].iloc[0])
