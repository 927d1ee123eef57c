"""Federated evaluation metrics against plain pooled computations (lifelines, hand formulas)."""

from __future__ import annotations

import numpy as np
import pytest
from lifelines import KaplanMeierFitter
from lifelines.utils import concordance_index

from hemafed.cohort.demo import generate
from hemafed.cohort.partition import split_sites
from hemafed.errors import InvalidInput
from hemafed.learn.gbdt import FederatedGBDT
from hemafed.learn.metrics import (
    column_predictor,
    eval_grid,
    evaluate,
    gbdt_predictor,
    ipssm_predictor,
    predict_risk,
)
from hemafed.learn.study import concordance_pairs, pool_cohorts, weighted_concordance

FEATURES = ["age", "hb", "plt", "bm_blast", "gene:TP53", "gene:SF3B1", "cyto_ipssr"]
GRID = np.asarray(eval_grid(40.0))
HORIZON = 3.0


@pytest.fixture(scope="module")
def setting() -> tuple:
    cohort = generate("MDS", 600, seed=21)
    sites = split_sites(cohort, 3, seed=4, size_skew=0.5, panel_variation=True, missingness=0.1)
    return sites, pool_cohorts(sites)


@pytest.fixture(scope="module")
def model(setting) -> FederatedGBDT:
    from hemafed.federation.local import LocalSumFederation

    sites, _ = setting
    return FederatedGBDT("survival:cox", n_rounds=6, max_depth=2, learning_rate=0.3).fit(
        LocalSumFederation(sites), FEATURES, ("os_time", "os_status"))


def _mapped(pooled) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grid-mapped times, events and grid indices, computed plainly."""
    t = pooled.patients["os_time"].astype(float).to_numpy()
    e = pooled.patients["os_status"].astype(float).to_numpy()
    idx = np.searchsorted(GRID, t - 1e-9, side="left")
    assert idx.max() < GRID.size
    return GRID[idx], e, idx


def test_c_index_matches_lifelines(make_federation, setting, model) -> None:
    sites, pooled = setting
    ev = evaluate(make_federation(sites), gbdt_predictor(model), horizon=HORIZON, grid=GRID)
    t, e, _ = _mapped(pooled)
    risk = model.predict_margin(pooled)
    reference = concordance_index(t, -risk, e)
    assert ev.n == len(pooled)
    assert ev.c_index == pytest.approx(reference, abs=3e-3)
    # the exact pairwise form used for per-site C equals lifelines to rounding
    _, _, idx = _mapped(pooled)
    comp, conc = concordance_pairs(idx, e.astype(bool), risk)
    assert weighted_concordance(comp, conc, np.ones((1, t.size)))[0] == pytest.approx(
        reference, abs=1e-12)


def test_brier_auc_calibration_match_hand_computation(make_federation, setting, model) -> None:
    sites, pooled = setting
    brier_times = [0.5, 1.0, 2.0, 3.0]
    ev = evaluate(make_federation(sites), gbdt_predictor(model), horizon=HORIZON, grid=GRID,
                  brier_times=brier_times, deciles=1)
    t, e, idx = _mapped(pooled)
    # censoring distribution: lifelines KM with censorings as events, on the mapped times
    kmf = KaplanMeierFitter().fit(t, 1 - e)

    def g_at(times: np.ndarray) -> np.ndarray:
        return kmf.survival_function_at_times(times).to_numpy()

    g_minus = np.where(idx > 0, g_at(GRID[np.maximum(idx - 1, 0)]), 1.0)
    s_grid = GRID[np.searchsorted(GRID, np.array(brier_times) + 1e-12, side="right") - 1]
    surv = model.predict_survival(pooled, s_grid)
    bs = []
    for k, s in enumerate(s_grid):
        dead = (t <= s) & (e == 1)
        alive = t > s
        bs.append(np.mean(np.where(dead, surv[:, k] ** 2 / g_minus, 0.0)
                          + np.where(alive, (1 - surv[:, k]) ** 2 / g_at(np.array([s]))[0], 0.0)))
    np.testing.assert_allclose(ev.brier.to_numpy(), bs, rtol=1e-9)
    ibs = np.trapezoid(bs, s_grid) / (s_grid[-1] - s_grid[0])
    assert ev.integrated_brier == pytest.approx(ibs, rel=1e-9)
    # cumulative/dynamic AUC (Uno's IPCW estimator), pairwise
    risk = model.predict_margin(pooled)
    case = (t <= HORIZON) & (e == 1)
    control = t > HORIZON
    w = 1.0 / g_minus[case]
    rc, rn = risk[case][:, None], risk[control][None, :]
    score = (rc > rn) + 0.5 * (rc == rn)
    auc = float(np.sum(w[:, None] * score) / (w.sum() * control.sum()))
    assert ev.auc == pytest.approx(auc, abs=3e-3)
    # calibration with one group: observed = 1 - KM(horizon), predicted = mean 1 - S(horizon)
    km = KaplanMeierFitter().fit(t, e)
    cal = ev.calibration
    assert cal["n"].iloc[0] == len(pooled)
    assert cal["observed"].iloc[0] == pytest.approx(
        1 - km.survival_function_at_times([HORIZON]).iloc[0], rel=1e-9)
    assert cal["predicted"].iloc[0] == pytest.approx(
        np.mean(1 - model.predict_survival(pooled, [HORIZON])[:, 0]), rel=1e-9)


def test_deciles_and_published_score(make_federation, setting) -> None:
    sites, pooled = setting
    fed = make_federation(sites)
    ev = evaluate(fed, ipssm_predictor(), horizon=HORIZON, grid=GRID)
    score = predict_risk(pooled, ipssm_predictor())
    ok = ~np.isnan(score)
    t, e, _ = _mapped(pooled)
    assert ev.n == int(ok.sum())
    assert ev.c_index == pytest.approx(concordance_index(t[ok], -score[ok], e[ok]), abs=3e-3)
    assert ev.c_index > 0.6
    cal = ev.calibration
    assert len(cal) >= 8 and cal["n"].sum() == ev.n
    assert np.isnan(ev.integrated_brier) and cal["predicted"].isna().all()
    # observed risk rises from the lowest to the highest IPSS-M decile
    assert cal["observed"].iloc[-1] > cal["observed"].iloc[0] + 0.2


def test_bad_metric_inputs(make_federation, setting) -> None:
    sites, _ = setting
    fed = make_federation(sites)
    with pytest.raises(InvalidInput, match="horizon"):
        evaluate(fed, ipssm_predictor(), horizon=100.0, grid=GRID)
    with pytest.raises(InvalidInput, match="predictor"):
        evaluate(fed, {"kind": "magic"}, grid=GRID)
    with pytest.raises(InvalidInput, match="not in the site's cohort"):
        evaluate(fed, column_predictor("no_such_column", 0, 1), grid=GRID)
