"""The registration of every built-in analysis kind (:class:`hemafed.kinds.AnalysisKind`).

One entry per kind: its spec options, the site queries its plan permits and its hub step sends,
its iteration caps and default columns. The study tables (``spec.KINDS``, ``plan.KIND_QUERIES``
and ``KIND_CAPS``, ``queries.QUERIES_OF_KIND``, ``runner.RUNNERS``) are views of these entries.

The hub steps of the built-in kinds live in :mod:`hemafed.study.runner` and their pooled
references in :mod:`hemafed.study.pooled`; those modules bind them to the entries here
(:func:`hemafed.kinds.bind`), because the hub steps reach the site runtime (imaging's site
steps), which reads the plan, which reads this module: registering them here would be an
import cycle. A kind added the new way defines its whole registration beside its estimator
(:data:`hemafed.analytics.study_kinds.KINDS`) and is listed in :data:`CATALOGUE`.
"""

from __future__ import annotations

from typing import Any

from hemafed.analytics import quantile, study_kinds
from hemafed.kinds import LMM_CAP, NEWTON_CAP, AnalysisKind, register_kind

__all__ = ["BUILT_IN", "CATALOGUE", "EXACT_HISTOGRAMS_KEY", "GWAS_CAP", "LMM_CAP", "NEWTON_CAP"]

GWAS_CAP = 2_000
"""Distinct requests per GWAS query: chunks of variants x Newton rounds (logistic)."""

EXACT_HISTOGRAMS_KEY = "exact_histograms"
"""The spec key by which a boosting analysis opts out of DP histograms (the officer approves
exact, non-DP gradient histograms)."""

CATALOGUE = (study_kinds, quantile)
"""Modules that register kinds of their own, beside their estimators (imported above)."""


def _describe_caps(a: Any) -> dict[str, int]:
    n = len(a.get("columns") or ())
    return {"numeric_summary": 2 * n, "category_counts": 2 * n, "moments": 2 * n,
            "cohort_size": 2}


_SURVIVAL_CAPS = {"time_histogram": 2, "km_risk_table": 2, "competing_risk_table": 2,
                  "category_counts": 2}


def _gbdt_caps(a: Any) -> dict[str, int]:
    rounds, depth = int(a.get("rounds", 20)), int(a.get("depth", 3))
    caps = {"gbdt_histograms": 2 * rounds * (depth + 1), "gbdt_cox_risk_sets": 2 * (rounds + 1),
            "gbdt_label_sums": 2 * (rounds + 1), "time_histogram": 4, "km_risk_table": 4}
    caps.update({q: 8 for q in ("learn_risk_histogram", "learn_eval_sums",
                                "learn_site_concordance", "learn_loso_concordance")})
    return caps


_GWAS_QUERIES = frozenset({"gwas_store", "gwas_counts", "gwas_pca_gram", "gwas_null",
                           "gwas_linear", "gwas_logistic", "gwas_ld_pairs", "gwas_firth"})

_BUILT_IN = (
    AnalysisKind("describe", {"columns"}, {"bounds", "levels", "bins"},
                 queries={"numeric_summary", "category_counts", "moments", "cohort_size"},
                 sends=("numeric_summary", "category_counts"), caps=_describe_caps),
    AnalysisKind("crosstab", {"row", "col"}, {"levels"},
                 queries={"crosstab", "category_counts"}, sends=("crosstab",),
                 caps={"crosstab": 2, "category_counts": 4}),
    AnalysisKind("km", {"duration", "event"}, {"group", "levels"},
                 queries={"time_histogram", "km_risk_table", "category_counts"},
                 sends=("time_histogram", "km_risk_table"), caps=_SURVIVAL_CAPS),
    AnalysisKind("logrank", {"duration", "event", "group", "levels"}, set(),
                 queries={"time_histogram", "km_risk_table", "category_counts"},
                 sends=("time_histogram", "km_risk_table"), caps=_SURVIVAL_CAPS),
    # lattice: the fit's grid is the whole public lattice k / lattice (hemafed.study.plan)
    AnalysisKind("cox", {"duration", "event", "formula"},
                 {"ties", "strata", "strata_levels", "bounds", "levels", "lattice"},
                 queries={"time_histogram", "cox_risk_set_sums", "cox_concordance_histogram",
                          "cox_site_derivatives", "category_counts"},
                 sends=("time_histogram", "cox_risk_set_sums", "cox_concordance_histogram"),
                 caps={"time_histogram": 2, "cox_risk_set_sums": NEWTON_CAP,
                       "cox_concordance_histogram": 4, "cox_site_derivatives": NEWTON_CAP,
                       "category_counts": 4}),
    AnalysisKind("logistic", {"outcome", "formula"}, {"positive", "bounds", "levels"},
                 queries={"logistic_newton", "category_counts"}, sends=("logistic_newton",),
                 caps={"logistic_newton": NEWTON_CAP, "category_counts": 4}),
    AnalysisKind("competing", {"causes"},
                 {"group", "levels", "event_of_interest", "cause_names"},
                 queries={"time_histogram", "competing_risk_table", "category_counts"},
                 sends=("time_histogram", "competing_risk_table"), caps=_SURVIVAL_CAPS),
    # the plan permits the DP marginals only; with os_time/os_status among its columns the
    # real KM curve is drawn under the synthetic one when the study also approved a KM analysis
    AnalysisKind("synth", {"columns"},
                 {"epsilon", "delta", "n", "seed", "iters", "anchor", "time_edges"},
                 queries={"marginal_counts"},
                 sends=("marginal_counts", "time_histogram", "km_risk_table"),
                 caps={"marginal_counts": 64}),
    # boosting bins on the spec's fixed edges: no quantile sketch (learn_feature_histogram)
    AnalysisKind("gbdt", {"duration", "event", "features"},
                 {"rounds", "depth", "learning_rate", "bins", "noise_multiplier",
                  EXACT_HISTOGRAMS_KEY},
                 queries={"gbdt_label_sums", "gbdt_cox_risk_sets", "gbdt_histograms",
                          "learn_risk_histogram", "learn_eval_sums", "time_histogram",
                          "km_risk_table", "learn_site_concordance", "learn_loso_concordance"},
                 sends=("gbdt_cox_risk_sets", "gbdt_histograms", "km_risk_table",
                        "learn_risk_histogram", "learn_eval_sums"),
                 caps=_gbdt_caps, time_mappings={"up"},
                 exact_option=EXACT_HISTOGRAMS_KEY, exact_queries={"gbdt_histograms"}),
)
_LATER = (
    # no "epsilon": the study's GWAS is the exact, PLINK-equal release (FederatedGWAS(dp=...)
    # is the Python API's, linear model only); a spec asking for it is refused, not ignored
    AnalysisKind("gwas", {"trait", "variant_list"},
                 {"threshold", "covariates", "n_pcs", "genotypes", "min_mac", "top", "test",
                  "firth"},
                 queries=_GWAS_QUERIES, caps={q: GWAS_CAP for q in _GWAS_QUERIES}),
    # the network catalogue's standing plan (hemafed.service.catalogue; never run as a study):
    # one distinct request per set of catalogue sites (a refresh repeats the same request)
    AnalysisKind("catalogue", {"columns", "group", "levels"},
                 {"epsilon", "delta", "round_to", "min_cell", "refresh_every_days"},
                 queries={"catalogue_counts"}, caps={"catalogue_counts": 64}),
    # lattice (finegray, cox_tv): the fit's grid is the whole public lattice, as cox's
    AnalysisKind("finegray", {"causes", "formula"},
                 {"cause", "cause_names", "bounds", "levels", "lattice"},
                 queries={"time_histogram", "finegray_table", "finegray_sums",
                          "finegray_score_outer", "category_counts"},
                 caps={"time_histogram": 2, "finegray_table": 2, "finegray_sums": NEWTON_CAP,
                       "finegray_score_outer": 4, "category_counts": 4}),
    AnalysisKind("cox_tv", {"duration", "event", "formula", "switch"},
                 {"ties", "bounds", "levels", "lattice"},
                 queries={"time_histogram", "cox_start_stop_sums", "category_counts"},
                 caps={"time_histogram": 2, "cox_start_stop_sums": NEWTON_CAP,
                       "category_counts": 4}),
    # harmonised imaging features + clinical covariates (hemafed.imaging.study): its queries
    # and caps come from the spec's imaging section (hemafed.study.plan.IMAGING_CAPS)
    AnalysisKind("imaging", {"model"},
                 {"outcome", "duration", "event", "horizon", "covariates", "top_k",
                  "candidates", "rounds", "depth", "bins", "learning_rate", EXACT_HISTOGRAMS_KEY,
                  "noise_multiplier"}),
)

BUILT_IN: tuple[AnalysisKind, ...] = (*_BUILT_IN, *(k for m in CATALOGUE for k in m.KINDS),
                                      *_LATER)
"""Every kind, in the order a spec's error lists them: the entries above and those defined
beside their estimators (:data:`CATALOGUE`)."""

for _kind in BUILT_IN:
    register_kind(_kind)
