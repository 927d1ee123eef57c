"""Federated histogram GBDT: federated equals pooled, accuracy against scikit-learn, Cox
gradients against the pooled partial likelihood, explanations, missing values, bad inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines.utils import concordance_index
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score

from hemafed.cohort.demo import generate
from hemafed.cohort.partition import split_sites
from hemafed.errors import InvalidInput
from hemafed.learn.features import (
    declared_bins,
    feature_matrix,
    feature_spec,
    federated_bins,
    quantile_cuts,
)
from hemafed.learn.gbdt import FederatedGBDT, Outcome, TrainingRows, cox_risk_sets, gradients
from hemafed.learn.study import pool_cohorts
from hemafed.learn.trees import TreeParams, find_split

FEATURES = ["age", "hb", "plt", "bm_blast", "gene:TP53", "gene:SF3B1", "gene:ASXL1",
            "cyto_ipssr"]


@pytest.fixture(scope="module")
def sites() -> dict:
    cohort = generate("MDS", 700, seed=11)
    return split_sites(cohort, 3, seed=2, size_skew=1.0, case_mix_shift=0.5,
                       panel_variation=True, missingness=0.2)


def _same_trees(a: FederatedGBDT, b: FederatedGBDT) -> None:
    assert len(a.trees_) == len(b.trees_)
    for ta, tb in zip(a.trees_, b.trees_, strict=True):
        assert ta.feature == tb.feature
        assert ta.threshold == tb.threshold
        assert ta.default_left == tb.default_left
        assert (ta.left, ta.right) == (tb.left, tb.right)
        np.testing.assert_allclose(ta.value, tb.value, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("objective,outcome", [
    ("binary:logistic", "os_status"), ("survival:cox", ("os_time", "os_status"))])
def test_federated_equals_pooled(make_federation, sites, objective, outcome) -> None:
    fed = make_federation(sites)
    pooled = make_federation({"pooled": pool_cohorts(sites)})
    spec = feature_spec(FEATURES)
    edges = federated_bins(fed, spec, max_bins=16)
    assert federated_bins(pooled, spec, max_bins=16) == edges
    kw = {"n_rounds": 4, "max_depth": 3, "learning_rate": 0.3}
    a = FederatedGBDT(objective, **kw).fit(fed, FEATURES, outcome, edges=edges)
    b = FederatedGBDT(objective, **kw).fit(pooled, FEATURES, outcome, edges=edges)
    _same_trees(a, b)
    assert sum(t.n_leaves for t in a.trees_) > 4  # the trees really split
    cohort = pool_cohorts(sites)
    np.testing.assert_allclose(a.predict_margin(cohort), b.predict_margin(cohort), atol=1e-9)
    # each round is max_depth histogram sums (+1 risk-set sum for Cox)
    per_round = 3 + (objective == "survival:cox")
    assert a.secure_sums_ <= 1 + kw["n_rounds"] * per_round + 1


def test_site_alone_differs_from_federated(make_federation, sites) -> None:
    """A control: training on one site's data gives a different model (the test can fail)."""
    spec = feature_spec(FEATURES)
    edges = declared_bins(spec, 16)
    fed = FederatedGBDT("survival:cox", n_rounds=3).fit(
        make_federation(sites), FEATURES, ("os_time", "os_status"), edges=edges)
    alone = FederatedGBDT("survival:cox", n_rounds=3).fit(
        make_federation({"site01": sites["site01"]}), FEATURES, ("os_time", "os_status"),
        edges=edges)
    assert any(a.value != b.value for a, b in zip(fed.trees_, alone.trees_, strict=True))


def test_logistic_auc_close_to_sklearn(make_federation) -> None:
    cohort = generate("MDS", 1600, seed=5)
    parts = split_sites(cohort, 4, seed=3, missingness=0.15)
    test_ids = set(cohort.ids[1100:])
    train = {s: c.select(~c.ids.isin(test_ids)) for s, c in parts.items()}
    test = pool_cohorts({s: c.select(c.ids.isin(test_ids)) for s, c in parts.items()})
    model = FederatedGBDT("binary:logistic", n_rounds=40, max_depth=3, learning_rate=0.1).fit(
        make_federation(train), FEATURES, "os_status")
    spec = feature_spec(FEATURES)
    pooled_train = pool_cohorts(train)
    y_train = pooled_train.patients["os_status"].astype(float).to_numpy()
    y_test = test.patients["os_status"].astype(float).to_numpy()
    hgb = HistGradientBoostingClassifier(max_iter=40, max_depth=3, learning_rate=0.1,
                                         max_bins=32, early_stopping=False, random_state=0)
    hgb.fit(feature_matrix(pooled_train, spec), y_train)
    auc_sklearn = roc_auc_score(y_test, hgb.predict_proba(feature_matrix(test, spec))[:, 1])
    auc_fed = roc_auc_score(y_test, model.predict_proba(test))
    assert auc_fed > 0.65
    assert abs(auc_fed - auc_sklearn) < 0.03


def test_cox_gradient_matches_pooled_partial_likelihood() -> None:
    """Two-step Cox round: per-patient gradient from broadcast risk sets equals the numerical
    derivative of the pooled Breslow negative log partial likelihood."""
    rng = np.random.default_rng(0)
    n, m = 40, 12
    rows = TrainingRows(np.zeros((n, 1)), (rng.random(n) < 0.6).astype(float),
                        rng.integers(0, m, n))
    f = rng.normal(0, 0.5, n)

    def loss(f: np.ndarray) -> float:
        rs = cox_risk_sets(rows, f, m)
        d, s0 = rs["d"], rs["s0"]
        return float(np.sum(np.where(d > 0, d * np.log(np.where(d > 0, s0, 1.0)), 0.0))
                     - rs["event_margin"][0])

    outcome = Outcome("survival:cox", duration_col="t", event_col="e",
                      grid=tuple(float(v) for v in range(1, m + 1)))

    def grad_hess(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rs = cox_risk_sets(rows, f, m)  # step 1: pooled risk sets, broadcast as A and B
        d, s0 = rs["d"], np.where(rs["s0"] > 0, rs["s0"], 1.0)
        risk = {"risk_a": np.cumsum(d / s0), "risk_b": np.cumsum(d / s0**2)}
        return gradients(rows, f, outcome, risk)  # step 2: per-patient, at the site

    g, h = grad_hess(f)
    eps = 1e-5
    for k in range(0, n, 7):
        up, down = f.copy(), f.copy()
        up[k] += eps
        down[k] -= eps
        assert g[k] == pytest.approx((loss(up) - loss(down)) / (2 * eps), abs=1e-6)
        assert h[k] == pytest.approx((grad_hess(up)[0][k] - grad_hess(down)[0][k]) / (2 * eps),
                                     rel=1e-5, abs=1e-8)


def test_cox_improves_c_index_and_beats_null(make_federation, sites) -> None:
    pooled = pool_cohorts(sites)
    model = FederatedGBDT("survival:cox", n_rounds=15, max_depth=2, learning_rate=0.2).fit(
        make_federation(sites), FEATURES, ("os_time", "os_status"))
    t = pooled.patients["os_time"].astype(float).to_numpy()
    e = pooled.patients["os_status"].astype(float).to_numpy()
    c = [concordance_index(t, -model.predict_margin(pooled, n_trees=k), e) for k in (1, 5, 15)]
    assert concordance_index(t, np.zeros(t.size), e) == pytest.approx(0.5)
    assert c[0] < c[1] < c[2]
    assert c[2] > 0.65
    assert all(b < a for a, b in zip(model.loss_, model.loss_[1:], strict=False))
    surv = model.predict_survival(pooled, [1.0, 3.0])
    assert np.all(np.diff(surv, axis=1) <= 0) and np.all((surv > 0) & (surv <= 1))


def test_contributions_sum_to_prediction_minus_base(make_federation, sites) -> None:
    model = FederatedGBDT("binary:logistic", n_rounds=6, max_depth=3).fit(
        make_federation(sites), FEATURES, "os_status")
    pooled = pool_cohorts(sites)
    contrib = model.contributions(pooled)
    features = contrib.drop(columns="base")
    np.testing.assert_allclose(features.sum(axis=1) + contrib["base"],
                               model.predict_margin(pooled), atol=1e-12)
    imp = model.feature_importances_
    assert (imp >= 0).all() and imp.sum() > 0
    # a feature never used for a split contributes nothing
    unused = [f for f in imp.index if imp[f] == 0]
    assert all((features[f] == 0).all() for f in unused)


def test_find_split_hand_computed_with_missing_default() -> None:
    """One feature, 3 bins + missing; missing rows look like bin 0, so they go left."""
    grad = np.array([[-4.0, 1.0, 3.0, -2.0]])
    hess = np.array([[2.0, 1.0, 2.0, 1.0]])
    params = TreeParams(max_depth=1, reg_lambda=1.0, min_child_weight=0.5)
    s = find_split(grad, hess, (3,), params)
    assert s is not None
    assert (s.feature, s.bin, s.default_left) == (0, 0, True)
    expected = 0.5 * (36 / 4 + 16 / 4 - 4 / 7)
    assert s.gain == pytest.approx(expected)
    assert (s.left_g, s.left_h, s.right_g, s.right_h) == (-6.0, 3.0, 4.0, 3.0)
    # without missing values the default direction follows the larger cover
    s2 = find_split(np.array([[-4.0, 1.0, 3.0, 0.0]]), np.array([[1.0, 1.0, 2.0, 0.0]]),
                    (3,), params)
    assert s2 is not None and s2.bin == 0 and s2.default_left is False


def test_missing_values_learn_their_direction(make_federation) -> None:
    """Patients without hb measured die more: the model sends missing hb towards higher risk."""
    cohort = generate("MDS", 600, seed=4)
    p = cohort.patients.copy()
    dead = p["os_status"].astype(bool).to_numpy()
    rng = np.random.default_rng(1)
    blank = dead & (rng.random(len(p)) < 0.7)
    p["hb"] = p["hb"].mask(blank)
    c2 = type(cohort)(p, cohort.mutations, cohort.panels)
    model = FederatedGBDT("binary:logistic", n_rounds=10, max_depth=1).fit(
        make_federation([c2]), ["hb", "age"], "os_status")
    assert model.trees_[0].feature[0] == 0
    x_missing = np.array([[np.nan, 70.0]])
    x_present = np.array([[10.0, 70.0]])
    assert model.predict_proba(x_missing)[0] > model.predict_proba(x_present)[0] + 0.1


def test_quantile_cuts_split_mass() -> None:
    counts = np.zeros(100)
    counts[[10, 20, 30, 40]] = 25
    assert quantile_cuts(counts, 0.0, 100.0, 4) == (11.0, 21.0, 31.0)
    assert quantile_cuts(np.zeros(10), 0.0, 1.0, 4) == ()


def test_bad_inputs_give_clear_errors(make_federation, sites) -> None:
    fed = make_federation(sites)
    with pytest.raises(InvalidInput, match="not a cohort schema column"):
        FederatedGBDT().fit(fed, ["age", "nonsense"], "os_status")
    with pytest.raises(InvalidInput, match="binary 0/1"):
        FederatedGBDT().fit(fed, ["hb"], "age")
    with pytest.raises(InvalidInput, match="duration_col, event_col"):
        FederatedGBDT("survival:cox").fit(fed, ["hb"], "os_status")
    with pytest.raises(InvalidInput, match="objective"):
        FederatedGBDT("multi:softmax")
    with pytest.raises(InvalidInput, match="max_depth"):
        FederatedGBDT(max_depth=0)
    with pytest.raises(InvalidInput, match="call fit"):
        FederatedGBDT().predict_margin(np.zeros((1, 1)))
    model = FederatedGBDT(n_rounds=1).fit(fed, ["hb", "age"], "os_status")
    with pytest.raises(InvalidInput, match="2 feature columns"):
        model.predict_margin(np.zeros((3, 5)))
    with pytest.raises(InvalidInput, match="predict_survival"):
        model.predict_survival(np.zeros((1, 2)), [1.0])
    assert '"kind": "gbdt"' in model.to_json()
    again = FederatedGBDT.from_json(model.to_json())  # exactly, and with no federation
    x = np.array([[10.0, 60.0], [8.5, 80.0], [np.nan, 70.0]])
    np.testing.assert_array_equal(again.predict_margin(x), model.predict_margin(x))
    assert again.to_json() == model.to_json() and "_federation" not in vars(again)
    assert repr(again) == repr(model) == "<FederatedGBDT: fitted>"
    assert isinstance(model.contributions(np.array([[10.0, 60.0]])), pd.DataFrame)


def test_declared_statistics_fit_secure_encoding(sites) -> None:
    """Every query of a fit and its evaluation declares bounds that secure aggregation can
    encode for 86 sites (LocalSumFederation already checked each site's values lie inside)."""
    from hemafed.federation.local import LocalSumFederation
    from hemafed.federation.queries import get_query
    from hemafed.learn.metrics import eval_grid, evaluate, gbdt_predictor
    from hemafed.secure.encoding import FixedPointLayout

    fed = LocalSumFederation(sites)
    model = FederatedGBDT("survival:cox", n_rounds=3, max_depth=2, learning_rate=0.5).fit(
        fed, FEATURES, ("os_time", "os_status"))
    evaluate(fed, gbdt_predictor(model), horizon=2.0, grid=eval_grid(30.0))
    names = {q for q, _ in fed.calls}
    assert {"gbdt_cox_risk_sets", "gbdt_histograms", "learn_eval_sums"} <= names
    for query, params in fed.calls:
        layout = FixedPointLayout.from_specs(get_query(query).declare(params), n_sites=86)
        assert layout is not None
