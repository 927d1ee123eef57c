"""The registrations of the descriptive and regression kinds: ``describe``, ``crosstab``,
``logistic`` and the network catalogue's ``catalogue`` (:class:`hemafed.kinds.AnalysisKind`).

Each entry holds the kind's spec options, the site queries its plan permits and its hub step
sends, its caps, its hub step (``run_*``), its pooled reference (``pooled_*``, pandas and
statsmodels on the pooled patients, validation only) and its report page (``render_*``),
listed in :data:`hemafed.study.kinds.CATALOGUE`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hemafed.analytics.pooled import agreement, pooled_design
from hemafed.cohort.schema import label
from hemafed.documents import frame_from_json, frame_json
from hemafed.errors import InvalidInput
from hemafed.federation.api import Federation
from hemafed.kinds import NEWTON_CAP, AnalysisKind
from hemafed.report.drawing import effects_summary, fmt, measure_rows, plot_forest, ratio_table
from hemafed.report.html import Section

if TYPE_CHECKING:
    from hemafed.cohort.model import Cohort
    from hemafed.study.spec import Analysis, StudySpec

__all__ = ["KINDS", "spec_formula"]


def _describe_caps(a: Any) -> dict[str, int]:
    n = len(a.get("columns") or ())
    return {"numeric_summary": 2 * n, "category_counts": 2 * n, "moments": 2 * n,
            "cohort_size": 2}


def spec_formula(a: Analysis) -> Any:
    """The analysis' design: its formula with the spec's fixed public ``bounds`` and declared
    ``levels`` (a model's ``{column: [reference, ...]}``), if any."""
    from hemafed.analytics.design import parse_formula

    levels = a.get("levels") if isinstance(a.get("levels"), dict) else None
    if a.get("bounds") or levels:
        return parse_formula(a.get("formula"), a.get("bounds") or None, levels)
    return a.get("formula")


def run_describe(fed: Federation, a: Analysis, spec: StudySpec) -> dict[str, Any]:
    from hemafed.analytics.describe import describe

    res = describe(fed, list(a.get("columns")), bounds=a.get("bounds"), levels=a.get("levels"),
                   bins=a.get("bins", 20), min_cell=spec.min_cell, study=spec.study_id)
    tables = {"numeric": frame_json(res.summary)}
    if res.categories is not None and len(res.categories):
        tables["categorical"] = frame_json(res.categories)
    return {"tables": tables}


def run_crosstab(fed: Federation, a: Analysis, spec: StudySpec) -> dict[str, Any]:
    from hemafed.analytics.describe import crosstab

    res = crosstab(fed, a.get("row"), a.get("col"), levels=a.get("levels"),
                   min_cell=spec.min_cell, study=spec.study_id)
    return {"tables": {"counts": frame_json(res.table)},
            "stats": {"chi2": res.chi2, "dof": res.dof, "p_value": res.p_value}}


def run_logistic(fed: Federation, a: Analysis, spec: StudySpec) -> dict[str, Any]:
    from hemafed.analytics.logistic import FederatedLogisticRegression

    lr = FederatedLogisticRegression().fit(fed, a.get("outcome"), spec_formula(a),
                                           positive=a.get("positive"), study=spec.study_id)
    return {"tables": {"summary": frame_json(lr.summary)},
            "stats": {"newton_rounds": lr.rounds, "n": lr.n_, "pseudo_r2": lr.prsquared}}


def run_catalogue(fed: Federation, a: Analysis, spec: StudySpec) -> dict[str, Any]:
    raise InvalidInput(f"analysis {a.id!r}: a 'catalogue' analysis is the network catalogue's "
                       "standing plan; the hub service refreshes it (portal or "
                       "POST /api/catalogue/refresh), it is not run as a study")


def pooled_describe(a: Analysis, doc: dict[str, Any], cohorts: Sequence[Cohort],
                     holdout: pd.DataFrame | None = None) -> dict[str, Any]:
    fed = frame_from_json(doc["tables"]["numeric"])
    pooled = pd.concat([c.patients for c in cohorts], ignore_index=True)
    worst = 0.0
    for col in fed.index:
        vals = pooled[col].astype("Float64").dropna().to_numpy(dtype=float)
        worst = max(worst, abs(float(fed.loc[col, "mean"]) - float(vals.mean())))
    return {"pooled engine": "pandas", "max absolute difference of the means": f"{worst:.2e}"}


def pooled_logistic(a: Analysis, doc: dict[str, Any], cohorts: Sequence[Cohort],
                     holdout: pd.DataFrame | None = None) -> dict[str, Any]:
    import statsmodels.api as sm

    outcome = a.get("outcome")
    x, _names, extra = pooled_design(cohorts, a.get("formula"), [outcome])
    y = extra[outcome].astype(float).to_numpy()
    fit = sm.Logit(y, sm.add_constant(x, has_constant="add")).fit(disp=0, tol=1e-12)
    fed = frame_from_json(doc["tables"]["summary"])
    return agreement("statsmodels Logit", fed["coef"], fed["std err"], fit.params, fit.bse)


def render_describe(s: Section, doc: Mapping[str, Any], results: Mapping[str, Any]) -> None:
    tables = doc.get("tables") or {}
    numeric = frame_from_json(tables["numeric"]) if "numeric" in tables else None
    if numeric is not None and len(numeric):
        rows = []
        for name, r in numeric.iterrows():
            iqr = (f"{fmt(r.get('q0.25'))}–{fmt(r.get('q0.75'))}"
                   if r.get("q0.25") is not None else "–")
            rows.append({"Variable": label(str(name)), "Patients": fmt(r.get("count")),
                         "Missing": fmt(r.get("missing")), "Mean": fmt(r.get("mean")),
                         "SD": fmt(r.get("sd")), "Median": fmt(r.get("q0.5")),
                         "IQR": iqr})
        s.table(pd.DataFrame(rows), "numeric variables (median and interquartile range)",
                index=False)
        if "age" in numeric.index:
            a = numeric.loc["age"]
            n = int(a["count"] + a["missing"])
            s.summary(f"{n:,} patients from {len(results['sites'])} sites. Median age "
                      f"{fmt(a.get('q0.5'))} years (interquartile range "
                      f"{fmt(a.get('q0.25'))}–{fmt(a.get('q0.75'))}).")
    if "categorical" in tables:
        cats = frame_from_json(tables["categorical"])
        rows, last = [], None
        for _, r in cats.iterrows():
            column = str(r["column"])
            if r["level"] in ("<missing>", "<other>") and not r["count"]:
                continue  # an empty 'missing' or 'other' row says nothing
            rows.append({"Variable": label(column) if column != last else "",
                         "Level": "missing" if r["level"] == "<missing>" else str(r["level"]),
                         "Patients": fmt(r["count"]),
                         "%": "" if r["level"] in ("<missing>", "<other>") else
                         "–" if r["percent"] is None or pd.isna(r["percent"])
                         else f"{float(r['percent']):.1f}"})
            last = column
        s.table(pd.DataFrame(rows), "categorical variables: % of patients with a known value "
                "('–': suppressed, fewer patients than the study's minimum cell size)",
                index=False, left=2)


def render_logistic(s: Section, doc: Mapping[str, Any], results: Mapping[str, Any]) -> None:
    t = frame_from_json(doc["tables"]["summary"])
    keep = [i for i in t.index if str(i) != "const"]
    t = t.loc[keep]
    names = [label(str(i)) for i in t.index]
    odds = np.exp(t["coef"].astype(float).to_numpy())
    lo = np.exp(t["[0.025"].astype(float).to_numpy())
    hi = np.exp(t["0.975]"].astype(float).to_numpy())
    p = t["P>|z|"].astype(float).to_numpy()
    outcome = label(str((doc.get("options") or {}).get("outcome", "outcome")), unit=False)
    plot_forest(s, names, odds, lo, hi, "odds ratio")
    ratio_table(s, names, odds, lo, hi, p, "OR", f"odds ratio of {outcome} per unit of the "
                 "variable (per year of age, per g/dL ...); the intercept is not shown")
    stats = dict(doc.get("stats") or {})
    s.metrics(measure_rows(stats))
    plain = [label(str(i), unit=False) for i in t.index]
    s.summary(f"Logistic regression of {outcome} in {fmt(stats.get('n'))} patients: "
              + effects_summary(plain, odds, p, "OR"))


KINDS = (
    AnalysisKind("describe", {"columns"}, {"bounds", "levels", "bins"},
                 queries={"numeric_summary", "category_counts", "moments", "cohort_size"},
                 sends=("numeric_summary", "category_counts"), caps=_describe_caps,
                 run=run_describe, pooled=pooled_describe, render=render_describe),
    AnalysisKind("crosstab", {"row", "col"}, {"levels"},
                 queries={"crosstab", "category_counts"}, sends=("crosstab",),
                 caps={"crosstab": 2, "category_counts": 4}, run=run_crosstab),
    AnalysisKind("logistic", {"outcome", "formula"}, {"positive", "bounds", "levels"},
                 queries={"logistic_newton", "category_counts"}, sends=("logistic_newton",),
                 caps={"logistic_newton": NEWTON_CAP, "category_counts": 4},
                 run=run_logistic, pooled=pooled_logistic, render=render_logistic),
    # the network catalogue's standing plan (hemafed.service.catalogue; never run as a study):
    # one distinct request per set of catalogue sites (a refresh repeats the same request)
    AnalysisKind("catalogue", {"columns", "group", "levels"},
                 {"epsilon", "delta", "round_to", "min_cell", "refresh_every_days"},
                 queries={"catalogue_counts"}, caps={"catalogue_counts": 64}, run=run_catalogue),
)
"""The registrations of the four kinds."""
