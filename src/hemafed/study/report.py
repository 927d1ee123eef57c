"""Render a study's JSON results as one self-contained HTML report a haematologist reads.

For each analysis: a plain-language summary first, then the result tables with human labels and
units (from :func:`hemafed.cohort.schema.label`), hazard and odds ratios with 95% confidence
intervals, plots (colour-blind-safe Okabe-Ito hues, forest plots on a log axis with ticks at
0.25/0.5/1/2/4), every measure explained in one line (what it is, which direction is good, the
threshold), exclusions with their reason, how it was computed (secure sums, round trips, sites,
DP releases) and, where the caller could compute it (the demo holds the pooled virtual cohort),
the comparison with the pooled analysis.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import FixedLocator, NullLocator

from hemafed.cohort.schema import label
from hemafed.report import Report, Section
from hemafed.study.runner import frame_from_json

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

PROVENANCE_LABELS = {"secure sums": "Secure sums", "round trips": "Round trips",
                     "sites": "Sites", "dropped sites": "Sites dropped",
                     "DP releases": "Differentially private releases", "seconds": "Seconds"}


def _fmt(value: Any, digits: int = 3) -> str:
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


def _p(value: Any) -> str:
    if value is None or not math.isfinite(float(value)):
        return "–"
    return "< 0.001" if float(value) < 0.001 else f"{float(value):.3f}"


def _ci(lo: float, hi: float) -> str:
    digits = 2 if f"{lo:.2f}" != f"{hi:.2f}" else 4  # a narrow interval keeps its width visible
    return f"{lo:.{digits}f}–{hi:.{digits}f}"


def _measure_rows(items: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    rows = []
    for key, value in items.items():
        name, meaning = MEASURES.get(key, (key, ""))
        shown = _p(value) if key.endswith("_p") or key == "p_value" else _fmt(value)
        rows.append((name, shown, meaning))
    return rows


def _style(i: int) -> dict[str, Any]:
    return {"color": PALETTE[i % len(PALETTE)],
            "ls": LINESTYLES[(i // len(PALETTE)) % len(LINESTYLES)]}


# ------------------------------------------------------------------------------------ plots


def _plot_curves(section: Section, doc: Mapping[str, Any]) -> None:
    curves = doc.get("curves") or []
    if not curves:
        return
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    synth = doc.get("kind") == "synth"
    for i, c in enumerate(curves):
        style = _style(i)
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


def _plot_forest(section: Section, names: list[str], ratio: np.ndarray, lower: np.ndarray,
                 upper: np.ndarray, what: str) -> None:
    keep = np.isfinite(ratio) & np.isfinite(lower) & np.isfinite(upper)
    names = [n for n, k in zip(names, keep, strict=True) if k][::-1]
    ratio, lower, upper = ratio[keep][::-1], lower[keep][::-1], upper[keep][::-1]
    if not len(names):
        return
    fig, ax = plt.subplots(figsize=(7.5, 0.36 * len(names) + 1.2))
    y = np.arange(len(names))
    ax.errorbar(ratio, y, xerr=[ratio - lower, upper - ratio], fmt="o", color=PALETTE[0],
                ecolor="#52606d", capsize=3)
    ax.axvline(1.0, color="#9aa5b1", ls="--", lw=1)
    ax.set_yticks(list(y))
    ax.set_yticklabels(names)
    ax.set_xscale("log")
    ticks = ratio_ticks(float(np.min(lower)), float(np.max(upper)))
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{t:g}" for t in ticks])
    ax.set_xlim(min(ticks[0], float(np.min(lower))) * 0.9, max(ticks[-1], float(np.max(upper))) * 1.1)
    ax.grid(axis="x", alpha=0.3)
    ax.set_xlabel(f"{what} (95% CI, log scale)")
    section.figure(fig, f"{what}s with 95% confidence intervals; right of 1 means higher risk")


# ------------------------------------------------------------------------- per analysis kind


def _describe(s: Section, doc: Mapping[str, Any], results: Mapping[str, Any]) -> None:
    tables = doc.get("tables") or {}
    numeric = frame_from_json(tables["numeric"]) if "numeric" in tables else None
    if numeric is not None and len(numeric):
        rows = []
        for name, r in numeric.iterrows():
            iqr = (f"{_fmt(r.get('q0.25'))}–{_fmt(r.get('q0.75'))}"
                   if r.get("q0.25") is not None else "–")
            rows.append({"Variable": label(str(name)), "Patients": _fmt(r.get("count")),
                         "Missing": _fmt(r.get("missing")), "Mean": _fmt(r.get("mean")),
                         "SD": _fmt(r.get("sd")), "Median": _fmt(r.get("q0.5")),
                         "IQR": iqr})
        s.table(pd.DataFrame(rows), "numeric variables (median and interquartile range)",
                index=False)
        if "age" in numeric.index:
            a = numeric.loc["age"]
            n = int(a["count"] + a["missing"])
            s.summary(f"{n:,} patients from {len(results['sites'])} sites. Median age "
                      f"{_fmt(a.get('q0.5'))} years (interquartile range "
                      f"{_fmt(a.get('q0.25'))}–{_fmt(a.get('q0.75'))}).")
    if "categorical" in tables:
        cats = frame_from_json(tables["categorical"])
        rows, last = [], None
        for _, r in cats.iterrows():
            column = str(r["column"])
            if r["level"] in ("<missing>", "<other>") and not r["count"]:
                continue  # an empty 'missing' or 'other' row says nothing
            rows.append({"Variable": label(column) if column != last else "",
                         "Level": "missing" if r["level"] == "<missing>" else str(r["level"]),
                         "Patients": _fmt(r["count"]),
                         "%": "" if r["level"] in ("<missing>", "<other>") else
                         "–" if r["percent"] is None or pd.isna(r["percent"])
                         else f"{float(r['percent']):.1f}"})
            last = column
        s.table(pd.DataFrame(rows), "categorical variables: % of patients with a known value "
                "('–': suppressed, fewer patients than the study's minimum cell size)",
                index=False, left=2)


def _km(s: Section, doc: Mapping[str, Any], results: Mapping[str, Any]) -> None:
    tables = doc.get("tables") or {}
    stats = doc.get("stats") or {}
    _plot_curves(s, doc)
    medians: dict[str, Any] = {}
    if "median_survival" in tables:
        med = frame_from_json(tables["median_survival"])
        medians = {str(k): v for k, v in zip(med.index, med.iloc[:, 0], strict=True)}
        rows = [{"Group": k, "Median survival (years)":
                 "not reached" if v is None or pd.isna(v) else f"{float(v):.1f}"}
                for k, v in medians.items()]
        s.table(pd.DataFrame(rows), "median: the time by which half the patients had died; "
                "'not reached': fewer than half had died by the end of follow-up", index=False)
    if "number_at_risk" in tables:
        risk = frame_from_json(tables["number_at_risk"])
        risk.columns = [f"{c} y" for c in risk.columns]
        risk = risk.map(lambda v: "–" if v is None or pd.isna(v) else f"{int(v):,}")
        risk.insert(0, "Group", [str(i) for i in risk.index])
        s.table(risk, "patients still at risk at 0, 1, 2 ... years ('–': fewer than the "
                "minimum cell size, suppressed)", index=False)
    if stats:
        s.metrics(_measure_rows(stats), "log-rank test: do the survival curves differ?")
    finite = {k: float(v) for k, v in medians.items() if v is not None and not pd.isna(v)}
    group = (doc.get("options") or {}).get("group")
    text = []
    if medians and finite:
        worst = min(finite, key=lambda k: finite[k])
        not_reached = [k for k in medians if k not in finite]
        best = f"not reached ({', '.join(not_reached)})" if not_reached else \
            f"{max(finite.values()):.1f} years ({max(finite, key=lambda k: finite[k])})"
        what = f" by {label(group, unit=False)}" if group else ""
        text.append(f"Median overall survival{what} ranged from {finite[worst]:.1f} years "
                    f"({worst}) to {best}.")
    if "logrank_p" in stats:
        p = float(stats["logrank_p"])
        text.append(f"The curves differ (log-rank p {_p(p)})." if p < 0.05 else
                    f"No clear difference between the curves (log-rank p {_p(p)}).")
    if text:
        s.summary(" ".join(text))


def _ratio_table(s: Section, names: list[str], ratio: np.ndarray, lower: np.ndarray,
                 upper: np.ndarray, p: np.ndarray, what: str, caption: str) -> None:
    rows = [{"Covariate": n, what: f"{r:.2f}", "95% CI": _ci(lo, hi), "p": _p(pv)}
            for n, r, lo, hi, pv in zip(names, ratio, lower, upper, p, strict=True)]
    s.table(pd.DataFrame(rows), caption, index=False)


def _effects_summary(names: list[str], ratio: np.ndarray, p: np.ndarray, what: str) -> str:
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


def _cox(s: Section, doc: Mapping[str, Any], results: Mapping[str, Any]) -> None:
    t = frame_from_json(doc["tables"]["summary"])
    names = [label(str(i)) for i in t.index]
    hr = t["exp(coef)"].astype(float).to_numpy()
    lo = t["exp(coef) lower 95%"].astype(float).to_numpy()
    hi = t["exp(coef) upper 95%"].astype(float).to_numpy()
    p = t["p"].astype(float).to_numpy()
    _plot_forest(s, names, hr, lo, hi, "hazard ratio")
    _ratio_table(s, names, hr, lo, hi, p, "HR", "hazard ratio per unit of the variable (per "
                 "year of age, per g/dL ...), or mutated vs not, or the level vs the reference")
    stats = dict(doc.get("stats") or {})
    s.metrics(_measure_rows(stats))
    n, excluded = stats.get("n"), stats.get("excluded")
    head = f"Cox model of {stats.get('events', '?')} events in {_fmt(n)} patients"
    if excluded:
        head += (f" ({_fmt(excluded)} excluded: a covariate, the time or the event missing, "
                 "e.g. a gene not sequenced)")
    plain = [label(str(i), unit=False) for i in t.index]
    s.summary(f"{head}: " + _effects_summary(plain, hr, p, "HR"))


def _logistic(s: Section, doc: Mapping[str, Any], results: Mapping[str, Any]) -> None:
    t = frame_from_json(doc["tables"]["summary"])
    keep = [i for i in t.index if str(i) != "const"]
    t = t.loc[keep]
    names = [label(str(i)) for i in t.index]
    odds = np.exp(t["coef"].astype(float).to_numpy())
    lo = np.exp(t["[0.025"].astype(float).to_numpy())
    hi = np.exp(t["0.975]"].astype(float).to_numpy())
    p = t["P>|z|"].astype(float).to_numpy()
    outcome = label(str((doc.get("options") or {}).get("outcome", "outcome")), unit=False)
    _plot_forest(s, names, odds, lo, hi, "odds ratio")
    _ratio_table(s, names, odds, lo, hi, p, "OR", f"odds ratio of {outcome} per unit of the "
                 "variable (per year of age, per g/dL ...); the intercept is not shown")
    stats = dict(doc.get("stats") or {})
    s.metrics(_measure_rows(stats))
    plain = [label(str(i), unit=False) for i in t.index]
    s.summary(f"Logistic regression of {outcome} in {_fmt(stats.get('n'))} patients: "
              + _effects_summary(plain, odds, p, "OR"))


def _competing(s: Section, doc: Mapping[str, Any], results: Mapping[str, Any]) -> None:
    _plot_curves(s, doc)
    t = frame_from_json(doc["tables"]["summary"])
    options = doc.get("options") or {}
    causes = options.get("causes") or []
    names = options.get("cause_names") or [f"{a} (status {b})" for a, b in causes]
    rows = []
    for (group, cause), part in t.groupby(["group", "cause"], sort=False):
        row: dict[str, str] = {"Event": names[int(cause) - 1] if int(cause) <= len(names)
                               else f"cause {cause}"}
        if t["group"].nunique() > 1:
            row["Group"] = str(group)
        for _, r in part.iterrows():
            row[f"at {float(r['time']):g} y"] = (f"{100 * r['cif']:.1f}% "
                                                 f"({100 * r['lower']:.1f}–{100 * r['upper']:.1f})")
        rows.append(row)
    s.table(pd.DataFrame(rows), "cumulative incidence (95% CI): share of patients who had "
            "the event by that time, the competing event accounted for", index=False)
    at5 = t[(t["time"].astype(float) == 5.0) & (t["group"] == t["group"].iloc[0])]
    if len(at5):
        parts = [f"{names[int(r['cause']) - 1]} {100 * r['cif']:.0f}%" for _, r in at5.iterrows()
                 if int(r["cause"]) <= len(names)]
        s.summary("Five years after diagnosis: " + ", ".join(parts) + " of patients "
                  "(Aalen-Johansen cumulative incidence; each event counted only if it came "
                  "first).")


def _gbdt(s: Section, doc: Mapping[str, Any], results: Mapping[str, Any]) -> None:
    tables = doc["tables"]
    disc = frame_from_json(tables["discrimination"])
    rows = [{"Model": str(i), "C-index": _fmt(r["C-index"]),
             "Time-dependent AUC": _fmt(r["time-dependent AUC"]),
             "Integrated Brier": _fmt(r["integrated Brier"]), "Patients": _fmt(r["patients"])}
            for i, r in disc.iterrows()]
    s.table(pd.DataFrame(rows), "discrimination and calibration on the same patients ('–': the "
            "published score predicts a risk group, not a survival probability, so it has no "
            "Brier score)", index=False)
    s.metrics([("C-index", "", "how well the model ranks who dies first: 0.5 is chance, 1 is "
                "perfect; above 0.7 is good"),
               ("Time-dependent AUC", "", "discrimination of deaths by each time: 0.5 is chance; "
                "higher is better"),
               ("Integrated Brier score", "", "mean squared error of predicted survival: lower "
                "is better; 0.25 is no better than a coin"),
               *_measure_rows(doc.get("stats") or {})])
    imp = frame_from_json(tables["feature_importance"])
    imp = imp[imp.iloc[:, 0].astype(float) > 0]
    s.table(pd.DataFrame({"Variable": [label(str(i)) for i in imp.index],
                          "Total gain": [_fmt(float(v)) for v in imp.iloc[:, 0]]}),
            "variables the trees split on (variables never used are not shown)", index=False)
    c = {str(i): float(r["C-index"]) for i, r in disc.iterrows() if r["C-index"] is not None}
    if c:
        first = next(iter(c))
        text = f"The federated boosted model ranks patients with a C-index of {c[first]:.2f}"
        others = [f"{k} {v:.2f}" for k, v in c.items() if k != first]
        s.summary(text + (f" (vs {', '.join(others)})." if others else "."))


def _synth(s: Section, doc: Mapping[str, Any], results: Mapping[str, Any]) -> None:
    _plot_curves(s, doc)
    stats = doc.get("stats") or {}
    s.metrics(_measure_rows(stats), "differential privacy of the synthetic cohort")
    for tdoc in (doc.get("tables") or {}).values():
        table = frame_from_json(tdoc).reset_index(names="phase")
        table = table.rename(columns={"phase": "Phase", "marginals": "Marginals",
                                      "noise_multiplier": "Noise multiplier",
                                      "rho": "zCDP rho", "cell_noise_std": "Noise SD per cell"})
        table["Phase"] = table["Phase"].replace({"one_way": "single variables",
                                                 "select": "choosing pairs",
                                                 "two_way": "pairs of variables"})
        s.table(table, "differentially private releases: each a noisy secure sum", index=False)
    gate = (doc.get("pooled") or {}).get("release gate (default thresholds)")
    text = (f"{_fmt(stats.get('synthetic patients'))} synthetic patients generated under "
            f"differential privacy (epsilon {_fmt(stats.get('epsilon'))}).")
    if gate:
        text += f" Privacy release gate: {gate}."
    s.summary(text)


def _gwas(s: Section, doc: Mapping[str, Any], results: Mapping[str, Any]) -> None:
    from hemafed.genomics.plots import manhattan, qq

    _generic(s, doc, results)
    if doc.get("gwas_points"):
        s.figure(manhattan(doc["gwas_points"]), "Manhattan plot (dashed: p = 5e-8)")
        s.figure(qq(doc["gwas_points"]), "QQ plot with genomic inflation lambda")
    if doc.get("caveat"):
        s.text(str(doc["caveat"]), "note")


def _imaging(s: Section, doc: Mapping[str, Any], results: Mapping[str, Any]) -> None:
    """Harmonised imaging features + clinical covariates: the model page (logistic or Cox),
    then the federated screen and the pooled ComBat parameters (hemafed.imaging.study)."""
    model = (doc.get("options") or {}).get("model")
    if model == "gbdt":  # boosted: no coefficients; the gains of the trees' splits
        s.metrics(_measure_rows(doc.get("stats") or {}))
        imp = frame_from_json(doc["tables"]["feature_importance"])
        imp.index = [label(str(i)) for i in imp.index]
        s.table(imp, caption="federated boosted model: total split gain per column")
    else:
        (_logistic if model == "logistic" else _cox)(s, doc, results)
    for name, caption in (("screen", "federated univariate screen of the harmonised features "
                                     "(Welch t, outcome group vs the rest)"),
                          ("harmonisation", "federated ComBat: pooled grand mean, pooled SD and "
                                            "covariate effects per feature")):
        table = frame_from_json(doc["tables"][name])
        table.index = [label(str(i)) for i in table.index]
        s.table(table, caption=caption)


# --------------------------------------------------- the newer methods (issue 17)


def _hazard_page(s: Section, doc: Mapping[str, Any], what: str, short: str,
                 caption: str, term_label: Callable[..., str] | None = None
                 ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Forest plot and ratio table of a hazard-type summary (exp(coef) with 95% CI);
    ``term_label(name, unit=...)`` names the terms (default: the schema's labels)."""
    term_label = term_label or _term_label
    t = frame_from_json(doc["tables"]["summary"])
    names = [term_label(str(i)) for i in t.index]
    hr = t["exp(coef)"].astype(float).to_numpy()
    lo = t["exp(coef) lower 95%"].astype(float).to_numpy()
    hi = t["exp(coef) upper 95%"].astype(float).to_numpy()
    p = t["p"].astype(float).to_numpy()
    _plot_forest(s, names, hr, lo, hi, what)
    _ratio_table(s, names, hr, lo, hi, p, short, caption)
    return [term_label(str(i), unit=False) for i in t.index], hr, p


def _term_label(name: str, unit: bool = True) -> str:
    """A design term's label; ``col(t)`` (a covariate switched on at the patient's own event
    time, start-stop rows) reads "<label> (time-varying)"."""
    if name.endswith("(t)"):
        return f"{label(name[:-3], unit=False)} (time-varying)"
    return label(name, unit=unit)


def _ci_signed(lo: float, hi: float) -> str:
    """A confidence interval that stays readable when a bound is negative."""
    return _ci(lo, hi) if lo >= 0 else f"{lo:.3g} to {hi:.3g}"


def _finegray(s: Section, doc: Mapping[str, Any], results: Mapping[str, Any]) -> None:
    """Fine-Gray: subdistribution hazard ratios (forest + table), CIF curves when released."""
    options = doc.get("options") or {}
    causes = options.get("causes") or []
    k = int(options.get("cause", 1))
    names_opt = options.get("cause_names") or []
    event = (str(names_opt[k - 1]) if k <= len(names_opt) else
             label(str(causes[k - 1][1]), unit=False) if k <= len(causes) else f"cause {k}")
    plain, hr, p = _hazard_page(
        s, doc, "subdistribution hazard ratio", "SHR",
        f"subdistribution hazard ratio of {event} per unit of the variable (Fine-Gray: patients "
        "who had a competing event stay in the risk set), robust 95% CI")
    if doc.get("curves"):
        _plot_curves(s, {**doc, "curve_kind": "cif"})
    stats = dict(doc.get("stats") or {})
    s.metrics(_measure_rows(stats))
    s.summary(f"Fine-Gray model of {_fmt(stats.get('events'))} {event} events "
              f"({_fmt(stats.get('competing events'))} competing) in {_fmt(stats.get('n'))} "
              f"patients: " + _effects_summary(plain, hr, p, "SHR"))


def _cox_tv(s: Section, doc: Mapping[str, Any], results: Mapping[str, Any]) -> None:
    """Cox with a time-varying covariate (start-stop rows): hazard ratio forest and table."""
    plain, hr, p = _hazard_page(
        s, doc, "hazard ratio", "HR",
        "hazard ratio per unit of the variable; '(t)': the covariate switches on at the "
        "patient's own event time (start-stop rows)")
    stats = dict(doc.get("stats") or {})
    s.metrics(_measure_rows(stats))
    s.summary(f"Cox model with a time-varying covariate: {_fmt(stats.get('events'))} events "
              f"in {_fmt(stats.get('n'))} patients ({_fmt(stats.get('rows'))} start-stop "
              "rows): " + _effects_summary(plain, hr, p, "HR"))


def _cox_long(s: Section, doc: Mapping[str, Any], results: Mapping[str, Any]) -> None:
    """Cox on the sites' long start-stop tables: as :func:`_cox_tv`, the terms named as the
    study's own table names them (its columns are not the schema's: ``transplant`` there may
    be a heart transplant)."""
    plain, hr, p = _hazard_page(
        s, doc, "hazard ratio", "HR",
        "hazard ratio per unit of the variable (or against the reference level, "
        "'column[level]'), the covariates taking each start-stop row's values",
        term_label=lambda name, unit=True: name)
    stats = dict(doc.get("stats") or {})
    s.metrics(_measure_rows(stats))
    s.summary(f"Cox model on start-stop rows: {_fmt(stats.get('events'))} events in "
              f"{_fmt(stats.get('n'))} patients ({_fmt(stats.get('rows'))} rows): "
              + _effects_summary(plain, hr, p, "HR"))


def _plot_balance(s: Section, balance: pd.DataFrame) -> None:
    """Love plot: absolute standardised mean differences before and after weighting."""
    names = [label(str(i), unit=False) for i in balance.index][::-1]
    before = np.abs(balance["smd"].astype(float).to_numpy())[::-1]
    after = np.abs(balance["weighted_smd"].astype(float).to_numpy())[::-1]
    fig, ax = plt.subplots(figsize=(7.5, 0.36 * len(names) + 1.4))
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


def _plot_steps(s: Section, curves: Sequence[Mapping[str, Any]], ylabel: str, caption: str,
                stacked: bool = False) -> None:
    if not curves:
        return
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    if stacked:
        x = np.asarray(curves[0]["x"], dtype=float)
        ys = [np.nan_to_num(np.asarray(c["y"], dtype=float)) for c in curves]
        ax.stackplot(x, *ys, labels=[str(c["label"]) for c in curves], step="post",
                     colors=[PALETTE[i % len(PALETTE)] for i in range(len(curves))], alpha=0.85)
    else:
        for i, c in enumerate(curves):
            ax.step(np.asarray(c["x"], dtype=float), np.asarray(c["y"], dtype=float),
                    where="post", label=str(c["label"]), lw=1.8, **_style(i))
    ax.set_xlabel("years since diagnosis")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    s.figure(fig, caption)


def _iptw(s: Section, doc: Mapping[str, Any], results: Mapping[str, Any]) -> None:
    """IPTW: love plot, weighted Kaplan-Meier, hazard ratio with robust CI, balance table."""
    tables = doc.get("tables") or {}
    options = doc.get("options") or {}
    treatment = label(str(options.get("treatment", "treatment")), unit=False)
    balance = frame_from_json(tables["balance"]) if "balance" in tables else None
    if balance is not None and len(balance):
        _plot_balance(s, balance)
    prefix = f"{options.get('treatment')} = "
    curves = [{**c, "label": str(c["label"]).replace(prefix, "")}
              for c in doc.get("curves") or []]
    _plot_steps(s, curves, "survival probability", f"Kaplan-Meier estimate by {treatment} "
                "(treated / control) in the weighted pseudo-population (inverse probability of "
                "treatment weights)")
    t = frame_from_json(tables["summary"])
    rows = [{"Effect": f"{treatment}: treated vs not", "HR": f"{float(r['exp(coef)']):.2f}",
             "95% CI (robust)": _ci(float(r["exp(coef) lower 95%"]),
                                    float(r["exp(coef) upper 95%"])),
             "SE (robust)": _fmt(float(r["se(coef)"])),
             "SE (naive)": _fmt(float(r["se(coef) naive"])) if "se(coef) naive" in t else "–",
             "p": _p(r["p"])} for _, r in t.iterrows()]
    s.table(pd.DataFrame(rows), "weighted Cox model: hazard ratio of the treatment with a "
            "robust (sandwich) 95% CI; the naive SE ignores the estimated weights", index=False)
    if balance is not None and len(balance):
        brows = [{"Covariate": label(str(i)),
                  "Mean, treated": _fmt(r["mean_treated"]),
                  "Mean, control": _fmt(r["mean_control"]), "SMD": f"{float(r['smd']):.3f}",
                  "Weighted SMD": f"{float(r['weighted_smd']):.3f}"}
                 for i, r in balance.iterrows()]
        s.table(pd.DataFrame(brows), "standardised mean differences before and after "
                "weighting: below 0.1 in absolute value is usually taken as balanced",
                index=False)
    stats = dict(doc.get("stats") or {})
    s.metrics(_measure_rows(stats))
    text = []
    if len(t):
        r = t.iloc[0]
        hr, lo, hi = (float(r["exp(coef)"]), float(r["exp(coef) lower 95%"]),
                      float(r["exp(coef) upper 95%"]))
        text.append(f"Weighted for the confounders, the hazard ratio of treated vs untreated "
                    f"({treatment}) was {hr:.2f} (robust 95% CI {_ci(lo, hi)}, p {_p(r['p'])}) in "
                    f"{_fmt(stats.get('n'))} patients with {_fmt(stats.get('events'))} events.")
    if balance is not None and len(balance):
        worst = float(np.nanmax(np.abs(balance["weighted_smd"].astype(float))))
        text.append(f"Largest absolute SMD after weighting: {worst:.3f}"
                    + (" (balanced)." if worst < 0.1 else " (check the propensity model)."))
    if text:
        s.summary(" ".join(text))


def _multistate(s: Section, doc: Mapping[str, Any], results: Mapping[str, Any]) -> None:
    """Multi-state (illness-death): state occupation probabilities over time."""
    curves = list(doc.get("curves") or [])
    _plot_steps(s, curves, "probability of being in the state", "state occupation "
                "probabilities over time (Aalen-Johansen); the bands add up to 1", stacked=True)
    tables = doc.get("tables") or {}
    if "state_probabilities" in tables:
        t = frame_from_json(tables["state_probabilities"])
        rows = [{"Years": f"{float(i):g}", **{str(c): f"{100 * float(v):.1f}%"
                                               for c, v in r.items()}}
                for i, r in t.iterrows()]
        s.table(pd.DataFrame(rows), "share of patients in each state at 1, 2, 3 and 5 years",
                index=False)
        stats = dict(doc.get("stats") or {})
        s.metrics(_measure_rows(stats))
        if len(t):
            last = t.iloc[-1]
            s.summary(f"At {float(t.index[-1]):g} years: " + ", ".join(
                f"{c} {100 * float(v):.0f}%" for c, v in last.items())
                + f" of {_fmt(stats.get('n'))} patients (Aalen-Johansen state occupation).")


def _lmm(s: Section, doc: Mapping[str, Any], results: Mapping[str, Any]) -> None:
    """Linear mixed model: fixed effects with CI, variance components."""
    tables = doc.get("tables") or {}
    options = doc.get("options") or {}
    outcome = label(str(options.get("outcome", "outcome")))
    fe = frame_from_json(tables["fixed_effects"])
    rows = [{"Term": "Intercept" if str(i) == "(Intercept)" else
             "Time (per year)" if str(i) == str(options.get("time", "time")) else label(str(i)),
             "Estimate": _fmt(float(r["estimate"]), 4),
             "95% CI": _ci_signed(float(r["lower 95%"]), float(r["upper 95%"])),
             "SE": _fmt(float(r["std_error"])), "p": _p(r["p"])} for i, r in fe.iterrows()]
    s.table(pd.DataFrame(rows), f"fixed effects on {outcome}: change per unit of the term "
            "(REML, random intercept and slope per patient)", index=False)
    if "variance_components" in tables:
        vc = frame_from_json(tables["variance_components"])
        vrows = [{"Component": str(i).replace("patient (Intercept)", "between patients: level")
                  .replace("patient time", "between patients: slope")
                  .replace("residual", "within patient (residual)"),
                  "Variance": _fmt(r["variance"]), "SD": _fmt(r["std_dev"]),
                  "Correlation": "–" if r["corr"] is None or pd.isna(r["corr"])
                  else f"{float(r['corr']):.2f}"} for i, r in vc.iterrows()]
        s.table(pd.DataFrame(vrows), "variance components: how much patients differ in level "
                "and slope, and the visit-to-visit noise", index=False)
    stats = dict(doc.get("stats") or {})
    s.metrics(_measure_rows(stats))
    slope = fe.loc[fe.index.astype(str) == str(options.get("time", "time"))]
    if len(slope):
        r = slope.iloc[0]
        s.summary(f"{outcome} changed by {float(r['estimate']):.3g} per year (95% CI "
                  f"{_ci_signed(float(r['lower 95%']), float(r['upper 95%']))}) over "
                  f"{_fmt(stats.get('n_obs'))} measurements of {_fmt(stats.get('n_patients'))} "
                  "patients.")


RENDERERS: dict[str, Callable[[Section, Mapping[str, Any], Mapping[str, Any]], None]] = {
    "describe": _describe, "km": _km, "cox": _cox, "logistic": _logistic,
    "competing": _competing, "gbdt": _gbdt, "synth": _synth, "gwas": _gwas,
    "imaging": _imaging, "finegray": _finegray, "cox_tv": _cox_tv, "iptw": _iptw,
    "multistate": _multistate, "lmm": _lmm, "cox_long": _cox_long,
}


def _generic(s: Section, doc: Mapping[str, Any], results: Mapping[str, Any]) -> None:
    stats = doc.get("stats") or {}
    if stats:
        s.metrics(_measure_rows(stats))
    _plot_curves(s, doc)
    for name, tdoc in (doc.get("tables") or {}).items():
        table = frame_from_json(tdoc)
        table.index = [label(str(i)) for i in table.index]
        s.table(table, caption=name.replace("_", " "))


def _pooled_rows(pooled: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    rows = []
    for key, value in pooled.items():
        if key in MEASURES:
            rows.extend(_measure_rows({key: value}))
        elif key.startswith("max") and "difference" in key:
            rows.append((key[:1].upper() + key[1:], str(value), "0 means identical; below 1e-6 "
                         "is numerical round-off"))
        else:
            rows.append((key[:1].upper() + key[1:], str(value), ""))
    return rows


def _provenance(doc: Mapping[str, Any]) -> dict[str, Any]:
    prov = {}
    for key, value in (doc.get("provenance") or {}).items():
        if key == "dropped sites":
            value = ", ".join(value) if value else "none"
        prov[PROVENANCE_LABELS.get(key, key)] = value
    prov["How"] = ("every number above comes from secure sums over the sites; no site's own "
                   "statistics were visible to the hub")
    return prov


def build_report(results: Mapping[str, Any], *, title: str | None = None,
                 subtitle: str = "", extra: Mapping[str, Any] | None = None) -> Report:
    """A report from :func:`hemafed.study.runner.run_study` output (plus optional pooled checks)."""
    report = Report(title or results.get("title") or f"Study {results['study_id']}", subtitle)
    overview = report.section("Study")
    overview.provenance({"Study": results["study_id"],
                         "Specification SHA-256": results["spec_sha256"],
                         "Sites": len(results["sites"]), "Analyses": len(results["analyses"])})
    for key, section_doc in (extra or {}).items():
        if key == "intro":
            overview.text(str(section_doc))
    for doc in results["analyses"]:
        s = report.section(doc["title"])
        if doc.get("status") != "ok":
            s.text(f"This analysis did not complete: {doc.get('error', 'unknown error')}", "warn")
            s.provenance(_provenance(doc))
            continue
        try:
            RENDERERS.get(doc["kind"], _generic)(s, doc, results)
        except (KeyError, ValueError, TypeError):  # an unexpected result shape: show it plainly
            s.blocks.clear()
            _generic(s, doc, results)
        pooled = doc.get("pooled")
        if pooled:
            s.metrics(_pooled_rows(pooled), "fidelity and privacy of the synthetic cohort, "
                      "measured against the real patients" if doc["kind"] == "synth" else
                      "comparison with the pooled analysis of the same patients (possible here "
                      "because the demo holds the virtual cohort)")
        elif doc["kind"] not in ("gbdt",):
            s.text("No pooled comparison: the patients are not held in one place.", "note")
        s.provenance(_provenance(doc))
    return report


def write_report(results: Mapping[str, Any], path: str | Path, **kw: Any) -> Path:
    return build_report(results, **kw).write(path)
