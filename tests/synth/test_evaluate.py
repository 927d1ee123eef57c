"""Evaluation metrics on cases with known answers, and the local Gaussian copula."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from hemafed.cohort.model import Cohort
from hemafed.synth.copula import GaussianCopulaSynthesizer
from hemafed.synth.evaluate import EvaluationReport, evaluate


@pytest.fixture(scope="module")
def train(mds_cohort: Cohort, columns: list[str]) -> pd.DataFrame:
    return mds_cohort.patients[columns].iloc[:1000].reset_index(drop=True)


@pytest.fixture(scope="module")
def copy_report(train: pd.DataFrame, holdout: pd.DataFrame) -> EvaluationReport:
    return evaluate(train, train.copy(), holdout)


def test_copy_of_training_data_is_a_privacy_failure(copy_report: EvaluationReport) -> None:
    r = copy_report
    assert r.fidelity["tvd_2way_max"] == 0 and r.fidelity["km_max_diff_os"] == 0
    assert r.privacy["dcr_synthetic_median"] == 0
    assert r.privacy["mia_auc"] > 0.9
    assert r.privacy["exact_match_rate"] > 0.5
    assert not r.passes()
    assert any("mia_auc" in f for f in r.failures())
    assert r.utility["c_index_tstr"] == pytest.approx(r.utility["c_index_trtr"])


def test_independent_noise_has_low_fidelity(train: pd.DataFrame, holdout: pd.DataFrame,
                                            copy_report: EvaluationReport) -> None:
    rng = np.random.default_rng(1)
    n = len(train)
    noise = pd.DataFrame({
        "age": pd.array(rng.uniform(0, 110, n).round(), dtype="Float64"),
        "sex": pd.array(rng.choice(["M", "F"], n), dtype="string"),
        "hb": pd.array(rng.uniform(2, 25, n).round(1), dtype="Float64"),
        "bm_blast": pd.array(rng.uniform(0, 100, n).round(), dtype="Float64"),
        "cyto_ipssr": pd.array(rng.choice(["Very Good", "Good", "Intermediate", "Poor",
                                           "Very Poor"], n), dtype="string"),
        "os_time": pd.array(rng.uniform(0, 20, n), dtype="Float64"),
        "os_status": pd.array(rng.random(n) < 0.5, dtype="boolean"),
        "amlt_time": pd.array(rng.uniform(0, 20, n), dtype="Float64"),
        "amlt_status": pd.array(rng.random(n) < 0.5, dtype="boolean"),
    })
    r = evaluate(train, noise, holdout)
    assert r.fidelity["tvd_1way_mean"] > 0.3
    assert r.fidelity["tvd_2way_mean"] > 0.4
    assert r.fidelity["km_max_diff_os"] > 0.2
    assert r.utility["c_index_tstr"] < r.utility["c_index_trtr"] - 0.05
    # Noise sits far from every patient: no membership signal.
    assert abs(r.privacy["mia_auc"] - 0.5) < 0.06
    assert r.privacy["exact_match_rate"] == 0


def test_gaussian_copula_is_faithful_and_passes_the_gate(train: pd.DataFrame,
                                                         holdout: pd.DataFrame) -> None:
    synth = GaussianCopulaSynthesizer(seed=0).fit(train).sample(1000, seed=2)
    assert list(synth.columns) == list(train.columns)
    both = synth[["os_time", "amlt_time"]].dropna()
    assert (both["amlt_time"] <= both["os_time"]).all()
    r = evaluate(train, synth, holdout)
    assert r.fidelity["tvd_1way_mean"] < 0.06
    assert r.fidelity["corr_diff_mean"] < 0.1
    assert r.fidelity["km_max_diff_os"] < 0.1
    assert r.utility["c_index_tstr"] > 0.6
    assert r.privacy["mia_auc"] < 0.6
    assert r.passes({"max_mia_auc": 0.6, "max_exact_match_rate": 0.01})
    frame = r.to_frame()
    assert set(frame["section"]) == {"fidelity", "utility", "privacy"}
    assert json.loads(r.to_json())["privacy"]["mia_auc"] == pytest.approx(r.privacy["mia_auc"])
    pd.testing.assert_frame_equal(synth, GaussianCopulaSynthesizer(seed=0).fit(train)
                                  .sample(1000, seed=2))


def test_gate_fails_on_missing_evidence(copy_report: EvaluationReport) -> None:
    r = EvaluationReport({}, {}, {"mia_auc": float("nan")})
    assert not r.passes({"max_mia_auc": 0.6})
    with pytest.raises(ValueError, match="unknown release threshold"):
        copy_report.passes({"max_nonsense": 1.0})
