"""The hub service over a real loopback Flower deployment (SuperLink + 3 SuperNodes with the
hemafed site worker, TLS, SuperNode auth): a study submitted through the API, approved by the
three sites, run over the deployed SuperLink; its results equal the in-process CLI run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hubkit import app_client, assert_same_results, onboard

from hemafed.federation.flower.deployment import descendants, local_deployment, pid_alive
from hemafed.service.catalogue import approve_catalogue, catalogue_spec_text, parse_plan
from hemafed.service.db import Database
from hemafed.service.hub import HubService
from hemafed.service.runs import DeployedFederation
from hemafed.site.runtime import MANIFEST_FILE

pytestmark = [pytest.mark.deploy, pytest.mark.slow]


@pytest.fixture
def deployed_hub(site_dirs: list[Path], tmp_path: Path) -> Iterator[HubService]:
    """A hub service over a loopback deployment of the three sites; on exit every process of
    the deployment (process groups included) is stopped."""
    pids: list[int] = []
    with local_deployment(tmp_path / "deploy", list(site_dirs)) as dep:
        pids = [p.pid for p in dep.processes]
        pids += [c for p in dep.processes for c in descendants(p.pid)]
        fed = DeployedFederation.connect(dep.address, dep.certs.ca_cert,
                                         site_dirs[0] / MANIFEST_FILE, tmp_path / "hub-work",
                                         timeout=90.0, run_timeout=240.0)
        assert fed.site_ids == tuple(d.name for d in site_dirs)
        service = HubService(Database(f"sqlite:///{tmp_path / 'hub.db'}"), tmp_path / "hub",
                             federation=fed)
        yield service
        service.dispose()
    assert pids and not any(pid_alive(p) for p in pids)  # all stopped, process groups included


def test_hub_runs_a_study_over_the_deployed_superlink(deployed_hub: HubService,
                                                      site_dirs: list[Path],
                                                      run_small_study: Any,
                                                      cli_small_study: Any) -> None:
    hub = run_small_study(deployed_hub, timeout=300)
    assert hub.run["transport"] == "deploy"
    assert sorted(hub.run["contributors"]) == [d.name for d in site_dirs]
    assert hub.run["dropouts"] == []
    assert hub.run["progress"]["round"] >= 3 and hub.run["progress"]["sites_answering"] == 3
    assert_same_results(hub.results, cli_small_study())


def test_catalogue_refresh_over_the_deployed_superlink(deployed_hub: HubService,
                                                       site_dirs: list[Path]) -> None:
    """The catalogue through the deployed path: the approving sites' SuperNodes answer it."""
    service = deployed_hub
    onboard(app_client(service), service, site_dirs)
    admin = service.users()[0]
    plan = service.set_catalogue_plan(admin, catalogue_spec_text())
    officers = {u.site_id: u for u in service.users() if u.role == "officer"}
    for d in site_dirs[:2]:
        service.record_catalogue_approval(officers[d.name], approve_catalogue(
            d, parse_plan(plan.spec_yaml).spec, budget=3.0, officer="dpo"))
    assert service.refresh_catalogue(admin)["sites"] == ["site-a", "site-b"]
    cat = service.catalogue(admin)
    assert cat["network"]["sites"] == ["site-a", "site-b"]
    assert [s["release"] is None for s in cat["sites"]] == [False, False, True]
