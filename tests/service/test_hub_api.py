"""The hub API end to end on SQLite and PostgreSQL: onboard, submit, signed approvals, run, results.

The results of a run through the hub must equal the CLI (`hemafed study run`) on the same sites.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from hubkit import SMALL_SPEC, app_client, approve_all, make_hub, onboard, wait_run
from typer.testing import CliRunner

from hemafed.cli import app as cli_app


def test_run_through_the_hub_equals_the_cli(db_url: str, site_dirs: list[Path],
                                            tmp_path: Path) -> None:
    service = make_hub(db_url, tmp_path / "hub", site_dirs)
    client = app_client(service)
    heads = onboard(client, service, site_dirs)
    study = client.post("/api/studies", headers=heads["alice"],
                        json={"spec_yaml": SMALL_SPEC}).json()
    assert study["approvals"] == {d.name: None for d in site_dirs}
    r = client.post(f"/api/studies/{study['id']}/runs", headers=heads["alice"])
    assert r.status_code == 403 and "not approved" in r.json()["error"]
    approve_all(client, heads, site_dirs, study)
    run = client.post(f"/api/studies/{study['id']}/runs", headers=heads["alice"]).json()
    run = wait_run(client, heads["alice"], run["id"])
    assert run["state"] == "succeeded", run
    assert sorted(run["contributors"]) == [d.name for d in site_dirs]
    assert run["progress"]["round"] >= 3
    hub_results = client.get(f"/api/runs/{run['id']}/results.json", headers=heads["alice"]).json()

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
    csv = client.get(f"/api/runs/{run['id']}/results.csv", headers=heads["alice"]).text
    assert "cox_os,summary,age,coef," in csv
    models = client.get("/api/models", headers=heads["alice"]).json()
    assert [(m["name"], m["version"], m["run"]) for m in models] == [
        ("small-mds.cox_os", 1, run["id"])]
    service.dispose()


def test_migration_from_an_empty_database(db_url: str) -> None:
    import sqlalchemy as sa

    from hemafed.service.db import make_engine, upgrade

    engine = make_engine(db_url)
    assert sa.inspect(engine).get_table_names() == []
    upgrade(engine)
    tables = set(sa.inspect(engine).get_table_names())
    assert {"users", "sites", "studies", "study_versions", "approvals", "runs", "results",
            "model_versions", "sessions", "api_tokens", "catalogue_plans",
            "catalogue_approvals", "catalogue_releases", "alembic_version"} <= tables
    with engine.connect() as conn:
        assert conn.execute(sa.text("select version_num from alembic_version")).scalar() == "0003"
    upgrade(engine)  # a second upgrade is a no-op
    engine.dispose()


def test_migration_keeps_the_data_of_an_older_schema(db_url: str) -> None:
    import datetime as dt

    import sqlalchemy as sa

    from hemafed.service.db import make_engine, upgrade

    engine = make_engine(db_url)
    upgrade(engine, "0001")
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    with engine.begin() as conn:
        conn.execute(sa.text("insert into sites (site_id, name, identity_key, created) "
                             "values ('old-site', 'Old', 'AAAA', :t)"), {"t": now})
        assert "catalogue" not in {c["name"] for c in sa.inspect(conn).get_columns("sites")}
    upgrade(engine, "0002")
    with engine.begin() as conn:  # an officer-published count of the old catalogue
        conn.execute(sa.text("update sites set catalogue = :c"),
                     {"c": '{"patients": 120, "diseases": {"MDS": 120}, "fields": ["age"]}'})
    upgrade(engine)
    with engine.connect() as conn:
        row = conn.execute(sa.text("select site_id, name, description from sites")).one()
        cols = {c["name"] for c in sa.inspect(conn).get_columns("sites")}
    # the site is kept; the counts not computed through the secure path are dropped
    assert tuple(row) == ("old-site", "Old", None)
    assert "catalogue" not in cols and "description" in cols
    engine.dispose()


def test_demo_hub_is_ready_to_click(site_dirs: list[Path], tmp_path: Path) -> None:
    """`hemafed demo --serve`: accounts, sites onboarded, the study signed by every site."""
    from hemafed.service.serve import prepare_demo_hub

    out = tmp_path / "demo"
    service = prepare_demo_hub(out, site_dirs, SMALL_SPEC, "demo password 1")
    client = app_client(service)
    r = client.post("/api/login", json={"username": "researcher", "password": "demo password 1"})
    head = {"Authorization": f"Bearer {r.json()['token']}"}
    (study,) = client.get("/api/studies", headers=head).json()
    assert {s: a["decision"] for s, a in study["approvals"].items()} == {
        d.name: "approved" for d in site_dirs}
    run = wait_run(client, head, client.post(f"/api/studies/{study['id']}/runs",
                                             headers=head).json()["id"])
    assert run["state"] == "succeeded", run
    again = prepare_demo_hub(out, site_dirs, SMALL_SPEC, "another password")
    assert len(again.users()) == len(service.users())
