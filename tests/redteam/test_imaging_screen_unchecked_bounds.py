"""Hole: ``imaging_screen`` declares its DP sensitivity from the hub's per-feature ``bounds`` but
never checks the site's values against them, and the plan neither pins those bounds (the spec's
``imaging.bounds``) nor the ``features`` it names (any numeric column of the cohort).

Under an approved imaging study and ``require_dp: true``, a hub asks for ``features: [age]``
(not an imaging feature, not in the spec) with bounds ``[0, 1]``: the declared sensitivity is
~2.4 while one patient changes the release by ~age**2 (thousands), so an epsilon-0.5 release
gives the pooled sums of ages and squared ages per outcome group to within a fraction of one
patient. Through real site directories, the real site node and secure aggregation.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from redteam_hub import Probe, make_sites

from hemafed.cohort.demo import generate
from hemafed.cohort.model import Cohort
from hemafed.cohort.partition import split_sites
from hemafed.federation.api import DPRequest
from hemafed.federation.queries import get_query
from hemafed.imaging.runtime import load_imaging_queries
from hemafed.privacy.calibration import release_sensitivity
from hemafed.secure.hub import SumOutcome
from hemafed.site.store import load_cohort
from hemafed.study.spec import StudySpec

pytestmark = pytest.mark.redteam

SPEC = StudySpec.from_mapping(
    {
        "study_id": "rt-screen",
        "requester": "r",
        "imaging": {
            "modality": "MR",
            "settings": {"bin_width": 8.0, "aggregation": "averaged"},
            "harmonise": {"features": ["firstorder_mean"], "covariates": []},
            "bounds": {"firstorder_mean": [0, 400]},
        },
        "analyses": [{"id": "lr", "kind": "logistic", "outcome": "os_status", "formula": "hb"}],
    }
)
PARAMS = {
    "features": ["age"],
    "outcome": "os_status",
    "bounds": {"age": [0.0, 1.0]},
    "max_patients": 1_000_000,
}


def test_screen_with_tiny_bounds_is_a_barely_noised_release(tmp_path: Path) -> None:
    load_imaging_queries()
    fed = make_sites(tmp_path, split_sites(generate("MDS", 240, 5), 3, 5), SPEC, require_dp=True)
    query = get_query("imaging_screen")
    declared = release_sensitivity(query.declare(PARAMS))
    truth: dict[str, np.ndarray] = {}
    worst = 0.0
    for d in fed.site_dirs.values():
        cohort = load_cohort(d)
        full = query.run(cohort, PARAMS)
        for k, v in full.items():
            truth[k] = truth.get(k, 0) + v
        oldest = int(np.nanargmax(cohort.patients["age"].astype(float).to_numpy()))
        p = cohort.patients
        less = query.run(
            Cohort(p.drop(p.index[oldest]).reset_index(drop=True), cohort.mutations, cohort.panels),
            PARAMS,
        )
        worst = max(worst, math.sqrt(sum(float(np.sum((full[k] - less[k]) ** 2)) for k in full)))
    assert worst / declared > 1000  # one patient moves the release ~3000 times the declared

    hub = Probe(fed, SPEC.study_id, SPEC.sha256)
    outcome, codes = hub.send("imaging_screen", PARAMS, dp=DPRequest(0.5, 1e-6))
    assert isinstance(outcome, SumOutcome), outcome  # planned, DP, accepted under require_dp
    assert set(codes.values()) == {None}
    youngest_sq = 40.0**2  # no patient is younger than 40: one patient moves sumsq by more
    for k in ("sumsq0", "sumsq1"):
        assert abs(float(outcome.values[k][0] - truth[k][0])) < youngest_sq / 10
