"""Imaging models on a large held-out set: federated vs site-alone as a paired bootstrap, and
the bins / bounds sensitivity of the boosted (``model: gbdt``) models.

    python benchmarks/bench_imaging_heldout.py [--scale 2.5] [--reps 1000] [--no-bins]

The virtual cohorts are those of ``bench_imaging.py --per-site 48`` (same generator, same five
sites in the same 4:3:6:4:5 mix) with ``--scale`` times as many patients per site. The
training fraction is ``0.7 / scale``, so the training sets keep the size they have in
``bench_imaging.py`` (about 192 patients over the five sites) and every other patient is held
out. Every model is scored on the same held-out patients, and each bootstrap resample of them
scores every model, so ``federated - site alone`` has a paired 95% CI. Prints markdown.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from bench_imaging import (
    H,
    _cohorts,
    _pooled_cohort,
    _split,
    _xgb_pooled,
    combat_section,
    spec_bounds,
)

from hemafed.analytics.design import DesignSpec, NumericTerm
from hemafed.cohort.model import Cohort
from hemafed.errors import HemafedError
from hemafed.federation.local import LocalSumFederation
from hemafed.imaging.demo import BOOSTED_MODELS, DEMO_MODELS, build_imaging_sites
from hemafed.imaging.models import (
    _chosen,
    fit_boosted_model,
    fit_infarct_model,
    fit_pfs_model,
)
from hemafed.imaging.screen import federated_screen
from hemafed.learn.features import fixed_bins
from hemafed.learn.gbdt import FederatedGBDT

Metric = Callable[[np.ndarray, np.ndarray], float]
"""``metric(risk, idx)``: AUC or Harrell's C of the scores ``risk`` on held-out rows ``idx``."""

FEDERATED = "federated (5 sites)"


class HeldOut:
    """The pooled held-out patients of one disease and its metric on them."""

    def __init__(self, disease: str, test: Mapping[str, Cohort]) -> None:
        from lifelines.utils import concordance_index
        from sklearn.metrics import roc_auc_score

        self.frame = pd.concat([c.patients for c in test.values()], ignore_index=True)
        self.cohort = _pooled_cohort(dict(test))
        self.n = len(self.frame)
        if disease == "MM":
            t = self.frame["relapse_time"].astype(float).to_numpy()
            e = self.frame["relapse_status"].astype(float).to_numpy()
            self.name = "C-index"
            self.metric: Metric = lambda r, i: float(concordance_index(t[i], -r[i], e[i]))
        else:
            y = self.frame["silent_infarct"].astype(float).to_numpy()
            self.name = "AUC"
            self.metric = lambda r, i: float(roc_auc_score(y[i], r[i]))


def paired_bootstrap(held: HeldOut, risks: Mapping[str, np.ndarray], seed: int,
                     reps: int) -> dict[str, np.ndarray]:
    """The metric of every model on the same ``reps`` resamples of the held-out patients
    (a resample where the metric is undefined, e.g. one class only, is dropped for all)."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[float]] = {k: [] for k in risks}
    for _ in range(reps):
        idx = rng.integers(0, held.n, held.n)
        try:
            vals = {k: held.metric(r, idx) for k, r in risks.items()}
        except (ValueError, ZeroDivisionError):
            continue
        for k, v in vals.items():
            out[k].append(v)
    return {k: np.asarray(v) for k, v in out.items()}


def _ci(values: np.ndarray) -> str:
    return f"[{np.percentile(values, 2.5):.3f}, {np.percentile(values, 97.5):.3f}]"


def comparison_table(held: HeldOut, fits: Mapping[str, tuple[int, np.ndarray | None, str]],
                     seed: int, reps: int) -> str:
    """Rows: every model's held-out metric [95% CI], and ``federated - model`` [paired 95%
    CI] with the share of resamples where the federated model is not better; a last row
    against the best site-alone model (the one with the highest held-out point estimate)."""
    risks = {k: r for k, (_, r, _) in fits.items() if r is not None}
    boot = paired_bootstrap(held, risks, seed, reps)
    all_idx = np.arange(held.n)
    point = {k: held.metric(r, all_idx) for k, r in risks.items()}
    lines = [f"| model | training patients | held-out {held.name} [95% CI] | federated - model "
             "[paired 95% CI] | share of resamples federated <= model | screened features |",
             "| --- | ---: | --- | --- | ---: | --- |"]
    fed = boot.get(FEDERATED)
    for label, (n_train, risk, feats) in fits.items():
        if risk is None:
            lines.append(f"| {label} | {n_train} | {feats} | | | |")
            continue
        cells = [label, str(n_train), f"{point[label]:.3f} {_ci(boot[label])}", "", "", feats]
        if fed is not None and label != FEDERATED:
            d = fed - boot[label]
            cells[3] = f"{point[FEDERATED] - point[label]:+.3f} {_ci(d)}"
            cells[4] = f"{np.mean(d <= 0):.3f}"
        lines.append("| " + " | ".join(cells) + " |")
    sites = [k for k in risks if k.startswith("site-alone")]
    if fed is not None and sites:
        best = max(sites, key=lambda k: point[k])
        d = fed - boot[best]
        lines.append(f"| **best site-alone ({best.removeprefix('site-alone ')})** | "
                     f"{fits[best][0]} | {point[best]:.3f} | **{point[FEDERATED] - point[best]:+.3f}"
                     f" {_ci(d)}** | {np.mean(d <= 0):.3f} | |")
    return (f"Held-out: {held.n} patients; {len(next(iter(boot.values())))} paired bootstrap "
            f"resamples.\n\n" + "\n".join(lines))


def site_rows(test: Mapping[str, Cohort]) -> dict[str, np.ndarray]:
    """Each site's rows in :class:`HeldOut`'s pooled held-out frame (sites in ``test`` order)."""
    out, start = {}, 0
    for s, c in test.items():
        out[s] = np.arange(start, start + len(c))
        start += len(c)
    return out


def own_site_table(held: HeldOut, rows: Mapping[str, np.ndarray],
                   fits: Mapping[str, tuple[int, np.ndarray | None, str]], seed: int,
                   reps: int) -> str:
    """What a hospital asks: on *its own* held-out patients, the federated model vs the model
    it would fit alone, with a paired 95% CI (resamples of that site's held-out patients,
    both models scored on each); and the average over sites of ``federated - own model``
    weighted by each site's held-out patients, its CI from the same per-site resamples
    (stratified by site). A site whose own model failed to fit is listed and left out of
    the average (it has no model of its own to compare)."""
    fed = fits[FEDERATED][1]
    assert fed is not None
    sites = [s for s in rows if fits[f"site-alone {s}"][1] is not None]
    rng = np.random.default_rng(seed + 7)
    diffs: dict[str, list[float]] = {s: [] for s in sites}
    for _ in range(reps):
        draw = {s: rng.choice(rows[s], len(rows[s])) for s in sites}
        try:
            d = {s: held.metric(fed, draw[s]) - held.metric(fits[f"site-alone {s}"][1], draw[s])
                 for s in sites}
        except (ValueError, ZeroDivisionError):
            continue
        for s in sites:
            diffs[s].append(d[s])
    lines = [f"| site | held-out patients of the site | federated {held.name} | own model "
             f"{held.name} | federated - own [paired 95% CI] | share of resamples "
             "federated <= own |", "| --- | ---: | --- | --- | --- | ---: |"]
    for s in rows:
        own = fits[f"site-alone {s}"][1]
        f_pt = held.metric(fed, rows[s])
        if own is None:
            lines.append(f"| {s} | {len(rows[s])} | {f_pt:.3f} | "
                         f"{fits[f'site-alone {s}'][2]} | | |")
            continue
        o_pt = held.metric(own, rows[s])
        d = np.asarray(diffs[s])
        lines.append(f"| {s} | {len(rows[s])} | {f_pt:.3f} | {o_pt:.3f} | "
                     f"{f_pt - o_pt:+.3f} {_ci(d)} | {np.mean(d <= 0):.3f} |")
    if sites:
        w = np.asarray([len(rows[s]) for s in sites], float)
        w /= w.sum()
        point = sum(wi * (held.metric(fed, rows[s])
                          - held.metric(fits[f"site-alone {s}"][1], rows[s]))
                    for wi, s in zip(w, sites, strict=True))
        boot = np.asarray([diffs[s] for s in sites]).T @ w
        lines.append(f"| **patient-weighted average ({len(sites)} sites)** | "
                     f"{sum(len(rows[s]) for s in sites)} | | | **{point:+.3f} {_ci(boot)}** | "
                     f"{np.mean(boot <= 0):.3f} |")
    n_boot = len(next(iter(diffs.values()))) if diffs else 0
    return (f"Each site's own held-out patients; {n_boot} paired bootstrap resamples "
            f"(stratified by site).\n\n" + "\n".join(lines))


def _names(features: Sequence[str]) -> str:
    return ", ".join(f.removeprefix("h_") for f in features)


def linear_risk(disease: str, fed: LocalSumFederation, held: HeldOut,
                bounds: Mapping[str, Sequence[float]]) -> tuple[np.ndarray, str]:
    """Held-out scores of the logistic (SCD) or Cox (MM) imaging model fitted on ``fed``."""
    opts = DEMO_MODELS[disease]
    if disease == "SCD":
        fitted = fit_infarct_model(fed, opts["outcome"], opts["covariates"], H, bounds,
                                   top_k=opts["top_k"])
        return fitted.model.predict_proba(held.cohort)[:, 1], _names(fitted.features)
    fitted = fit_pfs_model(fed, opts["duration"], opts["event"], opts["covariates"], H, bounds,
                           horizon=opts["horizon"], top_k=opts["top_k"])
    cols = list(fitted.model.params_.index)
    lp = held.frame[cols].astype(float).to_numpy() @ fitted.model.params_.to_numpy()
    return lp, _names(fitted.features)


def _outcome(disease: str) -> str | tuple[str, str]:
    opts = BOOSTED_MODELS[disease]
    return (opts["duration"], opts["event"]) if disease == "MM" else opts["outcome"]


def boosted_risk(disease: str, fed: LocalSumFederation, held: HeldOut,
                 bounds: Mapping[str, Sequence[float]], bins: int) -> tuple[np.ndarray, str]:
    """Held-out margins of the boosted imaging model as a study runs it
    (:func:`~hemafed.imaging.models.fit_boosted_model`: clinical covariates binned over the
    schema's bounds, features over ``bounds``)."""
    opts = BOOSTED_MODELS[disease]
    fitted = fit_boosted_model(fed, _outcome(disease), opts["covariates"], H, bounds,
                               top_k=opts["top_k"], horizon=opts.get("horizon", 2.0),
                               rounds=opts["rounds"], depth=opts["depth"], bins=bins,
                               learning_rate=opts["learning_rate"])
    return fitted.model.predict_margin(held.cohort), _names(fitted.features)


def boosted_risk_own_bounds(disease: str, fed: LocalSumFederation, held: HeldOut,
                            bounds: Mapping[str, Sequence[float]],
                            bins: int) -> tuple[np.ndarray, str]:
    """As :func:`boosted_risk`, but the clinical covariates too are binned over ``bounds``
    (not the schema's): a design no study can request today (the plan derives the clinical
    bins from the schema); measured to see what the schema's wide bounds cost."""
    opts = BOOSTED_MODELS[disease]
    outcome = _outcome(disease)
    if isinstance(outcome, str):
        screen = federated_screen(fed, H, outcome, bounds)
        objective = "binary:logistic"
    else:
        screen = federated_screen(fed, H, outcome[1], bounds, time=outcome[0],
                                  horizon=opts["horizon"])
        objective = "survival:cox"
    chosen = _chosen(screen, H, opts["top_k"])
    spec = DesignSpec(tuple(NumericTerm(c, float(bounds[c][0]), float(bounds[c][1]))
                            for c in [*opts["covariates"], *chosen]))
    model = FederatedGBDT(objective, n_rounds=opts["rounds"], learning_rate=opts["learning_rate"],
                          max_depth=opts["depth"])
    model.fit(fed, spec, outcome, edges=fixed_bins(spec, bins))
    return model.predict_margin(held.cohort), _names(chosen)


def data_bounds(cohorts: Mapping[str, Cohort], columns: Sequence[str],
                margin: float) -> dict[str, list[float]]:
    """Every column's range over all patients (training and held-out) +- ``margin`` times its
    span: what the virtual study's designer knows (the spec uses margin 0.5 on the raw
    features)."""
    pooled = pd.concat([c.patients for c in cohorts.values()], ignore_index=True)
    out = {}
    for c in columns:
        v = pooled[c].astype(float)
        lo, hi = float(v.min()), float(v.max())
        out[c] = [lo - margin * (hi - lo), hi + margin * (hi - lo)]
    return out


Fitter = Callable[[LocalSumFederation], tuple[np.ndarray, str]]


def fit_all(train: Mapping[str, Cohort], fitter: Fitter,
            pooled_ref: Callable[[], tuple[str, np.ndarray, str]] | None = None,
            ) -> dict[str, tuple[int, np.ndarray | None, str]]:
    """Federated, (optional pooled reference,) and every site alone: ``label -> (training
    patients, held-out scores or None, features or the failure)``."""
    fits: dict[str, tuple[int, np.ndarray | None, str]] = {}

    def one(label: str, fed: LocalSumFederation, n: int) -> None:
        try:
            risk, feats = fitter(fed)
        except HemafedError as exc:
            fits[label] = (n, None, f"failed: {type(exc).__name__}")
            return
        fits[label] = (n, risk, feats)

    one(FEDERATED, LocalSumFederation(dict(train)), sum(len(c) for c in train.values()))
    if pooled_ref is not None:
        label, risk, feats = pooled_ref()
        fits[label] = (sum(len(c) for c in train.values()), risk, feats)
    for s, c in train.items():
        one(f"site-alone {s}", LocalSumFederation({s: c}), len(c))
    return fits


def xgb_reference(disease: str, train: Mapping[str, Cohort], held: HeldOut, features: str,
                  bins: int, seed: int) -> Callable[[], tuple[str, np.ndarray, str]]:
    """XGBoost ``hist`` on the pooled training patients with the federated model's features."""
    import xgboost as xgb

    opts = {**BOOSTED_MODELS[disease], "bins": bins}

    def run() -> tuple[str, np.ndarray, str]:
        cols = [*opts["covariates"], *("h_" + f for f in features.split(", "))]
        frame = _pooled_cohort(dict(train)).patients
        if disease == "MM":
            t = frame["relapse_time"].astype(float).to_numpy()
            e = frame["relapse_status"].astype(float).to_numpy()
            label, objective = np.where(e > 0, t, -t), "survival:cox"
        else:
            label, objective = frame["silent_infarct"].astype(float).to_numpy(), "binary:logistic"
        booster = _xgb_pooled(frame, cols, label, objective, opts, seed)
        risk = booster.predict(xgb.DMatrix(held.frame[cols].astype(float).to_numpy()),
                               output_margin=True)
        return f"pooled, XGBoost `hist` max_bin {bins}", np.asarray(risk, float), features

    return run


def bins_table(disease: str, cohorts: Mapping[str, Cohort], train: Mapping[str, Cohort],
               held: HeldOut, spec: Mapping[str, Sequence[float]], seed: int,
               reps: int) -> str:
    """Federated boosted model at 16/32/64 bins over the spec's bounds, over narrower bounds,
    and with the clinical covariates binned over those bounds too; paired difference to the
    best site-alone model at the same setting."""
    clinical = list(BOOSTED_MODELS[disease]["covariates"])
    rows = ["| bins | bounds of the features | bounds of the clinical covariates | federated "
            f"{held.name} [95% CI] | best site-alone | federated - best site-alone [paired 95% "
            "CI] | pooled XGBoost (same bins) | fit s |",
            "| ---: | --- | --- | --- | --- | --- | ---: | ---: |"]
    settings: list[tuple[str, str, Mapping[str, Sequence[float]], bool]] = [
        ("spec (range +- 0.5 span of the raw features)", "schema", spec, False)]
    for margin in (0.5, 0.1, 0.02):
        b = data_bounds(cohorts, [*H, *clinical], margin)
        settings.append((f"range of h_ values +- {margin} span", "schema", b, False))
        settings.append((f"range of h_ values +- {margin} span", f"range +- {margin} span", b,
                         True))
    all_idx = np.arange(held.n)
    for bins in (16, 32, 64):
        for what, clin, bounds, own in settings:
            if own:
                def fitter(fed: LocalSumFederation, b: Any = bounds, k: int = bins
                           ) -> tuple[np.ndarray, str]:
                    return boosted_risk_own_bounds(disease, fed, held, b, k)
            else:
                def fitter(fed: LocalSumFederation, b: Any = bounds, k: int = bins
                           ) -> tuple[np.ndarray, str]:
                    return boosted_risk(disease, fed, held, b, k)
            t0 = time.perf_counter()
            fits = fit_all(train, fitter)
            dt = time.perf_counter() - t0
            risks = {k: r for k, (_, r, _) in fits.items() if r is not None}
            if FEDERATED not in risks:
                rows.append(f"| {bins} | {what} | {clin} | {fits[FEDERATED][2]} | | | | |")
                continue
            _, xgb_risk, _ = xgb_reference(disease, train, held, fits[FEDERATED][2],
                                                   bins, seed)()
            boot = paired_bootstrap(held, risks, seed, reps)
            point = {k: held.metric(r, all_idx) for k, r in risks.items()}
            sites = [k for k in risks if k.startswith("site-alone")]
            best = max(sites, key=lambda k: point[k])
            d = boot[FEDERATED] - boot[best]
            rows.append(f"| {bins} | {what} | {clin} | {point[FEDERATED]:.3f} "
                        f"{_ci(boot[FEDERATED])} | {best.removeprefix('site-alone ')} "
                        f"{point[best]:.3f} | {point[FEDERATED] - point[best]:+.3f} {_ci(d)} | "
                        f"{held.metric(xgb_risk, all_idx):.3f} | {dt:.1f} |")
    return "\n".join(rows)


def disease_section(disease: str, root: Path, sizes: list[int], scale: float, seed: int,
                    reps: int, with_bins: bool) -> str:
    t0 = time.perf_counter()
    built = build_imaging_sites(root / disease.lower(), disease, 5, sizes, seed)
    t_build = time.perf_counter() - t0
    # harmonises every site (outcome-blind, all patients); the models then use the approved
    # spec's bounds, as a study does (the ComBat helper's +-10 SD ``h_`` bounds refused one
    # MM patient at this size)
    combat_section(built, ["age", "hb"] if disease == "SCD" else ["age"])
    cohorts = _cohorts(built)
    train, test = _split(cohorts, seed, frac=1.0 - 0.7 / scale)
    held = HeldOut(disease, test)
    spec = spec_bounds(built)
    out = [f"### {disease}: {sum(sizes)} virtual patients (sites {sizes}; built in "
           f"{t_build:.0f} s), {sum(len(c) for c in train.values())} training "
           f"({', '.join(str(len(c)) for c in train.values())}), {held.n} held out", ""]
    linear = "logistic on age + hb" if disease == "SCD" else "Cox on age + b2m"
    rows = site_rows(test)
    fits = fit_all(train, lambda f: linear_risk(disease, f, held, spec))
    out += [f"#### {linear} + 2 screened features", "", comparison_table(held, fits, seed, reps)]
    if fits[FEDERATED][1] is not None:
        out += ["", f"#### {linear}: federated vs each site's own model on its own held-out "
                "patients", "", own_site_table(held, rows, fits, seed, reps)]
    bins = BOOSTED_MODELS[disease]["bins"]
    fits = fit_all(train, lambda f: boosted_risk(disease, f, held, spec, bins))
    if fits[FEDERATED][1] is not None:
        ref = xgb_reference(disease, train, held, fits[FEDERATED][2], bins, seed)()
        fits = {FEDERATED: fits[FEDERATED], ref[0]: (fits[FEDERATED][0], ref[1], ref[2]),
                **{k: v for k, v in fits.items() if k != FEDERATED}}
    out += ["", f"#### boosted trees (`model: gbdt`, options of `BOOSTED_MODELS`: {bins} bins "
            "over the spec's bounds)", "", comparison_table(held, fits, seed, reps)]
    if fits[FEDERATED][1] is not None:
        out += ["", "#### boosted trees: federated vs each site's own model on its own held-out "
                "patients", "", own_site_table(held, rows, fits, seed, reps)]
    if with_bins:
        out += ["", "#### boosted trees: bins and bounds", "",
                bins_table(disease, cohorts, train, held, spec, seed, min(reps, 500))]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-site", type=int, default=48, help="as in bench_imaging.py")
    ap.add_argument("--scale", type=float, default=2.5,
                    help="patients per site = scale x those of bench_imaging.py")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--reps", type=int, default=1000, help="paired bootstrap resamples")
    ap.add_argument("--disease", choices=["SCD", "MM", "both"], default="both")
    ap.add_argument("--no-bins", action="store_true", help="skip the bins / bounds table")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    sizes = [round(args.scale * args.per_site * k / 4) for k in (4, 3, 6, 4, 5)]
    t0 = time.perf_counter()
    out = [f"Machine: {os.cpu_count()} CPU cores, Python {platform.python_version()}, "
           f"load average {os.getloadavg()[0]:.1f} at start."]
    diseases = ["SCD", "MM"] if args.disease == "both" else [args.disease]
    with tempfile.TemporaryDirectory(prefix="hemafed-bench-heldout-") as tmp:
        for disease in diseases:
            out += ["", disease_section(disease, Path(tmp), sizes, args.scale,
                                        args.seed + (disease == "MM"), args.reps,
                                        not args.no_bins)]
    out += ["", f"Wall {time.perf_counter() - t0:.0f} s; load average "
            f"{os.getloadavg()[0]:.1f} at the end."]
    print("\n".join(out))


if __name__ == "__main__":
    main()
