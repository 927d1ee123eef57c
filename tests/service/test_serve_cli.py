"""`hemafed hub serve` as a real process: the Python client end to end, and a kill -9 mid-run.

The hub restarted after being killed while a run was in flight reports that run as interrupted
(with the reason), keeps every submitted study, and runs it again.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hubkit import PASSWORD, SMALL_SPEC, ProcessAdmin, approve_all, free_port, hub_process, onboard

from hemafed.service import Client

pytestmark = pytest.mark.slow






def test_client_and_kill_mid_run(site_dirs: list[Path], tmp_path: Path) -> None:
    data = tmp_path / "hub"
    port = free_port()
    with hub_process(data, site_dirs, port) as (url, _):
        admin = ProcessAdmin(url)
        heads = onboard(admin, admin, site_dirs)  # type: ignore[arg-type]
        client = Client.login(url, "alice", PASSWORD)
        study = client.submit(SMALL_SPEC)
        approve_all(admin, heads, site_dirs, study)  # type: ignore[arg-type]
        results = client.wait(client.run(study["id"])["id"], timeout=600)
        assert results["sites"] == [d.name for d in site_dirs]
        cox = client.table(1, "cox_os")
        assert list(cox.index) == ["age", "hb", "plt"] and (cox["se(coef)"] > 0).all()
        model = client.model("small-mds.cox_os", 1)
        assert model.spec_sha256 == study["spec_sha256"] and model.run == 1
        assert list(model.coefficients.index) == ["age", "hb", "plt"]
        running = client.run(study["id"])  # killed while in flight
        assert running["state"] in ("queued", "running")
    assert (data / "hub.db").exists()  # the default database: SQLite in --data
    with hub_process(data, site_dirs) as (url, _):
        client = Client.login(url, "alice", PASSWORD)
        after = client.status(running["id"])
        assert after["state"] == "interrupted" and "hub stopped" in after["error"]
        assert client.status(1)["state"] == "succeeded"
        assert [s["spec_sha256"] for s in client.studies()] == [study["spec_sha256"]]
        again = client.wait(client.run(study["id"])["id"], timeout=600)
        assert again["analyses"][1]["tables"]["summary"] == results["analyses"][1]["tables"][
            "summary"]
