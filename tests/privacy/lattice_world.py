"""The lattice Cox world of attacks L and M (fourth review): the plan-lattice spec and three
sites of 200 patients whose events come 5 to a month, each with one lone censoring."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from hemafed.cohort.demo import generate
from hemafed.cohort.partition import split_sites
from hemafed.study.spec import StudySpec

LATTICE_FORMULA = ["age", "hb"]
LATTICE_SPEC = StudySpec.from_mapping({"study_id": "ar4-lattice", "requester": "r", "analyses": [
    {"id": "cox", "kind": "cox", "duration": "os_time", "event": "os_status",
     "formula": " + ".join(LATTICE_FORMULA), "lattice": 12}]})


def _large_exit_cohorts() -> dict[str, Any]:
    """Three sites of 200 patients whose own events come 5 to a month (so the min-cell rule on
    ``d`` passes on the monthly lattice) and where each site has one patient censored alone in
    a month of no other exit; everyone else is censored at 5 years. Demo covariates; the other
    endpoints end with this follow-up."""
    from hemafed.cohort.model import Cohort

    out = {}
    for i, (site, cohort) in enumerate(split_sites(generate("MDS", 600, 13), 3, 13).items()):
        p = cohort.patients.reset_index(drop=True).copy()
        month = np.full(len(p), 60.0)
        status = np.zeros(len(p))
        month[:50] = 2.0 * (1 + np.arange(50) // 5)  # 5 events each in months 2, 4, ..., 20
        status[:50] = 1.0
        month[50] = 30.0 + 3 * i  # the lone exit: a censoring in month 30, 33 or 36
        p["os_time"] = (month - 0.5) / 12
        p["os_status"] = pd.Series(status > 0, dtype=p["os_status"].dtype)
        # the other endpoints end with this follow-up (the intake checks they do not pass it)
        p["lfs_time"], p["lfs_status"] = p["os_time"], p["os_status"]
        p["amlt_time"] = p["os_time"]
        p["amlt_status"] = pd.Series(False, index=p.index, dtype=p["amlt_status"].dtype)
        out[site] = Cohort(p, cohort.mutations, cohort.panels)
    return out
