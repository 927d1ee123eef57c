"""The hub API end to end on SQLite and PostgreSQL: onboard, submit, signed approvals, run, results.

The results of a run through the hub must equal the CLI (`hemafed study run`) on the same sites.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hubkit import SMALL_SPEC, app_client, assert_same_results, make_hub, wait_run


def test_run_through_the_hub_equals_the_cli(db_url: str, site_dirs: list[Path], tmp_path: Path,
                                            run_small_study: Any, cli_small_study: Any) -> None:
    service = make_hub(db_url, tmp_path / "hub", site_dirs)

    def not_yet(client: Any, heads: dict[str, Any], study: dict[str, Any]) -> None:
        assert study["approvals"] == {d.name: None for d in site_dirs}
        r = client.post(f"/api/studies/{study['id']}/runs", headers=heads["alice"])
        assert r.status_code == 403 and "not approved" in r.json()["error"]

    hub = run_small_study(service, before_approval=not_yet)
    assert sorted(hub.run["contributors"]) == [d.name for d in site_dirs]
    assert hub.run["progress"]["round"] >= 3
    assert_same_results(hub.results, cli_small_study())
    csv = hub.client.get(f"/api/runs/{hub.run['id']}/results.csv",
                         headers=hub.heads["alice"]).text
    assert "cox_os,summary,age,coef," in csv
    models = hub.client.get("/api/models", headers=hub.heads["alice"]).json()
    assert [(m["name"], m["version"], m["run"]) for m in models] == [
        ("small-mds.cox_os", 1, hub.run["id"])]
    _registered_model_is_an_object(hub)
    service.dispose()


def _registered_model_is_an_object(hub: Any) -> None:
    """``Client.model`` gives the Cox model's coefficients, hazard ratios, lineage and a linear
    predictor, each checked against the run's results document read by hand."""
    import numpy as np
    import pandas as pd
    import pytest

    from hemafed import Client
    from hemafed.errors import InvalidInput

    token = hub.heads["alice"]["Authorization"].split()[1]
    model = Client("http://testserver", token, http=hub.client).model("small-mds.cox_os", 1)
    assert model.lineage == {"spec_sha256": hub.study["spec_sha256"], "run": hub.run["id"],
                             "name": "small-mds.cox_os", "version": 1}
    cox = next(d for d in hub.results["analyses"] if d["id"] == "cox_os")["tables"]["summary"]
    rows = dict(zip(cox["index"], cox["data"], strict=True))
    coef = {k: v[cox["columns"].index("coef")] for k, v in rows.items()}
    assert list(model.coefficients.index) == ["age", "hb", "plt"]
    assert model.coefficients["coef"].to_dict() == coef
    assert np.allclose(model.hazard_ratios["exp(coef)"], [np.exp(coef[k]) for k in coef])
    design = pd.DataFrame({"age": [70.0, 55.0], "hb": [9.5, 12.0], "plt": [40.0, 210.0]})
    want = [sum(coef[k] * design[k][i] for k in coef) for i in range(2)]
    assert np.allclose(model.linear_predictor(design).to_numpy(), want)
    assert model.to_dict()["payload"]["tables"]["summary"] == cox
    with pytest.raises(InvalidInput, match="lacks column"):
        model.linear_predictor(design.drop(columns="hb"))
    with pytest.raises(InvalidInput, match="only a logistic"):
        model.predict_proba(design)


def test_migration_from_an_empty_database(db_url: str) -> None:
    import sqlalchemy as sa

    from hemafed.service.db import make_engine, upgrade

    engine = make_engine(db_url)
    assert sa.inspect(engine).get_table_names() == []
    upgrade(engine)
    tables = set(sa.inspect(engine).get_table_names())
    assert {"users", "sites", "studies", "study_versions", "approvals", "runs", "results",
            "model_versions", "sessions", "api_tokens", "catalogue_plans",
            "catalogue_approvals", "catalogue_releases", "catalogue_schedule",
            "alembic_version"} <= tables
    with engine.connect() as conn:
        assert conn.execute(sa.text("select version_num from alembic_version")).scalar() == "0004"
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
    from hemafed.service.catalogue import EPSILON
    from hemafed.service.serve import prepare_demo_hub

    out = tmp_path / "demo"
    service = prepare_demo_hub(out, site_dirs, SMALL_SPEC, "demo password 1")
    client = app_client(service)
    r = client.post("/api/login", json={"username": "researcher", "password": "demo password 1"})
    head = {"Authorization": f"Bearer {r.json()['token']}"}
    (study,) = client.get("/api/studies", headers=head).json()
    cat = client.get("/api/catalogue", headers=head).json()  # counted through the secure path
    assert cat["network"]["patients"] is not None
    assert all(s["release"]["epsilon"] == EPSILON for s in cat["sites"])
    assert {s: a["decision"] for s, a in study["approvals"].items()} == {
        d.name: "approved" for d in site_dirs}
    run = wait_run(client, head, client.post(f"/api/studies/{study['id']}/runs",
                                             headers=head).json()["id"])
    assert run["state"] == "succeeded", run
    again = prepare_demo_hub(out, site_dirs, SMALL_SPEC, "another password")
    assert len(again.users()) == len(service.users())
