"""Render a study's JSON results as one self-contained HTML report a haematologist reads.

For each analysis: a plain-language summary first, then the result tables with human labels and
units (from :func:`hemafed.cohort.schema.label`), hazard and odds ratios with 95% confidence
intervals, plots (colour-blind-safe Okabe-Ito hues, forest plots on a log axis with ticks at
0.25/0.5/1/2/4), every measure explained in one line (what it is, which direction is good, the
threshold), exclusions with their reason, how it was computed (secure sums, round trips, sites,
DP releases) and, where the caller could compute it (the demo holds the pooled virtual cohort),
the comparison with the pooled analysis. Each kind's page is drawn by its registration
(``AnalysisKind.render``, beside its estimator, with :mod:`hemafed.report.drawing`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hemafed.kinds import KindTable
from hemafed.report import Report, Section
from hemafed.report.drawing import MEASURES, generic_page, measure_rows
from hemafed.study import kinds as _registrations  # noqa: F401  (registers the built-in kinds)

PROVENANCE_LABELS = {"secure sums": "Secure sums", "round trips": "Round trips",
                     "sites": "Sites", "dropped sites": "Sites dropped",
                     "DP releases": "Differentially private releases", "seconds": "Seconds"}


RENDERERS: Mapping[str, Callable[[Section, Mapping[str, Any], Mapping[str, Any]], None]] = (
    KindTable(lambda k: k.render))
"""kind -> report page: a view of the registrations (a kind without one gets the generic
table page, :func:`hemafed.report.drawing.generic_page`)."""


def _pooled_rows(pooled: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    rows = []
    for key, value in pooled.items():
        if key in MEASURES:
            rows.extend(measure_rows({key: value}))
        elif key.startswith("max") and "difference" in key:
            rows.append((key[:1].upper() + key[1:], str(value), "0 means identical; below 1e-6 "
                         "is numerical round-off"))
        else:
            rows.append((key[:1].upper() + key[1:], str(value), ""))
    return rows


def _provenance(doc: Mapping[str, Any]) -> dict[str, Any]:
    prov = {}
    for key, value in (doc.get("provenance") or {}).items():
        if key == "dropped sites":
            value = ", ".join(value) if value else "none"
        prov[PROVENANCE_LABELS.get(key, key)] = value
    prov["How"] = ("every number above comes from secure sums over the sites; no site's own "
                   "statistics were visible to the hub")
    return prov


def build_report(results: Mapping[str, Any], *, title: str | None = None,
                 subtitle: str = "", extra: Mapping[str, Any] | None = None) -> Report:
    """A report from :func:`hemafed.study.runner.run_study` output (plus optional pooled checks)."""
    report = Report(title or results.get("title") or f"Study {results['study_id']}", subtitle)
    overview = report.section("Study")
    overview.provenance({"Study": results["study_id"],
                         "Specification SHA-256": results["spec_sha256"],
                         "Sites": len(results["sites"]), "Analyses": len(results["analyses"])})
    for key, section_doc in (extra or {}).items():
        if key == "intro":
            overview.text(str(section_doc))
    for doc in results["analyses"]:
        s = report.section(doc["title"])
        if doc.get("status") != "ok":
            s.text(f"This analysis did not complete: {doc.get('error', 'unknown error')}", "warn")
            s.provenance(_provenance(doc))
            continue
        try:
            RENDERERS.get(doc["kind"], generic_page)(s, doc, results)
        except (KeyError, ValueError, TypeError):  # an unexpected result shape: show it plainly
            s.blocks.clear()
            generic_page(s, doc, results)
        pooled = doc.get("pooled")
        if pooled:
            s.metrics(_pooled_rows(pooled), "fidelity and privacy of the synthetic cohort, "
                      "measured against the real patients" if doc["kind"] == "synth" else
                      "comparison with the pooled analysis of the same patients (possible here "
                      "because the demo holds the virtual cohort)")
        elif doc["kind"] not in ("gbdt",):
            s.text("No pooled comparison: the patients are not held in one place.", "note")
        s.provenance(_provenance(doc))
    return report


def write_report(results: Mapping[str, Any], path: str | Path, **kw: Any) -> Path:
    return build_report(results, **kw).write(path)
