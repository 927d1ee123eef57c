"""The site runtime of imaging studies is the standard one.

:func:`hemafed.federation.runtime.site_handler` (``hemafed site serve``, the Flower site worker,
the in-process and simulation runtimes) joins a site's stored imaging tables
(``<site>/imaging/features.parquet``, findings, harmonised features) to its cohort and answers
the imaging queries (``combat_moments``, ``combat_residuals``, ``combat_apply``,
``imaging_screen``), whose modules are in
:data:`~hemafed.federation.runtime.SITE_QUERY_MODULES`. :func:`imaging_site_handler` remains as
the same factory for callers that named it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hemafed.federation.transport import SiteHandler


def load_imaging_queries() -> None:
    """Register every site query, the imaging ones included (idempotent)."""
    from hemafed.federation.runtime import _load_analyses

    _load_analyses()


def imaging_site_handler(config: Mapping[str, Any]) -> SiteHandler:
    """The standard site handler (``config['site_dir']`` is the site directory)."""
    from hemafed.federation.runtime import site_handler

    return site_handler(config)
