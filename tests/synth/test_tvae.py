"""The local tabular VAE: schema and clinical constraints, determinism, fidelity against an
independent-columns baseline, the membership-inference gate, and DP-SGD accounting."""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch")
pytest.importorskip("opacus")

from hemafed.cohort.model import Cohort
from hemafed.errors import BudgetExhausted, InvalidInput
from hemafed.synth.evaluate import evaluate
from hemafed.synth.tvae import TabularVAESynthesizer

SMALL: dict[str, Any] = {"latent_dim": 8, "hidden": (64, 64), "batch_size": 200, "learning_rate": 3e-3}


@pytest.fixture(scope="module")
def train(mds_cohort: Cohort, columns: list[str]) -> pd.DataFrame:
    return mds_cohort.patients[columns].iloc[:1000].reset_index(drop=True)


@pytest.fixture(scope="module")
def fitted(train: pd.DataFrame) -> TabularVAESynthesizer:
    return TabularVAESynthesizer(epochs=150, seed=0, **SMALL).fit(train)


def test_output_schema_dtypes_and_clinical_constraints(fitted: TabularVAESynthesizer,
                                                       train: pd.DataFrame) -> None:
    synth = fitted.sample(2000, seed=1)
    assert list(synth.columns) == list(train.columns)
    assert synth.dtypes.to_dict() == train.dtypes.to_dict()
    for col in ("sex", "cyto_ipssr", "os_status", "amlt_status"):
        assert set(synth[col].dropna()) <= set(train[col].dropna()), col
    for col in ("age", "hb", "bm_blast", "os_time", "amlt_time"):
        x = synth[col].dropna()
        # Decoded through the training quantile table: never outside the observed range.
        assert x.min() >= train[col].min() and x.max() <= train[col].max(), col
    assert synth["bm_blast"].between(0, 100).all()
    assert (synth[["os_time", "amlt_time"]] >= 0).all().all()
    both = synth[["os_time", "amlt_time"]].dropna()
    assert (both["amlt_time"] <= both["os_time"]).all()
    assert (synth["os_status"].isna() == synth["os_time"].isna()).all()
    # Recorded precision is kept (age and blasts to the decimals seen in training).
    assert np.allclose(synth["bm_blast"].to_numpy(float), synth["bm_blast"].to_numpy(float)
                       .round(1))


def test_missingness_and_integer_columns_are_reproduced() -> None:
    rng = np.random.default_rng(5)
    n = 600
    hb = rng.normal(10, 2, n).round(1)
    frame = pd.DataFrame({
        "hb": pd.array(np.where(rng.random(n) < 0.25, np.nan, hb), dtype="Float64"),
        "count": rng.poisson(4, n).astype("int64"),
        "grade": pd.array(rng.choice(np.array(["a", "b", None], dtype=object), n,
                                     p=[0.5, 0.3, 0.2]), dtype="string"),
    })
    synth = TabularVAESynthesizer(epochs=40, seed=1, **SMALL).fit(
        frame).sample(3000, seed=0)
    assert synth["hb"].isna().mean() == pytest.approx(0.25, abs=0.06)
    assert synth["grade"].isna().mean() == pytest.approx(0.2, abs=0.06)
    assert set(synth["grade"].dropna()) <= {"a", "b"}
    assert str(synth["count"].dtype) == "int64"
    assert synth["count"].mean() == pytest.approx(frame["count"].mean(), abs=0.5)


def test_deterministic_by_seed(fitted: TabularVAESynthesizer, train: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(fitted.sample(300, seed=3), fitted.sample(300, seed=3))
    assert not fitted.sample(300, seed=3).equals(fitted.sample(300, seed=4))
    small = train.iloc[:300]
    a = TabularVAESynthesizer(epochs=3, seed=7, **SMALL).fit(small)
    b = TabularVAESynthesizer(epochs=3, seed=7, **SMALL).fit(small)
    c = TabularVAESynthesizer(epochs=3, seed=8, **SMALL).fit(small)
    assert a.loss_history_ == b.loss_history_
    pd.testing.assert_frame_equal(a.sample(200, seed=0), b.sample(200, seed=0))
    assert not a.sample(200, seed=0).equals(c.sample(200, seed=0))


def test_fidelity_beats_independent_columns_and_passes_mia_gate(
        fitted: TabularVAESynthesizer, train: pd.DataFrame, holdout: pd.DataFrame) -> None:
    rng = np.random.default_rng(0)
    independent = pd.DataFrame({c: train[c].to_numpy()[rng.permutation(len(train))]
                                for c in train.columns}).astype(train.dtypes.to_dict())
    base = evaluate(train, independent, holdout)
    rep = evaluate(train, fitted.sample(2000, seed=2), holdout)
    # The baseline has exact one-way marginals: all of its 2-way error is lost dependence.
    assert base.fidelity["tvd_1way_mean"] == 0
    assert rep.fidelity["tvd_2way_mean"] < base.fidelity["tvd_2way_mean"] - 0.015
    assert rep.fidelity["corr_diff_mean"] < base.fidelity["corr_diff_mean"]
    assert rep.fidelity["tvd_1way_mean"] < 0.06
    assert rep.utility["c_index_tstr"] > 0.6
    assert rep.privacy["mia_auc"] <= 0.6
    assert rep.privacy["exact_match_rate"] < 0.01


def test_dp_sgd_reports_epsilon_and_charges_first(train: pd.DataFrame) -> None:
    charges: list[tuple[float, float]] = []
    model = TabularVAESynthesizer(epochs=4, seed=0, dp=(2.0, 1e-5, 1.0),
                                  charge=lambda e, d: charges.append((e, d)),
                                  **SMALL).fit(train)
    assert model.epsilon_ is not None and model.noise_multiplier_ is not None
    assert abs(model.epsilon_ - 2.0) <= 0.2
    assert model.noise_multiplier_ > 0
    assert len(charges) == 1
    assert charges[0][0] == pytest.approx(model.epsilon_, rel=1e-9)
    assert charges[0][1] == 1e-5
    synth = model.sample(500, seed=0)
    assert list(synth.columns) == list(train.columns)
    assert synth["bm_blast"].between(0, 100).all()


def test_refused_charge_stops_before_training(train: pd.DataFrame) -> None:
    def refuse(epsilon: float, delta: float) -> None:
        raise BudgetExhausted("site-a", f"epsilon {epsilon:.2f} exceeds the study budget")

    model = TabularVAESynthesizer(epochs=2, dp=(1.0, 1e-5, 1.0), charge=refuse,
                                  **SMALL)
    with pytest.raises(BudgetExhausted):
        model.fit(train)
    assert model.loss_history_ == []
    with pytest.raises(InvalidInput, match="call fit"):
        model.sample(10)


def test_invalid_settings_and_missing_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidInput, match="epsilon"):
        TabularVAESynthesizer(dp=(math.inf, 1e-5, 1.0))
    with pytest.raises(InvalidInput, match="charge"):
        TabularVAESynthesizer(charge=lambda e, d: None)
    with pytest.raises(InvalidInput, match="epochs"):
        TabularVAESynthesizer(epochs=0)
    with pytest.raises(InvalidInput, match=">= 10 rows"):
        TabularVAESynthesizer().fit(pd.DataFrame({"hb": [1.0, 2.0]}))
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(InvalidInput, match=r"pip install 'hemafed\[torch\]'"):
        TabularVAESynthesizer()
