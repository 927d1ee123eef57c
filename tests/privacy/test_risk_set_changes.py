"""The site rule on risk-set changes between grid points (fourth attack review, row M).

A non-DP Cox-type reply carries exact risk-set sums per grid time; at beta = 0 the difference
of two of them, minus the released events' covariate sums, is the covariate sum of the patients
censored (or otherwise leaving or entering) in between. Each site counts its own such changes
per interval (:func:`hemafed.privacy.disclosure.risk_set_changes`, declared per query as
``Query.risk_set_changes``) and refuses ``min_cell_size`` when one is 1 .. min_cell_size - 1.

Unit cases: each query's cells against hand counts (Cox with strata, Fine-Gray's censored and
competing exits, a start-stop switch, the concordance table's bins). Through real site
directories under the shipped template policy, the real site runtime and secure aggregation:
three sites of 200 patients whose own events come 5 to a month (the rule on ``d`` passes) and
one lone censoring each: the non-DP lattice Cox is refused ``min_cell_size``; with the rule off
it equals lifelines on the pooled rows with times rounded up to the month (rtol 1e-6); with the
lone censorings joined by four others (coarse censoring) it is answered with the rule on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from attack_sites import make_sites
from lattice_world import LATTICE_FORMULA, LATTICE_SPEC, _large_exit_cohorts

from hemafed.analytics.design import parse_formula
from hemafed.cohort.model import Cohort
from hemafed.federation.inprocess import run_in_process
from hemafed.federation.queries import get_query
from hemafed.site.audit import AuditLog
from hemafed.site.store import load_cohort
from hemafed.study.site_runtime import site_handler

GRID = [1.0, 2.0, 3.0]


def _cohort(**cols: Any) -> Cohort:
    n = len(next(iter(cols.values())))
    frame = pd.DataFrame({"patient_id": [f"p{i}" for i in range(n)], **cols})
    return Cohort(frame)


def _params(**extra: Any) -> dict[str, Any]:
    return {"design": parse_formula("age", None).to_params(), "beta": [0.0],
            "duration_col": "t", "event_col": "e", "grid": GRID, "time_mapping": "exact",
            **extra}


# the docstring's case (hemafed.privacy.disclosure.risk_set_changes): A censored at 0.5, B an
# event at 1, C censored at 1.5, D an event at 2, E censored at 2.5, F censored at 3.5
T = [0.5, 1.0, 1.5, 2.0, 2.5, 3.5]
E = [0.0, 1.0, 0.0, 1.0, 0.0, 0.0]


def test_cox_cells_are_the_censorings_per_interval_per_stratum() -> None:
    cohort = _cohort(t=T, e=E, age=[60.0] * 6, sex=["F", "F", "M", "F", "M", "M"])
    q = get_query("cox_risk_set_sums", "3")
    cells = q.risk_set_changes(cohort, _params())
    # entries: the first risk set (B..F); exits other than events: A (before t_0), C, E, F
    assert cells.tolist() == [[[5, 0, 0, 0], [1, 1, 1, 1]]]
    by_sex = q.risk_set_changes(cohort, _params(strata_col="sex", strata_levels=["F", "M"]))
    assert by_sex.tolist() == [[[2, 0, 0, 0], [1, 0, 0, 0]],   # F: A, B, D (events)
                               [[3, 0, 0, 0], [0, 1, 1, 1]]]   # M: C, E, F
    # what the cells stand for: at beta 0 the reply's own differences give C, E and F
    sums = q.run(cohort, _params(ties="breslow"))
    s1, xs = sums["s1"][0, :, 0], sums["xsum"][0, :, 0]
    assert s1[0] - s1[1] - xs[0] == pytest.approx(60.0 - 55.0)  # C, centred on 55
    assert s1[2] - xs[2] == pytest.approx(5.0)                   # F alone at risk at 3


def test_fine_gray_separates_censored_and_competing_exits() -> None:
    # times on the grid (Fine-Gray's exact mapping: every exit on the grid)
    cohort = _cohort(t1=[1.0, 2.0, 2.0, 3.0, 3.0], s1=[1.0, 0.0, 0.0, 0.0, 0.0],
                     t2=[1.0, 2.0, 2.0, 3.0, 3.0], s2=[0.0, 1.0, 0.0, 0.0, 1.0],
                     age=[50.0, 60.0, 70.0, 40.0, 65.0])
    params = {"design": parse_formula("age", None).to_params(), "beta": [0.0], "grid": GRID,
              "causes": [["t1", "s1"], ["t2", "s2"]], "cause": 1,
              "cens_surv": [1.0, 1.0, 0.5], "time_index": [0]}
    cells = get_query("finegray_sums").risk_set_changes(cohort, params)
    # group 0 (censored): everyone enters at t_0; censored at 2 (leaves between t_1 and t_2),
    # censored at 3 (still at risk at the last point); group 1 (competing): at 2 and at 3
    assert cells.tolist() == [[[3, 0, 0, 0], [0, 0, 1, 1]],
                              [[2, 0, 0, 0], [0, 0, 1, 1]]]


def test_a_start_stop_switch_is_an_exit_and_an_entry() -> None:
    # P0 switches at 1.5 and dies at 2.5 (exact: off the grid, so censored here), P1 censored
    # at 3.5 without a switch, P2 an event at 3
    cohort = _cohort(t=[2.5, 3.5, 3.0], e=[0.0, 0.0, 1.0], sw=[1.5, 9.0, 9.0],
                     sws=[1.0, 0.0, 0.0], age=[50.0, 60.0, 70.0])
    cells = get_query("cox_start_stop_sums").risk_set_changes(
        cohort, _params(switch=["sw", "sws"], beta=[0.0, 0.0]))  # age, then z
    # rows: P0 (0, 1.5] z=0 leaves between t_0 and t_1, P0 (1.5, 2.5] enters there and leaves
    # between t_1 and t_2; P1 at risk after the last point; P2's event is released
    assert cells.tolist() == [[[3, 1, 0, 0], [0, 1, 1, 1]]]


def test_the_concordance_cells_are_per_linear_predictor_bin() -> None:
    cohort = _cohort(t=T, e=E, age=[20.0, 20.0, 20.0, 100.0, 100.0, 100.0])
    params = _params(beta=[0.1], lp_bins=2)
    cells = get_query("cox_concordance_histogram").risk_set_changes(cohort, params)
    # ``later[j]`` counts the patients comparable with an event at t_j (later_count > j): bin 0
    # (age 20) holds C only (B's event at t_0 is comparable with none), then A before t_0 and C
    # between t_0 and t_1 are cells; bin 1 (age 100): D (an event, released), E, F
    assert cells.tolist() == [[[1, 0, 0, 0], [1, 1, 0, 0]], [[3, 0, 0, 0], [0, 0, 1, 1]]]


def test_iptw_weighted_risk_sets_have_the_cox_cells() -> None:
    # a censored patient's weight and treatment leave s0/s1 between grid points
    cohort = _cohort(t=T, e=E, age=[60.0] * 6, hma=[0.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    params = {"design": parse_formula("age", None).to_params(), "treatment": "hma",
              "gamma": [0.1, 0.0], "marginal": 0.5, "duration_col": "t", "event_col": "e",
              "grid": GRID, "beta": [0.2]}
    cells = get_query("iptw_cox_sums").risk_set_changes(cohort, params)
    assert cells.tolist() == [[[5, 0, 0, 0], [1, 1, 1, 1]]]


# --- through the real site runtime ----------------------------------------------------------

def _run_study(fed: Any) -> dict[str, Any]:
    config = {"spec": dict(LATTICE_SPEC.raw), "manifest": fed.manifest.to_json()}
    result = run_in_process("hemafed.study.hub:study_hub_main", site_handler,
                            fed.site_configs(), config)
    return result["analyses"][0]


def _lifelines_rounded_up(fed: Any, cox: dict[str, Any]) -> None:
    from lifelines import CoxPHFitter

    summary = pd.DataFrame(**{k: cox["tables"]["summary"][k]
                              for k in ("data", "index", "columns")})
    pooled = pd.concat([load_cohort(d).patients for d in fed.site_dirs.values()],
                       ignore_index=True).dropna(subset=[*LATTICE_FORMULA, "os_time",
                                                          "os_status"])
    frame = pooled[LATTICE_FORMULA].astype(float).copy()
    frame["T"] = np.ceil(pooled["os_time"].astype(float).to_numpy() * 12 - 1e-7) / 12
    frame["E"] = pooled["os_status"].astype(float).to_numpy()
    ref = CoxPHFitter().fit(frame, "T", "E", fit_options={"precision": 1e-14})
    np.testing.assert_allclose(summary["coef"].astype(float).to_numpy(),
                               ref.params_[LATTICE_FORMULA].to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(summary["se(coef)"].astype(float).to_numpy(),
                               ref.standard_errors_[LATTICE_FORMULA].to_numpy(), rtol=1e-6)


def _refusals(fed: Any) -> list[str]:
    return [str(e["reason"]) for d in fed.site_dirs.values()
            for e in AuditLog(d / "audit.log").entries() if "[policy:" in str(e["reason"])]


def test_a_lone_censoring_refuses_the_lattice_cox_by_rule_name(tmp_path: Path) -> None:
    fed = make_sites(tmp_path, _large_exit_cohorts(), LATTICE_SPEC)
    cox = _run_study(fed)
    assert cox["status"] == "failed"
    assert "min_cell_size" in cox["error"], cox["error"]
    assert "risk-set" not in cox["error"]  # the hub gets the rule's name, not the table
    new = _refusals(fed)
    assert len(new) == 3 and all("[policy:min_cell_size" in r and "risk-set changes" in r
                                 for r in new), new


def test_with_the_rule_off_the_same_fit_equals_lifelines(tmp_path: Path) -> None:
    fed = make_sites(tmp_path, _large_exit_cohorts(), LATTICE_SPEC, enforce_min_cell=False)
    cox = _run_study(fed)
    assert cox["status"] == "ok", cox.get("error")
    _lifelines_rounded_up(fed, cox)


def test_coarse_censoring_is_answered_with_the_rule_on(tmp_path: Path) -> None:
    """The lone censoring joined by four others of the same site in its month: every own cell
    is 0 or >= 5, the rule passes and the fit is lifelines'."""
    cohorts = _large_exit_cohorts()
    for cohort in cohorts.values():
        p = cohort.patients
        p.loc[p.index[50:55], "os_time"] = p.loc[p.index[50], "os_time"]
        p.loc[p.index[50:55], ["lfs_time", "amlt_time"]] = p.loc[p.index[50], "os_time"]
    fed = make_sites(tmp_path, cohorts, LATTICE_SPEC)
    cox = _run_study(fed)
    assert cox["status"] == "ok", cox.get("error")
    assert not _refusals(fed)
    _lifelines_rounded_up(fed, cox)
