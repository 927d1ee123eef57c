"""Hole: the robust-variance queries declare their DP sensitivity from "pooled" arrays that the
hub sends and the site cannot check, while the site's computation divides by those same arrays.

``iptw_km_influence`` bounds a patient's influence step by ``min(1, w_max / Y_w)`` and
``illness_death_influence`` by ``4 / max(Y, 1)``, but both compute with ``1 / Y``. A hub that sends
a tiny ``Y`` at one grid time (and a huge one elsewhere, which keeps the declared bound small)
multiplies one patient's real contribution by ``1 / Y**2`` while the declared sensitivity stays
put: a DP release at epsilon = 0.5, accepted and charged by sites whose policy says
``require_dp: true``, carries noise hundreds of times smaller than one patient's effect, and
gives the pooled count of deaths (or transitions) at that time exactly. The declared
bound ``high`` is ``max_patients`` times larger than one patient's term, so nothing is refused.

Each test measures the real L2 change when one patient is removed against the declared
sensitivity, then runs the DP release through real site directories, the real site node and
secure aggregation.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from redteam_hub import Probe, make_sites

from hemafed.analytics.design import parse_formula
from hemafed.analytics.multistate import illness_death_paths
from hemafed.cohort.demo import generate
from hemafed.cohort.model import Cohort
from hemafed.cohort.partition import split_sites
from hemafed.demo import on_day_lattice
from hemafed.federation.api import DPRequest
from hemafed.federation.queries import get_query
from hemafed.privacy.calibration import release_sensitivity
from hemafed.secure.hub import SumOutcome
from hemafed.site.ledger import PrivacyLedger
from hemafed.site.store import load_cohort, load_policy
from hemafed.study.spec import StudySpec

pytestmark = pytest.mark.redteam

FORMULA = "age + hb + sex"
SPEC = StudySpec.from_mapping(
    {
        "study_id": "rt-dp",
        "requester": "r",
        "analyses": [
            {"id": "hma", "kind": "iptw", "treatment": "hma", "formula": FORMULA},
            {"id": "ms", "kind": "multistate"},
        ],
    }
)
DP = DPRequest(0.5, 1e-6)  # two such releases fit the template's per-study epsilon 1.0


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Any:
    cohorts = split_sites(on_day_lattice(generate("MDS", 240, 5)), 3, 5)
    return make_sites(tmp_path_factory.mktemp("rt-dp"), cohorts, SPEC, require_dp=True)


def _without(cohort: Cohort, i: int) -> Cohort:
    p = cohort.patients
    return Cohort(p.drop(p.index[i]).reset_index(drop=True), cohort.mutations, cohort.panels)


def _l2(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    return math.sqrt(sum(float(np.sum((a[k] - b[k]) ** 2)) for k in a))


def _charged(site_dir: Path) -> float:
    policy = load_policy(site_dir)
    assert policy.require_dp
    return PrivacyLedger.from_policy(site_dir / "ledger.jsonl", policy).spent(SPEC.study_id).epsilon


def test_iptw_km_influence_at_epsilon_half_gives_exact_death_counts(sites: Any) -> None:
    m, y, h, w = 12, 0.1, 1e-3, 2.0  # gamma = 0: every weight is 2
    y_w, d_w = np.full((2, m), 1e9), np.zeros((2, m))
    y_w[:, 0], d_w[:, 0] = y, y * h  # the only step: the first year
    params = {
        "design": parse_formula(FORMULA, None).to_params(),
        "treatment": "hma",
        "gamma": [0.0] * 4,
        "marginal": 1.0,
        "duration_col": "os_time",
        "event_col": "os_status",
        "grid": [float(t) for t in range(1, m + 1)],
        "time_mapping": "up",
        "w_events": d_w.tolist(),
        "w_at_risk": y_w.tolist(),
    }
    query = get_query("iptw_km_influence")
    declared = release_sensitivity(query.declare(params))
    unit = (w * (1 - h) / y) ** 2  # a death in the first year adds this to every entry

    # the real L2 change from removing one patient who died in the first year
    truth = np.zeros(2)
    worst, deaths = 0.0, 0
    for d in sites.site_dirs.values():
        cohort = load_cohort(d)
        full = query.run(cohort, params)
        truth += full["influence_sq"][:, 0]
        p = cohort.patients
        complete = p[["age", "hb", "sex", "hma"]].notna().all(axis=1)
        died = (p["os_status"].astype(bool) & (p["os_time"] <= 1.0) & complete).to_numpy()
        deaths += int(died.sum())
        early = np.flatnonzero(died)
        worst = max(worst, _l2(full, query.run(_without(cohort, int(early[0])), params)))
    assert worst / declared > 300  # the declared sensitivity is ~400 times too small

    hub = Probe(sites, SPEC.study_id, SPEC.sha256)
    outcome, codes = hub.send("iptw_km_influence", params, dp=DP)
    assert isinstance(outcome, SumOutcome), outcome  # accepted under require_dp, epsilon 0.5
    assert set(codes.values()) == {None}
    released = outcome.values["influence_sq"][:, 0]
    # the hub reads the pooled number of first-year deaths per arm, exactly
    np.testing.assert_array_equal(np.rint(released / unit), np.rint(truth / unit))
    assert np.all(np.abs(released - truth) < unit / 4)
    assert np.rint(truth / unit).sum() == deaths
    for d in sites.site_dirs.values():
        assert _charged(d) >= 0.49  # charged as a full epsilon-0.5 release


def test_illness_death_influence_at_epsilon_half_gives_exact_transition_counts(sites: Any) -> None:
    grid = [day / 365.25 for day in range(1, 12 * 366)]  # every day: transitions lie on it
    m, y = len(grid), 2e-3
    first = min(
        float(
            np.min(
                illness_death_paths(load_cohort(d), {}).t0[
                    illness_death_paths(load_cohort(d), {}).to > 0
                ]
            )
        )
        for d in sites.site_dirs.values()
    )
    j = int(np.argmin(np.abs(np.asarray(grid) - first)))
    at_risk = np.full((2, m), 1e9)
    at_risk[0, j] = y
    params = {"grid": grid, "at_risk": at_risk.tolist(), "transitions": np.zeros((3, m)).tolist()}
    query = get_query("illness_death_influence")
    declared = release_sensitivity(query.declare(params))

    truth = 0
    worst = 0.0
    for d in sites.site_dirs.values():
        cohort = load_cohort(d)
        paths = illness_death_paths(cohort, {})
        movers = np.flatnonzero((paths.to > 0) & (np.abs(paths.t0 - grid[j]) < 1e-9))
        truth += movers.size
        if movers.size:
            full = query.run(cohort, params)
            # paths keep the cohort's row order (no patient is excluded in the demo cohort)
            assert paths.excluded == 0
            worst = max(worst, _l2(full, query.run(_without(cohort, int(movers[0])), params)))
    assert truth >= 1
    assert worst / declared > 1000

    hub = Probe(sites, SPEC.study_id, SPEC.sha256)
    outcome, codes = hub.send("illness_death_influence", params, dp=DP)
    assert isinstance(outcome, SumOutcome), outcome
    assert set(codes.values()) == {None}
    # state 0's entry at that day is (number of patients leaving state 0 then) / y**2
    assert round(float(outcome.values["influence_sq"][j, 0]) * y * y) == truth
