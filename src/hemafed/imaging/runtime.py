"""The site runtime of imaging studies is the standard one.

:func:`hemafed.site.runtime.site_handler` (``hemafed site serve``, the Flower site worker, the
in-process and simulation runtimes, through :func:`hemafed.study.site_runtime.site_handler`)
joins a site's stored imaging tables (``<site>/imaging/features.parquet``, findings, harmonised
features) to its cohort and answers the imaging queries (``combat_moments``,
``combat_residuals``, ``combat_apply``, ``imaging_screen``), whose modules are in the query
catalogue (:data:`hemafed.study.catalogue.CATALOGUE`). :func:`imaging_site_handler` remains as
the site runtime for callers that named it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from hemafed.cohort.model import Cohort
from hemafed.federation.transport import SiteHandler


def load_imaging_queries() -> None:
    """Register the imaging site queries (idempotent); every other site query is registered
    by :mod:`hemafed.study.catalogue`."""
    from hemafed.imaging import combat, screen  # noqa: F401  (their import registers them)


def imaging_site_handler(config: Mapping[str, Any], *,
                         enrich: Callable[[Cohort], Cohort] | None = None) -> SiteHandler:
    """The site runtime's handler (``config['site_dir']`` is the site directory; ``enrich``
    the cohort enrichment hook of :func:`hemafed.site.runtime.site_handler`)."""
    from hemafed.site.runtime import site_handler

    load_imaging_queries()
    return site_handler(config, enrich=enrich)
