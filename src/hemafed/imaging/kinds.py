"""The registration of the ``imaging`` kind (:class:`hemafed.kinds.AnalysisKind`): harmonised
imaging features + clinical covariates (:mod:`hemafed.imaging.study`).

Its spec options, its hub step and its report page, listed in
:data:`hemafed.study.kinds.CATALOGUE`; its queries and caps come from the spec's imaging
section (``hemafed.study.plan.IMAGING_CAPS``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from hemafed.analytics.basic_kinds import render_logistic
from hemafed.analytics.survival_kinds import render_cox
from hemafed.cohort.schema import label
from hemafed.documents import frame_from_json
from hemafed.federation.api import Federation
from hemafed.kinds import AnalysisKind
from hemafed.learn.kinds import EXACT_HISTOGRAMS_KEY
from hemafed.report.drawing import measure_rows
from hemafed.report.html import Section

if TYPE_CHECKING:
    from hemafed.study.spec import Analysis, StudySpec

__all__ = ["KINDS"]


def run_imaging(fed: Federation, a: Analysis, spec: StudySpec) -> dict[str, Any]:
    from hemafed.imaging.study import run_imaging_analysis

    return run_imaging_analysis(fed, a, spec)


def render_imaging(s: Section, doc: Mapping[str, Any], results: Mapping[str, Any]) -> None:
    """Harmonised imaging features + clinical covariates: the model page (logistic or Cox),
    then the federated screen and the pooled ComBat parameters (hemafed.imaging.study)."""
    model = (doc.get("options") or {}).get("model")
    if model == "gbdt":  # boosted: no coefficients; the gains of the trees' splits
        s.metrics(measure_rows(doc.get("stats") or {}))
        imp = frame_from_json(doc["tables"]["feature_importance"])
        imp.index = [label(str(i)) for i in imp.index]
        s.table(imp, caption="federated boosted model: total split gain per column")
    else:
        (render_logistic if model == "logistic" else render_cox)(s, doc, results)
    for name, caption in (("screen", "federated univariate screen of the harmonised features "
                                     "(Welch t, outcome group vs the rest)"),
                          ("harmonisation", "federated ComBat: pooled grand mean, pooled SD and "
                                            "covariate effects per feature")):
        table = frame_from_json(doc["tables"][name])
        table.index = [label(str(i)) for i in table.index]
        s.table(table, caption=caption)


KINDS = (
    AnalysisKind("imaging", {"model"},
                 {"outcome", "duration", "event", "horizon", "covariates", "top_k",
                  "candidates", "rounds", "depth", "bins", "learning_rate", EXACT_HISTOGRAMS_KEY,
                  "noise_multiplier"},
                 run=run_imaging, render=render_imaging),
)
"""The registration of ``imaging``."""
