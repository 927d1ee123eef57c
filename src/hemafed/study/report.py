"""Render a study's JSON results as one self-contained HTML report.

For each analysis: what was asked, the result tables, the plot, how it was computed (secure sums,
round trips, sites, DP releases, seconds) and, where the caller could compute it (the demo holds
the pooled virtual cohort), the comparison with the pooled analysis.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from hemafed.report import Report, Section
from hemafed.study.runner import frame_from_json

_PALETTE = ["#1b7f3b", "#5aa469", "#c5b358", "#e08a2c", "#c0392b", "#7b1e2b", "#34495e",
            "#2980b9"]


def _plot_curves(section: Section, doc: Mapping[str, Any]) -> None:
    curves = doc.get("curves") or []
    if not curves:
        return
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for i, c in enumerate(curves):
        color = _PALETTE[i % len(_PALETTE)]
        x, y = np.asarray(c["x"], dtype=float), np.asarray(c["y"], dtype=float)
        ax.step(x, y, where="post", label=c["label"], color=color, lw=1.6)
        if c.get("lower") and c.get("upper"):
            lower = np.asarray(c["lower"], dtype=float)  # null (undefined bound) -> NaN: a gap
            upper = np.asarray(c["upper"], dtype=float)
            ax.fill_between(x, lower, upper, step="post", color=color, alpha=0.12)
    cif = doc.get("curve_kind") == "cif"
    ax.set_xlabel("years since diagnosis")
    ax.set_ylabel("cumulative incidence" if cif else "survival probability")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    section.figure(fig, "cumulative incidence by cause" if cif
                   else "Kaplan-Meier estimate with 95% confidence band")


def _plot_forest(section: Section, table: Any) -> None:
    cols = {"exp(coef)", "exp(coef) lower 95%", "exp(coef) upper 95%"}
    if not cols <= set(table.columns):
        return
    t = table.iloc[::-1]
    fig, ax = plt.subplots(figsize=(7.5, 0.35 * len(t) + 1.2))
    y = range(len(t))
    hr = t["exp(coef)"].astype(float)
    ax.errorbar(hr, y, xerr=[hr - t["exp(coef) lower 95%"].astype(float),
                             t["exp(coef) upper 95%"].astype(float) - hr],
                fmt="o", color="#7b1e2b", ecolor="#52606d", capsize=3)
    ax.axvline(1.0, color="#9aa5b1", ls="--", lw=1)
    ax.set_yticks(list(y))
    ax.set_yticklabels([str(i) for i in t.index])
    ax.set_xscale("log")
    ax.set_xlabel("hazard ratio (95% CI, log scale)")
    section.figure(fig, "hazard ratios")


def build_report(results: Mapping[str, Any], *, title: str | None = None,
                 subtitle: str = "", extra: Mapping[str, Any] | None = None) -> Report:
    """A report from :func:`hemafed.study.runner.run_study` output (plus optional pooled checks)."""
    report = Report(title or results.get("title") or f"Study {results['study_id']}", subtitle)
    overview = report.section("Study")
    overview.provenance({"study": results["study_id"], "specification SHA-256": results["spec_sha256"],
                         "sites": len(results["sites"]), "analyses": len(results["analyses"])})
    for key, section_doc in (extra or {}).items():
        if key == "intro":
            overview.text(str(section_doc))
    for doc in results["analyses"]:
        s = report.section(doc["title"])
        if doc.get("status") != "ok":
            s.text(f"This analysis did not complete: {doc.get('error', 'unknown error')}", "warn")
            s.provenance(doc.get("provenance", {}))
            continue
        stats = doc.get("stats") or {}
        if stats:
            s.provenance({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in stats.items()})
        _plot_curves(s, doc)
        if doc.get("gwas_points"):
            from hemafed.genomics.plots import manhattan, qq

            s.figure(manhattan(doc["gwas_points"]), "Manhattan plot (dashed: p = 5e-8)")
            s.figure(qq(doc["gwas_points"]), "QQ plot with genomic inflation lambda")
            s.text(str(doc.get("caveat", "")), "note")
        for name, tdoc in (doc.get("tables") or {}).items():
            table = frame_from_json(tdoc)
            if name == "summary" and doc["kind"] == "cox":
                _plot_forest(s, table)
            s.table(table, caption=name.replace("_", " "))
        pooled = doc.get("pooled")
        if pooled:
            s.text("Comparison with the pooled analysis of the same patients:", "note")
            s.provenance(pooled)
        prov = dict(doc.get("provenance", {}))
        prov["how"] = ("every number above comes from secure sums over the sites; no site's "
                       "own statistics were visible to the hub")
        s.provenance(prov)
    return report


def write_report(results: Mapping[str, Any], path: str | Path, **kw: Any) -> Path:
    return build_report(results, **kw).write(path)
