"""Federated ComBat equals pooled neuroCombat; harmonisation removes the site signal."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from neuroCombat import neuroCombat
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from hemafed.errors import InvalidInput
from hemafed.federation.local import LocalSumFederation
from hemafed.federation.queries import get_query
from hemafed.imaging.combat import FederatedComBat, site_adjust
from hemafed.imaging.demo import HARMONISED_FEATURES, ImagingSites
from hemafed.imaging.site_features import imaging_cohort, imaging_table
from hemafed.site.store import load_cohort

FEATURES = list(HARMONISED_FEATURES)
COVARIATES = ["age", "hb"]


def _site_frames(built: ImagingSites) -> dict[str, pd.DataFrame]:
    out = {}
    for site, d in built.sites.site_dirs.items():
        c = imaging_cohort(load_cohort(d), imaging_table(d))
        out[site] = c.patients
    return out


def _bounds(frames: dict[str, pd.DataFrame]) -> dict[str, list[float]]:
    # public, generous bounds (what a study spec declares); the data lie well inside
    allf = pd.concat(frames.values())
    return {c: [float(allf[c].min()) - 10 * (1 + abs(float(allf[c].min()))),
                float(allf[c].max()) + 10 * (1 + abs(float(allf[c].max())))]
            for c in FEATURES + COVARIATES}


def _neurocombat(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    # neuroCombat builds its design in float32; the virtual covariates are binary fractions,
    # exact in float32, so this reference is computed at float64 precision
    pooled = pd.concat([f.assign(site=s) for s, f in frames.items()], ignore_index=True)
    covars = pooled[["site", *COVARIATES]].astype({c: float for c in COVARIATES})
    dat = pooled[FEATURES].astype(float).to_numpy().T
    out = neuroCombat(dat=dat, covars=covars, batch_col="site",
                      continuous_cols=COVARIATES)["data"]
    return pd.DataFrame(out.T, columns=FEATURES).assign(site=pooled["site"].to_numpy())


def _federated(frames: dict[str, pd.DataFrame], fed: Any) -> tuple[FederatedComBat, pd.DataFrame]:
    model = FederatedComBat().fit(fed, FEATURES, COVARIATES, _bounds(frames),
                                  study="imaging-scd")
    parts = [model.transform(f)[0][FEATURES].assign(site=s) for s, f in frames.items()]
    return model, pd.concat(parts, ignore_index=True)


def test_federated_combat_equals_pooled_neurocombat(scd_sites: ImagingSites) -> None:
    frames = _site_frames(scd_sites)
    cohorts = {s: imaging_cohort(load_cohort(d), imaging_table(d))
               for s, d in scd_sites.sites.site_dirs.items()}
    model, fed = _federated(frames, LocalSumFederation(cohorts))
    ref = _neurocombat(frames)
    np.testing.assert_allclose(fed[FEATURES].to_numpy(), ref[FEATURES].to_numpy(), rtol=1e-8,
                               atol=1e-8 * np.abs(ref[FEATURES].to_numpy()).max())
    assert model.sites == tuple(cohorts) and model.n_ == sum(len(f) for f in frames.values())
    again = FederatedComBat.from_json(model.to_json())  # exactly, with no federation
    pd.testing.assert_frame_equal(again.transform(frames[model.sites[0]])[0],
                                  model.transform(frames[model.sites[0]])[0], check_exact=True)
    assert again.site_parameters() == model.site_parameters()


def test_secure_federated_combat_equals_neurocombat(scd_sites: ImagingSites,
                                                    secure_run: Any) -> None:
    frames = _site_frames(scd_sites)
    bounds = scd_sites.spec.raw["imaging"]["bounds"]  # the sites' plan fixes them

    def body(fed: Any) -> dict[str, Any]:
        return FederatedComBat().fit(fed, FEATURES, COVARIATES, bounds,
                                     study=scd_sites.spec.study_id).site_parameters()

    params = secure_run(scd_sites, body)
    model = FederatedComBat()
    model.features, model.covariates = FEATURES, COVARIATES
    model.alpha_ = np.asarray(params["alpha"])
    model.beta_ = np.asarray(params["beta"])
    model.var_pooled_ = np.asarray(params["var_pooled"])
    assert sorted(params["sites"]) == sorted(scd_sites.sites.site_dirs)
    parts = [model.transform(f)[0][FEATURES] for f in frames.values()]
    fed = pd.concat(parts, ignore_index=True).to_numpy()
    ref = _neurocombat(frames)[FEATURES].to_numpy()
    np.testing.assert_allclose(fed, ref, rtol=1e-8, atol=1e-8 * np.abs(ref).max())
    # the hub's audit trail at each site names only the ComBat queries, nothing per patient
    audit = (next(iter(scd_sites.sites.site_dirs.values())) / "audit.log").read_text()
    assert "combat_moments" in audit and "combat_residuals" in audit


def test_secure_apply_stores_neurocombat_per_study_at_every_site(scd_sites: ImagingSites,
                                                                 secure_run: Any) -> None:
    """The whole path through the site node: secure fit, ``combat_apply`` accepted under the
    plan, and what each site stored for the study (its own table) is pooled neuroCombat."""
    from hemafed.imaging.site_features import harmonised_path, study_harmonised

    frames = _site_frames(scd_sites)
    bounds = scd_sites.spec.raw["imaging"]["bounds"]
    study = scd_sites.spec.study_id

    def body(fed: Any) -> int:
        model = FederatedComBat().fit(fed, FEATURES, COVARIATES, bounds, study=study)
        return model.apply(fed, bounds, study=study)

    n = secure_run(scd_sites, body)
    assert n == sum(len(f) for f in frames.values())
    pooled = pd.concat([f.assign(site=s) for s, f in frames.items()], ignore_index=True)
    ref = _neurocombat(frames).assign(patient_id=pooled["patient_id"].astype(str).to_numpy())
    for site, d in scd_sites.sites.site_dirs.items():
        stored = study_harmonised(d, study)
        assert stored is not None and harmonised_path(d, study, ".combat.json").is_file()
        want = ref[ref["site"] == site].set_index("patient_id")[FEATURES]
        got = stored.set_index("patient_id").loc[want.index, ["h_" + f for f in FEATURES]]
        np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), rtol=1e-8,
                                   atol=1e-8 * np.abs(ref[FEATURES].to_numpy()).max())
        assert study_harmonised(d, "another-study") is None


def _site_auc(table: pd.DataFrame) -> float:
    x, y = table[FEATURES].to_numpy(), table["site"].to_numpy()
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    proba = cross_val_predict(clf, x, y, cv=cv, method="predict_proba")
    return float(roc_auc_score(y, proba, multi_class="ovr", average="macro"))


def test_harmonisation_removes_the_site_signal_but_keeps_biology(scd_sites: ImagingSites) -> None:
    frames = _site_frames(scd_sites)
    cohorts = {s: imaging_cohort(load_cohort(d), imaging_table(d))
               for s, d in scd_sites.sites.site_dirs.items()}
    _, harmonised = _federated(frames, LocalSumFederation(cohorts))
    raw = pd.concat([f[FEATURES].assign(site=s) for s, f in frames.items()], ignore_index=True)
    before, after = _site_auc(raw), _site_auc(harmonised)
    assert before > 0.95, before
    assert after < 0.7, after
    # biology kept: infarct foci raise the white-matter maximum; pooled over sites, harmonised
    # values separate infarcts better than raw ones, whose scanner offsets blur the signal
    infarct = pd.concat([f["silent_infarct"] for f in frames.values()],
                        ignore_index=True).to_numpy(dtype=float)
    auc_raw = roc_auc_score(infarct, raw["firstorder_maximum"].to_numpy())
    auc_harmonised = roc_auc_score(infarct, harmonised["firstorder_maximum"].to_numpy())
    assert auc_harmonised > max(auc_raw + 0.05, 0.7), (auc_raw, auc_harmonised)


def test_site_adjust_matches_a_hand_computed_two_feature_case() -> None:
    rng = np.random.default_rng(3)
    y = rng.normal(size=(6, 3)) * [1.0, 2.0, 3.0] + [5.0, 6.0, 7.0]
    adj = site_adjust(y, np.zeros((6, 0)), np.array([5.0, 6.0, 7.0]), np.zeros((0, 3)),
                      np.array([1.0, 4.0, 9.0]))
    s = (y - [5.0, 6.0, 7.0]) / [1.0, 2.0, 3.0]
    np.testing.assert_allclose(adj.gamma_hat, s.mean(0))
    np.testing.assert_allclose(adj.delta_hat, s.var(0, ddof=1))
    # the EB fixed point: gamma* is the posterior mean given delta*
    g_bar, t2 = adj.gamma_hat.mean(), adj.gamma_hat.var(ddof=1)
    post = (t2 * 6 * adj.gamma_hat + adj.delta_star * g_bar) / (t2 * 6 + adj.delta_star)
    np.testing.assert_allclose(adj.gamma_star, post, rtol=1e-3)


def test_bad_parameters_are_refused(scd_sites: ImagingSites) -> None:
    frames = _site_frames(scd_sites)
    cohorts = {s: imaging_cohort(load_cohort(d), imaging_table(d))
               for s, d in scd_sites.sites.site_dirs.items()}
    fed = LocalSumFederation(cohorts)
    with pytest.raises(InvalidInput, match="bounds"):
        FederatedComBat().fit(fed, FEATURES, COVARIATES, {})
    tight = _bounds(frames) | {"firstorder_mean": [0.0, 1.0]}
    with pytest.raises(InvalidInput, match="outside its declared bounds"):
        FederatedComBat().fit(fed, FEATURES, COVARIATES, tight)
    with pytest.raises(InvalidInput, match="not fitted"):
        FederatedComBat().site_parameters()


@pytest.mark.parametrize("query", ["combat_moments", "combat_residuals", "combat_apply"])
@pytest.mark.parametrize("beta", ["x", [["a", 1.0]], [[1.0], [1.0, 2.0]], {"age": 1.0}])
def test_a_non_numeric_beta_is_refused_naming_it(query: str, beta: Any) -> None:
    """Formerly a ValueError traceback at the site (``np.asarray(beta, dtype=float)``).
    ``combat_moments`` reads no ``beta``: it refuses one as an unknown parameter."""
    pooled = {"combat_moments": {}, "combat_residuals": {"beta": [[0.001, 0.0]]},
              "combat_apply": {"alpha": [0.5, 0.5], "var_pooled": [0.01, 0.01],
                               "beta": [[0.001, 0.0]]}}[query]
    params = {"features": ["f1", "f2"], "covariates": ["age"],
              "bounds": {"f1": [0.0, 1.0], "f2": [0.0, 1.0], "age": [0.0, 100.0]}, **pooled}
    with pytest.raises(InvalidInput, match="parameter 'beta'"):
        get_query(query).check({**params, "beta": beta})
    get_query(query).check(params)  # the same, well formed
