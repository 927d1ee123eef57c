"""Drawing primitives the analysis kinds' report pages share (``AnalysisKind.render``).

Colour-blind-safe Okabe-Ito hues, forest plots on a log axis with ticks at powers of two,
survival and incidence step curves, ratio tables, the one-line meaning of every measure and
the generic table page. Each kind's own page sits beside its estimator and draws with these,
so a new kind's page is a few lines; :mod:`hemafed.study.report` assembles the pages.
matplotlib is imported when a figure is drawn (:func:`subplots`): the registrations that name
these pages are read by every site process, which never draws.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from hemafed.cohort.schema import label
from hemafed.documents import frame_from_json
from hemafed.report.html import Section

# Okabe & Ito (2008): distinct hues that stay distinct with the common colour-vision deficiencies.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000",
           "#F0E442"]
LINESTYLES = ["-", "--", "-.", ":"]
RATIO_TICKS = [0.0625, 0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0]

# measure -> (label, what it means: direction and threshold). One line each.
MEASURES: dict[str, tuple[str, str]] = {
    "logrank_chi2": ("Log-rank chi-squared", "difference between the survival curves; larger "
                     "is a bigger difference (compare with the p-value)"),
    "logrank_df": ("Degrees of freedom", "number of groups minus one"),
    "logrank_p": ("Log-rank p-value", "chance of curves this different if the groups truly "
                  "had the same survival; below 0.05 is conventionally significant"),
    "concordance": ("C-index (concordance)", "how well the model ranks who dies first: 0.5 is "
                    "chance, 1 is perfect; above 0.7 is good"),
    "log_likelihood": ("Log partial likelihood", "fit of the model; higher is better, only "
                       "comparable between models on the same patients"),
    "newton_rounds": ("Newton iterations", "federated rounds until the estimate converged; "
                      "each round is one secure sum over the same sites"),
    "n": ("Patients analysed", "complete cases: patients with every variable of the model"),
    "events": ("Events", "deaths (or the event analysed) among the patients analysed"),
    "excluded": ("Patients excluded", "left out because a covariate, the time or the event was "
                 "missing (a gene not sequenced counts as missing): complete-case analysis"),
    "dropped_by_site_disclosure_rule": ("Variants dropped (site disclosure rule)", "left out "
                                        "because at some site their carriers, non-carriers or "
                                        "missing calls were fewer than that site's minimum "
                                        "cell size; neither tested nor published"),
    "pseudo_r2": ("McFadden pseudo R-squared", "share of the outcome's log-likelihood the "
                  "covariates explain: 0 is none, higher is better; 0.2-0.4 is an excellent fit"),
    "chi2": ("Chi-squared", "association between the two variables; larger is stronger"),
    "dof": ("Degrees of freedom", "(rows - 1) x (columns - 1)"),
    "p_value": ("p-value", "chance of an association this strong if there were none; below "
                "0.05 is conventionally significant"),
    "boosting rounds": ("Boosting rounds", "trees added to the model, one federated fit each"),
    "secure sums": ("Secure sums", "statistics released, each only as a sum over the sites"),
    "epsilon": ("Privacy budget epsilon", "differential-privacy loss allowed; smaller is more "
                "private (1 is a common, strong choice)"),
    "epsilon spent": ("Epsilon spent", "privacy loss actually charged to every site's ledger"),
    "delta": ("Delta", "probability the epsilon guarantee fails; far below 1/patients"),
    "synthetic patients": ("Synthetic patients", "virtual patients sampled from the DP model"),
    "tvd_1way_mean": ("Marginal distance, mean", "total-variation distance of single "
                      "variables, real vs synthetic: 0 is identical; below 0.05 is close"),
    "tvd_1way_max": ("Marginal distance, worst", "the least faithful single variable; below "
                     "0.1 is close"),
    "tvd_2way_mean": ("Pairwise distance, mean", "total-variation distance of pairs of "
                      "variables: 0 is identical; below 0.1 is close"),
    "tvd_2way_max": ("Pairwise distance, worst", "the least faithful pair of variables; below "
                     "0.3 is acceptable"),
    "ks_mean": ("Kolmogorov-Smirnov, mean", "distance between numeric distributions: 0 is "
                "identical; below 0.1 is close"),
    "corr_diff_mean": ("Correlation difference", "mean absolute difference of correlations: "
                       "lower is better; below 0.1 is close"),
    "km_max_diff_os": ("Survival curve gap", "largest vertical gap between the real and "
                       "synthetic overall-survival curves; below 0.05 is close"),
    "cox_log_hr_max_abs_diff": ("Cox log-HR gap", "largest difference of a log hazard ratio "
                                "fitted on real vs synthetic data; below 0.2 is close"),
    "cox_hr_sign_agreement": ("Cox direction agreement", "share of hazard ratios on the same "
                              "side of 1 in real and synthetic data; 1 is best"),
    "ipssr_category_tvd": ("IPSS-R category distance", "total-variation distance of the "
                           "IPSS-R categories computed on each: below 0.05 is close"),
    "c_index_trtr": ("C-index, trained on real", "model trained and tested on real patients "
                     "(the reference)"),
    "c_index_tstr": ("C-index, trained on synthetic", "trained on synthetic, tested on real: "
                     "close to the real-trained value means useful data"),
    "auc_trtr": ("AUC, trained on real", "the reference discrimination"),
    "auc_tstr": ("AUC, trained on synthetic", "close to the real-trained AUC is better"),
    "dcr_synthetic_median": ("Distance to closest record", "median distance from a synthetic "
                             "patient to the nearest real one; larger is more private"),
    "dcr_holdout_median": ("Holdout distance", "the same for real patients not used in "
                           "training (the reference)"),
    "dcr_ratio": ("Distance ratio", "synthetic over holdout distance: above 0.5 passes; "
                  "below 1 means synthetic patients sit closer to real ones than new patients do"),
    "exact_match_rate": ("Exact copies", "share of synthetic patients identical to a real one: "
                         "0 is best; above 0.01 fails"),
    "mia_auc": ("Membership-inference AUC", "an attacker guessing who was in the training data: "
                "0.5 is guessing; above 0.6 fails"),
    "attribute_accuracy_members": ("Attribute inference, members", "accuracy of guessing a "
                                   "hidden value of training patients"),
    "attribute_accuracy_holdout": ("Attribute inference, holdout", "the same for patients "
                                   "not in the training data (the reference)"),
    "attribute_advantage": ("Attribute-inference advantage", "members minus holdout: 0 is "
                            "best; above 0.1 fails"),
    "release gate (default thresholds)": ("Release gate", "pass: every privacy threshold "
                                          "below is met"),
    "thresholds": ("Thresholds", "the release rules checked"),
    "competing events": ("Competing events", "patients whose first event was the competing one"),
    "rows": ("Start-stop rows", "patient time split where the time-varying covariate switches"),
    "rows excluded": ("Rows excluded", "start-stop rows left out: a missing value (as R's "
                      "na.omit), or every row of a patient whose event is off the time lattice"),
    "hazard_ratio": ("Hazard ratio (weighted)", "treated vs untreated in the weighted "
                     "population; below 1 means lower risk with treatment"),
    "ess_treated": ("Effective sample size, treated", "patients the weighted arm is worth; "
                    "far below the arm's size means extreme weights"),
    "ess_control": ("Effective sample size, control", "the same for the untreated arm"),
    "secure_sums": ("Secure sums", "statistics released, each only as a sum over the sites"),
    "sites": ("Sites", "hospitals whose patients the result covers"),
    "reml_criterion": ("REML criterion", "-2 x restricted log-likelihood; lower is better, "
                       "only comparable between models of the same data"),
    "n_obs": ("Measurements", "repeated measurements analysed"),
    "n_patients": ("Patients", "patients with at least one measurement"),
}


def subplots(**kw: Any) -> tuple[Any, Any]:
    """``matplotlib.pyplot.subplots`` on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(**kw)


def fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e9:
            return f"{int(value):,}"
        if 1e3 <= abs(value) < 1e9:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}"
    return str(value)


def fmt_p(value: Any) -> str:
    if value is None or not math.isfinite(float(value)):
        return "–"
    return "< 0.001" if float(value) < 0.001 else f"{float(value):.3f}"


def fmt_ci(lo: float, hi: float) -> str:
    digits = 2 if f"{lo:.2f}" != f"{hi:.2f}" else 4  # a narrow interval keeps its width visible
    return f"{lo:.{digits}f}–{hi:.{digits}f}"


def measure_rows(items: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    rows = []
    for key, value in items.items():
        name, meaning = MEASURES.get(key, (key, ""))
        shown = fmt_p(value) if key.endswith("fmt_p") or key == "p_value" else fmt(value)
        rows.append((name, shown, meaning))
    return rows


def line_style(i: int) -> dict[str, Any]:
    return {"color": PALETTE[i % len(PALETTE)],
            "ls": LINESTYLES[(i // len(PALETTE)) % len(LINESTYLES)]}


def plot_curves(section: Section, doc: Mapping[str, Any]) -> None:
    curves = doc.get("curves") or []
    if not curves:
        return
    fig, ax = subplots(figsize=(7.5, 4.2))
    synth = doc.get("kind") == "synth"
    for i, c in enumerate(curves):
        style = line_style(i)
        if synth and c["label"] != "real cohort":
            style = {"color": PALETTE[3], "ls": "--"}
        x, y = np.asarray(c["x"], dtype=float), np.asarray(c["y"], dtype=float)
        ax.step(x, y, where="post", label=c["label"], lw=1.8, **style)
        if c.get("lower") and c.get("upper"):
            lower = np.asarray(c["lower"], dtype=float)  # null (undefined bound) -> NaN: a gap
            upper = np.asarray(c["upper"], dtype=float)
            ax.fill_between(x, lower, upper, step="post", color=style["color"], alpha=0.12)
    cif = doc.get("curve_kind") == "cif"
    ax.set_xlabel("years since diagnosis")
    ax.set_ylabel("cumulative incidence" if cif else "survival probability")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    caption = ("cumulative incidence of each competing event, with 95% confidence band" if cif
               else "synthetic cohort (dashed) drawn over the real cohort (solid, 95% band)"
               if synth else "Kaplan-Meier estimate with 95% confidence band")
    section.figure(fig, caption)


def ratio_ticks(low: float, high: float) -> list[float]:
    """Log-axis ticks at powers of two (0.25, 0.5, 1, 2, 4 ...) covering ``[low, high]``."""
    lo, hi = min(low, 1.0), max(high, 1.0)
    ticks = [t for t in RATIO_TICKS if lo / 2 < t < hi * 2]
    return ticks or [0.5, 1.0, 2.0]


def plot_forest(section: Section, names: list[str], ratio: np.ndarray, lower: np.ndarray,
                 upper: np.ndarray, what: str) -> None:
    keep = np.isfinite(ratio) & np.isfinite(lower) & np.isfinite(upper)
    names = [n for n, k in zip(names, keep, strict=True) if k][::-1]
    ratio, lower, upper = ratio[keep][::-1], lower[keep][::-1], upper[keep][::-1]
    if not len(names):
        return
    fig, ax = subplots(figsize=(7.5, 0.36 * len(names) + 1.2))
    y = np.arange(len(names))
    ax.errorbar(ratio, y, xerr=[ratio - lower, upper - ratio], fmt="o", color=PALETTE[0],
                ecolor="#52606d", capsize=3)
    ax.axvline(1.0, color="#9aa5b1", ls="--", lw=1)
    ax.set_yticks(list(y))
    ax.set_yticklabels(names)
    ax.set_xscale("log")
    ticks = ratio_ticks(float(np.min(lower)), float(np.max(upper)))
    from matplotlib.ticker import FixedLocator, NullLocator

    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{t:g}" for t in ticks])
    ax.set_xlim(min(ticks[0], float(np.min(lower))) * 0.9, max(ticks[-1], float(np.max(upper))) * 1.1)
    ax.grid(axis="x", alpha=0.3)
    ax.set_xlabel(f"{what} (95% CI, log scale)")
    section.figure(fig, f"{what}s with 95% confidence intervals; right of 1 means higher risk")


def ratio_table(s: Section, names: list[str], ratio: np.ndarray, lower: np.ndarray,
                 upper: np.ndarray, p: np.ndarray, what: str, caption: str) -> None:
    rows = [{"Covariate": n, what: f"{r:.2f}", "95% CI": fmt_ci(lo, hi), "p": fmt_p(pv)}
            for n, r, lo, hi, pv in zip(names, ratio, lower, upper, p, strict=True)]
    s.table(pd.DataFrame(rows), caption, index=False)


def effects_summary(names: list[str], ratio: np.ndarray, p: np.ndarray, what: str) -> str:
    up = [f"{n} ({what} {r:.2f})" for n, r, pv in zip(names, ratio, p, strict=True)
          if pv < 0.05 and r > 1]
    down = [f"{n} ({what} {r:.2f})" for n, r, pv in zip(names, ratio, p, strict=True)
            if pv < 0.05 and r < 1]
    parts = []
    if up:
        parts.append("higher risk with " + ", ".join(up))
    if down:
        parts.append("lower risk with " + ", ".join(down))
    return ("; ".join(parts) + " (p < 0.05).") if parts else "No covariate reached p < 0.05."


def hazard_page(s: Section, doc: Mapping[str, Any], what: str, short: str,
                 caption: str, term_label: Callable[..., str] | None = None
                 ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Forest plot and ratio table of a hazard-type summary (exp(coef) with 95% CI);
    ``term_label(name, unit=...)`` names the terms (default: the schema's labels)."""
    term_label = term_label or schema_term_label
    t = frame_from_json(doc["tables"]["summary"])
    names = [term_label(str(i)) for i in t.index]
    hr = t["exp(coef)"].astype(float).to_numpy()
    lo = t["exp(coef) lower 95%"].astype(float).to_numpy()
    hi = t["exp(coef) upper 95%"].astype(float).to_numpy()
    p = t["p"].astype(float).to_numpy()
    plot_forest(s, names, hr, lo, hi, what)
    ratio_table(s, names, hr, lo, hi, p, short, caption)
    return [term_label(str(i), unit=False) for i in t.index], hr, p


def schema_term_label(name: str, unit: bool = True) -> str:
    """A design term's label; ``col(t)`` (a covariate switched on at the patient's own event
    time, start-stop rows) reads "<label> (time-varying)"."""
    if name.endswith("(t)"):
        return f"{label(name[:-3], unit=False)} (time-varying)"
    return label(name, unit=unit)


def fmt_ci_signed(lo: float, hi: float) -> str:
    """A confidence interval that stays readable when a bound is negative."""
    return fmt_ci(lo, hi) if lo >= 0 else f"{lo:.3g} to {hi:.3g}"


def plot_steps(s: Section, curves: Sequence[Mapping[str, Any]], ylabel: str, caption: str,
                stacked: bool = False) -> None:
    if not curves:
        return
    fig, ax = subplots(figsize=(7.5, 4.2))
    if stacked:
        x = np.asarray(curves[0]["x"], dtype=float)
        ys = [np.nan_to_num(np.asarray(c["y"], dtype=float)) for c in curves]
        ax.stackplot(x, *ys, labels=[str(c["label"]) for c in curves], step="post",
                     colors=[PALETTE[i % len(PALETTE)] for i in range(len(curves))], alpha=0.85)
    else:
        for i, c in enumerate(curves):
            ax.step(np.asarray(c["x"], dtype=float), np.asarray(c["y"], dtype=float),
                    where="post", label=str(c["label"]), lw=1.8, **line_style(i))
    ax.set_xlabel("years since diagnosis")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    s.figure(fig, caption)


def plot_balance(s: Section, balance: pd.DataFrame) -> None:
    """Love plot: absolute standardised mean differences before and after weighting."""
    names = [label(str(i), unit=False) for i in balance.index][::-1]
    before = np.abs(balance["smd"].astype(float).to_numpy())[::-1]
    after = np.abs(balance["weighted_smd"].astype(float).to_numpy())[::-1]
    fig, ax = subplots(figsize=(7.5, 0.36 * len(names) + 1.4))
    y = np.arange(len(names))
    ax.hlines(y, np.minimum(before, after), np.maximum(before, after), color="#9aa5b1", lw=1)
    ax.scatter(before, y, marker="o", color=PALETTE[1], label="unweighted", zorder=3)
    ax.scatter(after, y, marker="D", color=PALETTE[0], label="weighted", zorder=3)
    ax.axvline(0.1, color=PALETTE[3], ls="--", lw=1, label="0.1 (balanced below)")
    ax.set_yticks(list(y))
    ax.set_yticklabels(names)
    ax.set_xlim(0, max(0.25, float(np.nanmax(np.r_[before, after])) * 1.1))
    ax.set_xlabel("absolute standardised mean difference")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    s.figure(fig, "covariate balance between the arms before and after weighting (love plot)")


def generic_page(s: Section, doc: Mapping[str, Any], results: Mapping[str, Any]) -> None:
    """The page of a kind without a drawing of its own: its measures, curves and tables."""
    stats = doc.get("stats") or {}
    if stats:
        s.metrics(measure_rows(stats))
    plot_curves(s, doc)
    for name, tdoc in (doc.get("tables") or {}).items():
        table = frame_from_json(tdoc)
        table.index = [label(str(i)) for i in table.index]
        s.table(table, caption=name.replace("_", " "))
