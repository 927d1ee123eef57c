"""The registration of the ``synth`` kind (:class:`hemafed.kinds.AnalysisKind`): federated DP
synthesis (MST on Private-PGM), every marginal a noisy secure sum.

Its spec options, the site queries its plan permits and its hub step sends, its caps, its hub
step, its pooled reference (fidelity, utility and privacy of the synthetic cohort against the
real one, validation only) and its report page, listed in :data:`hemafed.study.kinds.CATALOGUE`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hemafed.analytics.survival_kinds import curve_docs
from hemafed.documents import frame_from_json, frame_json
from hemafed.errors import HemafedError
from hemafed.federation.api import Federation
from hemafed.kinds import AnalysisKind
from hemafed.report.drawing import fmt, measure_rows, plot_curves
from hemafed.report.html import Section

if TYPE_CHECKING:
    from hemafed.cohort.model import Cohort
    from hemafed.study.spec import Analysis, StudySpec

__all__ = ["KINDS"]

log = logging.getLogger(__name__)


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
        synthetic = curve_docs(type("Fitted", (), {"curves_": {"synthetic": curve}})())
        out["curves"] = synthetic
        # the real cohort's curve drawn under it is an exact (non-DP) KM release: only when the
        # study also approved a Kaplan-Meier analysis, never as a side effect of a DP synthesis
        if any(x.kind in ("km", "logrank") for x in spec.analyses):
            try:
                real = curve_docs(FederatedKaplanMeier().fit(fed, "os_time", "os_status",
                                                              study=spec.study_id))
            except HemafedError as exc:  # e.g. outside the sites' plan: draw the synthetic alone
                log.info("synthetic KM drawn without the real curve: %s", exc)
            else:
                real[0]["label"] = "real cohort"
                out["curves"] = [*real, *synthetic]
    return out


def pooled_synth(a: Analysis, doc: dict[str, Any], cohorts: Sequence[Cohort],
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


def render_synth(s: Section, doc: Mapping[str, Any], results: Mapping[str, Any]) -> None:
    plot_curves(s, doc)
    stats = doc.get("stats") or {}
    s.metrics(measure_rows(stats), "differential privacy of the synthetic cohort")
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
    text = (f"{fmt(stats.get('synthetic patients'))} synthetic patients generated under "
            f"differential privacy (epsilon {fmt(stats.get('epsilon'))}).")
    if gate:
        text += f" Privacy release gate: {gate}."
    s.summary(text)


KINDS = (
    # the plan permits the DP marginals only; with os_time/os_status among its columns the
    # real KM curve is drawn under the synthetic one when the study also approved a KM analysis
    AnalysisKind("synth", {"columns"},
                 {"epsilon", "delta", "n", "seed", "iters", "anchor", "time_edges"},
                 queries={"marginal_counts"},
                 sends=("marginal_counts", "time_histogram", "km_risk_table"),
                 caps={"marginal_counts": 64}, run=run_synth, pooled=pooled_synth,
                 render=render_synth),
)
"""The registration of ``synth``."""
