"""The registration of the ``gwas`` kind (:class:`hemafed.kinds.AnalysisKind`): its spec
options, queries and caps, its hub step (:func:`hemafed.genomics.study.run_gwas_analysis`) and
its report page (Manhattan and QQ plots), listed in :data:`hemafed.study.kinds.CATALOGUE`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from hemafed.federation.api import Federation
from hemafed.kinds import AnalysisKind
from hemafed.report.drawing import generic_page
from hemafed.report.html import Section

if TYPE_CHECKING:
    from hemafed.studyplan.spec import Analysis, StudySpec

__all__ = ["GWAS_CAP", "KINDS"]


GWAS_CAP = 2_000
"""Distinct requests per GWAS query: chunks of variants x Newton rounds (logistic)."""


_GWAS_QUERIES = frozenset({"gwas_store", "gwas_counts", "gwas_pca_gram", "gwas_null",
                           "gwas_linear", "gwas_logistic", "gwas_ld_pairs", "gwas_firth"})


def run_gwas(fed: Federation, a: Analysis, spec: StudySpec) -> dict[str, Any]:
    from hemafed.genomics.study import run_gwas_analysis

    return run_gwas_analysis(fed, a, spec)


def render_gwas(s: Section, doc: Mapping[str, Any], results: Mapping[str, Any]) -> None:
    from hemafed.genomics.plots import manhattan, qq

    generic_page(s, doc, results)
    if doc.get("gwas_points"):
        s.figure(manhattan(doc["gwas_points"]), "Manhattan plot (dashed: p = 5e-8)")
        s.figure(qq(doc["gwas_points"]), "QQ plot with genomic inflation lambda")
    if doc.get("caveat"):
        s.text(str(doc["caveat"]), "note")


KINDS = (
    # no "epsilon": the study's GWAS is the exact, PLINK-equal release (FederatedGWAS(dp=...)
    # is the Python API's, linear model only); a spec asking for it is refused, not ignored
    AnalysisKind("gwas", {"trait", "variant_list"},
                 {"threshold", "covariates", "n_pcs", "genotypes", "min_mac", "top", "test",
                  "firth"},
                 queries=_GWAS_QUERIES, caps={q: GWAS_CAP for q in _GWAS_QUERIES},
                 run=run_gwas, render=render_gwas),
)
"""The registration of ``gwas``."""
