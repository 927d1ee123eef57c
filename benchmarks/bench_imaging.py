"""Imaging benchmarks: IBSI phantom conformance, federated vs pooled ComBat, site-classifier AUC,
imaging + clinical models (federated vs site-alone on held-out patients), feature throughput.

    python benchmarks/bench_imaging.py [--per-site 60] [--out docs/benchmarks-imaging.md]

Prints markdown; the tables in docs/benchmarks.md come from this script.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import tempfile
import time
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
    return {s: imaging_cohort(load_cohort(d), imaging_table(d))
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
    for d in built.sites.site_dirs.values():
        apply_harmonisation(d, model.site_parameters())
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


def throughput(built: Any) -> str:
    site = next(iter(built.sites.site_dirs.values()))
    index = read_index(site)
    vols = [load_image(site, str(p), str(i)) for p, i in
            index[["pseudonym", "image_id"]].itertuples(index=False)]
    t0 = time.perf_counter()
    for img, msk in vols:
        extract(img.array, msk.array, img.spacing, DEFAULT_SETTINGS)
    direct = time.perf_counter() - t0
    t0 = time.perf_counter()
    extract_site_features(site, DEFAULT_SETTINGS)
    pipeline = time.perf_counter() - t0
    n = len(vols)
    rows = [f"| hemafed `extract` on arrays in memory | {n} | {direct:.2f} | "
            f"{60 * n / direct:.0f} |",
            f"| hemafed site pipeline (read stored NIfTI, extract, write table) | {n} | "
            f"{pipeline:.2f} | {60 * n / pipeline:.0f} |"]
    try:
        import mirp  # noqa: F401
    except ImportError:
        rows.append("| mirp (optional cross-check) | - | not installed | - |")
    else:
        rows.append(mirp_row(vols))
    shape = vols[0][0].shape
    return (f"Volumes {shape[0]}x{shape[1]}x{shape[2]} voxels, ROI about "
            f"{int(np.mean([m.array.sum() for _, m in vols]))} voxels; settings "
            f"{DEFAULT_SETTINGS.to_dict()}.\n\n| what | volumes | s | volumes/minute |\n"
            "| --- | ---: | ---: | ---: |\n" + "\n".join(rows))


def mirp_row(vols: list[Any]) -> str:
    from mirp import extract_features

    images = [v[0].array.astype(np.float32) for v in vols]
    masks = [v[1].array.astype(np.uint8) for v in vols]
    t0 = time.perf_counter()
    logging.disable(logging.INFO)
    extract_features(image=images, mask=masks, image_modality="ct",
                     resegmentation_intensity_range=[0.0, 1e5],
                     base_discretisation_method="fixed_bin_size",
                     base_discretisation_bin_width=DEFAULT_SETTINGS.bin_width,
                     base_feature_families=["statistics", "morphology", "glcm", "glrlm",
                                            "glszm"], num_cpus=1)
    dt = time.perf_counter() - t0
    logging.disable(logging.NOTSET)
    return f"| mirp 2 `extract_features` (same families) | {len(vols)} | {dt:.2f} | " \
           f"{60 * len(vols) / dt:.0f} |"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-site", type=int, default=60)
    ap.add_argument("--seed", type=int, default=2026)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
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
        out += ["", "### Feature extraction throughput (one site of the SCD cohort)", "",
                throughput(scd)]
        mm = build_imaging_sites(Path(tmp) / "mm", "MM", 5, sizes, args.seed + 1)
        text, _, hb = combat_section(mm, ["age"])
        out += ["", f"### ComBat, MM bone marrow ({sum(sizes)} virtual patients)", "", text,
                "", "### MM progression-free survival: Cox on age + b2m + 2 screened features",
                "", mm_models(_cohorts(mm), hb, args.seed)]
    print("\n".join(out))


if __name__ == "__main__":
    main()
