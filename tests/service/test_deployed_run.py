"""The hub service over a real loopback Flower deployment (SuperLink + 3 SuperNodes with the
hemafed site worker, TLS, SuperNode auth): a study submitted through the API, approved by the
three sites, run over the deployed SuperLink; its results equal the in-process CLI run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hubkit import SMALL_SPEC, app_client, approve_all, onboard, wait_run
from typer.testing import CliRunner

from hemafed.cli import app as cli_app
from hemafed.federation.flower.deployment import descendants, local_deployment, pid_alive
from hemafed.federation.runtime import MANIFEST_FILE
from hemafed.service.db import Database
from hemafed.service.hub import HubService
from hemafed.service.runs import DeployedFederation

pytestmark = [pytest.mark.deploy, pytest.mark.slow]


def test_hub_runs_a_study_over_the_deployed_superlink(site_dirs: list[Path],
                                                      tmp_path: Path) -> None:
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
        client = app_client(service)
        heads = onboard(client, service, site_dirs)
        study = client.post("/api/studies", headers=heads["alice"],
                            json={"spec_yaml": SMALL_SPEC}).json()
        approve_all(client, heads, site_dirs, study)
        run = client.post(f"/api/studies/{study['id']}/runs", headers=heads["alice"]).json()
        run = wait_run(client, heads["alice"], run["id"], timeout=300)
        assert run["state"] == "succeeded", run
        assert run["transport"] == "deploy"
        assert sorted(run["contributors"]) == [d.name for d in site_dirs]
        assert run["dropouts"] == []
        assert run["progress"]["round"] >= 3 and run["progress"]["sites_answering"] == 3
        hub_results = client.get(f"/api/runs/{run['id']}/results.json",
                                 headers=heads["alice"]).json()
        service.dispose()
    assert pids and not any(pid_alive(p) for p in pids)  # all stopped, process groups included

    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(SMALL_SPEC)
    out = tmp_path / "cli"
    args = ["study", "run", str(spec_file), "--transport", "inprocess", "--out", str(out)]
    for d in site_dirs:
        args += ["--site", str(d)]
    res = CliRunner().invoke(cli_app, args)
    assert res.exit_code == 0, res.output
    cli_results = json.loads((out / "results.json").read_text())
    for hub_doc, cli_doc in zip(hub_results["analyses"], cli_results["analyses"], strict=True):
        assert hub_doc["status"] == cli_doc["status"] == "ok"
        for name, table in cli_doc["tables"].items():
            got = np.array(hub_doc["tables"][name]["data"], dtype=float)
            np.testing.assert_allclose(got, np.array(table["data"], dtype=float), rtol=1e-9)
