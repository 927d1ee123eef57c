"""Shared small cohorts for the synthesis tests (MDS demo, 2,000 patients over 10 sites)."""

from __future__ import annotations

import pandas as pd
import pytest

from hemafed.cohort.demo import generate
from hemafed.cohort.model import Cohort
from hemafed.cohort.partition import split_sites

COLUMNS = ["age", "sex", "hb", "bm_blast", "cyto_ipssr", "os_time", "os_status", "amlt_time",
           "amlt_status"]


@pytest.fixture(scope="session")
def columns() -> list[str]:
    return list(COLUMNS)


@pytest.fixture(scope="session")
def mds_cohort() -> Cohort:
    return generate("MDS", 2000, seed=11)


@pytest.fixture(scope="session")
def mds_sites(mds_cohort: Cohort) -> dict[str, Cohort]:
    return split_sites(mds_cohort, 10, seed=3, size_skew=1.0, case_mix_shift=0.5)


@pytest.fixture(scope="session")
def holdout() -> pd.DataFrame:
    return generate("MDS", 1000, seed=12).patients[COLUMNS]
