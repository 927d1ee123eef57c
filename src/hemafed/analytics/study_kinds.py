"""Study-spec runners for the issue-17 methods: ``iptw``, ``multistate`` and ``lmm``.

Each turns one :class:`~hemafed.study.spec.Analysis` into the plain-JSON result document the
report renders (``tables``, ``curves``, ``stats``), like the runners in
:mod:`hemafed.study.runner`. :data:`KINDS` are their registrations
(:class:`hemafed.kinds.AnalysisKind`: options, queries, caps and runner), listed in
:data:`hemafed.study.kinds.CATALOGUE`.

Spec options: ``iptw``: ``treatment``, ``formula`` (confounders), ``duration``/``event``
(default ``os_time``/``os_status``), ``ties``, ``stabilized``, ``max_weight``; ``multistate``:
``illness_time``, ``illness_status``, ``exit_time``, ``exit_status`` (default the AML and OS
columns), ``states``; ``lmm``: ``outcome``, ``bounds`` (public ranges of the outcome, time and
covariates), ``time``, ``covariates``, ``max_obs`` (sites must hold a measurement table).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hemafed.documents import finite as _finite
from hemafed.documents import frame_json as _frame
from hemafed.federation.api import Federation
from hemafed.kinds import LMM_CAP, NEWTON_CAP, AnalysisKind

if TYPE_CHECKING:
    from hemafed.study.spec import Analysis, StudySpec



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
            "stats": {"reml_criterion": fit.reml_criterion_, "n_obs": fit.n_obs_,
                      "n_patients": fit.n_patients_, "secure_sums": fit.rounds}}


KINDS = (
    AnalysisKind("iptw", {"treatment", "formula"},
                 {"duration", "event", "ties", "stabilized", "max_weight"},
                 queries={"logistic_newton", "iptw_balance", "iptw_cox_sums", "iptw_cox_robust",
                          "iptw_km_table", "iptw_km_influence", "time_histogram",
                          "category_counts"},
                 caps={"logistic_newton": NEWTON_CAP, "iptw_balance": 4,
                       "iptw_cox_sums": NEWTON_CAP, "iptw_cox_robust": 4, "iptw_km_table": 4,
                       "iptw_km_influence": 4, "time_histogram": 2, "category_counts": 4},
                 default_columns={"os_time", "os_status"}, run=run_iptw),
    AnalysisKind("multistate", set(),
                 {"illness_time", "illness_status", "exit_time", "exit_status", "states"},
                 queries={"time_histogram", "illness_death_counts", "illness_death_influence"},
                 caps={"time_histogram": 2, "illness_death_counts": 2,
                       "illness_death_influence": 2},
                 default_columns={"amlt_time", "amlt_status", "os_time", "os_status"},
                 run=run_multistate),
    AnalysisKind("lmm", {"outcome", "bounds"}, {"time", "covariates", "max_obs"},
                 queries={"lmm_reml_sums"}, caps={"lmm_reml_sums": LMM_CAP}, run=run_lmm),
)
"""The registrations of the three kinds."""

STUDY_RUNNERS: dict[str, Callable[[Federation, Analysis, StudySpec], dict[str, Any]]] = {
    k.name: k.run for k in KINDS if k.run is not None}
"""The runners of :data:`KINDS` (a view)."""
