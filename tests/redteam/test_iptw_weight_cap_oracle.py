"""Hole: the IPTW ``max_weight`` cap and the propensity coefficients ``gamma`` are chosen by the
hub per request and not pinned by the plan, and a site holding a weight above the cap refuses by
itself (``data_do_not_fit``) before anything is charged.

With ``gamma`` putting all its weight on age, the largest weight at a site is a strictly
monotone function of the age of its youngest treated patient, so bisection on the cap recovers
that patient's age exactly, one site at a time. It works under the shipped policy template and
even with ``require_dp: true``: the probes are DP requests with a huge noise multiplier, a
refused probe costs nothing (the query runs before the ledger is charged) and an answered one
costs next to nothing (36 probes: 0.006 of the study's epsilon 1.0 under RDP); a refusal is not a plan round either, so the plan's caps allow ~120
probes. Through real site directories, the real site node and secure aggregation.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from redteam_hub import Probe, make_sites

from hemafed.analytics.design import DesignSpec, complete_case_mask, design_values, parse_formula
from hemafed.cohort.demo import generate
from hemafed.cohort.partition import split_sites
from hemafed.federation.api import DPRequest
from hemafed.site.ledger import PrivacyLedger
from hemafed.site.store import load_cohort, load_policy
from hemafed.study.spec import StudySpec

pytestmark = pytest.mark.redteam

FORMULA = "age + hb + sex"
SPEC = StudySpec.from_mapping(
    {
        "study_id": "rt-iptw",
        "requester": "r",
        "analyses": [{"id": "hma", "kind": "iptw", "treatment": "hma", "formula": FORMULA}],
    }
)
SLOPE, OFFSET = 0.5, 40.0  # eta = -40 + 0.5 age: treated weight 1 + exp(40 - 0.5 age)


def _youngest_treated(site_dir: Path, spec: DesignSpec) -> float:
    """Ground truth from the site's own disk (what the hub must not learn)."""
    cohort = load_cohort(site_dir)
    values = design_values(cohort, spec)
    hma = cohort.patients["hma"].astype("Float64").to_numpy(dtype=float, na_value=np.nan)
    rows = complete_case_mask(cohort, spec, values=values) & ~np.isnan(hma)
    age = values[rows, spec.names.index("age")]
    return float(age[hma[rows] == 1].min())


def test_bisection_on_max_weight_recovers_one_patients_age(tmp_path: Path) -> None:
    cohorts = split_sites(generate("MDS", 240, 5), 3, 5)
    fed = make_sites(tmp_path, cohorts, SPEC, require_dp=True)
    design = parse_formula(FORMULA, None).to_params()
    spec = DesignSpec.from_params(design)
    gamma = [-OFFSET] + [SLOPE if n == "age" else 0.0 for n in spec.names]
    hub = Probe(fed, SPEC.study_id, SPEC.sha256)
    dp = DPRequest(None, 1e-6, noise_multiplier=1e6)  # an answered probe costs next to nothing
    target = "site02"

    def refused(log_cap: float) -> bool:
        params: dict[str, Any] = {
            "design": design,
            "treatment": "hma",
            "gamma": gamma,
            "marginal": 1.0,
            "max_weight": 1.0 + math.exp(log_cap),
            "duration_col": "os_time",
            "event_col": "os_status",
            "grid": [1.0, 2.0, 3.0],
            "time_mapping": "up",
            "beta": [0.0],
        }
        _, codes = hub.send("iptw_cox_sums", params, dp=dp)
        assert codes[target] in (None, "data_do_not_fit"), codes
        return codes[target] == "data_do_not_fit"

    lo, hi = 0.0, OFFSET  # ln(w_max - 1) = 40 - 0.5 a_min lies in here
    requests = 0
    while hi - lo > 1e-9:
        mid = (lo + hi) / 2
        requests += 1
        if refused(mid):
            lo = mid
        else:
            hi = mid
    recovered = (OFFSET - (lo + hi) / 2) / SLOPE
    truth = _youngest_treated(fed.site_dirs[target], spec)
    assert recovered == pytest.approx(truth, abs=1e-6)  # one patient's age, exactly
    assert requests <= 40
    # under require_dp, and the site's ledger barely moved
    site = fed.site_dirs[target]
    policy = load_policy(site)
    assert policy.require_dp
    spent = PrivacyLedger.from_policy(site / "ledger.jsonl", policy).spent(SPEC.study_id)
    assert spent.epsilon < 0.01  # < 1% of the template's per-study budget of 1.0
