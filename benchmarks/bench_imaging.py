"""Imaging benchmarks: IBSI phantom conformance, federated vs pooled ComBat, site-classifier AUC,
imaging + clinical models (federated vs site-alone on held-out patients), feature throughput.

    python benchmarks/bench_imaging.py [--per-site 60] [--repeats 3] [--no-mirp]

Prints markdown; the tables in docs/benchmarks.md come from this script.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hemafed.cohort.model import Cohort
from hemafed.errors import HemafedError
from hemafed.federation.local import LocalSumFederation
from hemafed.imaging.combat import FederatedComBat
from hemafed.imaging.demo import DEFAULT_SETTINGS, HARMONISED_FEATURES, build_imaging_sites
from hemafed.imaging.models import fit_infarct_model, fit_pfs_model, harmonised_bounds
from hemafed.imaging.radiomics import FeatureSettings, extract
from hemafed.imaging.radiomics.ibsi_phantom import (
    REFERENCE,
    SPACING,
    phantom,
    published_precision,
    texture_reference,
    within_tolerance,
)
from hemafed.imaging.site_features import (
    apply_harmonisation,
    extract_site_features,
    imaging_cohort,
    imaging_table,
)
from hemafed.imaging.store import load_image, read_index
from hemafed.site.store import load_cohort

FEATURES = list(HARMONISED_FEATURES)
H = ["h_" + f for f in FEATURES]


def ibsi_table() -> str:
    image, mask = phantom()
    avg = extract(image, mask, SPACING, FeatureSettings(bin_width=1.0, aggregation="averaged"))
    mer = extract(image, mask, SPACING, FeatureSettings(bin_width=1.0, aggregation="merged"))
    ref_avg, ref_mer = REFERENCE | texture_reference("averaged"), texture_reference("merged")
    lines = ["| feature | IBSI id | reference (3D avg) | tolerance | hemafed | ok | "
             "reference (3D merged) | hemafed merged | ok |",
             "| --- | --- | ---: | ---: | ---: | :-: | ---: | ---: | :-: |"]
    n_ok = n = 0
    for name, (code, value, tol) in ref_avg.items():
        margin = max(tol, published_precision(value))
        ok = within_tolerance(avg[name], value, tol)
        n, n_ok = n + 1, n_ok + ok
        cells = [name, code, f"{value:.4g}", f"{margin:.3g}", f"{avg[name]:.4g}",
                 "yes" if ok else "**NO**"]
        if name in ref_mer:
            _, mv, mt = ref_mer[name]
            mok = within_tolerance(mer[name], mv, mt)
            n, n_ok = n + 1, n_ok + mok
            cells += [f"{mv:.4g}", f"{mer[name]:.4g}", "yes" if mok else "**NO**"]
        else:
            cells += ["", "", ""]
        lines.append("| " + " | ".join(cells) + " |")
    return f"{n_ok} of {n} reference values matched.\n\n" + "\n".join(lines)


def _cohorts(built: Any) -> dict[str, Cohort]:
    """Every site's cohort with its features and the study's own harmonised ``h_`` table
    (once :func:`combat_section` stored it)."""
    return {s: imaging_cohort(load_cohort(d), imaging_table(d, study=built.spec.study_id))
            for s, d in built.sites.site_dirs.items()}


def _bounds(cohorts: dict[str, Cohort], cols: list[str]) -> dict[str, list[float]]:
    pooled = pd.concat([c.patients for c in cohorts.values()])
    span = {c: float(pooled[c].max() - pooled[c].min()) for c in cols}
    return {c: [float(pooled[c].min()) - 0.25 * span[c], float(pooled[c].max()) + 0.25 * span[c]]
            for c in cols}


def _site_auc(x: np.ndarray, y: np.ndarray) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    proba = cross_val_predict(clf, x, y, cv=StratifiedKFold(5, shuffle=True, random_state=0),
                              method="predict_proba")
    return float(roc_auc_score(y, proba, multi_class="ovr", average="macro"))


def combat_section(built: Any, covariates: list[str]) -> tuple[str, FederatedComBat,
                                                               dict[str, list[float]]]:
    from neuroCombat import neuroCombat

    cohorts = _cohorts(built)
    bounds = _bounds(cohorts, FEATURES + covariates)
    t0 = time.perf_counter()
    model = FederatedComBat().fit(LocalSumFederation(cohorts), FEATURES, covariates, bounds)
    fed = np.vstack([model.transform(c.patients)[0][FEATURES].to_numpy(dtype=float)
                     for c in cohorts.values()])
    t_fed = time.perf_counter() - t0
    pooled = pd.concat([c.patients.assign(site=s) for s, c in cohorts.items()], ignore_index=True)
    logging.getLogger().setLevel(logging.WARNING)
    t0 = time.perf_counter()
    ref = neuroCombat(dat=pooled[FEATURES].astype(float).to_numpy().T,
                      covars=pooled[["site", *covariates]].astype({c: float for c in covariates}),
                      batch_col="site", continuous_cols=covariates)["data"].T
    t_ref = time.perf_counter() - t0
    rel = float(np.max(np.abs(fed - ref) / np.maximum(np.abs(ref), 1e-12)))
    y = pooled["site"].to_numpy()
    before = _site_auc(pooled[FEATURES].to_numpy(dtype=float), y)
    after = _site_auc(fed, y)
    # what the sites store is checked against public h_ bounds: the spec's where declared,
    # else the fit's bounds widened by 10 spans (a gate only: the stored values are the same)
    wide = {f"h_{f}": [lo - 10 * (hi - lo), hi + 10 * (hi - lo)]
            for f, (lo, hi) in bounds.items() if f in FEATURES}
    store = {**bounds, **wide, **{k: v for k, v in spec_bounds(built).items()
                                  if k.startswith("h_")}}
    for d in built.sites.site_dirs.values():
        apply_harmonisation(d, {**model.site_parameters(), "bounds": store},
                            study=built.spec.study_id)
    text = (f"| patients | sites | features | covariates | max relative difference vs "
            f"neuroCombat | federated s | neuroCombat s | site-classifier AUC before | after |\n"
            f"| ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |\n"
            f"| {len(pooled)} | {len(cohorts)} | {len(FEATURES)} | {', '.join(covariates)} | "
            f"{rel:.1e} | {t_fed:.2f} | {t_ref:.2f} | {before:.3f} | {after:.3f} |")
    hb = {k: list(v) for k, v in harmonised_bounds(model, bounds).items()}
    return text, model, hb


def _split(cohorts: dict[str, Cohort], seed: int, frac: float = 0.3
           ) -> tuple[dict[str, Cohort], dict[str, Cohort]]:
    rng = np.random.default_rng(seed)
    train, test = {}, {}
    for s, c in cohorts.items():
        held = rng.random(len(c)) < frac
        train[s], test[s] = c.select(~held), c.select(held)
    return train, test


def _boot_ci(stat: Any, n: int, seed: int, reps: int = 1000) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(reps):
        idx = rng.integers(0, n, n)
        try:
            vals.append(stat(idx))
        except (ValueError, ZeroDivisionError):
            continue
    return float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))


def scd_models(cohorts: dict[str, Cohort], bounds: dict[str, list[float]], seed: int) -> str:
    import statsmodels.api as sm
    from sklearn.metrics import roc_auc_score

    train, test = _split(cohorts, seed)
    test_frame = pd.concat([c.patients for c in test.values()], ignore_index=True)
    y_test = test_frame["silent_infarct"].astype(float).to_numpy()
    rows = []

    def evaluate(label: str, fed: Any, n_train: int) -> None:
        try:
            fitted = fit_infarct_model(fed, "silent_infarct", ["age", "hb"], H, bounds, top_k=2)
        except HemafedError as exc:
            rows.append(f"| {label} | {n_train} | failed: {type(exc).__name__} | | |")
            return
        p = fitted.model.predict_proba(Cohort(test_frame))[:, 1]
        auc = roc_auc_score(y_test, p)
        lo, hi = _boot_ci(lambda i: roc_auc_score(y_test[i], p[i]), len(y_test), seed)
        rows.append(f"| {label} | {n_train} | {auc:.3f} [{lo:.3f}, {hi:.3f}] | "
                    f"{', '.join(f.removeprefix('h_') for f in fitted.features)} | |")
        return

    n_all = sum(len(c) for c in train.values())
    evaluate("federated (5 sites)", LocalSumFederation(train), n_all)
    fitted = fit_infarct_model(LocalSumFederation(train), "silent_infarct", ["age", "hb"], H,
                               bounds, top_k=2)
    pooled = pd.concat([c.patients for c in train.values()], ignore_index=True)
    x = sm.add_constant(pooled[["age", "hb", *fitted.features]].astype(float).to_numpy())
    ref = sm.Logit(pooled["silent_infarct"].astype(float).to_numpy(), x).fit(disp=0, tol=1e-12)
    diff = float(np.max(np.abs(fitted.model.summary["coef"].to_numpy() - ref.params)
                        / np.abs(ref.params)))
    for s, c in train.items():
        evaluate(f"site-alone {s}", LocalSumFederation({s: c}), len(c))
    head = ("| model | training patients | held-out AUC [95% CI] | screened features | |\n"
            "| --- | ---: | --- | --- | --- |")
    return (f"Held-out: {len(test_frame)} patients (30% of every site, seed {seed}); "
            f"federated vs pooled statsmodels Logit: max relative coefficient difference "
            f"{diff:.1e}.\n\n" + head + "\n" + "\n".join(rows))


def mm_models(cohorts: dict[str, Cohort], bounds: dict[str, list[float]], seed: int) -> str:
    from lifelines import CoxPHFitter
    from lifelines.utils import concordance_index

    train, test = _split(cohorts, seed)
    test_frame = pd.concat([c.patients for c in test.values()], ignore_index=True)
    t = test_frame["relapse_time"].astype(float).to_numpy()
    e = test_frame["relapse_status"].astype(float).to_numpy()
    rows = []

    def evaluate(label: str, fed: Any, n_train: int) -> Any:
        try:
            fitted = fit_pfs_model(fed, "relapse_time", "relapse_status", ["age", "b2m"], H,
                                   bounds, horizon=2.0, top_k=2)
        except HemafedError as exc:
            rows.append(f"| {label} | {n_train} | failed: {type(exc).__name__} | |")
            return None
        cols = list(fitted.model.params_.index)
        lp = test_frame[cols].astype(float).to_numpy() @ fitted.model.params_.to_numpy()
        c = concordance_index(t, -lp, e)
        lo, hi = _boot_ci(lambda i: concordance_index(t[i], -lp[i], e[i]), len(t), seed)
        rows.append(f"| {label} | {n_train} | {c:.3f} [{lo:.3f}, {hi:.3f}] | "
                    f"{', '.join(f.removeprefix('h_') for f in fitted.features)} |")
        return fitted

    fitted = evaluate("federated (5 sites)", LocalSumFederation(train),
                      sum(len(c) for c in train.values()))
    pooled = pd.concat([c.patients for c in train.values()], ignore_index=True)
    cols = list(fitted.model.params_.index)
    frame = pooled[cols].astype(float).assign(T=pooled["relapse_time"].astype(float),
                                              E=pooled["relapse_status"].astype(float))
    ref = CoxPHFitter().fit(frame, "T", "E", fit_options={"precision": 1e-14})
    diff = float(np.max(np.abs(fitted.model.params_.to_numpy() - ref.params_.to_numpy())
                        / np.abs(ref.params_.to_numpy())))
    for s, c in train.items():
        evaluate(f"site-alone {s}", LocalSumFederation({s: c}), len(c))
    head = ("| model | training patients | held-out C-index [95% CI] | screened features |\n"
            "| --- | ---: | --- | --- |")
    return (f"Held-out: {len(test_frame)} patients (30% of every site, seed {seed}); "
            f"federated vs pooled lifelines: max relative coefficient difference {diff:.1e}.\n\n"
            + head + "\n" + "\n".join(rows))


def _pooled_cohort(cohorts: dict[str, Cohort]) -> Cohort:
    first = next(iter(cohorts.values()))
    return Cohort(pd.concat([c.patients for c in cohorts.values()], ignore_index=True),
                  first.mutations.iloc[0:0], dict(first.panels))


def spec_bounds(built: Any) -> dict[str, list[float]]:
    """The approved spec's public bounds (clinical covariates, features and ``h_`` features):
    what a ``model: gbdt`` study's plan fixes the bins from."""
    from hemafed.imaging.spec import ImagingSpec

    ispec = ImagingSpec.from_mapping(built.spec.raw["imaging"])
    return {k: list(v) for k, v in {**ispec.bounds, **ispec.harmonised_bounds()}.items()}


def _xgb_pooled(frame: pd.DataFrame, cols: list[str], label: np.ndarray, objective: str,
                opts: dict[str, Any], seed: int) -> Any:
    """The pooled reference: XGBoost (``hist``) on the pooled training patients, same
    features, rounds, depth, learning rate, lambda and ``max_bin``."""
    import xgboost as xgb

    d = xgb.DMatrix(frame[cols].astype(float).to_numpy(), label=label)
    params = {"objective": objective, "tree_method": "hist", "max_depth": opts["depth"],
              "eta": opts["learning_rate"], "lambda": 1.0, "min_child_weight": 1.0,
              "max_bin": opts["bins"], "seed": seed, "nthread": 1}
    return xgb.train(params, d, num_boost_round=opts["rounds"])


def boosted_models(disease: str, cohorts: dict[str, Cohort], bounds: dict[str, list[float]],
                   seed: int) -> str:
    """Held-out AUC (SCD) or Harrell's C (MM) of the boosted imaging model: federated,
    site-alone, and pooled (XGBoost on the pooled training patients; and hemafed's GBDT on
    one pooled 'site', which must equal the federated model)."""
    import xgboost as xgb
    from lifelines.utils import concordance_index
    from sklearn.metrics import roc_auc_score

    from hemafed.imaging.demo import BOOSTED_MODELS
    from hemafed.imaging.models import fit_boosted_model

    opts = BOOSTED_MODELS[disease]
    cox = disease == "MM"
    clinical = list(opts["covariates"])
    outcome: str | tuple[str, str] = ((opts["duration"], opts["event"]) if cox
                                      else opts["outcome"])
    train, test = _split(cohorts, seed)
    test_frame = pd.concat([c.patients for c in test.values()], ignore_index=True)
    test_cohort = _pooled_cohort(test)
    if cox:
        t = test_frame[opts["duration"]].astype(float).to_numpy()
        e = test_frame[opts["event"]].astype(float).to_numpy()

        def score(risk: np.ndarray) -> tuple[float, tuple[float, float]]:
            return concordance_index(t, -risk, e), _boot_ci(
                lambda i: concordance_index(t[i], -risk[i], e[i]), len(t), seed)
    else:
        y = test_frame[opts["outcome"]].astype(float).to_numpy()

        def score(risk: np.ndarray) -> tuple[float, tuple[float, float]]:
            return roc_auc_score(y, risk), _boot_ci(
                lambda i: roc_auc_score(y[i], risk[i]), len(y), seed)

    rows: list[str] = []
    fits: dict[str, Any] = {}

    def evaluate(label: str, fed: Any, n_train: int) -> None:
        t0 = time.perf_counter()
        try:
            fitted = fit_boosted_model(
                fed, outcome, clinical, H, bounds, top_k=opts["top_k"],
                horizon=opts.get("horizon", 2.0), rounds=opts["rounds"], depth=opts["depth"],
                bins=opts["bins"], learning_rate=opts["learning_rate"])
        except HemafedError as exc:
            rows.append(f"| {label} | {n_train} | failed: {type(exc).__name__} | | |")
            return
        dt_fit = time.perf_counter() - t0
        fits[label] = fitted
        val, (lo, hi) = score(fitted.model.predict_margin(test_cohort))
        rows.append(f"| {label} | {n_train} | {val:.3f} [{lo:.3f}, {hi:.3f}] | "
                    f"{', '.join(f.removeprefix('h_') for f in fitted.features)} | "
                    f"{dt_fit:.1f} |")

    n_all = sum(len(c) for c in train.values())
    evaluate("federated (5 sites)", LocalSumFederation(train), n_all)
    pooled = _pooled_cohort(train)
    evaluate("pooled, hemafed GBDT on one pooled site", LocalSumFederation({"pooled": pooled}),
             n_all)
    fed, one = fits.get("federated (5 sites)"), fits.get("pooled, hemafed GBDT on one pooled site")
    same = "n/a"
    if fed is not None and one is not None:
        gap = np.abs(fed.model.predict_margin(test_cohort) - one.model.predict_margin(test_cohort))
        same = f"{float(np.max(gap)):.1e}"
    if fed is not None:
        cols = [*clinical, *fed.features]
        frame = pooled.patients
        if cox:
            tt = frame[opts["duration"]].astype(float).to_numpy()
            ee = frame[opts["event"]].astype(float).to_numpy()
            label_arr, objective = np.where(ee > 0, tt, -tt), "survival:cox"
        else:
            label_arr = frame[opts["outcome"]].astype(float).to_numpy()
            objective = "binary:logistic"
        t0 = time.perf_counter()
        booster = _xgb_pooled(frame, cols, label_arr, objective, opts, seed)
        dt_fit = time.perf_counter() - t0
        risk = booster.predict(xgb.DMatrix(test_frame[cols].astype(float).to_numpy()),
                               output_margin=True)
        val, (lo, hi) = score(np.asarray(risk, dtype=float))
        rows.append(f"| pooled, XGBoost {xgb.__version__} `hist` (same features) | {n_all} | "
                    f"{val:.3f} [{lo:.3f}, {hi:.3f}] | "
                    f"{', '.join(f.removeprefix('h_') for f in fed.features)} | {dt_fit:.1f} |")
    for s, c in train.items():
        evaluate(f"site-alone {s}", LocalSumFederation({s: c}), len(c))
    metric = "C-index" if cox else "AUC"
    head = (f"| model | training patients | held-out {metric} [95% CI] | screened features | "
            "fit s |\n| --- | ---: | --- | --- | ---: |")
    return (f"Held-out: {len(test_frame)} patients (30% of every site, seed {seed}); options "
            f"rounds {opts['rounds']}, depth {opts['depth']}, bins {opts['bins']} (fixed over "
            f"the spec's bounds), learning rate {opts['learning_rate']}, exact histograms; "
            f"federated vs hemafed GBDT on the pooled training set: max |margin difference| "
            f"on the held-out patients {same}.\n\n" + head + "\n" + "\n".join(rows))


def _best(fns: dict[str, Any], repeats: int) -> dict[str, tuple[float, float]]:
    """Smallest wall and CPU (process) time of ``repeats`` calls of each function, the calls
    interleaved so that a change of the shared machine's load hits all of them alike."""
    best = {k: (float("inf"), float("inf")) for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            w, c = time.perf_counter() - w0, time.process_time() - c0
            best[k] = (min(best[k][0], w), min(best[k][1], c))
    return best


def plain_nifti_pipeline(paths: list[tuple[Path, Path]], out: Path) -> None:
    """The site pipeline as it was before the vault: read each plain NIfTI image and mask
    from disk, extract, write the feature table atomically."""
    from hemafed import atomic
    from hemafed.imaging.intake import nifti_bytes_volume

    rows = []
    for k, (ip, mp) in enumerate(paths):
        img = nifti_bytes_volume(ip.read_bytes(), ip)
        msk = nifti_bytes_volume(mp.read_bytes(), mp)
        feats = extract(img.array, msk.array > 0, img.spacing, DEFAULT_SETTINGS)
        rows.append({"patient_id": str(k), **feats})
    table = pd.DataFrame(rows)
    atomic.write_with(out, lambda fh: table.to_parquet(fh, index=False))


def throughput(built: Any, repeats: int = 3, with_mirp: bool = True,
               mirp_repeats: int = 1) -> str:
    from hemafed.imaging.store import nifti_bytes

    site = next(iter(built.sites.site_dirs.values()))
    index = read_index(site).drop_duplicates("pseudonym")
    keys = [(str(p), str(i)) for p, i in index[["pseudonym", "image_id"]].itertuples(index=False)]
    vols = [load_image(site, p, i) for p, i in keys]
    n = len(vols)

    def direct() -> None:
        for img, msk in vols:
            extract(img.array, msk.array, img.spacing, DEFAULT_SETTINGS)

    def decrypt() -> None:
        for p, i in keys:
            load_image(site, p, i)

    with tempfile.TemporaryDirectory(prefix="hemafed-bench-plain-") as tmp:
        # the same volumes as plain gzipped NIfTI files (the bench's own folder, not the site)
        paths = []
        for k, (img, msk) in enumerate(vols):
            ip, mp = Path(tmp) / f"{k}.image.nii.gz", Path(tmp) / f"{k}.mask.nii.gz"
            ip.write_bytes(nifti_bytes(img))
            mp.write_bytes(nifti_bytes(msk, np.uint8))
            paths.append((ip, mp))
        t = _best({
            "direct": direct,
            "plain": lambda: plain_nifti_pipeline(paths, Path(tmp) / "features.parquet"),
            "vault": lambda: extract_site_features(site, DEFAULT_SETTINGS),
            "read_plain": lambda: [(nifti_bytes_volume_of(a), nifti_bytes_volume_of(b))
                                   for a, b in paths],
            "read_vault": decrypt}, repeats)

    def row(what: str, key: str) -> str:
        w, c = t[key]
        return f"| {what} | {n} | {w:.2f} | {c:.2f} | {60 * n / c:,.0f} |"

    rows = [row("hemafed `extract` on arrays in memory (feature code alone)", "direct"),
            row("site pipeline, plain NIfTI files (read, extract, write the table "
                "atomically)", "plain"),
            row("site pipeline, Crypt4GH vault (`extract_site_features`: decrypt in memory, "
                "extract, write the table atomically)", "vault"),
            row("reading alone: plain NIfTI image + mask", "read_plain"),
            row("reading alone: vault decrypt + NIfTI decode (`load_image`)", "read_vault")]
    if not with_mirp:
        rows.append("| mirp (optional cross-check) | - | skipped (--no-mirp) | - | - |")
    else:
        try:
            import mirp  # noqa: F401
        except ImportError:
            rows.append("| mirp (optional cross-check) | - | not installed | - | - |")
        else:
            rows += mirp_rows(site, vols, mirp_repeats)
    shape = vols[0][0].shape
    return (f"Volumes {shape[0]}x{shape[1]}x{shape[2]} voxels, ROI about "
            f"{int(np.mean([m.array.sum() for _, m in vols]))} voxels; settings "
            f"{DEFAULT_SETTINGS.to_dict()}; best of {repeats} interleaved runs each. Vault "
            f"overhead in CPU time (vault pipeline vs plain NIfTI pipeline): "
            f"{100 * (t['vault'][1] / t['plain'][1] - 1):+.0f}%; per volume, decrypting adds "
            f"{1000 * (t['read_vault'][1] - t['read_plain'][1]) / n:.1f} ms CPU to reading."
            "\n\n| what | volumes | wall s | CPU s | volumes/minute (CPU) |\n"
            "| --- | ---: | ---: | ---: | ---: |\n" + "\n".join(rows))


def nifti_bytes_volume_of(path: Path) -> Any:
    from hemafed.imaging.intake import nifti_bytes_volume

    return nifti_bytes_volume(path.read_bytes(), path)


def mirp_rows(site: Path, vols: list[Any], repeats: int) -> list[str]:
    """mirp as the study's library: called directly on the same volumes (one
    ``extract_features`` call on the arrays in memory, with their spacing), per volume through
    hemafed's backend (``extract_mirp``: same names), and the site pipeline
    (``extract_site_features(..., "mirp")``: vault decrypt, mirp, table written atomically)."""
    from mirp import extract_features

    from hemafed.imaging.radiomics.mirp_backend import (
        _register_spaced_arrays,
        _SpacedArray,
        extract_mirp,
        mirp_arguments,
    )

    n = len(vols)
    _register_spaced_arrays()
    images = [_SpacedArray(v[0].array.astype(np.float32), v[0].spacing) for v in vols]
    masks = [_SpacedArray(v[1].array.astype(np.uint8), v[0].spacing) for v in vols]
    # DEFAULT_SETTINGS bins from the ROI minimum: mirp takes it per volume as the lower
    # bound of its resegmentation range, so the direct call runs one volume at a time too
    args = [mirp_arguments(DEFAULT_SETTINGS, float(v[0].array[v[1].array > 0].min()))
            for v in vols]

    def direct() -> None:
        logging.disable(logging.WARNING)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for im, mk, a in zip(images, masks, args, strict=True):
                extract_features(image=im, mask=mk, **a)
        logging.disable(logging.NOTSET)

    def backend() -> None:
        for img, msk in vols:
            extract_mirp(img.array, msk.array, img.spacing, DEFAULT_SETTINGS)

    t = _best({"direct": direct, "backend": backend,
               "vault": lambda: extract_site_features(site, DEFAULT_SETTINGS, "mirp")}, repeats)
    extract_site_features(site, DEFAULT_SETTINGS)  # leave the site with hemafed's table

    def row(what: str, key: str) -> str:
        w, c = t[key]
        return f"| {what} | {n} | {w:.2f} | {c:.2f} | {60 * n / c:,.0f} |"

    return [row("mirp `extract_features` on arrays in memory (library alone, one call per "
                "volume)", "direct"),
            row("mirp through hemafed's backend (`extract_mirp`: same feature names)", "backend"),
            row("site pipeline with library mirp, Crypt4GH vault (`extract_site_features(..., "
                "'mirp')`)", "vault")]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-site", type=int, default=60)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--repeats", type=int, default=3, help="throughput: best of this many runs")
    ap.add_argument("--no-mirp", action="store_true", help="skip the (slow) mirp throughput row")
    ap.add_argument("--mirp-repeats", type=int, default=1, help="mirp rows: best of this many")
    ap.add_argument("--throughput-only", action="store_true",
                    help="build the SCD sites and measure extraction throughput only")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.throughput_only:
        with tempfile.TemporaryDirectory(prefix="hemafed-bench-imaging-") as tmp:
            sizes = [args.per_site * k // 4 for k in (4, 3, 6, 4, 5)]
            scd = build_imaging_sites(Path(tmp) / "scd", "SCD", 5, sizes, args.seed)
            print(f"Machine: {os.cpu_count()} CPU cores, Python {platform.python_version()}, "
                  f"load average {os.getloadavg()[0]:.1f} at start.\n\n"
                  + throughput(scd, args.repeats, not args.no_mirp, args.mirp_repeats)
                  + f"\n\nLoad average {os.getloadavg()[0]:.1f} at the end.")
        return
    out = [f"Machine: {os.cpu_count()} CPU cores, Python {platform.python_version()}, "
           f"load average {os.getloadavg()[0]:.1f} at start.", "", "### IBSI digital phantom",
           "", ibsi_table()]
    with tempfile.TemporaryDirectory(prefix="hemafed-bench-imaging-") as tmp:
        sizes = [args.per_site * k // 4 for k in (4, 3, 6, 4, 5)]
        t0 = time.perf_counter()
        scd = build_imaging_sites(Path(tmp) / "scd", "SCD", 5, sizes, args.seed)
        t_build = time.perf_counter() - t0
        out += ["", f"### ComBat, SCD brain MRI ({sum(sizes)} virtual patients, sites {sizes}; "
                f"built, imported and extracted in {t_build:.0f} s)", ""]
        text, _, hb = combat_section(scd, ["age", "hb"])
        out += [text, "", "### SCD silent infarct: logistic on age + hb + 2 screened features",
                "", scd_models(_cohorts(scd), hb, args.seed)]
        out += ["", "### SCD silent infarct: boosted trees (`model: gbdt`) on age + hb + 2 "
                "screened features", "", boosted_models("SCD", _cohorts(scd), spec_bounds(scd),
                                                        args.seed)]
        out += ["", "### Feature extraction throughput (one site of the SCD cohort)", "",
                throughput(scd, args.repeats, not args.no_mirp)]
        mm = build_imaging_sites(Path(tmp) / "mm", "MM", 5, sizes, args.seed + 1)
        text, _, hb = combat_section(mm, ["age"])
        out += ["", f"### ComBat, MM bone marrow ({sum(sizes)} virtual patients)", "", text,
                "", "### MM progression-free survival: Cox on age + b2m + 2 screened features",
                "", mm_models(_cohorts(mm), hb, args.seed),
                "", "### MM progression-free survival: boosted Cox trees (`model: gbdt`) on "
                "age + b2m + 2 screened features", "",
                boosted_models("MM", _cohorts(mm), spec_bounds(mm), args.seed)]
    print("\n".join(out))


if __name__ == "__main__":
    main()
