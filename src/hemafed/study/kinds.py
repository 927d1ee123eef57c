"""The catalogue of the built-in analysis kinds: the modules that register them.

Every built-in kind is registered beside its estimator (:class:`hemafed.kinds.AnalysisKind`:
spec options, queries, caps, hub step, pooled reference and report page), in the ``KINDS`` of
one module of :data:`CATALOGUE`; importing this module registers them all. The study tables
(``spec.KINDS``, ``plan.KIND_QUERIES`` and ``KIND_CAPS``, ``queries.QUERIES_OF_KIND``,
``runner.RUNNERS``, ``report.RENDERERS``) are views of the registrations.
"""

from __future__ import annotations

from hemafed.analytics import basic_kinds, quantile, study_kinds, survival_kinds
from hemafed.genomics import kinds as genomics_kinds
from hemafed.genomics.kinds import GWAS_CAP
from hemafed.imaging import kinds as imaging_kinds
from hemafed.kinds import LMM_CAP, NEWTON_CAP, AnalysisKind, register_kind
from hemafed.learn import kinds as learn_kinds
from hemafed.learn.kinds import EXACT_HISTOGRAMS_KEY
from hemafed.synth import kinds as synth_kinds

__all__ = ["BUILT_IN", "CATALOGUE", "EXACT_HISTOGRAMS_KEY", "GWAS_CAP", "LMM_CAP", "NEWTON_CAP"]

CATALOGUE = (basic_kinds, survival_kinds, synth_kinds, learn_kinds, study_kinds, quantile,
             genomics_kinds, imaging_kinds)
"""Modules that register kinds, beside their estimators (imported above)."""

BUILT_IN: tuple[AnalysisKind, ...] = tuple(k for m in CATALOGUE for k in m.KINDS)
"""Every built-in kind, in the order a spec's error lists them."""

for _kind in BUILT_IN:
    register_kind(_kind)
