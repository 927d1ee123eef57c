"""Pooled reference analyses, for validation only: what a central analysis of the same rows gives.

The demo (which generated the virtual cohort, so it may look at it) and the tests compute the same
analysis with lifelines / statsmodels on the pooled patients, and report the largest difference
from the federated result. A federation never runs this code: sites never pool their data.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from hemafed.cohort.model import Cohort
from hemafed.kinds import get_kind
from hemafed.study.runner import frame_from_json
from hemafed.study.spec import Analysis


def _design(cohorts: Sequence[Cohort], formula: str, required: Sequence[str]
            ) -> tuple[np.ndarray, list[str], pd.DataFrame]:
    from hemafed.analytics.design import complete_case_mask, design_matrix, parse_formula

    spec = parse_formula(formula)
    xs, extras = [], []
    names: list[str] = []
    for c in cohorts:
        rows = complete_case_mask(c, spec, required=required)
        x, names = design_matrix(c, spec, rows)
        xs.append(x)
        extras.append(c.patients.loc[rows, list(required)].reset_index(drop=True))
    return np.vstack(xs), names, pd.concat(extras, ignore_index=True)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12)))


def _agreement(engine: str, coef: Any, se: Any, want_coef: Any, want_se: Any) -> dict[str, str]:
    """How far the federated coefficients and standard errors are from the pooled engine's."""
    def rel(a: Any, b: Any) -> str:
        return f"{_rel(np.asarray(a, dtype=float), np.asarray(b, dtype=float)):.2e}"

    return {"pooled engine": engine,
            "max relative difference, coefficients": rel(coef, want_coef),
            "max relative difference, standard errors": rel(se, want_se)}


def compare_cox(a: Analysis, doc: dict[str, Any], cohorts: Sequence[Cohort]) -> dict[str, Any]:
    from lifelines import CoxPHFitter

    dur, ev = a.get("duration"), a.get("event")
    x, names, extra = _design(cohorts, a.get("formula"), [dur, ev])
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
    return {**_agreement("lifelines CoxPHFitter (Efron ties)", fed["coef"], fed["se(coef)"],
                         cph.params_, cph.standard_errors_),
            "pooled concordance": f"{cph.concordance_index_:.4f}"}


def compare_cox_tv(a: Analysis, doc: dict[str, Any], cohorts: Sequence[Cohort]
                   ) -> dict[str, Any]:
    """The time-varying Cox against lifelines' ``CoxTimeVaryingFitter`` on the pooled rows
    split at the switch time (as ``tmerge(..., tdc(s))``); on the spec's ``lattice`` every
    follow-up and switch time is first moved up to its interval's end, as the sites do."""
    from lifelines import CoxTimeVaryingFitter

    if a.get("ties", "efron") != "efron":
        return {}  # lifelines' fitter has Efron's ties only
    dur, ev = a.get("duration"), a.get("event")
    tcol, scol = a.get("switch")
    x, names, extra = _design(cohorts, a.get("formula"), [dur, ev, tcol, scol])
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
    return _agreement("lifelines CoxTimeVaryingFitter (Efron ties)", fed["coef"],
                      fed["se(coef)"], ctv.params_[order], ctv.standard_errors_[order])


def compare_km(a: Analysis, doc: dict[str, Any], cohorts: Sequence[Cohort]) -> dict[str, Any]:
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


def compare_logistic(a: Analysis, doc: dict[str, Any], cohorts: Sequence[Cohort]
                     ) -> dict[str, Any]:
    import statsmodels.api as sm

    outcome = a.get("outcome")
    x, _names, extra = _design(cohorts, a.get("formula"), [outcome])
    y = extra[outcome].astype(float).to_numpy()
    fit = sm.Logit(y, sm.add_constant(x, has_constant="add")).fit(disp=0, tol=1e-12)
    fed = frame_from_json(doc["tables"]["summary"])
    return _agreement("statsmodels Logit", fed["coef"], fed["std err"], fit.params, fit.bse)


def compare_describe(a: Analysis, doc: dict[str, Any], cohorts: Sequence[Cohort]
                     ) -> dict[str, Any]:
    fed = frame_from_json(doc["tables"]["numeric"])
    pooled = pd.concat([c.patients for c in cohorts], ignore_index=True)
    worst = 0.0
    for col in fed.index:
        vals = pooled[col].astype("Float64").dropna().to_numpy(dtype=float)
        worst = max(worst, abs(float(fed.loc[col, "mean"]) - float(vals.mean())))
    return {"pooled engine": "pandas", "max absolute difference of the means": f"{worst:.2e}"}


def compare_synth(a: Analysis, doc: dict[str, Any], cohorts: Sequence[Cohort],
                  holdout: pd.DataFrame | None = None) -> dict[str, Any]:
    """Fidelity, utility and privacy of the synthetic cohort against the real (pooled) one."""
    from hemafed.synth.evaluate import DEFAULT_THRESHOLDS, evaluate

    columns = list(a.get("columns"))
    synthetic = pd.DataFrame(doc["synthetic"]["data"], columns=doc["synthetic"]["columns"])
    train = pd.concat([c.patients[columns] for c in cohorts], ignore_index=True)
    if holdout is None:
        return {}
    report = evaluate(train, synthetic[columns], holdout[columns].reset_index(drop=True))
    keep = {**report.fidelity, **report.utility, **report.privacy}
    out = {k: (f"{v:.3f}" if isinstance(v, float) else v) for k, v in keep.items()}
    out["release gate (default thresholds)"] = (
        "pass" if report.passes() else f"fail: {', '.join(report.failures())}")
    out["thresholds"] = ", ".join(f"{k} {v}" for k, v in DEFAULT_THRESHOLDS.items())
    return out


def compare_competing(a: Analysis, doc: dict[str, Any], cohorts: Sequence[Cohort]
                      ) -> dict[str, Any]:
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


_COMPARE = {"cox": compare_cox, "cox_tv": compare_cox_tv, "km": compare_km, "logistic": compare_logistic,
            "describe": compare_describe, "competing": compare_competing}


def compare(a: Analysis, doc: dict[str, Any], cohorts: Sequence[Cohort],
            holdout: pd.DataFrame | None = None) -> dict[str, Any] | None:
    """The pooled check for analysis ``a`` (None when the kind has no pooled reference here).

    ``holdout``: real patients not used by the federation (synthetic-data privacy metrics).
    """
    if a.kind == "synth":
        return compare_synth(a, doc, cohorts, holdout)
    fn = _COMPARE.get(a.kind) or get_kind(a.kind).pooled  # else the kind's registration's
    return None if fn is None else fn(a, doc, cohorts)
