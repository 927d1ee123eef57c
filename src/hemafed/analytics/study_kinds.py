"""Study-spec runners for the issue-17 methods: ``iptw``, ``multistate``, ``lmm`` and
``cox_long``.

Each hub step (``run_*``) turns one :class:`~hemafed.study.spec.Analysis` into the plain-JSON
result document the report renders (``tables``, ``curves``, ``stats``); ``render_*`` draw it.
:data:`KINDS` are their registrations (:class:`hemafed.kinds.AnalysisKind`: options, queries,
caps, hub step, pooled reference and report page), listed in
:data:`hemafed.study.kinds.CATALOGUE`.

Spec options: ``iptw``: ``treatment``, ``formula`` (confounders), ``duration``/``event``
(default ``os_time``/``os_status``), ``ties``, ``stabilized``, ``max_weight``; ``multistate``:
``illness_time``, ``illness_status``, ``exit_time``, ``exit_status`` (default the AML and OS
columns), ``states``; ``lmm``: ``outcome``, ``bounds`` (public ranges of the outcome, time and
covariates), ``time``, ``covariates``, ``max_obs`` (sites must hold a measurement table);
``cox_long``: ``formula`` (covariates of the long table, or baseline columns of the patient
table), ``bounds`` (public ranges of the numeric covariates), ``levels`` (public levels of the
categorical ones, reference first), ``start``, ``stop``, ``event``,
``id_col`` (the long table's columns, default ``start``, ``stop``, ``event``, ``patient_id``),
``ties``, ``steps_per_unit`` and ``max_time`` (the event-time lattice ``k / steps_per_unit``
in the table's own time unit, one of :data:`hemafed.kinds.OWN_TABLE_LATTICES`),
``max_rows_per_patient`` (sites hold the long table in ``cohort/measurements.parquet``, as the
mixed model's; the plan pins every request but the Newton ``beta`` and the event-time grid's
points, :func:`cox_long_pins`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hemafed.cohort.schema import label
from hemafed.documents import finite as _finite
from hemafed.documents import frame_from_json
from hemafed.documents import frame_json as _frame
from hemafed.errors import InvalidInput
from hemafed.federation.api import Federation
from hemafed.kinds import LMM_CAP, NEWTON_CAP, OWN_TABLE_LATTICES, AnalysisKind
from hemafed.report.drawing import (
    effects_summary,
    fmt,
    fmt_ci,
    fmt_ci_signed,
    fmt_p,
    hazard_page,
    measure_rows,
    plot_balance,
    plot_steps,
)
from hemafed.report.html import Section
from hemafed.studyplan.spec import OWN_LATTICE_MAX_POINTS

if TYPE_CHECKING:
    from hemafed.cohort.model import Cohort
    from hemafed.studyplan.spec import Analysis, StudySpec



def run_iptw(fed: Federation, a: Analysis, spec: StudySpec) -> dict[str, Any]:
    from hemafed.analytics.weighting import FederatedIPTW

    fit = FederatedIPTW(ties=a.get("ties", "efron"),
                        stabilized=bool(a.get("stabilized", True))).fit(
        fed, a.get("treatment"), a.get("formula"), a.get("duration", "os_time"),
        a.get("event", "os_status"), max_weight=a.get("max_weight"), study=spec.study_id)
    curves = [{"label": f"{a.get('treatment')} = {arm} (weighted)", "x": _finite(fit.km_.index),
               "y": _finite(fit.km_[arm])} for arm in ("control", "treated")]
    return {"tables": {"summary": _frame(fit.summary), "balance": _frame(fit.balance_),
                       "propensity": _frame(fit.propensity_.summary)},
            "curves": curves,
            "stats": {"hazard_ratio": fit.hazard_ratio_, "n": fit.n_, "events": fit.events_,
                      "ess_treated": float(fit.effective_sample_size_["treated"]),
                      "ess_control": float(fit.effective_sample_size_["control"]),
                      "secure_sums": fit.rounds, "sites": len(fit.sites)}}


def run_multistate(fed: Federation, a: Analysis, spec: StudySpec) -> dict[str, Any]:
    from hemafed.analytics.multistate import COLUMN_KEYS, FederatedIllnessDeath

    columns = {k: a.get(k) for k in COLUMN_KEYS if a.get(k) is not None}
    fit = FederatedIllnessDeath(a.get("states", ("MDS", "AML", "death"))).fit(
        fed, columns, study=spec.study_id)
    prob = fit.state_probabilities_
    assert prob is not None
    curves = [{"label": str(state), "x": _finite(prob.index), "y": _finite(prob[state])}
              for state in prob.columns]
    at = fit.predict([1.0, 2.0, 3.0, 5.0])
    return {"tables": {"state_probabilities": _frame(at)}, "curves": curves,
            "curve_kind": "state", "stats": {"n": fit.n_, "excluded": fit.excluded_,
                                             "secure_sums": fit.rounds}}


def run_lmm(fed: Federation, a: Analysis, spec: StudySpec) -> dict[str, Any]:
    from hemafed.analytics.mixed import FederatedLinearMixedModel

    fit = FederatedLinearMixedModel().fit(
        fed, a.get("outcome"), a.get("time", "time"), list(a.get("covariates", [])),
        bounds=a.get("bounds"), max_obs=int(a.get("max_obs", 50)), study=spec.study_id)
    return {"tables": {"fixed_effects": _frame(fit.summary),
                       "variance_components": _frame(fit.variance_components)},
            "stats": {"reml_criterion": fit.reml_criterion_, "n_obs": fit.rows_,
                      "n_patients": fit.n_, "secure_sums": fit.rounds}}


# --- cox_long: Cox regression on the sites' long-format start-stop tables ----------------------

COX_LONG_DEFAULTS: dict[str, Any] = {"id_col": "patient_id", "start": "start", "stop": "stop",
                                     "event": "event", "ties": "efron", "steps_per_unit": 1.0,
                                     "max_time": 10_000.0, "max_rows_per_patient": 20}
"""The spec options of ``cox_long`` a spec may leave out (times in the long table's unit)."""


def check_cox_long_lattice(analysis: Analysis) -> list[str]:
    """A ``cox_long`` lattice (``steps_per_unit``, ``max_time``, in the long table's own time
    unit) is one the plan admits (:data:`hemafed.kinds.OWN_TABLE_LATTICES`, at most
    :data:`hemafed.studyplan.spec.OWN_LATTICE_MAX_POINTS` points): a site answers nothing on
    another, so the spec is refused at validation rather than at the hub step (a spec rule,
    :class:`hemafed.studyplan.spec.SpecRules`, registered by :mod:`hemafed.study.kinds`)."""
    if analysis.kind != "cox_long":
        return []
    spu = analysis.get("steps_per_unit", COX_LONG_DEFAULTS["steps_per_unit"])
    top = analysis.get("max_time", COX_LONG_DEFAULTS["max_time"])
    allowed = ", ".join(f"{v:g}" for v in sorted(OWN_TABLE_LATTICES))
    if isinstance(spu, bool) or not isinstance(spu, int | float) \
            or float(spu) not in OWN_TABLE_LATTICES:
        return [f"steps_per_unit must be one of the public lattices {allowed} (steps per time "
                f"unit of the long table), got {spu!r}"]
    if isinstance(top, bool) or not isinstance(top, int | float) or not 0 < top < float("inf"):
        return [f"max_time must be a positive number, got {top!r}"]
    if int(float(top) * float(spu)) + 1 > OWN_LATTICE_MAX_POINTS:
        return [f"the lattice steps_per_unit x max_time may hold at most "
                f"{OWN_LATTICE_MAX_POINTS} points; lower max_time or steps_per_unit"]
    return []


def _long_option(a: Analysis, key: str) -> Any:
    return a.get(key, COX_LONG_DEFAULTS[key])


def _long_columns(a: Analysis) -> dict[str, Any]:
    """The column part every ``cox_long`` request carries (as the fitter builds it)."""
    return {"id_col": _long_option(a, "id_col"), "start_col": _long_option(a, "start"),
            "stop_col": _long_option(a, "stop"), "event_col": _long_option(a, "event"),
            "max_rows_per_patient": _long_option(a, "max_rows_per_patient")}


def _long_lattice(a: Analysis) -> tuple[float, float]:
    try:
        return float(_long_option(a, "steps_per_unit")), float(_long_option(a, "max_time"))
    except (TypeError, ValueError):
        raise InvalidInput("steps_per_unit and max_time of a cox_long analysis must be "
                           "numbers") from None


def cox_long_pins(a: Analysis) -> list[tuple[str, dict[str, Any]]]:
    """What an entry pins: the event-time request exactly (its columns on its lattice), and
    of the Newton requests the columns, design (the formula with the spec's bounds), ties and
    lattice; only ``beta`` and the grid's points (the pooled event times on that lattice)
    vary. An unusable entry pins an inadmissible lattice: the plan then permits nothing."""
    from hemafed.analytics.coxph_startstop import LONG_EVENTS_QUERY, LONG_QUERY, long_design

    try:
        spu, top = _long_lattice(a)
        design = long_design(a.get("formula") or "", a.get("bounds"), a.get("levels"))
    except (InvalidInput, TypeError, ValueError):
        return [(q, {"lattice": []}) for q in (LONG_EVENTS_QUERY, LONG_QUERY)]
    cols = _long_columns(a)
    return [(LONG_EVENTS_QUERY, cols | {"steps_per_unit": spu, "max_time": top,
                                        "lattice": [spu, top]}),
            (LONG_QUERY, cols | {"design": design.to_params(), "ties": _long_option(a, "ties"),
                                 "lattice": [spu, top], "iterated": ["beta", "grid"]})]


def run_cox_long(fed: Federation, a: Analysis, spec: StudySpec) -> dict[str, Any]:
    from hemafed.analytics.coxph_startstop import CoxStartStopFitter

    spu, top = _long_lattice(a)
    if spu not in OWN_TABLE_LATTICES:
        raise InvalidInput(f"steps_per_unit of a cox_long analysis must be one of the public "
                           f"lattices {sorted(OWN_TABLE_LATTICES)}, got {spu:g}")
    fit = CoxStartStopFitter(ties=_long_option(a, "ties")).fit(
        fed, formula=a.get("formula") or "", bounds=a.get("bounds"), levels=a.get("levels"),
        id_col=_long_option(a, "id_col"), start_col=_long_option(a, "start"),
        stop_col=_long_option(a, "stop"), event_col=_long_option(a, "event"),
        steps_per_unit=spu, max_time=top,
        max_rows_per_patient=_long_option(a, "max_rows_per_patient"), study=spec.study_id)
    return {"tables": {"summary": _frame(fit.summary)},
            "stats": {"newton_rounds": fit.rounds, "n": fit.n_, "rows": fit.rows_,
                      "events": fit.events_, "rows excluded": fit.excluded_,
                      "log_likelihood": fit.log_likelihood_, "sites": len(fit.sites_)}}


def _pooled_rows(a: Analysis, cohorts: Sequence[Cohort]) -> pd.DataFrame:
    """The pooled complete start-stop rows of the sites' long tables (validation only)."""
    from hemafed.analytics.coxph_startstop import LongColumns, long_design, long_rows
    from hemafed.analytics.mixed import LongitudinalCohort

    spec = long_design(a.get("formula") or "", a.get("bounds"), a.get("levels"))
    params = LongColumns.from_mapping(_long_columns(a))
    frames = []
    for i, c in enumerate(cohorts):
        if not isinstance(c, LongitudinalCohort):
            raise InvalidInput("the pooled cox_long reference needs each site's long table")
        start, stop, event, x, *_, ids = long_rows(c, params, spec)
        frame = pd.DataFrame(x + spec.center, columns=list(spec.names))
        frames.append(frame.assign(id=[f"{i}:{p}" for p in ids], start=start, stop=stop,
                                   event=event.astype(int)))
    return pd.concat(frames, ignore_index=True)


def pooled_cox_long(a: Analysis, doc: dict[str, Any], cohorts: Sequence[Cohort],
                    holdout: pd.DataFrame | None = None) -> dict[str, Any]:
    """lifelines' ``CoxTimeVaryingFitter`` on the pooled rows (Efron ties; it has no Breslow,
    so a Breslow analysis is compared with this estimator on one pooled site)."""
    from hemafed.analytics.coxph_startstop import CoxStartStopFitter
    from hemafed.analytics.mixed import LongitudinalCohort
    from hemafed.federation.local import LocalSumFederation

    rows = _pooled_rows(a, cohorts)
    names = [c for c in rows.columns if c not in ("id", "start", "stop", "event")]
    if _long_option(a, "ties") == "efron":
        from lifelines import CoxTimeVaryingFitter

        ref = CoxTimeVaryingFitter().fit(rows, id_col="id", start_col="start",
                                         stop_col="stop", event_col="event")
        want, engine = ref.params_[names].to_numpy(), "lifelines CoxTimeVaryingFitter (Efron)"
    else:
        from hemafed.cohort.model import Cohort as _Cohort

        patients = pd.DataFrame({"patient_id": rows["id"].unique()})
        one = LongitudinalCohort.attach(_Cohort(patients), rows.rename(
            columns={"id": "patient_id"}))
        from hemafed.analytics.coxph_startstop import long_design

        design = long_design(a.get("formula") or "", a.get("bounds"), a.get("levels"))
        bounds = {n: [float(c - h), float(c + h)]  # a dummy's bounds are [0, 1]
                  for n, c, h in zip(design.names, design.center, design.half_width,
                                     strict=True)}
        fit = CoxStartStopFitter(ties="breslow", tol=1e-9).fit(
            LocalSumFederation({"pooled": one}), formula=names, bounds=bounds,
            steps_per_unit=_long_lattice(a)[0], max_time=_long_lattice(a)[1])
        assert fit.params_ is not None
        want, engine = fit.params_.to_numpy(), "hemafed Breslow fit on the pooled rows"
    got = frame_from_json(doc["tables"]["summary"])["coef"].to_numpy(dtype=float)
    diff = float(np.max(np.abs(got - want))) if got.size == want.size else float("nan")
    return {"pooled engine": engine, "max absolute difference of the coefficients": f"{diff:.2e}"}


# --- report pages ------------------------------------------------------------------------------

def render_iptw(s: Section, doc: Mapping[str, Any], results: Mapping[str, Any]) -> None:
    """IPTW: love plot, weighted Kaplan-Meier, hazard ratio with robust CI, balance table."""
    tables = doc.get("tables") or {}
    options = doc.get("options") or {}
    treatment = label(str(options.get("treatment", "treatment")), unit=False)
    balance = frame_from_json(tables["balance"]) if "balance" in tables else None
    if balance is not None and len(balance):
        plot_balance(s, balance)
    prefix = f"{options.get('treatment')} = "
    curves = [{**c, "label": str(c["label"]).replace(prefix, "")}
              for c in doc.get("curves") or []]
    plot_steps(s, curves, "survival probability", f"Kaplan-Meier estimate by {treatment} "
                "(treated / control) in the weighted pseudo-population (inverse probability of "
                "treatment weights)")
    t = frame_from_json(tables["summary"])
    rows = [{"Effect": f"{treatment}: treated vs not", "HR": f"{float(r['exp(coef)']):.2f}",
             "95% CI (robust)": fmt_ci(float(r["exp(coef) lower 95%"]),
                                    float(r["exp(coef) upper 95%"])),
             "SE (robust)": fmt(float(r["se(coef)"])),
             "SE (naive)": fmt(float(r["se(coef) naive"])) if "se(coef) naive" in t else "–",
             "p": fmt_p(r["p"])} for _, r in t.iterrows()]
    s.table(pd.DataFrame(rows), "weighted Cox model: hazard ratio of the treatment with a "
            "robust (sandwich) 95% CI; the naive SE ignores the estimated weights", index=False)
    if balance is not None and len(balance):
        brows = [{"Covariate": label(str(i)),
                  "Mean, treated": fmt(r["mean_treated"]),
                  "Mean, control": fmt(r["mean_control"]), "SMD": f"{float(r['smd']):.3f}",
                  "Weighted SMD": f"{float(r['weighted_smd']):.3f}"}
                 for i, r in balance.iterrows()]
        s.table(pd.DataFrame(brows), "standardised mean differences before and after "
                "weighting: below 0.1 in absolute value is usually taken as balanced",
                index=False)
    stats = dict(doc.get("stats") or {})
    s.metrics(measure_rows(stats))
    text = []
    if len(t):
        r = t.iloc[0]
        hr, lo, hi = (float(r["exp(coef)"]), float(r["exp(coef) lower 95%"]),
                      float(r["exp(coef) upper 95%"]))
        text.append(f"Weighted for the confounders, the hazard ratio of treated vs untreated "
                    f"({treatment}) was {hr:.2f} (robust 95% CI {fmt_ci(lo, hi)}, p {fmt_p(r['p'])}) in "
                    f"{fmt(stats.get('n'))} patients with {fmt(stats.get('events'))} events.")
    if balance is not None and len(balance):
        worst = float(np.nanmax(np.abs(balance["weighted_smd"].astype(float))))
        text.append(f"Largest absolute SMD after weighting: {worst:.3f}"
                    + (" (balanced)." if worst < 0.1 else " (check the propensity model)."))
    if text:
        s.summary(" ".join(text))


def render_multistate(s: Section, doc: Mapping[str, Any], results: Mapping[str, Any]) -> None:
    """Multi-state (illness-death): state occupation probabilities over time."""
    curves = list(doc.get("curves") or [])
    plot_steps(s, curves, "probability of being in the state", "state occupation "
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
        s.metrics(measure_rows(stats))
        if len(t):
            last = t.iloc[-1]
            s.summary(f"At {float(t.index[-1]):g} years: " + ", ".join(
                f"{c} {100 * float(v):.0f}%" for c, v in last.items())
                + f" of {fmt(stats.get('n'))} patients (Aalen-Johansen state occupation).")


def render_lmm(s: Section, doc: Mapping[str, Any], results: Mapping[str, Any]) -> None:
    """Linear mixed model: fixed effects with CI, variance components."""
    tables = doc.get("tables") or {}
    options = doc.get("options") or {}
    outcome = label(str(options.get("outcome", "outcome")))
    fe = frame_from_json(tables["fixed_effects"])
    rows = [{"Term": "Intercept" if str(i) == "(Intercept)" else
             "Time (per year)" if str(i) == str(options.get("time", "time")) else label(str(i)),
             "Estimate": fmt(float(r["estimate"]), 4),
             "95% CI": fmt_ci_signed(float(r["lower 95%"]), float(r["upper 95%"])),
             "SE": fmt(float(r["std_error"])), "p": fmt_p(r["p"])} for i, r in fe.iterrows()]
    s.table(pd.DataFrame(rows), f"fixed effects on {outcome}: change per unit of the term "
            "(REML, random intercept and slope per patient)", index=False)
    if "variance_components" in tables:
        vc = frame_from_json(tables["variance_components"])
        vrows = [{"Component": str(i).replace("patient (Intercept)", "between patients: level")
                  .replace("patient time", "between patients: slope")
                  .replace("residual", "within patient (residual)"),
                  "Variance": fmt(r["variance"]), "SD": fmt(r["std_dev"]),
                  "Correlation": "–" if r["corr"] is None or pd.isna(r["corr"])
                  else f"{float(r['corr']):.2f}"} for i, r in vc.iterrows()]
        s.table(pd.DataFrame(vrows), "variance components: how much patients differ in level "
                "and slope, and the visit-to-visit noise", index=False)
    stats = dict(doc.get("stats") or {})
    s.metrics(measure_rows(stats))
    slope = fe.loc[fe.index.astype(str) == str(options.get("time", "time"))]
    if len(slope):
        r = slope.iloc[0]
        s.summary(f"{outcome} changed by {float(r['estimate']):.3g} per year (95% CI "
                  f"{fmt_ci_signed(float(r['lower 95%']), float(r['upper 95%']))}) over "
                  f"{fmt(stats.get('n_obs'))} measurements of {fmt(stats.get('n_patients'))} "
                  "patients.")


def render_cox_long(s: Section, doc: Mapping[str, Any], results: Mapping[str, Any]) -> None:
    """Cox on the sites' long start-stop tables: as :func:`render_cox_tv`, the terms named as the
    study's own table names them (its columns are not the schema's: ``transplant`` there may
    be a heart transplant)."""
    plain, hr, p = hazard_page(
        s, doc, "hazard ratio", "HR",
        "hazard ratio per unit of the variable (or against the reference level, "
        "'column[level]'), the covariates taking each start-stop row's values",
        term_label=lambda name, unit=True: name)
    stats = dict(doc.get("stats") or {})
    s.metrics(measure_rows(stats))
    s.summary(f"Cox model on start-stop rows: {fmt(stats.get('events'))} events in "
              f"{fmt(stats.get('n'))} patients ({fmt(stats.get('rows'))} rows): "
              + effects_summary(plain, hr, p, "HR"))


KINDS = (
    AnalysisKind("iptw", {"treatment", "formula"},
                 {"duration", "event", "ties", "stabilized", "max_weight"},
                 queries={"logistic_newton", "iptw_balance", "iptw_cox_sums", "iptw_cox_robust",
                          "iptw_km_table", "iptw_km_influence", "time_histogram",
                          "category_counts"},
                 caps={"logistic_newton": NEWTON_CAP, "iptw_balance": 4,
                       "iptw_cox_sums": NEWTON_CAP, "iptw_cox_robust": 4, "iptw_km_table": 4,
                       "iptw_km_influence": 4, "time_histogram": 2, "category_counts": 4},
                 default_columns={"os_time", "os_status"}, run=run_iptw, render=render_iptw),
    AnalysisKind("multistate", set(),
                 {"illness_time", "illness_status", "exit_time", "exit_status", "states"},
                 queries={"time_histogram", "illness_death_counts", "illness_death_influence"},
                 caps={"time_histogram": 2, "illness_death_counts": 2,
                       "illness_death_influence": 2},
                 default_columns={"amlt_time", "amlt_status", "os_time", "os_status"},
                 run=run_multistate, render=render_multistate),
    AnalysisKind("lmm", {"outcome", "bounds"}, {"time", "covariates", "max_obs"},
                 queries={"lmm_reml_sums"}, caps={"lmm_reml_sums": LMM_CAP}, run=run_lmm,
                 render=render_lmm),
    AnalysisKind("cox_long", {"formula"}, {"bounds", "levels", *COX_LONG_DEFAULTS},
                 queries={"cox_long_event_times", "cox_long_sums"},
                 caps={"cox_long_event_times": 2, "cox_long_sums": NEWTON_CAP},
                 run=run_cox_long, pooled=pooled_cox_long, render=render_cox_long,
                 pins=cox_long_pins),
)
"""The registrations of the four kinds."""
