"""Virtual imaging sites shared by the imaging tests (built once per session)."""

from __future__ import annotations

from typing import Any

import pytest

from hemafed.imaging.demo import ImagingSites, build_imaging_sites


@pytest.fixture(scope="session")
def scd_sites(tmp_path_factory: pytest.TempPathFactory) -> ImagingSites:
    return build_imaging_sites(tmp_path_factory.mktemp("scd"), "SCD", 5, [22, 16, 26, 18, 24],
                               seed=11)


@pytest.fixture(scope="session")
def mm_sites(tmp_path_factory: pytest.TempPathFactory) -> ImagingSites:
    return build_imaging_sites(tmp_path_factory.mktemp("mm"), "MM", 5, [30, 24, 36, 26, 32],
                               seed=12)


@pytest.fixture(scope="session")
def secure_run() -> Any:
    """``secure_run(sites, body)``: run ``body(federation)`` over SecureFederation in-process."""
    from hemafed.federation.inprocess import run_in_process
    from hemafed.federation.runtime import SecureFederation
    from hemafed.study.site_runtime import site_handler

    def run(built: ImagingSites, body: Any) -> Any:
        fed = built.sites

        def hub(exchange: Any, site_ids: list[str], config: dict[str, Any]) -> Any:
            secure = SecureFederation(exchange, fed.manifest, site_ids=site_ids,
                                      spec_sha256=built.spec.sha256, requester="imaging-demo")
            return body(secure)

        return run_in_process(hub, site_handler, fed.site_configs(), {})

    return run
