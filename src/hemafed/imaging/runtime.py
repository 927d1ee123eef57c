"""The site runtime for imaging studies: the standard secure-aggregation site, whose cohort also
carries the site's imaging feature and findings columns (:mod:`hemafed.imaging.site_features`).

:func:`imaging_site_handler` is a handler factory for every transport (in-process, Flower), like
:func:`hemafed.federation.runtime.site_handler`: it opens the site directory (policy, ledger,
audit, identity key, pinned manifest), joins ``<site>/imaging`` to the cohort, and answers each
protocol message through :func:`hemafed.secure.site_step`, policy check and audit included.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

import numpy as np

from hemafed.errors import InvalidInput
from hemafed.federation.queries import Statistic
from hemafed.federation.transport import SiteHandler
from hemafed.imaging.site_features import imaging_cohort, imaging_table
from hemafed.secure import FederationManifest, SiteIdentity, site_step

IMAGING_QUERY_MODULES = ("hemafed.imaging.combat", "hemafed.imaging.screen")
"""Modules registering the imaging site queries (import them where sites answer)."""


def load_imaging_queries() -> None:
    import importlib

    from hemafed.federation.runtime import _load_analyses

    _load_analyses()
    for name in IMAGING_QUERY_MODULES:
        importlib.import_module(name)


def imaging_site_handler(config: Mapping[str, Any]) -> SiteHandler:
    """Handler factory: ``config['site_dir']`` is the site directory."""
    from hemafed.federation.runtime import IDENTITY_FILE, MANIFEST_FILE
    from hemafed.site.request import SiteRequest
    from hemafed.site.store import open_node, site_id_of
    from hemafed.study.derived import with_derived_scores

    load_imaging_queries()
    site_dir = Path(str(config["site_dir"]))
    site_id = site_id_of(site_dir)
    manifest_path = site_dir / MANIFEST_FILE
    if not manifest_path.exists():
        raise InvalidInput(f"site {site_id}: no federation manifest at {manifest_path}")
    node = open_node(site_dir)
    node.cohort = imaging_cohort(with_derived_scores(node.cohort), imaging_table(site_dir))
    identity = SiteIdentity.load(site_id, site_dir / IDENTITY_FILE)
    manifest = FederationManifest.load(manifest_path)

    def compute(payload: bytes, quorum: int
                ) -> tuple[dict[str, np.ndarray], dict[str, Statistic]]:
        answer = node.answer(SiteRequest.from_json(payload), guaranteed_contributors=quorum)
        return answer.values, answer.specs

    def handle(message: bytes, state: MutableMapping[str, bytes]) -> bytes:
        return site_step(message, state, identity, manifest, compute)

    return handle
