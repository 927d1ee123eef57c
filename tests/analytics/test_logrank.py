"""Federated log-rank test against lifelines' logrank_test / multivariate_logrank_test."""

from __future__ import annotations

import numpy as np
import pytest
from lifelines.statistics import logrank_test, multivariate_logrank_test
from survival_frames import CYTO, make_survival_frame, split_sites

from hemafed.analytics.logrank import federated_logrank_test
from hemafed.errors import InvalidInput


def test_k_groups_and_two_groups_equal_lifelines(make_federation) -> None:
    frame = make_survival_frame(n=500, seed=11)
    fed = make_federation(split_sites(frame))
    ours = federated_logrank_test(fed, "os_time", "os_status", "cyto_ipssr", list(CYTO))
    ref = multivariate_logrank_test(frame["os_time"], frame["cyto_ipssr"], frame["os_status"])
    assert ours.test_statistic == pytest.approx(ref.test_statistic, rel=1e-6)
    assert ours.p_value == pytest.approx(ref.p_value, rel=1e-6, abs=1e-300)
    assert ours.degrees_of_freedom == 4
    m, f = frame[frame["sex"] == "M"], frame[frame["sex"] == "F"]
    two = federated_logrank_test(fed, "os_time", "os_status", "sex", ["M", "F"])
    ref2 = logrank_test(m["os_time"], f["os_time"], m["os_status"], f["os_status"])
    assert two.test_statistic == pytest.approx(ref2.test_statistic, rel=1e-6)
    assert two.p_value == pytest.approx(ref2.p_value, rel=1e-6)
    assert two.observed.sum() == pytest.approx(frame["os_status"].sum())
    assert np.isclose(two.expected.sum(), two.observed.sum())


def test_one_level_is_refused(make_federation) -> None:
    fed = make_federation(split_sites(make_survival_frame(n=100), 2))
    with pytest.raises(InvalidInput, match=">= 2 levels"):
        federated_logrank_test(fed, "os_time", "os_status", "sex", ["M"])
