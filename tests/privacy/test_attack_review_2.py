"""Regression tests of the six holes the second attack review found (issue 13): each attack of
the review, replayed through real site directories under the shipped policy template, the real
site node and secure aggregation, is now refused by the plan, or answered without the leak.

A: the IPTW weight cap is the spec's and truncates (a site never refuses on its own weights);
B: the robust-variance queries' declared DP sensitivity holds for any pooled arrays the hub sends;
C: the imaging screen's features and bounds are the spec's, and values are checked against them;
D: the imaging site handler is the standard site runtime (participant-set guard);
E: the mixed model's bounds and ``max_obs`` are the spec's;
F: every column a request names (IPTW treatment, illness-death columns ...) is pinned.
"""

from __future__ import annotations

import math
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from attack_sites import Probe, make_sites

from hemafed.analytics.design import (
    DesignSpec,
    complete_case_mask,
    design_values,
    parse_formula,
)
from hemafed.analytics.mixed import import_measurements
from hemafed.analytics.multistate import illness_death_paths
from hemafed.analytics.weighting_queries import propensity_weights
from hemafed.cohort.demo import generate
from hemafed.cohort.model import Cohort
from hemafed.cohort.partition import split_sites
from hemafed.demo import LocalSites, on_day_lattice
from hemafed.errors import HemafedError, InvalidInput
from hemafed.federation.api import DPRequest
from hemafed.federation.inprocess import run_in_process
from hemafed.federation.queries import get_query
from hemafed.imaging.runtime import imaging_site_handler, load_imaging_queries
from hemafed.privacy.calibration import release_sensitivity
from hemafed.secure import SecureSumSession
from hemafed.secure.hub import SumOutcome
from hemafed.site.request import SiteRequest
from hemafed.site.store import load_cohort
from hemafed.study.site_runtime import longitudinal_site_handler
from hemafed.study.spec import StudySpec


def _without(cohort: Cohort, i: int) -> Cohort:
    p = cohort.patients
    return Cohort(p.drop(p.index[i]).reset_index(drop=True), cohort.mutations, cohort.panels)


def _l2(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    return math.sqrt(sum(float(np.sum((a[k] - b[k]) ** 2)) for k in a))


FORMULA = "age + hb + sex"
DESIGN = parse_formula(FORMULA, None).to_params()
CAP = 20.0
SPEC = StudySpec.from_mapping(
    {
        "study_id": "ar2",
        "requester": "r",
        "analyses": [
            {
                "id": "hma",
                "kind": "iptw",
                "treatment": "hma",
                "formula": FORMULA,
                "max_weight": CAP,
            },
            {"id": "ms", "kind": "multistate"},
        ],
    }
)


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> LocalSites:
    cohorts = split_sites(on_day_lattice(generate("MDS", 240, 5)), 3, 5)
    return make_sites(tmp_path_factory.mktemp("ar2"), cohorts, SPEC, require_dp=False)


# --- A: the IPTW weight cap ------------------------------------------------------------------


def _balance(gamma: list[float], cap: Any) -> dict[str, Any]:
    return {
        "design": DESIGN,
        "treatment": "hma",
        "gamma": gamma,
        "marginal": 1.0,
        "max_weight": cap,
    }


def test_a_iptw_cap_is_pinned_and_weights_are_truncated_not_refused(sites: LocalSites) -> None:
    hub = Probe(sites, SPEC.study_id, SPEC.sha256)
    spec = DesignSpec.from_params(DESIGN)
    slope_gamma = [[-40.0] + [s if n == "age" else 0.0 for n in spec.names] for s in (0.5, 0.55)]
    # the bisection's moving cap is outside the plan at every site
    _, codes = hub.send("iptw_balance", _balance(slope_gamma[0], 1.0 + math.exp(7.5)))
    assert codes == {"outside_plan"}
    # at the spec's cap, the attacker's coefficients give weights far above it: truncated,
    # so no site refuses on its own youngest treated patient whatever gamma the hub moves
    for gamma in slope_gamma:
        outcome, codes = hub.send("iptw_balance", _balance(gamma, CAP))
        assert isinstance(outcome, SumOutcome), outcome
        assert codes == {None}
        expected = 0.0
        for d in sites.site_dirs.values():
            cohort = load_cohort(d)
            x = design_values(cohort, spec)
            a = cohort.patients["hma"].astype("Float64").to_numpy(dtype=float, na_value=np.nan)
            rows = complete_case_mask(cohort, spec, values=x) & ~np.isnan(a)
            w = propensity_weights(x[rows], a[rows], np.asarray(gamma), 1.0)
            assert w.max() > CAP  # the attack's weights do exceed the cap
            expected += float(np.minimum(w, CAP)[a[rows] == 1].sum())
        assert outcome.values["sw"][1] == pytest.approx(expected, rel=1e-9)
    # coefficients beyond the plan's bound are refused too
    _, codes = hub.send("iptw_balance", _balance([1e4] + [0.0] * spec.width, CAP))
    assert codes == {"outside_plan"}


# --- B: DP sensitivity of the robust-variance queries ----------------------------------------


def test_b_iptw_km_influence_sensitivity_holds_for_hub_arrays(sites: LocalSites) -> None:
    m, y, h = 366, 0.1, 1e-3  # daily grid over the first year
    y_w, d_w = np.full((2, m), y), np.full((2, m), y * h)  # the review's tiny weight at risk
    params = {
        "design": DESIGN,
        "treatment": "hma",
        "gamma": [0.0] * 4,
        "marginal": 1.0,
        "max_weight": CAP,
        "duration_col": "os_time",
        "event_col": "os_status",
        "grid": [t / 365.25 for t in range(1, m + 1)],
        "time_mapping": "exact",
        "w_events": d_w.tolist(),
        "w_at_risk": y_w.tolist(),
    }
    query = get_query("iptw_km_influence")
    declared = release_sensitivity(query.declare(params))
    worst = 0.0
    for d in sites.site_dirs.values():
        cohort = load_cohort(d)
        full = query.run(cohort, params)
        p = cohort.patients
        died = (p["os_status"].astype(bool) & (p["os_time"] <= 1.0)).to_numpy()
        for i in np.flatnonzero(died)[:3]:
            worst = max(worst, _l2(full, query.run(_without(cohort, int(i)), params)))
    assert 0 < worst <= declared * (1 + 1e-9)  # was ~400 times the declared sensitivity
    outcome, codes = Probe(sites, SPEC.study_id, SPEC.sha256).send(
        "iptw_km_influence", params, dp=DPRequest(0.5, 1e-6)
    )
    assert isinstance(outcome, SumOutcome), outcome
    assert codes == {None}


def test_b_illness_death_influence_sensitivity_holds_for_hub_arrays(sites: LocalSites) -> None:
    grid = [day / 365.25 for day in range(1, 12 * 366)]
    m = len(grid)
    cohorts = [load_cohort(d) for d in sites.site_dirs.values()]
    paths = [illness_death_paths(c, {}) for c in cohorts]
    first = min(float(np.min(p.t0[p.to > 0])) for p in paths)
    j = int(np.argmin(np.abs(np.asarray(grid) - first)))
    at_risk = np.full((2, m), 1e9)
    at_risk[0, j] = 2e-3  # the review's tiny pooled count at risk
    params = {"grid": grid, "at_risk": at_risk.tolist(), "transitions": np.zeros((3, m)).tolist()}
    query = get_query("illness_death_influence")
    declared = release_sensitivity(query.declare(params))
    worst = 0.0
    for cohort, p in zip(cohorts, paths, strict=True):
        movers = np.flatnonzero((p.to > 0) & (np.abs(p.t0 - grid[j]) < 1e-9))
        if movers.size:
            full = query.run(cohort, params)
            worst = max(worst, _l2(full, query.run(_without(cohort, int(movers[0])), params)))
    assert 0 < worst <= declared  # was ~1000 times the declared sensitivity


# --- F: columns under every key --------------------------------------------------------------


def test_f_unplanned_columns_are_refused(sites: LocalSites) -> None:
    hub = Probe(sites, SPEC.study_id, SPEC.sha256)
    balance = {
        "design": DESIGN,
        "treatment": "transplant",
        "gamma": [0.0] * 4,
        "marginal": 1.0,
        "max_weight": CAP,
    }
    _, codes = hub.send("iptw_balance", balance)
    assert codes == {"outside_plan"}
    grid = [day / 365.25 for day in range(1, 12 * 366)]
    counts = {"grid": grid, "exit_time": "lfs_time", "exit_status": "lfs_status"}
    _, codes = hub.send("illness_death_counts", counts)
    assert codes == {"outside_plan"}
    # the planned one passes the plan (the template's min-cell rule may still refuse this
    # non-DP table of small virtual cohorts: that is the disclosure rule, not the plan)
    outcome, codes = hub.send("illness_death_counts", {"grid": grid})
    assert "outside_plan" not in codes, codes
    assert isinstance(outcome, SumOutcome) or codes <= {None, "policy"}, codes


# --- C: the imaging screen -------------------------------------------------------------------

IMAGING_SPEC = StudySpec.from_mapping(
    {
        "study_id": "ar2-screen",
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


def test_c_imaging_screen_features_and_bounds_are_pinned(tmp_path: Path) -> None:
    load_imaging_queries()
    fed = make_sites(
        tmp_path, split_sites(generate("MDS", 240, 5), 3, 5), IMAGING_SPEC, require_dp=True
    )
    hub = Probe(fed, IMAGING_SPEC.study_id, IMAGING_SPEC.sha256)
    dp = DPRequest(0.5, 1e-6)
    review = {
        "features": ["age"],
        "outcome": "os_status",
        "bounds": {"age": [0.0, 1.0]},
        "max_patients": 1_000_000,
    }
    _, codes = hub.send("imaging_screen", review, dp=dp)
    assert codes == {"outside_plan"}  # not an imaging feature of the spec
    tiny = {**review, "features": ["firstorder_mean"], "bounds": {"firstorder_mean": [0, 1]}}
    _, codes = hub.send("imaging_screen", tiny, dp=dp)
    assert codes == {"outside_plan"}  # not the spec's bounds
    # and the site checks its values against the bounds it declares from (nothing clipped)
    with pytest.raises(InvalidInput, match="outside its declared bounds"):
        get_query("imaging_screen").run(load_cohort(next(iter(fed.site_dirs.values()))), review)


# --- D: the imaging site handler -------------------------------------------------------------

DESCRIBE = StudySpec.from_mapping(
    {
        "study_id": "ar2-img",
        "requester": "r",
        "analyses": [{"id": "d", "kind": "describe", "columns": ["age"]}],
    }
)
MOMENTS = {"column": "age", "low": 0.0, "high": 110.0}


def _moments(fed: LocalSites, sites: list[str]) -> Any:
    request = SiteRequest(
        uuid.uuid4().hex,
        DESCRIBE.study_id,
        DESCRIBE.sha256,
        "moments",
        "1",
        dict(MOMENTS),
        "hub",
        None,
        1,
        True,
    )
    configs = [c for c in fed.site_configs() if c["site_id"] in sites]
    out: list[Any] = []

    def hub(exchange: Any, site_ids: list[str], config: dict[str, Any]) -> None:
        try:
            out.append(
                SecureSumSession(exchange, fed.manifest, site_ids).secure_sum(
                    os.urandom(16),
                    request.to_json(),
                    get_query("moments").declare(MOMENTS),
                    quorum=len(site_ids),
                )
            )
        except HemafedError as exc:
            out.append(exc)

    run_in_process(hub, imaging_site_handler, configs, {}, raise_errors=True)
    return out[0]


def test_d_imaging_handler_refuses_a_second_participant_list(tmp_path: Path) -> None:
    fed = make_sites(tmp_path, split_sites(generate("MDS", 240, 5), 4, 5), DESCRIBE)
    everyone = sorted(fed.site_dirs)
    assert isinstance(_moments(fed, everyone), SumOutcome)
    assert isinstance(_moments(fed, everyone[1:]), HemafedError)  # no difference attack


# --- E: the mixed model's bounds and visit cap -----------------------------------------------

LMM_BOUNDS = {"hb_m": [0.0, 25.0], "time": [0.0, 10.0], "age": [0.0, 110.0]}
LMM_SPEC = StudySpec.from_mapping(
    {
        "study_id": "ar2-lmm",
        "requester": "r",
        "analyses": [
            {
                "id": "lmm",
                "kind": "lmm",
                "outcome": "hb_m",
                "time": "time",
                "covariates": ["age"],
                "bounds": LMM_BOUNDS,
            }
        ],
    }
)


def _lmm(bounds: dict[str, list[float]], max_obs: int = 50) -> dict[str, Any]:
    return {
        "outcome": "hb_m",
        "time": "time",
        "covariates": ["age"],
        "bounds": bounds,
        "theta": [1.0, 0.0, 1.0],
        "max_obs": max_obs,
    }


def test_e_lmm_bounds_and_max_obs_are_pinned(tmp_path: Path) -> None:
    cohorts = split_sites(generate("MDS", 150, 5), 3, 5)
    fed = make_sites(tmp_path, cohorts, LMM_SPEC, require_dp=False)
    rng = np.random.default_rng(7)
    for s, c in cohorts.items():
        rows = [
            {"patient_id": pid, "time": 0.25 * v, "hb_m": float(rng.normal(10, 1.5))}
            for pid in c.patients["patient_id"]
            for v in range(int(rng.integers(2, 9)))
        ]
        import_measurements(fed.site_dirs[s], pd.DataFrame(rows), LMM_SPEC.study_id)
    for config in fed.site_configs():
        longitudinal_site_handler(config)
    hub = Probe(fed, LMM_SPEC.study_id, LMM_SPEC.sha256)
    _, codes = hub.send("lmm_reml_sums", _lmm(LMM_BOUNDS))
    assert codes == {None}  # the planned request
    _, codes = hub.send("lmm_reml_sums", _lmm({**LMM_BOUNDS, "hb_m": [0.0, 12.5]}))
    assert codes == {"outside_plan"}  # the bisection's first step
    _, codes = hub.send("lmm_reml_sums", _lmm(LMM_BOUNDS, max_obs=32))
    assert codes == {"outside_plan"}
