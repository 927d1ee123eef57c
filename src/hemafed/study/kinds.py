"""The catalogue of the built-in analysis kinds: the modules that register them, and the rules
a spec is validated by.

Every built-in kind is registered beside its estimator (:class:`hemafed.kinds.AnalysisKind`:
spec options, queries, caps, hub step, pooled reference and report page), in the ``KINDS`` of
one module of :data:`CATALOGUE`; importing this module registers them all, and the spec rules
of :data:`BUILT_IN_RULES` (:class:`hemafed.studyplan.spec.SpecRules`: the derived score
columns, the known genes, the checks needing an estimator's model, the imaging section). The
study tables (``spec.KINDS``, ``plan.KIND_QUERIES`` and ``KIND_CAPS``,
``queries.QUERIES_OF_KIND``, ``runner.RUNNERS``, ``report.RENDERERS``) are views of the
registrations.
"""

from __future__ import annotations

from collections.abc import Mapping

from hemafed.analytics import basic_kinds, quantile, study_kinds, survival_kinds
from hemafed.analytics.design import parse_formula
from hemafed.errors import InvalidInput
from hemafed.genomics import kinds as genomics_kinds
from hemafed.genomics.kinds import GWAS_CAP
from hemafed.imaging import kinds as imaging_kinds
from hemafed.imaging.spec import imaging_problems
from hemafed.kinds import LMM_CAP, NEWTON_CAP, AnalysisKind, register_kind
from hemafed.learn import kinds as learn_kinds
from hemafed.learn.kinds import EXACT_HISTOGRAMS_KEY
from hemafed.scores.eln import MR_GENES
from hemafed.scores.ipssm import ALL_GENES
from hemafed.scores.levels import DERIVED_LEVELS
from hemafed.studyplan.spec import FORMULA_LEVEL_KINDS, Analysis, SpecRules, register_rules
from hemafed.synth import kinds as synth_kinds

__all__ = ["BUILT_IN", "BUILT_IN_RULES", "CATALOGUE", "EXACT_HISTOGRAMS_KEY", "GWAS_CAP",
           "LMM_CAP", "NEWTON_CAP", "check_levels"]

CATALOGUE = (basic_kinds, survival_kinds, synth_kinds, learn_kinds, study_kinds, quantile,
             genomics_kinds, imaging_kinds)
"""Modules that register kinds, beside their estimators (imported above)."""

BUILT_IN: tuple[AnalysisKind, ...] = tuple(k for m in CATALOGUE for k in m.KINDS)
"""Every built-in kind, in the order a spec's error lists them."""


def check_levels(analysis: Analysis) -> list[str]:
    """A model's declared ``levels`` must make a design (see ``parse_formula``)."""
    levels = analysis.get("levels")
    if analysis.kind not in FORMULA_LEVEL_KINDS or levels is None:
        return []
    if not isinstance(levels, Mapping):
        return ["levels must map each categorical column of the formula to its levels, "
                "reference first"]
    try:
        parse_formula(analysis.get("formula"), analysis.get("bounds") or None, levels)
    except InvalidInput as exc:
        return [str(exc)]
    except (TypeError, AttributeError):
        return ["formula and levels do not make a design"]
    return []


BUILT_IN_RULES = SpecRules(
    # the scores the sites derive (hemafed.study.derived): each category and its score
    columns=(*DERIVED_LEVELS, *(c.replace("_category", "_score") for c in DERIVED_LEVELS)),
    genes=frozenset({*ALL_GENES, *MR_GENES}),
    checks=(check_levels, study_kinds.check_cox_long_lattice),
    sections={"imaging": imaging_problems})
"""The spec rules of the built-in kinds (:func:`hemafed.studyplan.spec.register_rules`)."""

for _kind in BUILT_IN:
    register_kind(_kind)
register_rules(BUILT_IN_RULES)
