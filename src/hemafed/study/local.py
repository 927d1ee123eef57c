"""Local site directories as a federation: run a study over them with any transport.

:class:`LocalSites` is a set of site directories on this machine and the manifest pinning their
identities (the demo builds them, :func:`hemafed.demo.build_sites`; ``hemafed study run`` reads
them); :func:`run_study_on` runs a study spec over them in the Flower simulation, in-process or
in a localhost deployment, each site answering through the standard site handler
(:func:`hemafed.study.site_runtime.site_handler`).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hemafed.errors import InvalidInput
from hemafed.secure import FederationManifest
from hemafed.study.spec import StudySpec

__all__ = ["LocalSites", "run_study_on"]


@dataclass(frozen=True)
class LocalSites:
    """Site directories on this machine and the manifest pinning their identities."""

    site_dirs: dict[str, Path]
    manifest: FederationManifest

    def site_configs(self) -> list[dict[str, Any]]:
        return [{"site_dir": str(d), "site_id": s} for s, d in self.site_dirs.items()]


def run_study_on(transport: str, spec: StudySpec, fed: LocalSites) -> dict[str, Any]:
    """Run ``spec`` over the federation's sites with the named transport."""
    config = {"spec": dict(spec.raw), "manifest": fed.manifest.to_json()}
    hub, handler = "hemafed.study.hub:study_hub_main", "hemafed.study.site_runtime:site_handler"
    if transport == "sim":
        from hemafed.federation.flower.simulation import run_in_simulation

        result = run_in_simulation(hub, handler, fed.site_configs(), config, timeout=300.0,
                                   connect_timeout=300.0)
    elif transport == "inprocess":
        from hemafed.federation.inprocess import run_in_process

        result = run_in_process(hub, handler, fed.site_configs(), config)
    elif transport == "deploy":
        from hemafed.federation.flower.deployment import local_deployment

        with tempfile.TemporaryDirectory(prefix="hemafed-deploy-") as work, \
                local_deployment(Path(work), list(fed.site_dirs.values())) as dep:
            result = dep.run(hub, config, expected_sites=len(fed.site_dirs),
                             timeout=120.0)["result"]
    else:
        raise InvalidInput(f"unknown transport {transport!r}; expected sim, inprocess or deploy")
    if not isinstance(result, dict):
        raise InvalidInput(f"the hub returned {type(result).__name__}, expected a results document")
    return result
