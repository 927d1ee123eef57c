"""The standard site handlers: the site runtime with every catalogued query and the derived scores.

:func:`site_handler` is the handler factory every transport uses by default (``hemafed site
serve``, the Flower site worker and ClientApp, the simulation, the in-process runtime and the
demo): :func:`hemafed.site.runtime.site_handler` with the queries of
:mod:`hemafed.study.catalogue` registered and the study layer's cohort enrichment, the derived
clinical scores of :func:`hemafed.study.derived.with_derived_scores`, passed in as its hook;
importing it registers the analysis kinds, spec rules and planner the site derives its approved
studies' plans with (:mod:`hemafed.study.plan`, :mod:`hemafed.studyplan`).
:func:`longitudinal_site_handler` is the same for sites that also hold a measurement table
(:func:`hemafed.analytics.mixed.longitudinal_site_handler`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import hemafed.study.catalogue as catalogue
import hemafed.study.plan as _plan  # noqa: F401  (registers the kinds and the site's planner)
from hemafed.analytics import mixed
from hemafed.federation.transport import SiteHandler
from hemafed.site import runtime
from hemafed.study.derived import with_derived_scores

__all__ = ["catalogue", "longitudinal_site_handler", "site_handler"]


def site_handler(config: Mapping[str, Any]) -> SiteHandler:
    """Handler factory for every transport: ``config['site_dir']`` is the site directory."""
    return runtime.site_handler(config, enrich=with_derived_scores)


def longitudinal_site_handler(config: Mapping[str, Any]) -> SiteHandler:
    """:func:`site_handler` whose cohort also holds the site's measurement table
    (``lmm_reml_sums`` and the long-format Cox queries run there)."""
    return mixed.longitudinal_site_handler(config, enrich=with_derived_scores)
