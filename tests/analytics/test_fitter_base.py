"""One fitter base (issue 14 item 6): every federated fitter's ``fit`` returns it, keeps no
federation, prints, and round-trips through ``to_json``/``from_json`` exactly; renamed attributes
stay readable under their old names; Cox and logistic predictions equal lifelines' and
statsmodels' on the pooled data."""

from __future__ import annotations

import json
import math
import pickle
import warnings
from collections.abc import Callable
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
import pytest

from hemafed.analytics.competing import FederatedAalenJohansen
from hemafed.analytics.cox import FederatedCoxPH
from hemafed.analytics.coxph_startstop import FederatedCoxTimeVarying
from hemafed.analytics.finegray import FederatedFineGray
from hemafed.analytics.fitter import FederatedFitter, decode_state, encode_state
from hemafed.analytics.km import FederatedKaplanMeier
from hemafed.analytics.logistic import FederatedLogisticRegression
from hemafed.analytics.mixed import FederatedLinearMixedModel, LongitudinalCohort
from hemafed.analytics.multistate import FederatedIllnessDeath
from hemafed.analytics.weighting import FederatedIPTW
from hemafed.cohort.demo import generate
from hemafed.cohort.partition import split_sites
from hemafed.cohort.validate import validate_cohort
from hemafed.errors import InvalidInput
from hemafed.federation.local import LocalSumFederation

matplotlib.use("Agg")
COVARIATES = ["age", "hb", "bm_blast"]
CAUSES = [("amlt_time", "amlt_status"), ("os_time", "os_status")]
MM_BOUNDS = {"mprotein": [0.0, 150.0], "time": [0.0, 10.0], "age": [0.0, 110.0]}


def assert_same(a: Any, b: Any, where: str = "") -> None:
    """Equal values of the same types, bit for bit (NaN equals NaN)."""
    assert type(a) is type(b), f"{where}: {type(a)} != {type(b)}"
    if isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b, check_exact=True, obj=where)
    elif isinstance(a, pd.Series):
        pd.testing.assert_series_equal(a, b, check_exact=True, obj=where)
    elif isinstance(a, pd.Index):
        pd.testing.assert_index_equal(a, b, exact=True, obj=where)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        if a.dtype.kind == "O":
            for i, (x, y) in enumerate(zip(a.ravel(), b.ravel(), strict=True)):
                assert_same(x, y, f"{where}[{i}]")
        else:
            np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float | np.floating) and math.isnan(a):
        assert math.isnan(b), where
    elif hasattr(a, "__dict__") and not isinstance(a, type):
        assert_same(dict(vars(a)), dict(vars(b)), where)
    elif hasattr(a, "__dataclass_fields__"):
        for name in a.__dataclass_fields__:
            assert_same(getattr(a, name), getattr(b, name), f"{where}.{name}")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def assert_holds_no_federation(value: Any, seen: set[int] | None = None, where: str = "") -> None:
    seen = set() if seen is None else seen
    if id(value) in seen or isinstance(value, str | bytes | int | float | np.ndarray | pd.Index
                                       | pd.Series | pd.DataFrame | type):
        return
    seen.add(id(value))
    assert not hasattr(value, "secure_sum"), f"{where} keeps a federation"
    if isinstance(value, dict):
        for k, v in value.items():
            assert_holds_no_federation(v, seen, f"{where}.{k}")
    elif isinstance(value, list | tuple | set | frozenset):
        for i, v in enumerate(value):
            assert_holds_no_federation(v, seen, f"{where}[{i}]")
    elif hasattr(value, "__dict__"):
        assert_holds_no_federation(dict(vars(value)), seen, where)


@pytest.fixture(scope="module")
def sites() -> dict:
    return split_sites(generate("MDS", 600, 5), 4, 5, size_skew=0.3)


@pytest.fixture(scope="module")
def pooled(sites: dict) -> pd.DataFrame:
    frame = pd.concat([c.patients for c in sites.values()], ignore_index=True)
    return frame[[*COVARIATES, "os_time", "os_status", "transplant"]].dropna()


def _longitudinal_sites() -> list[LongitudinalCohort]:
    out = []
    for seed in (1, 2, 3):
        rng = np.random.default_rng(seed)
        n = 30
        ids = [f"m{seed}-{i}" for i in range(n)]
        rows = []
        for pid in ids:
            t = np.round(np.cumsum(np.r_[0, rng.uniform(1, 3, rng.integers(3, 7) - 1)]) / 12, 4)
            y = 35 + rng.normal(0, 8) + (-6.0 + rng.normal(0, 3)) * t + rng.normal(0, 2.5, t.size)
            rows += [(pid, tt, float(np.clip(yy, 0, 150))) for tt, yy in zip(t, y, strict=True)]
        patients = pd.DataFrame({"patient_id": ids, "disease": "MM",
                                 "age": np.round(rng.normal(66, 9, n).clip(35, 90), 1)})
        out.append(LongitudinalCohort.attach(
            validate_cohort(patients), pd.DataFrame(rows, columns=["patient_id", "time",
                                                                   "mprotein"])))
    return out


FITS: dict[str, Callable[[LocalSumFederation], FederatedFitter]] = {
    "cox": lambda fed: FederatedCoxPH().fit(fed, "os_time", "os_status", COVARIATES),
    "cox_strata": lambda fed: FederatedCoxPH(strata="site").fit(
        fed, "os_time", "os_status", "age + hb", concordance=False),
    "logistic": lambda fed: FederatedLogisticRegression().fit(fed, "transplant", COVARIATES),
    "finegray": lambda fed: FederatedFineGray().fit(fed, "age + hb", CAUSES),
    "cox_tv": lambda fed: FederatedCoxTimeVarying().fit(
        fed, "os_time", "os_status", "age + hb", switch=("amlt_time", "amlt_status")),
    "km": lambda fed: FederatedKaplanMeier().fit(fed, "os_time", "os_status"),
    "aalen_johansen": lambda fed: FederatedAalenJohansen().fit(fed, event_of_interest=1),
    "iptw": lambda fed: FederatedIPTW().fit(fed, "transplant", "age + hb"),
    "illness_death": lambda fed: FederatedIllnessDeath().fit(fed, grid=[0.5, 1.0, 2.0, 4.0]),
}


@pytest.fixture(scope="module")
def fitted(sites: dict) -> dict[str, FederatedFitter]:
    out = {name: fit(LocalSumFederation(sites)) for name, fit in FITS.items()}
    out["mixed"] = FederatedLinearMixedModel().fit(
        LocalSumFederation(_longitudinal_sites()), "mprotein", "time", ["age"], bounds=MM_BOUNDS)
    return out


ALL = [*FITS, "mixed"]


@pytest.mark.parametrize("name", ALL)
def test_round_trip_is_exact_and_keeps_no_federation(fitted: dict, name: str) -> None:
    model = fitted[name]
    assert isinstance(model, FederatedFitter)
    assert "_federation" not in vars(model) or model._federation is None
    assert_holds_no_federation(model, where=name)
    pickle.loads(pickle.dumps(model))
    text = model.to_json()
    assert isinstance(text, str)
    doc = json.loads(text)
    assert doc["fitter"].endswith(type(model).__qualname__)
    again = type(model).from_json(text)
    assert type(again) is type(model)
    assert_same(dict(vars(again)), {k: v for k, v in vars(model).items() if k != "_federation"},
                name)
    assert again.to_json() == text
    assert isinstance(again.summary, pd.DataFrame)
    pd.testing.assert_frame_equal(again.summary, model.summary, check_exact=True)
    assert repr(again) == repr(model) and repr(model).startswith(f"<{type(model).__name__}: fitted")


def test_from_json_refuses_other_documents(fitted: dict) -> None:
    with pytest.raises(InvalidInput, match="not a FederatedCoxPH"):
        FederatedCoxPH.from_json(fitted["logistic"].to_json())
    with pytest.raises(InvalidInput, match="hemafed classes only"):
        FederatedFitter.from_json(json.dumps({"fitter": "os:system", "state": {}}))
    with pytest.raises(InvalidInput, match="not a fitted-model"):
        FederatedCoxPH.from_json("{}")
    with pytest.raises(InvalidInput, match="not fitted"):
        FederatedCoxPH().to_json()
    assert repr(FederatedCoxPH()) == "<FederatedCoxPH: not fitted>"


def test_state_encoding_keeps_types() -> None:
    value = {"a": (1, 2.5, float("nan")), 3: np.arange(4, dtype=np.int32),
             "s": pd.Series([1.0, 2.0], index=pd.Index(["x", "y"], name="k"), name="v"),
             "f": pd.DataFrame({"p": [1, 2], "q": ["u", None]}), "g": np.float32(0.1),
             "__tuple__": [1]}
    again = decode_state(json.loads(json.dumps(encode_state(value), allow_nan=False)))
    assert_same(again, value)
    with pytest.raises(TypeError, match="cannot keep"):
        encode_state(lambda: None)


def test_a_failed_fit_drops_the_federation_too(sites: dict) -> None:
    model = FederatedFineGray()
    with pytest.raises(InvalidInput):
        model.fit(LocalSumFederation(sites), "age + hb", [("not_a_column", "os_status")])
    assert getattr(model, "_federation", None) is None


def test_renamed_attributes_and_arguments_warn_and_agree(fitted: dict, sites: dict) -> None:
    model = fitted["logistic"]
    for old, new in [("nobs", "n_"), ("llf", "log_likelihood_"), ("excluded", "excluded_"),
                     ("llnull", "log_likelihood_null_"), ("n_positive", "n_positive_"),
                     ("converged", "converged_")]:
        assert getattr(model, old) == getattr(model, new)
    pd.testing.assert_frame_equal(model.cov_params_, model.variance_matrix_)
    from hemafed.analytics import fitter

    fitter._warned.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _ = model.llf, model.llf
    assert [str(w.message) for w in caught] == [
        "FederatedLogisticRegression.llf is deprecated; use .log_likelihood_"]
    with pytest.warns(DeprecationWarning, match="covariates= is deprecated"):
        old = FederatedLogisticRegression().fit(LocalSumFederation(sites), "transplant",
                                                covariates=COVARIATES, max_iter=35)
    pd.testing.assert_frame_equal(old.summary, model.summary, check_exact=True)
    assert old.rounds == model.rounds
    with pytest.raises(InvalidInput, match="not both"):
        FederatedLogisticRegression().fit(LocalSumFederation(sites), "transplant", COVARIATES,
                                          covariates=COVARIATES)
    for name in ("cox", "logistic", "finegray", "cox_tv", "iptw"):
        m = fitted[name]
        assert {"params_", "standard_errors_", "log_likelihood_", "n_"} <= set(vars(m)), name
        assert isinstance(m.confidence_intervals_ if hasattr(m, "confidence_intervals_")
                          else m.summary, pd.DataFrame)


def test_mixed_model_renames_warn_and_old_documents_load(fitted: dict) -> None:
    """Issue 14: the mixed model's ``n_obs_``, ``n_patients_``, ``sites`` and the ``outcome=`` /
    ``time=`` keywords are now ``rows_``, ``n_``, ``sites_``, ``outcome_col=`` / ``time_col=``."""
    from hemafed.analytics import fitter

    model = fitted["mixed"]
    renames = {"n_obs_": "rows_", "n_patients_": "n_", "sites": "sites_"}
    assert model.rows_ == sum(len(c.measurements) for c in _longitudinal_sites())
    assert model.n_ == 90 and model.sites_ == ("site00", "site01", "site02")
    fitter._warned.clear()
    for old, new in renames.items():
        with pytest.warns(DeprecationWarning, match=f"{old} is deprecated; use .{new}"):
            assert getattr(model, old) == getattr(model, new)
    # a document saved before the renames (the state under the former names) loads
    doc = json.loads(model.to_json())
    former = {new: old for old, new in renames.items()}
    doc["state"] = {former.get(k, k): v for k, v in doc["state"].items()}
    again = FederatedLinearMixedModel.from_json(json.dumps(doc))
    assert_same(dict(vars(again)), {k: v for k, v in vars(model).items() if k != "_federation"},
                "mixed")
    assert again.to_json() == model.to_json()
    with pytest.warns(DeprecationWarning, match="outcome= is deprecated; use outcome_col="):
        old_kw = FederatedLinearMixedModel().fit(
            LocalSumFederation(_longitudinal_sites()), outcome="mprotein", time="time",
            formula=["age"], bounds=MM_BOUNDS)
    pd.testing.assert_frame_equal(old_kw.summary, model.summary, check_exact=True)
    with pytest.raises(InvalidInput, match="give outcome_col="):
        FederatedLinearMixedModel().fit(LocalSumFederation(_longitudinal_sites()),
                                        bounds=MM_BOUNDS)


def test_cox_baseline_and_predictions_equal_lifelines(fitted: dict, pooled: pd.DataFrame
                                                      ) -> None:
    from lifelines import CoxPHFitter

    cox = fitted["cox"]
    data = pooled[[*COVARIATES, "os_time", "os_status"]].astype(float)
    ref = CoxPHFitter().fit(data, "os_time", "os_status",
                            fit_options={"precision": 1e-14, "r_precision": 1e-15})
    beta = cox.params_.to_numpy()
    np.testing.assert_allclose(beta, ref.params_.to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(cox.confidence_intervals_.to_numpy(),
                               ref.confidence_intervals_.to_numpy(), rtol=1e-6)
    # lifelines' baseline is at the data's means, ours at the public centres
    shift = float((cox.baseline_covariates_.to_numpy() - data[COVARIATES].mean().to_numpy())
                  @ beta)
    times = cox.baseline_hazard_.index.to_numpy()
    np.testing.assert_allclose(cox.baseline_hazard_.iloc[:, 0],
                               ref.baseline_hazard_.loc[times].iloc[:, 0] * np.exp(shift),
                               rtol=1e-6)
    np.testing.assert_allclose(cox.baseline_cumulative_hazard_.iloc[:, 0],
                               ref.baseline_cumulative_hazard_.loc[times].iloc[:, 0]
                               * np.exp(shift), rtol=1e-6)
    new = data[COVARIATES].iloc[:7]
    np.testing.assert_allclose(cox.predict_partial_hazard(new),
                               ref.predict_partial_hazard(new) * np.exp(-shift), rtol=1e-6)
    at = [0.5, 1.0, 2.5, 4.0, 10.0]
    # between event times the Breslow estimate is a step function (lifelines interpolates
    # linearly when given times, so its curve at its own times is read as a step function)
    steps = ref.predict_survival_function(new)
    expect = steps.iloc[np.searchsorted(steps.index.to_numpy(), at, side="right") - 1]
    np.testing.assert_allclose(cox.predict_survival_function(new, times=at).to_numpy(),
                               expect.to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(cox.predict_survival_function(new).to_numpy(),
                               ref.predict_survival_function(new, times=times).to_numpy(),
                               rtol=1e-6)
    again = FederatedCoxPH.from_json(cox.to_json())
    pd.testing.assert_frame_equal(again.predict_survival_function(new, times=at),
                                  cox.predict_survival_function(new, times=at))
    with pytest.raises(InvalidInput, match="unstratified"):
        fitted["cox_strata"].predict_survival_function(new)


def test_logistic_predictions_equal_statsmodels(fitted: dict, pooled: pd.DataFrame) -> None:
    import statsmodels.api as sm

    model = fitted["logistic"]
    x = sm.add_constant(pooled[COVARIATES].astype(float))
    ref = sm.Logit(pooled["transplant"].astype(float), x).fit(disp=0, tol=1e-12)
    np.testing.assert_allclose(model.params_.to_numpy(), ref.params.to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(model.standard_errors_.to_numpy(), ref.bse.to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(model.log_likelihood_, ref.llf, rtol=1e-9)
    np.testing.assert_allclose(model.log_likelihood_null_, ref.llnull, rtol=1e-9)
    new = pooled[COVARIATES].iloc[:9].copy()
    new.iloc[2, 1] = np.nan
    proba = model.predict_proba(new)
    expect = ref.predict(sm.add_constant(new.astype(float), has_constant="add"))
    np.testing.assert_allclose(proba[:, 1], expect.to_numpy(), rtol=1e-6)
    assert np.isnan(proba[2]).all()
    ax = model.plot()
    drawn = np.asarray(ax.containers[0].lines[0].get_xdata(), dtype=float)
    np.testing.assert_allclose(drawn, ref.params.to_numpy(), rtol=1e-6)
