"""The site runtime for imaging studies: the standard secure-aggregation site, whose cohort also
carries the site's imaging feature and findings columns (:mod:`hemafed.imaging.site_features`).

:func:`imaging_site_handler` is a handler factory for every transport (in-process, Flower), like
:func:`hemafed.federation.runtime.site_handler`: it opens the site directory (policy, ledger,
audit, identity key, pinned manifest), joins ``<site>/imaging`` to the cohort, and answers each
protocol message through :func:`hemafed.secure.site_step`, policy check and audit included.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hemafed.federation.transport import SiteHandler
from hemafed.imaging.site_features import imaging_cohort, imaging_table

IMAGING_QUERY_MODULES = ("hemafed.imaging.combat", "hemafed.imaging.screen")
"""Modules registering the imaging site queries (import them where sites answer)."""


def load_imaging_queries() -> None:
    import importlib

    from hemafed.federation.runtime import _load_analyses

    _load_analyses()
    for name in IMAGING_QUERY_MODULES:
        importlib.import_module(name)


def imaging_site_handler(config: Mapping[str, Any]) -> SiteHandler:
    """Handler factory: ``config['site_dir']`` is the site directory.

    The standard site runtime (:func:`hemafed.federation.runtime.site_handler`: pinned
    manifest, participant-set guard, rollback anchors, audit heads) whose cohort also holds the
    site's imaging columns, as :func:`hemafed.analytics.mixed.longitudinal_site_handler` does."""
    from hemafed.federation import runtime

    load_imaging_queries()
    site_dir = Path(str(config["site_dir"]))
    handle = runtime.site_handler(config)
    rt = runtime._open_runtime(site_dir)
    # the cohort as opened (derived scores included), kept per node so a re-join never clashes
    base = _BASE_COHORTS.setdefault(id(rt.node), (rt.node, rt.node.cohort))[1]
    rt.node.cohort = imaging_cohort(base, imaging_table(site_dir))
    return handle


_BASE_COHORTS: dict[int, tuple[Any, Any]] = {}
"""Per open site node (kept alive with it): the cohort before the imaging join."""
