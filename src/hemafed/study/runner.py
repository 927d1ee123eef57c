"""Run a study specification over any federation and collect JSON-able results.

Each analysis kind maps to one federated estimator from :mod:`hemafed.analytics` (and, as they
land, :mod:`hemafed.learn` and :mod:`hemafed.synth`). A result is a plain-JSON document: tables
(pandas ``split`` orient), curves (x/y arrays) and provenance (secure sums, round trips, seconds,
epsilon asked per release), so the same document comes back from Flower simulation, from a
deployment's ServerApp process, or from an in-process run, and the report renders it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from hemafed.documents import _plain as _plain
from hemafed.documents import finite as _finite
from hemafed.documents import frame_from_json as frame_from_json
from hemafed.documents import frame_json as frame_json
from hemafed.errors import HemafedError, InvalidInput, SitesChanged
from hemafed.federation.api import AggregateResult, DPRequest, Federation, SumRequest, secure_sums
from hemafed.kinds import KindTable, bind, get_kind
from hemafed.study import kinds as _registrations  # noqa: F401  (the kinds and their queries)
from hemafed.study.derived import DERIVED_LEVELS
from hemafed.study.spec import Analysis, StudySpec

log = logging.getLogger(__name__)


@dataclass
class TrackingFederation:
    """Wraps a federation and records every secure sum an analysis asks for (provenance)."""

    inner: Federation
    calls: list[dict[str, Any]] = field(default_factory=list)

    @property
    def site_ids(self) -> tuple[str, ...]:
        return self.inner.site_ids

    def secure_sum(self, query: str, params: Mapping[str, Any], *, study: str = "default",
                   dp: DPRequest | None = None) -> AggregateResult:
        return self._record(query, dp, self.inner.secure_sum(query, params, study=study, dp=dp))

    def secure_sums(self, parts: Sequence[SumRequest], *,
                    study: str = "default") -> list[AggregateResult]:
        """Several sums in one aggregation when the inner federation batches (one record each)."""
        results = secure_sums(self.inner, parts, study=study)
        return [self._record(q, dp, r) for (q, _, dp), r in zip(parts, results, strict=True)]

    def _record(self, query: str, dp: DPRequest | None, res: AggregateResult) -> AggregateResult:
        self.calls.append({"query": query, "round_trips": res.round_trips,
                           "seconds": res.seconds, "sites": len(res.sites),
                           "site_ids": sorted(res.sites),
                           "dropped": list(res.dropped),
                           "epsilon": None if dp is None else dp.epsilon,
                           "noise_multiplier": None if dp is None else dp.noise_multiplier})
        return res

    def take(self) -> list[dict[str, Any]]:
        out, self.calls = self.calls, []
        return out


def _levels(a: Analysis, key: str = "group") -> list[str] | None:
    col = a.get(key)
    if col is None:
        return None
    levels = a.get("levels") or DERIVED_LEVELS.get(col)
    return [str(v) for v in levels] if levels else None


def _curve_docs(fitted: Any) -> list[dict[str, Any]]:
    curves = []
    for label, c in fitted.curves_.items():
        s = c.survival
        ci_lo, ci_hi = c.ci_lower, c.ci_upper
        curves.append({"label": str(label), "x": _finite(s.index),
                       "y": _finite(s.to_numpy().ravel()),
                       "lower": _finite(np.asarray(ci_lo).ravel()),
                       "upper": _finite(np.asarray(ci_hi).ravel()),
                       "median": None if not np.isfinite(c.median) else float(c.median)})
    return curves


def _formula(a: Analysis) -> Any:
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


def run_km(fed: Federation, a: Analysis, spec: StudySpec) -> dict[str, Any]:
    from hemafed.analytics.km import FederatedKaplanMeier
    from hemafed.analytics.logrank import logrank_from_counts

    levels = _levels(a)
    km = FederatedKaplanMeier().fit(fed, a.get("duration"), a.get("event"),
                                    group_col=a.get("group"), levels=levels, study=spec.study_id)
    out: dict[str, Any] = {"curves": _curve_docs(km)}
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
    cox.fit(fed, a.get("duration"), a.get("event"), _formula(a), study=spec.study_id,
            lattice=None if lattice is None else float(lattice), concordance=lattice is None)
    stats = {"concordance": cox.concordance_index_, "log_likelihood": cox.log_likelihood_,
             "newton_rounds": cox.rounds, "n": cox.n_, "events": cox.events_,
             "excluded": cox.excluded_}
    if lattice is not None:
        del stats["concordance"]
    return {"tables": {"summary": frame_json(cox.summary)}, "stats": stats}


def run_logistic(fed: Federation, a: Analysis, spec: StudySpec) -> dict[str, Any]:
    from hemafed.analytics.logistic import FederatedLogisticRegression

    lr = FederatedLogisticRegression().fit(fed, a.get("outcome"), _formula(a),
                                           positive=a.get("positive"), study=spec.study_id)
    return {"tables": {"summary": frame_json(lr.summary)},
            "stats": {"newton_rounds": lr.rounds, "n": lr.n_, "pseudo_r2": lr.prsquared}}


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
            curves.append({"label": label, "x": _finite(aj.grid_), "y": _finite(ci.cif),
                           "lower": _finite(ci.lower), "upper": _finite(ci.upper)})
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
    fg = FederatedFineGray().fit(fed, _formula(a), [tuple(c) for c in a.get("causes")],
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
        fed, a.get("duration"), a.get("event"), _formula(a),
        switch=tuple(a.get("switch")), study=spec.study_id,
        lattice=None if lattice is None else float(lattice))
    return {"tables": {"summary": frame_json(tv.summary)},
            "stats": {"newton_rounds": tv.rounds, "n": tv.n_, "rows": tv.rows_,
                      "events": tv.events_, "excluded": tv.excluded_}}


def run_gbdt(fed: Federation, a: Analysis, spec: StudySpec) -> dict[str, Any]:
    """Federated boosted Cox model, evaluated (with the published score) by secure sums."""
    from hemafed.learn.features import feature_spec, fixed_bins
    from hemafed.learn.gbdt import FederatedGBDT
    from hemafed.learn.metrics import evaluate, gbdt_predictor, ipssm_predictor
    from hemafed.study.kinds import EXACT_HISTOGRAMS_KEY

    dur, ev = a.get("duration"), a.get("event")
    # the plan binds boosting to the spec's fixed bins and, unless the spec opts out, to DP
    nm = a.get("noise_multiplier")
    if nm is None and a.get(EXACT_HISTOGRAMS_KEY) is not True:
        raise InvalidInput(f"analysis {a.id!r}: boosting histograms are differentially private "
                           f"unless the spec opts out: set noise_multiplier (DP) or "
                           f"{EXACT_HISTOGRAMS_KEY}: true")
    design = feature_spec(a.get("features"))
    model = FederatedGBDT("survival:cox", n_rounds=int(a.get("rounds", 20)),
                          learning_rate=float(a.get("learning_rate", 0.1)),
                          max_depth=int(a.get("depth", 3)),
                          dp=None if nm is None else DPRequest(noise_multiplier=float(nm)))
    model.fit(fed, design, (dur, ev), edges=fixed_bins(design, int(a.get("bins", 32))),
              study=spec.study_id)
    rows = {"federated boosted model": evaluate(fed, gbdt_predictor(model), dur, ev,
                                                study=spec.study_id)}
    if (spec.disease or "").upper() == "MDS":
        rows["IPSS-M (published score)"] = evaluate(fed, ipssm_predictor(), dur, ev,
                                                    study=spec.study_id)
    table = pd.DataFrame({name: {"C-index": e.c_index, "time-dependent AUC": e.auc,
                                 "integrated Brier": e.integrated_brier, "patients": e.n}
                          for name, e in rows.items()}).T
    importance = pd.Series(model.feature_importances_, name="total gain").sort_values(
        ascending=False)
    return {"tables": {"discrimination": frame_json(table),
                       "feature_importance": frame_json(importance)},
            "stats": {"boosting rounds": len(model.trees_), "secure sums": model.secure_sums_}}


def run_synth(fed: Federation, a: Analysis, spec: StudySpec) -> dict[str, Any]:
    """Federated DP synthesis (MST on Private-PGM): every marginal a noisy secure sum."""
    from hemafed.analytics.km import FederatedKaplanMeier, km_curve
    from hemafed.synth.domain import ColumnSpec, SynthDomain
    from hemafed.synth.mst import FederatedMST

    epsilon = float(a.get("epsilon", spec.epsilon or 1.0))
    columns = list(a.get("columns"))
    overrides = {}
    if a.get("time_edges"):  # the study's public follow-up grid (years) for survival times
        edges = tuple(float(v) for v in a.get("time_edges"))
        overrides = {c: ColumnSpec(c, "numeric", edges=edges, decimals=4)
                     for c in columns if c.endswith("_time")}
    domain = SynthDomain.for_columns(columns, overrides=overrides or None)
    mst = FederatedMST(epsilon, float(a.get("delta", spec.delta)), columns, domain,
                       iters=int(a.get("iters", 1000)), anchor=a.get("anchor"))
    mst.fit(fed, study=spec.study_id)
    sample = mst.sample(int(a.get("n", 2000)), seed=int(a.get("seed", 0)))
    privacy = mst.privacy()
    releases = pd.DataFrame(privacy["releases"]).set_index("phase")
    out: dict[str, Any] = {
        "tables": {"differential_privacy_releases": frame_json(releases)},
        "stats": {"epsilon": privacy["epsilon"], "epsilon spent": privacy["epsilon_spent"],
                  "delta": privacy["delta"], "synthetic patients": len(sample)},
        "synthetic": {"columns": list(sample.columns),
                      "data": sample.astype(object).where(pd.notna(sample), None)
                      .to_numpy().tolist()}}
    if {"os_time", "os_status"} <= set(sample.columns):
        t = sample["os_time"].astype(float).to_numpy()
        e = sample["os_status"].astype(float).to_numpy()
        ok = ~(np.isnan(t) | np.isnan(e))
        grid = np.unique(t[ok])
        idx = np.searchsorted(grid, t[ok])
        observed = np.bincount(idx, weights=e[ok], minlength=grid.size)
        censored = np.bincount(idx, weights=1 - e[ok], minlength=grid.size)
        at_risk = (observed + censored)[::-1].cumsum()[::-1]
        curve = km_curve("synthetic cohort", grid, observed, censored, at_risk, float(ok.sum()))
        synthetic = _curve_docs(type("Fitted", (), {"curves_": {"synthetic": curve}})())
        out["curves"] = synthetic
        # the real cohort's curve drawn under it is an exact (non-DP) KM release: only when the
        # study also approved a Kaplan-Meier analysis, never as a side effect of a DP synthesis
        if any(x.kind in ("km", "logrank") for x in spec.analyses):
            try:
                real = _curve_docs(FederatedKaplanMeier().fit(fed, "os_time", "os_status",
                                                              study=spec.study_id))
            except HemafedError as exc:  # e.g. outside the sites' plan: draw the synthetic alone
                log.info("synthetic KM drawn without the real curve: %s", exc)
            else:
                real[0]["label"] = "real cohort"
                out["curves"] = [*real, *synthetic]
    return out


def run_gwas(fed: Federation, a: Analysis, spec: StudySpec) -> dict[str, Any]:
    from hemafed.genomics.study import run_gwas_analysis

    return run_gwas_analysis(fed, a, spec)


def run_imaging(fed: Federation, a: Analysis, spec: StudySpec) -> dict[str, Any]:
    from hemafed.imaging.study import run_imaging_analysis

    return run_imaging_analysis(fed, a, spec)


def run_catalogue(fed: Federation, a: Analysis, spec: StudySpec) -> dict[str, Any]:
    raise InvalidInput(f"analysis {a.id!r}: a 'catalogue' analysis is the network catalogue's "
                       "standing plan; the hub service refreshes it (portal or "
                       "POST /api/catalogue/refresh), it is not run as a study")


# the hub steps of the built-in kinds (their registrations: hemafed.study.kinds)
for _name, _run in {
        "describe": run_describe, "crosstab": run_crosstab, "km": run_km, "logrank": run_logrank,
        "cox": run_cox, "logistic": run_logistic, "competing": run_competing, "gbdt": run_gbdt,
        "synth": run_synth, "gwas": run_gwas, "finegray": run_finegray, "cox_tv": run_cox_tv,
        "imaging": run_imaging, "catalogue": run_catalogue}.items():
    bind(_name, run=_run)

RUNNERS: Mapping[str, Callable[[Federation, Analysis, StudySpec], dict[str, Any]]] = KindTable(
    lambda k: k.run)
"""kind -> hub step: a view of the registrations (:class:`hemafed.kinds.AnalysisKind`)."""


def register_runner(kind: str,
                    runner: Callable[[Federation, Analysis, StudySpec], dict[str, Any]]) -> None:
    """Give the registered analysis kind ``kind`` its hub step (:func:`hemafed.kinds.bind`)."""
    get_kind(kind)  # a kind the spec does not admit cannot be run: register it first
    bind(kind, run=runner)


def _on_fixed_sites(tracker: TrackingFederation, a: Analysis, spec: StudySpec,
                    runner: Callable[[Federation, Analysis, StudySpec], dict[str, Any]]
                    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run one analysis so that every one of its sums covers the same sites.

    When a sum covers other sites than the analysis's first (``SitesChanged``), the analysis
    restarts from scratch on a federation over the survivors (``restricted_to``, which fails
    clearly below the secure-aggregation quorum); the sums made before are discarded. Returns
    the analysis document and one record per restart.
    """
    restarts: list[dict[str, Any]] = []
    for _ in range(len(tracker.site_ids) + 1):
        try:
            return runner(tracker, a, spec), restarts
        except SitesChanged as exc:
            restrict = getattr(tracker.inner, "restricted_to", None)
            if restrict is None:
                raise
            discarded = tracker.take()
            log.warning("analysis %s: %s; restarting it over %s", a.id, exc,
                        list(exc.survivors))
            tracker.inner = restrict(exc.survivors)
            restarts.append({"after secure sums": len(discarded), "from sites": list(exc.fixed),
                             "to sites": list(exc.survivors)})
    raise HemafedError(f"analysis {a.id}: the sites kept changing; restarted {len(restarts)} "
                       "times without one complete run over a fixed set")


def run_study(spec: StudySpec, federation: Federation, *,
              progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every analysis; a failing analysis is reported with its reason, the rest still run."""
    from hemafed.cohort.study_fields import register_variables

    register_variables(spec.variables)  # the spec's study variables, before any request
    tracker = TrackingFederation(federation)
    results: list[dict[str, Any]] = []
    for a in spec.analyses:
        if progress is not None:
            progress(a.title)
        start = time.perf_counter()
        doc: dict[str, Any] = {"id": a.id, "kind": a.kind, "title": a.title,
                               "options": dict(a.options)}
        runner = RUNNERS.get(a.kind)
        try:
            if runner is None:
                raise HemafedError(f"analysis kind {a.kind!r} is not available in this build")
            body, restarts = _on_fixed_sites(tracker, a, spec, runner)
            doc.update(body)
            doc["status"] = "ok"
            if restarts:
                doc["restarts"] = restarts
        except HemafedError as exc:
            log.warning("analysis %s failed: %s", a.id, exc)
            doc["status"] = "failed"
            doc["error"] = str(exc)
        calls = tracker.take()
        doc["provenance"] = {
            "secure sums": len(calls),
            "round trips": sum(c["round_trips"] for c in calls),
            "sites": max((c["sites"] for c in calls), default=0),
            "dropped sites": sorted({s for c in calls for s in c["dropped"]}),
            # every sum of a completed analysis covers the same sites (SecureFederation's rule)
            "sites covered": sorted({s for c in calls for s in c["site_ids"]}),
            "DP releases": sum(1 for c in calls if c["epsilon"] or c["noise_multiplier"]),
            "seconds": round(time.perf_counter() - start, 2),
        }
        results.append(doc)
    return {"study_id": spec.study_id, "title": spec.title, "spec_sha256": spec.sha256,
            "sites": list(federation.site_ids), "sites at the end": list(tracker.site_ids),
            "analyses": results}
