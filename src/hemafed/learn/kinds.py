"""The registration of the ``gbdt`` kind (:class:`hemafed.kinds.AnalysisKind`): a federated
boosted Cox model on the spec's fixed bins, evaluated with the published score by secure sums.

Its spec options, the site queries its plan permits and its hub step sends, its caps, its hub
step and its report page (no pooled reference: boosting is not compared with a pooled fit),
listed in :data:`hemafed.study.kinds.CATALOGUE`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pandas as pd

from hemafed.cohort.schema import label
from hemafed.documents import frame_from_json, frame_json
from hemafed.errors import InvalidInput
from hemafed.federation.api import DPRequest, Federation
from hemafed.kinds import AnalysisKind
from hemafed.report.drawing import fmt, measure_rows
from hemafed.report.html import Section

if TYPE_CHECKING:
    from hemafed.study.spec import Analysis, StudySpec

__all__ = ["EXACT_HISTOGRAMS_KEY", "KINDS"]


EXACT_HISTOGRAMS_KEY = "exact_histograms"
"""The spec key by which a boosting analysis opts out of DP histograms (the officer approves
exact, non-DP gradient histograms)."""


def _gbdt_caps(a: Any) -> dict[str, int]:
    rounds, depth = int(a.get("rounds", 20)), int(a.get("depth", 3))
    caps = {"gbdt_histograms": 2 * rounds * (depth + 1), "gbdt_cox_risk_sets": 2 * (rounds + 1),
            "gbdt_label_sums": 2 * (rounds + 1), "time_histogram": 4, "km_risk_table": 4}
    caps.update({q: 8 for q in ("learn_risk_histogram", "learn_eval_sums",
                                "learn_site_concordance", "learn_loso_concordance")})
    return caps


def run_gbdt(fed: Federation, a: Analysis, spec: StudySpec) -> dict[str, Any]:
    """Federated boosted Cox model, evaluated (with the published score) by secure sums."""
    from hemafed.learn.features import feature_spec, fixed_bins
    from hemafed.learn.gbdt import FederatedGBDT
    from hemafed.learn.metrics import evaluate, gbdt_predictor, ipssm_predictor

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


def render_gbdt(s: Section, doc: Mapping[str, Any], results: Mapping[str, Any]) -> None:
    tables = doc["tables"]
    disc = frame_from_json(tables["discrimination"])
    rows = [{"Model": str(i), "C-index": fmt(r["C-index"]),
             "Time-dependent AUC": fmt(r["time-dependent AUC"]),
             "Integrated Brier": fmt(r["integrated Brier"]), "Patients": fmt(r["patients"])}
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
               *measure_rows(doc.get("stats") or {})])
    imp = frame_from_json(tables["feature_importance"])
    imp = imp[imp.iloc[:, 0].astype(float) > 0]
    s.table(pd.DataFrame({"Variable": [label(str(i)) for i in imp.index],
                          "Total gain": [fmt(float(v)) for v in imp.iloc[:, 0]]}),
            "variables the trees split on (variables never used are not shown)", index=False)
    c = {str(i): float(r["C-index"]) for i, r in disc.iterrows() if r["C-index"] is not None}
    if c:
        first = next(iter(c))
        text = f"The federated boosted model ranks patients with a C-index of {c[first]:.2f}"
        others = [f"{k} {v:.2f}" for k, v in c.items() if k != first]
        s.summary(text + (f" (vs {', '.join(others)})." if others else "."))


KINDS = (
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
                 exact_option=EXACT_HISTOGRAMS_KEY, exact_queries={"gbdt_histograms"},
                 run=run_gbdt, render=render_gbdt),
)
"""The registration of ``gbdt``."""
