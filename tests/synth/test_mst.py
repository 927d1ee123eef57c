"""Federated MST: federated measurements equal pooled ones, budget, fidelity and constraints.

One Private-PGM compilation per tree shape is the slow part, so the fits share fixtures and the
epsilon sweep reuses the selected tree as a fixed public structure.
"""

from __future__ import annotations

import dp_accounting
import numpy as np
import pandas as pd
import pytest

from hemafed.cohort.model import Cohort
from hemafed.federation.local import LocalSumFederation
from hemafed.synth import FederatedMST
from hemafed.synth.evaluate import marginal_tvds
from hemafed.synth.mst import maximum_spanning_tree

DELTA = 1e-6
# Fewer columns than the other tests: Private-PGM's compilation grows with the model.
MST_COLUMNS = ["age", "hb", "bm_blast", "cyto_ipssr", "os_time", "os_status", "amlt_time"]


@pytest.fixture(scope="module")
def columns() -> list[str]:
    return list(MST_COLUMNS)


@pytest.fixture(scope="module")
def fitted(mds_sites: dict[str, Cohort], columns: list[str]) -> FederatedMST:
    return FederatedMST(2.0, DELTA, columns, iters=300).fit(
        LocalSumFederation(mds_sites, dp_seed=7))


def test_federated_equals_pooled_with_same_noise(fitted: FederatedMST, mds_cohort: Cohort,
                                                 columns: list[str]) -> None:
    pooled = FederatedMST(2.0, DELTA, columns, iters=300).fit(
        LocalSumFederation({"pooled": mds_cohort}, dp_seed=7))
    # Sums of integer tables are exact, the noise stream is the same: identical releases.
    assert len(pooled.measurements) == len(fitted.measurements)
    for a, b in zip(fitted.measurements, pooled.measurements, strict=True):
        assert a.clique == b.clique and a.noise_std == b.noise_std
        assert np.array_equal(a.values, b.values)
    assert fitted.tree == pooled.tree


def test_budget_and_noise_multipliers(fitted: FederatedMST) -> None:
    priv = fitted.privacy()
    assert [r["phase"] for r in priv["releases"]] == ["one_way", "select", "two_way"]
    assert priv["rho_spent"] == pytest.approx(fitted.rho)
    assert priv["epsilon_spent"] == pytest.approx(2.0, rel=1e-6)
    # What the site ledgers charge (three Gaussian events, RDP) stays within the analyst's epsilon.
    acc = dp_accounting.rdp.RdpAccountant()
    for r in priv["releases"]:
        acc.compose(dp_accounting.GaussianDpEvent(r["noise_multiplier"]))
    assert acc.get_epsilon(DELTA) <= 2.0 * 1.001
    n_cols = len(fitted.domain.names)
    one = priv["releases"][0]
    assert one["cell_noise_std"] == pytest.approx(one["noise_multiplier"] * np.sqrt(n_cols))
    assert len(fitted.tree) == n_cols - 1
    assert set(fitted.noise_multipliers) >= {f"{a}|{b}" for a, b in fitted.tree}


def test_tree_captures_the_survival_dependence(fitted: FederatedMST) -> None:
    # os_time and amlt_time are nearly equal in MDS (censoring at last contact): strongest pair.
    best = max(fitted.selection_scores, key=lambda e: fitted.selection_scores[e])
    assert set(best) == {"os_time", "amlt_time"}


def test_samples_respect_constraints_and_seed(fitted: FederatedMST, columns: list[str]) -> None:
    s = fitted.sample(3000, seed=5)
    assert list(s.columns) == columns and len(s) == 3000
    assert (s["os_time"].dropna() >= 0).all() and (s["amlt_time"].dropna() >= 0).all()
    both = s[["os_time", "amlt_time"]].dropna()
    assert (both["amlt_time"] <= both["os_time"]).all()
    assert s["bm_blast"].dropna().between(0, 100).all()
    assert (s["os_status"].isna() == s["os_time"].isna()).all()
    pd.testing.assert_frame_equal(s, fitted.sample(3000, seed=5))
    again = FederatedMST.from_json(fitted.to_json()).sample(3000, seed=5)
    pd.testing.assert_frame_equal(s, again)


@pytest.mark.parametrize("epsilon", [1.0, 4.0])
def test_fidelity_is_reasonable(fitted: FederatedMST, mds_sites: dict[str, Cohort],
                                mds_cohort: Cohort, columns: list[str], epsilon: float) -> None:
    mst = FederatedMST(epsilon, DELTA, columns, iters=300, structure=fitted.tree).fit(
        LocalSumFederation(mds_sites, dp_seed=3))
    real = mds_cohort.patients[columns]
    synth = mst.sample(len(real), seed=1)
    tvd = marginal_tvds(real, synth, mst.domain, 2)
    # The independence baseline (each column shuffled on its own) keeps one-way marginals and
    # loses every dependence; MST must beat it on the tree's pairs.
    rng = np.random.default_rng(0)
    shuffled = pd.DataFrame({c: real[c].to_numpy()[rng.permutation(len(real))] for c in columns})
    base = marginal_tvds(real, shuffled, mst.domain, 2)
    on_tree = [tuple(sorted(e, key=columns.index)) for e in mst.tree]
    assert np.mean([tvd[e] for e in on_tree]) < np.mean([base[e] for e in on_tree])
    assert np.mean(list(tvd.values())) < min(0.15, np.mean(list(base.values())))
    one = marginal_tvds(real, synth, mst.domain, 1)
    assert max(one.values()) < 0.1


def test_maximum_spanning_tree_hand_case() -> None:
    scores = {("a", "b"): 5.0, ("a", "c"): 1.0, ("b", "c"): 4.0, ("c", "d"): 0.5,
              ("a", "d"): 3.0}
    assert maximum_spanning_tree(["a", "b", "c", "d"], scores) == [("a", "b"), ("b", "c"),
                                                                   ("a", "d")]


def test_anchor_keeps_every_covariate_outcome_pair(mds_sites: dict[str, Cohort],
                                                   mds_cohort: Cohort, columns: list[str]) -> None:
    mst = FederatedMST(4.0, DELTA, columns, iters=300, anchor="os_status").fit(
        LocalSumFederation(mds_sites, dp_seed=5))
    others = [c for c in columns if c != "os_status"]
    measured = {m.clique for m in mst.measurements if m.phase == "two_way"}
    assert {("os_status", c) for c in others} <= measured
    assert all("os_status" not in e for e in mst.tree) and len(mst.tree) == len(others) - 1
    assert mst.privacy()["epsilon_spent"] == pytest.approx(4.0, rel=1e-6)
    real = mds_cohort.patients[columns]
    synth = mst.sample(len(real), seed=2)
    both = synth[["os_time", "amlt_time"]].dropna()
    assert (both["amlt_time"] <= both["os_time"]).all()
    rng = np.random.default_rng(0)
    shuffled = pd.DataFrame({c: real[c].to_numpy()[rng.permutation(len(real))] for c in columns})
    tvd = marginal_tvds(real, synth, mst.domain, 2)
    base = marginal_tvds(real, shuffled, mst.domain, 2)
    pairs = [k for k in tvd if "os_status" in k]
    assert np.mean([tvd[k] for k in pairs]) < 0.6 * np.mean([base[k] for k in pairs])
    again = FederatedMST.from_json(mst.to_json()).sample(500, seed=3)
    pd.testing.assert_frame_equal(again, mst.sample(500, seed=3))
