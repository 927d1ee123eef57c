"""The catalogue of site queries: every module whose import registers the queries a site answers.

Importing this module registers every site query (:func:`hemafed.federation.queries.register`),
in the site's process and in the hub's alike; a module missing from the build fails here, at
import, never at the first request. :data:`CATALOGUE` lists the modules, imported by name
above (no module names as strings). Every query an analysis kind names
(:class:`hemafed.kinds.AnalysisKind` ``queries`` and ``sends``, and the queries a spec's imaging
section implies, :data:`hemafed.study.plan.IMAGING_CAPS`) must be registered by them, and every
query they register must be named by some kind or listed in :data:`STANDALONE`
(``tests/study/test_query_catalogue.py`` checks both in a fresh interpreter).

It lives in the study layer because the query modules live above the site runtime
(:mod:`hemafed.site.runtime`, which answers whatever is registered);
:func:`hemafed.study.site_runtime.site_handler` is the site handler with this catalogue loaded.
"""

from __future__ import annotations

from types import ModuleType

import hemafed.analytics as analytics
from hemafed.analytics import (
    competing,
    describe,
    logistic,
    mixed,
    multistate,
    quantile_query,
    weighting_queries,
)
from hemafed.federation import queries as core_queries
from hemafed.genomics import queries as genomics_queries
from hemafed.imaging import combat, screen
from hemafed.learn import features, gbdt, metrics, neural_queries, validation
from hemafed.synth import queries as synth_queries

__all__ = ["CATALOGUE", "STANDALONE", "catalogued", "kind_queries"]

CATALOGUE: tuple[ModuleType, ...] = (
    core_queries,  # cohort_size, category_counts, moments, catalogue_counts
    analytics,  # the survival queries: KM, Cox, concordance, Fine-Gray, Gray's test, start-stop
    describe, logistic, competing, weighting_queries, multistate, mixed, quantile_query,
    features, gbdt, metrics, neural_queries, validation,
    synth_queries, genomics_queries, combat, screen,
)
"""Every module that registers site queries, in the order they are imported."""

STANDALONE: frozenset[str] = frozenset({
    # the learning building blocks a researcher drives from Python (hemafed.learn), which no
    # study kind sends: a quantile sketch of one feature and the DP neural-network rounds
    "learn_feature_histogram", "neural_train_round", "neural_dp_gradient",
})
"""Catalogued queries that no analysis kind names (sent only from Python, not from a spec)."""


def catalogued() -> frozenset[str]:
    """The names of the queries registered in this process (after this module's imports:
    every catalogued query, plus any a caller registered itself)."""
    return frozenset(q.name for q in core_queries.registered())


def kind_queries() -> dict[str, frozenset[str]]:
    """``kind -> queries`` for every registered analysis kind: the queries its plan permits,
    those its hub step sends and, for ``imaging``, those the spec's imaging section implies."""
    from hemafed.kinds import registered_kinds
    from hemafed.study import kinds as _kinds  # noqa: F401  (registers the built-in kinds)
    from hemafed.study.plan import IMAGING_CAPS

    out = {k.name: frozenset(k.queries) | frozenset(k.sends or ()) for k in registered_kinds()}
    out["imaging"] = out.get("imaging", frozenset()) | frozenset(IMAGING_CAPS)
    return out
