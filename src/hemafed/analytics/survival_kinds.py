"""The registrations of the survival kinds: ``km``, ``logrank``, ``cox``, ``competing``,
``finegray`` and ``cox_tv`` (:class:`hemafed.kinds.AnalysisKind`).

Each entry holds the kind's spec options, the site queries its plan permits and its hub step
sends, its caps, its hub step (``run_*``), its pooled reference (``pooled_*``, lifelines on the
pooled patients, validation only) and its report page (``render_*``), listed in
:data:`hemafed.study.kinds.CATALOGUE`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hemafed.analytics.basic_kinds import spec_formula
from hemafed.analytics.pooled import agreement, pooled_design
from hemafed.cohort.schema import label
from hemafed.documents import finite, frame_from_json, frame_json
from hemafed.federation.api import Federation
from hemafed.kinds import NEWTON_CAP, AnalysisKind
from hemafed.report.drawing import (
    effects_summary,
    fmt,
    fmt_p,
    hazard_page,
    measure_rows,
    plot_curves,
)
from hemafed.report.html import Section
from hemafed.scores.levels import DERIVED_LEVELS

if TYPE_CHECKING:
    from hemafed.cohort.model import Cohort
    from hemafed.study.spec import Analysis, StudySpec

__all__ = ["KINDS", "curve_docs"]


_SURVIVAL_CAPS = {"time_histogram": 2, "km_risk_table": 2, "competing_risk_table": 2,
                  "category_counts": 2}


def _levels(a: Analysis, key: str = "group") -> list[str] | None:
    """The public levels of the grouping column: the spec's, else a derived score's."""
    col = a.get(key)
    if col is None:
        return None
    levels = a.get("levels") or DERIVED_LEVELS.get(col)
    return [str(v) for v in levels] if levels else None


def curve_docs(fitted: Any) -> list[dict[str, Any]]:
    """The plain-JSON survival curves (with 95% band and median) of a fitted estimator."""
    curves = []
    for name, c in fitted.curves_.items():
        s = c.survival
        ci_lo, ci_hi = c.ci_lower, c.ci_upper
        curves.append({"label": str(name), "x": finite(s.index),
                       "y": finite(s.to_numpy().ravel()),
                       "lower": finite(np.asarray(ci_lo).ravel()),
                       "upper": finite(np.asarray(ci_hi).ravel()),
                       "median": None if not np.isfinite(c.median) else float(c.median)})
    return curves


def run_km(fed: Federation, a: Analysis, spec: StudySpec) -> dict[str, Any]:
    from hemafed.analytics.km import FederatedKaplanMeier
    from hemafed.analytics.logrank import logrank_from_counts

    levels = _levels(a)
    km = FederatedKaplanMeier().fit(fed, a.get("duration"), a.get("event"),
                                    group_col=a.get("group"), levels=levels, study=spec.study_id)
    out: dict[str, Any] = {"curves": curve_docs(km)}
    med = km.median_survival_time_
    medians = med if isinstance(med, pd.Series) else pd.Series({km.label: med})
    at_risk = km.at_risk_table([0, 1, 2, 3, 5, 8])
    suppressed = at_risk.where((at_risk >= spec.min_cell) | (at_risk == 0))
    out["tables"] = {"median_survival": frame_json(medians.rename("median survival (years)")),
                     "number_at_risk": frame_json(suppressed)}
    if levels and len(levels) > 1:
        # the log-rank test reuses the same secure sums (no further release)
        sums, labels = km.sums_, list(km.curves_)
        keep = np.asarray(sums["n"]) > 0
        lr = logrank_from_counts(sums["observed"][keep], sums["at_risk"][keep],
                                 [lab for lab, k in zip(labels, keep, strict=True) if k])
        out["stats"] = {"logrank_chi2": lr.test_statistic, "logrank_df": lr.degrees_of_freedom,
                        "logrank_p": lr.p_value}
    return out


def run_logrank(fed: Federation, a: Analysis, spec: StudySpec) -> dict[str, Any]:
    from hemafed.analytics.logrank import federated_logrank_test

    lr = federated_logrank_test(fed, a.get("duration"), a.get("event"), a.get("group"),
                                _levels(a) or [], study=spec.study_id)
    return {"stats": {"logrank_chi2": lr.test_statistic, "logrank_df": lr.degrees_of_freedom,
                      "logrank_p": lr.p_value}, "tables": {"summary": frame_json(lr.summary)}}


def run_cox(fed: Federation, a: Analysis, spec: StudySpec) -> dict[str, Any]:
    from hemafed.analytics.cox import FederatedCoxPH

    cox = FederatedCoxPH(ties=a.get("ties", "efron"), strata=a.get("strata"),
                         strata_levels=a.get("strata_levels"))
    lattice = a.get("lattice")
    # on the spec's lattice the fit skips the concordance: its histogram (per time and
    # linear-predictor bin) is a released table, under the sites' minimum-cell rule
    cox.fit(fed, a.get("duration"), a.get("event"), spec_formula(a), study=spec.study_id,
            lattice=None if lattice is None else float(lattice), concordance=lattice is None)
    stats = {"concordance": cox.concordance_index_, "log_likelihood": cox.log_likelihood_,
             "newton_rounds": cox.rounds, "n": cox.n_, "events": cox.events_,
             "excluded": cox.excluded_}
    if lattice is not None:
        del stats["concordance"]
    return {"tables": {"summary": frame_json(cox.summary)}, "stats": stats}


def run_competing(fed: Federation, a: Analysis, spec: StudySpec) -> dict[str, Any]:
    from hemafed.analytics.competing import FederatedAalenJohansen

    causes = [tuple(c) for c in a.get("causes")]
    aj = FederatedAalenJohansen().fit(fed, causes, event_of_interest=a.get("event_of_interest", 1),
                                      group_col=a.get("group"), levels=_levels(a),
                                      study=spec.study_id)
    curves = []
    names = a.get("cause_names") or [f"{t} (status {s})" for t, s in causes]
    levels = _levels(a)
    groups: list[str | None] = list(levels) if levels else [None]
    for cause, name in enumerate(names, start=1):
        for group in groups:
            ci = aj.cumulative_incidence(cause, group)
            label = name if group is None else f"{name}, {group}"
            curves.append({"label": label, "x": finite(aj.grid_), "y": finite(ci.cif),
                           "lower": finite(ci.lower), "upper": finite(ci.upper)})
    out: dict[str, Any] = {"curves": curves, "curve_kind": "cif",
                           "tables": {"summary": frame_json(aj.summary)}}
    if levels and len(levels) > 1:  # Gray's test of each cause among the groups
        from hemafed.analytics.graytest import federated_gray_test

        for cause, name in enumerate(names, start=1):
            g = federated_gray_test(fed, causes, a.get("group"), levels, cause=cause,
                                    study=spec.study_id)
            out.setdefault("stats", {})[f"Gray's test, {name}"] = (
                f"chi2 {g.statistic:.3f} on {g.df} df, p = {g.p:.3g}")
    return out


def run_finegray(fed: Federation, a: Analysis, spec: StudySpec) -> dict[str, Any]:
    """Fine-Gray subdistribution hazards (as cmprsk::crr, robust standard errors)."""
    from hemafed.analytics.finegray import FederatedFineGray

    lattice = a.get("lattice")  # the spec's public lattice: the whole grid, times moved up
    fg = FederatedFineGray().fit(fed, spec_formula(a), [tuple(c) for c in a.get("causes")],
                                 cause=int(a.get("cause", 1)), study=spec.study_id,
                                 lattice=None if lattice is None else float(lattice))
    return {"tables": {"summary": frame_json(fg.summary)},
            "stats": {"newton_rounds": fg.rounds, "n": fg.n_, "events": fg.events_,
                      "competing events": fg.competing_, "excluded": fg.excluded_}}


def run_cox_tv(fed: Federation, a: Analysis, spec: StudySpec) -> dict[str, Any]:
    """Cox with a covariate switched on at a patient-level event (start-stop rows)."""
    from hemafed.analytics.coxph_startstop import FederatedCoxTimeVarying

    lattice = a.get("lattice")  # the spec's public lattice: the whole grid, times moved up
    tv = FederatedCoxTimeVarying(ties=a.get("ties", "efron")).fit(
        fed, a.get("duration"), a.get("event"), spec_formula(a),
        switch=tuple(a.get("switch")), study=spec.study_id,
        lattice=None if lattice is None else float(lattice))
    return {"tables": {"summary": frame_json(tv.summary)},
            "stats": {"newton_rounds": tv.rounds, "n": tv.n_, "rows": tv.rows_,
                      "events": tv.events_, "excluded": tv.excluded_}}


def pooled_cox(a: Analysis, doc: dict[str, Any], cohorts: Sequence[Cohort],holdout: pd.DataFrame | None = None) -> dict[str, Any]:
    from lifelines import CoxPHFitter

    dur, ev = a.get("duration"), a.get("event")
    x, names, extra = pooled_design(cohorts, a.get("formula"), [dur, ev])
    frame = pd.DataFrame(x, columns=names)
    frame["T"] = extra[dur].astype(float).to_numpy()
    frame["E"] = extra[ev].astype(float).to_numpy()
    if a.get("lattice") is not None:
        # the federated fit's times: each moved up to the end of its lattice interval
        from hemafed.analytics.survival_grid import effective_times, lattice_grid

        grid = np.asarray(lattice_grid(float(a.get("lattice"))))
        frame["T"] = effective_times(frame["T"].to_numpy(), frame["E"].to_numpy() > 0, grid,
                                     "up")
    cph = CoxPHFitter().fit(frame, "T", "E", fit_options={"precision": 1e-14, "r_precision": 1e-15})
    fed = frame_from_json(doc["tables"]["summary"]).set_index(pd.Index(names))
    return {**agreement("lifelines CoxPHFitter (Efron ties)", fed["coef"], fed["se(coef)"],
                         cph.params_, cph.standard_errors_),
            "pooled concordance": f"{cph.concordance_index_:.4f}"}


def pooled_cox_tv(a: Analysis, doc: dict[str, Any], cohorts: Sequence[Cohort],
                   holdout: pd.DataFrame | None = None) -> dict[str, Any]:
    """The time-varying Cox against lifelines' ``CoxTimeVaryingFitter`` on the pooled rows
    split at the switch time (as ``tmerge(..., tdc(s))``); on the spec's ``lattice`` every
    follow-up and switch time is first moved up to its interval's end, as the sites do."""
    from lifelines import CoxTimeVaryingFitter

    if a.get("ties", "efron") != "efron":
        return {}  # lifelines' fitter has Efron's ties only
    dur, ev = a.get("duration"), a.get("event")
    tcol, scol = a.get("switch")
    x, names, extra = pooled_design(cohorts, a.get("formula"), [dur, ev, tcol, scol])
    t, s = (extra[c].astype(float).to_numpy() for c in (dur, tcol))
    event = extra[ev].astype(float).to_numpy() == 1
    if a.get("lattice") is not None:
        from hemafed.analytics.survival_grid import effective_times, lattice_grid

        grid = np.asarray(lattice_grid(float(a.get("lattice"))))
        every = np.ones(t.size, dtype=bool)
        t, s = effective_times(t, every, grid, "up"), effective_times(s, every, grid, "up")
    split = (extra[scol].astype(float).to_numpy() == 1) & (s < t)
    first = ~split | (s > 0)                          # a switch at 0: z = 1 from the start
    rows = pd.DataFrame(np.vstack([x[first], x[split]]), columns=names)
    rows["start"] = np.r_[np.zeros(int(first.sum())), s[split]]
    rows["stop"] = np.r_[np.where(split, s, t)[first], t[split]]
    rows["event"] = np.r_[(event & ~split)[first], event[split]].astype(float)
    rows["z"] = np.r_[np.zeros(int(first.sum())), np.ones(int(split.sum()))]
    rows["id"] = np.arange(len(rows))
    with warnings.catch_warnings():  # lifelines warns of low variance in z on small cohorts
        warnings.simplefilter("ignore")
        ctv = CoxTimeVaryingFitter().fit(  # its default step (0.95) can overshoot: 0.5
            rows, id_col="id", event_col="event", start_col="start", stop_col="stop",
            fit_options={"precision": 1e-14, "step_size": 0.5})
    order = [*names, "z"]
    fed = frame_from_json(doc["tables"]["summary"])
    return agreement("lifelines CoxTimeVaryingFitter (Efron ties)", fed["coef"],
                      fed["se(coef)"], ctv.params_[order], ctv.standard_errors_[order])


def pooled_km(a: Analysis, doc: dict[str, Any], cohorts: Sequence[Cohort],holdout: pd.DataFrame | None = None) -> dict[str, Any]:
    from lifelines import KaplanMeierFitter

    dur, ev, group = a.get("duration"), a.get("event"), a.get("group")
    frames = [c.patients[[dur, ev] + ([group] if group else [])] for c in cohorts]
    pooled = pd.concat(frames, ignore_index=True).dropna(subset=[dur, ev])
    worst = 0.0
    for curve in doc["curves"]:
        rows = pooled if group is None else pooled[pooled[group].astype(str) == curve["label"]]
        if rows.empty:
            continue
        km = KaplanMeierFitter().fit(rows[dur].astype(float), rows[ev].astype(float))
        ref = km.survival_function_at_times(curve["x"]).to_numpy()
        worst = max(worst, float(np.max(np.abs(np.asarray(curve["y"]) - ref))))
    return {"pooled engine": "lifelines KaplanMeierFitter",
            "max absolute difference of the survival curves": f"{worst:.2e}"}


def pooled_competing(a: Analysis, doc: dict[str, Any], cohorts: Sequence[Cohort],
                      holdout: pd.DataFrame | None = None) -> dict[str, Any]:
    """Each cause's cumulative incidence against lifelines' AalenJohansenFitter (pooled)."""
    from lifelines import AalenJohansenFitter

    from hemafed.analytics.competing import first_cause

    causes = [tuple(c) for c in a.get("causes")]
    if a.get("group"):
        return {}
    cols = [c for pair in causes for c in pair]
    pooled = pd.concat([c.patients[cols] for c in cohorts], ignore_index=True)
    pooled = pooled.dropna().astype(float)
    times = pooled[[t for t, _ in causes]].to_numpy()
    statuses = pooled[[s for _, s in causes]].to_numpy()
    time, cause = first_cause(times, statuses)
    # exact ties, textbook estimator on the pooled patients: CIF_k(t) = sum S(t_j-) d_kj / n_j
    grid = np.unique(time[cause > 0])
    n_at = np.array([(time >= t).sum() for t in grid], dtype=float)
    d_all = np.array([((time == t) & (cause > 0)).sum() for t in grid], dtype=float)
    s_before = np.concatenate([[1.0], np.cumprod(1 - d_all / n_at)[:-1]])
    exact = lifelines_gap = 0.0
    for k, curve in enumerate(doc["curves"], start=1):
        d_k = np.array([((time == t) & (cause == k)).sum() for t in grid], dtype=float)
        cif = np.cumsum(s_before * d_k / n_at)
        x = np.asarray(curve["x"], dtype=float)
        at = np.concatenate([[0.0], cif])[np.searchsorted(grid, x, side="right")]
        exact = max(exact, float(np.max(np.abs(np.asarray(curve["y"], dtype=float) - at))))
        with warnings.catch_warnings():  # lifelines warns that it jitters ties: we say so below
            warnings.simplefilter("ignore")
            ajf = AalenJohansenFitter(calculate_variance=False, seed=0).fit(
                time, cause, event_of_interest=k)
        ref = ajf.cumulative_density_.iloc[:, 0]
        ref = ref.groupby(level=0).last()
        lj = ref.reindex(ref.index.union(x)).ffill().fillna(0.0).loc[x].to_numpy()
        lifelines_gap = max(lifelines_gap, float(np.max(np.abs(np.asarray(curve["y"]) - lj))))
    return {"pooled engine": "Aalen-Johansen on the pooled patients (exact ties)",
            "max absolute difference of the cumulative incidence": f"{exact:.2e}",
            "lifelines AalenJohansenFitter (jitters tied times)": f"within {lifelines_gap:.1e}"}


def render_km(s: Section, doc: Mapping[str, Any], results: Mapping[str, Any]) -> None:
    tables = doc.get("tables") or {}
    stats = doc.get("stats") or {}
    plot_curves(s, doc)
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
        s.metrics(measure_rows(stats), "log-rank test: do the survival curves differ?")
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
        text.append(f"The curves differ (log-rank p {fmt_p(p)})." if p < 0.05 else
                    f"No clear difference between the curves (log-rank p {fmt_p(p)}).")
    if text:
        s.summary(" ".join(text))


def render_cox(s: Section, doc: Mapping[str, Any], results: Mapping[str, Any]) -> None:
    plain, hr, p = hazard_page(
        s, doc, "hazard ratio", "HR", "hazard ratio per unit of the variable (per year of age, "
        "per g/dL ...), or mutated vs not, or the level vs the reference", label)
    stats = dict(doc.get("stats") or {})
    s.metrics(measure_rows(stats))
    n, excluded = stats.get("n"), stats.get("excluded")
    head = f"Cox model of {stats.get('events', '?')} events in {fmt(n)} patients"
    if excluded:
        head += (f" ({fmt(excluded)} excluded: a covariate, the time or the event missing, "
                 "e.g. a gene not sequenced)")
    s.summary(f"{head}: " + effects_summary(plain, hr, p, "HR"))


def render_competing(s: Section, doc: Mapping[str, Any], results: Mapping[str, Any]) -> None:
    plot_curves(s, doc)
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


def render_finegray(s: Section, doc: Mapping[str, Any], results: Mapping[str, Any]) -> None:
    """Fine-Gray: subdistribution hazard ratios (forest + table), CIF curves when released."""
    options = doc.get("options") or {}
    causes = options.get("causes") or []
    k = int(options.get("cause", 1))
    names_opt = options.get("cause_names") or []
    event = (str(names_opt[k - 1]) if k <= len(names_opt) else
             label(str(causes[k - 1][1]), unit=False) if k <= len(causes) else f"cause {k}")
    plain, hr, p = hazard_page(
        s, doc, "subdistribution hazard ratio", "SHR",
        f"subdistribution hazard ratio of {event} per unit of the variable (Fine-Gray: patients "
        "who had a competing event stay in the risk set), robust 95% CI")
    if doc.get("curves"):
        plot_curves(s, {**doc, "curve_kind": "cif"})
    stats = dict(doc.get("stats") or {})
    s.metrics(measure_rows(stats))
    s.summary(f"Fine-Gray model of {fmt(stats.get('events'))} {event} events "
              f"({fmt(stats.get('competing events'))} competing) in {fmt(stats.get('n'))} "
              f"patients: " + effects_summary(plain, hr, p, "SHR"))


def render_cox_tv(s: Section, doc: Mapping[str, Any], results: Mapping[str, Any]) -> None:
    """Cox with a time-varying covariate (start-stop rows): hazard ratio forest and table."""
    plain, hr, p = hazard_page(
        s, doc, "hazard ratio", "HR",
        "hazard ratio per unit of the variable; '(t)': the covariate switches on at the "
        "patient's own event time (start-stop rows)")
    stats = dict(doc.get("stats") or {})
    s.metrics(measure_rows(stats))
    s.summary(f"Cox model with a time-varying covariate: {fmt(stats.get('events'))} events "
              f"in {fmt(stats.get('n'))} patients ({fmt(stats.get('rows'))} start-stop "
              "rows): " + effects_summary(plain, hr, p, "HR"))


KINDS = (
    AnalysisKind("km", {"duration", "event"}, {"group", "levels"},
                 queries={"time_histogram", "km_risk_table", "category_counts"},
                 sends=("time_histogram", "km_risk_table"), caps=_SURVIVAL_CAPS,
                 run=run_km, pooled=pooled_km, render=render_km),
    AnalysisKind("logrank", {"duration", "event", "group", "levels"}, set(),
                 queries={"time_histogram", "km_risk_table", "category_counts"},
                 sends=("time_histogram", "km_risk_table"), caps=_SURVIVAL_CAPS,
                 run=run_logrank),
    # lattice: the fit's grid is the whole public lattice k / lattice (hemafed.study.plan)
    AnalysisKind("cox", {"duration", "event", "formula"},
                 {"ties", "strata", "strata_levels", "bounds", "levels", "lattice"},
                 queries={"time_histogram", "cox_risk_set_sums", "cox_concordance_histogram",
                          "cox_site_derivatives", "category_counts"},
                 sends=("time_histogram", "cox_risk_set_sums", "cox_concordance_histogram"),
                 caps={"time_histogram": 2, "cox_risk_set_sums": NEWTON_CAP,
                       "cox_concordance_histogram": 4, "cox_site_derivatives": NEWTON_CAP,
                       "category_counts": 4},
                 run=run_cox, pooled=pooled_cox, render=render_cox),
    AnalysisKind("competing", {"causes"},
                 {"group", "levels", "event_of_interest", "cause_names"},
                 queries={"time_histogram", "competing_risk_table", "category_counts"},
                 sends=("time_histogram", "competing_risk_table"), caps=_SURVIVAL_CAPS,
                 run=run_competing, pooled=pooled_competing, render=render_competing),
    # lattice (finegray, cox_tv): the fit's grid is the whole public lattice, as cox's
    AnalysisKind("finegray", {"causes", "formula"},
                 {"cause", "cause_names", "bounds", "levels", "lattice"},
                 queries={"time_histogram", "finegray_table", "finegray_sums",
                          "finegray_score_outer", "category_counts"},
                 caps={"time_histogram": 2, "finegray_table": 2, "finegray_sums": NEWTON_CAP,
                       "finegray_score_outer": 4, "category_counts": 4},
                 run=run_finegray, render=render_finegray),
    AnalysisKind("cox_tv", {"duration", "event", "formula", "switch"},
                 {"ties", "bounds", "levels", "lattice"},
                 queries={"time_histogram", "cox_start_stop_sums", "category_counts"},
                 caps={"time_histogram": 2, "cox_start_stop_sums": NEWTON_CAP,
                       "category_counts": 4},
                 run=run_cox_tv, pooled=pooled_cox_tv, render=render_cox_tv),
)
"""The registrations of the six kinds."""
