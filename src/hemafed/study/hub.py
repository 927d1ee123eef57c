"""The hub's entry point for running a study over a transport.

``study_hub_main`` is the ``hub_main`` every transport runs (``"hemafed.study.hub:study_hub_main"``):
in Flower simulation and deployment it runs inside the ServerApp, in tests in-process. Its
``config`` carries the study specification and the federation manifest (both public); it
returns the JSON results document of :func:`hemafed.study.runner.run_study`.
"""

from __future__ import annotations

from typing import Any

from hemafed.federation.runtime import SecureFederation
from hemafed.federation.transport import Exchange
from hemafed.secure import FederationManifest
from hemafed.study import catalogue as _catalogue  # noqa: F401  (registers every site query)
from hemafed.study.runner import run_study
from hemafed.study.spec import StudySpec


def study_hub_main(exchange: Exchange, site_ids: list[str], config: dict[str, Any]) -> Any:
    """Run ``config['spec']`` (a mapping) over the sites with manifest ``config['manifest']``."""
    spec = StudySpec.from_mapping(config["spec"])
    manifest = FederationManifest.from_json(config["manifest"])
    federation = SecureFederation(exchange, manifest, site_ids=site_ids,
                                  spec_sha256=spec.sha256, requester=spec.requester)
    return run_study(spec, federation)
