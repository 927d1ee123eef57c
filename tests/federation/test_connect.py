"""``hemafed.connect``: fit from Python over site directories, through the sites' own checks and
secure aggregation, equal to the pooled fit (lifelines)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

import hemafed
from hemafed.analytics.cox import FederatedCoxPH as CoxPHFitter
from hemafed.cohort.demo import generate
from hemafed.cohort.partition import split_sites
from hemafed.demo import build_sites
from hemafed.errors import HemafedError, InvalidInput
from hemafed.site.store import audit_log, load_cohort
from hemafed.study.spec import StudySpec

FORMULA = ["age", "hb", "bm_blast"]
SPEC = {"study_id": "notebook-cox", "requester": "analyst", "analyses": [
    {"id": "cox", "kind": "cox", "duration": "os_time", "event": "os_status",
     "formula": " + ".join(FORMULA)}]}


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Any:
    cohorts = split_sites(generate("MDS", 400, 7), 3, 7, size_skew=0.3)
    return build_sites(tmp_path_factory.mktemp("connect"), cohorts, StudySpec.from_mapping(SPEC))


def test_a_cox_fit_from_python_equals_the_pooled_fit(sites: Any) -> None:
    from lifelines import CoxPHFitter as PooledCox

    dirs = list(sites.site_dirs.values())
    before = [len(list(audit_log(d).entries())) for d in dirs]
    with hemafed.connect(dirs, SPEC) as fed:
        cox = CoxPHFitter().fit(fed, "os_time", "os_status", FORMULA)
        assert fed.contributors == tuple(sorted(sites.site_dirs))
        assert fed.round_trips > 0
    assert fed.closed
    frame = pd.concat([load_cohort(d).patients for d in dirs], ignore_index=True)
    data = frame[[*FORMULA, "os_time", "os_status"]].astype(float).dropna()
    pooled = PooledCox().fit(data, "os_time", "os_status",
                             fit_options={"precision": 1e-14, "r_precision": 1e-15})
    np.testing.assert_allclose(cox.params_.to_numpy(), pooled.params_.to_numpy(), rtol=1e-6)
    # every request went through each site's audit log, under the connected study
    for d, n in zip(dirs, before, strict=True):
        new = list(audit_log(d).entries())[n:]
        assert new and all(e["study"] == "notebook-cox" for e in new)


def test_the_sites_refuse_what_the_connected_study_did_not_approve(sites: Any) -> None:
    dirs = list(sites.site_dirs.values())
    with hemafed.connect(dirs, SPEC) as fed, pytest.raises(HemafedError, match="outside the approved"):
        CoxPHFitter().fit(fed, "os_time", "os_status", ["age", "plt"])  # plt not in the plan


def test_clear_errors_for_a_wrong_call(sites: Any, tmp_path: Any) -> None:
    dirs = list(sites.site_dirs.values())
    with (pytest.raises(InvalidInput, match="list of site directories"),
          hemafed.connect(str(dirs[0]), SPEC)):  # type: ignore[arg-type]
        pass
    with pytest.raises(InvalidInput, match="no federation manifest"), \
            hemafed.connect([tmp_path], SPEC):
        pass
    with (hemafed.connect(dirs, SPEC) as fed,
          pytest.raises(InvalidInput, match="needs its own connection")):
        fed.secure_sum("cohort_size", {}, study="another-study")
    with pytest.raises(InvalidInput, match="closed"):
        fed.secure_sum("cohort_size", {})
