"""The catalogue's scheduled refresh: due times in the database, a scheduler in the hub.

A refresh the plan schedules runs when due, through the same secure path as one the admin
asks for; a refused one (the sites' catalogue budget spent) is recorded with its reason,
shown on the catalogue page and rescheduled; a claim left by a killed hub is released on start
and the due refresh runs once. The real-process test kills ``hemafed hub serve`` by PID
(SIGKILL) and restarts it after two intervals were missed: the sites' own audit logs show
exactly one more refresh answered, not two, not none.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from hubkit import ProcessAdmin, app_client, hub_process, make_hub, onboard

from hemafed.service.catalogue import approve_catalogue, catalogue_spec_text, parse_plan
from hemafed.site.store import audit_log

DISEASES = ["MDS", "AML"]
FIELDS = ["age", "hb", "plt"]


def _answered(site: Path) -> int:
    """Catalogue requests the site's node answered (its own audit log)."""
    return sum(1 for e in audit_log(site).entries()
               if e["query"] == "catalogue_counts@1" and e["decision"] == "allowed")


def _approve(client: Any, heads: dict[str, Any], site_dirs: list[Path], text: str,
             budget: float) -> None:
    spec = parse_plan(text).spec
    for d in site_dirs:
        signed = approve_catalogue(d, spec, budget=budget, officer=f"officer-{d.name}")
        r = client.post("/api/site/catalogue/approval", headers=heads[d.name],
                        json={"payload": signed.payload, "signature": signed.signature})
        assert r.status_code == 200, r.text


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 6, 1, 9, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


def test_migration_adds_the_schedule_and_keeps_the_plan(db_url: str) -> None:
    from hemafed.service.db import make_engine, upgrade

    engine = make_engine(db_url)
    upgrade(engine, "0003")
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    text = catalogue_spec_text(refresh_every_days=0)
    with engine.begin() as conn:
        conn.execute(sa.text("insert into catalogue_plans (spec_yaml, spec_sha256, created) "
                             "values (:y, :h, :t)"),
                     {"y": text, "h": parse_plan(text).spec.sha256, "t": now})
        assert "catalogue_schedule" not in sa.inspect(conn).get_table_names()
    upgrade(engine)
    with engine.connect() as conn:
        assert conn.execute(sa.text("select version_num from alembic_version")).scalar() == "0004"
        cols = {c["name"] for c in sa.inspect(conn).get_columns("catalogue_schedule")}
        assert {"next_due", "claimed_by", "last_outcome", "last_reason"} <= cols
        assert conn.execute(sa.text("select spec_yaml from catalogue_plans")).scalar() == text
        assert conn.execute(sa.text("select count(*) from catalogue_schedule")).scalar() == 0
    engine.dispose()


def test_a_refused_scheduled_refresh_is_recorded_and_rescheduled(db_url: str,
                                                                  site_dirs: list[Path],
                                                                  tmp_path: Path) -> None:
    clock = Clock()
    service = make_hub(db_url, tmp_path / "hub", site_dirs, clock=clock)
    client = app_client(service)
    heads = onboard(client, service, site_dirs)
    text = catalogue_spec_text(diseases=DISEASES, fields=FIELDS, epsilon=0.5,
                               refresh_every_days=7)
    assert client.put("/api/catalogue/plan", headers=heads["admin"],
                      json={"spec_yaml": text}).status_code == 200
    _approve(client, heads, site_dirs[:2], text, budget=1.0)
    sched = service.catalogue_schedule()
    assert sched is not None and sched["next_due"] == clock.now + dt.timedelta(days=7)
    assert service.run_due_refresh() is None  # not due yet: nothing asked
    clock.now += dt.timedelta(days=6, hours=23)
    assert service.run_due_refresh() is None and _answered(site_dirs[0]) == 0
    done = 0
    for _ in range(8):
        clock.now += dt.timedelta(days=7)
        out = service.run_due_refresh()
        assert out is not None
        if "error" in out:
            break
        done += 1
        assert out["refresh"] == done and _answered(site_dirs[0]) == done
        assert service.run_due_refresh() is None  # once per due time
    assert 1 <= done < 8
    sched = service.catalogue_schedule()
    assert sched is not None and sched["last_outcome"] == "failed"
    assert "privacy budget exhausted for study 'catalogue'" in sched["last_reason"]
    assert not any(s in sched["last_reason"] for s in ("site-a", "site-b"))  # the rule only
    assert sched["next_due"] == clock.now + dt.timedelta(days=7)  # rescheduled
    assert sched["last_trigger"] == "schedule" and not sched["running"]
    page = client.get("/catalogue", headers=heads["alice"]).text
    assert "privacy budget exhausted for study &#39;catalogue&#39;" in page
    assert "rescheduled" in page and "Next refresh due 2026-" in page
    cat = client.get("/api/catalogue", headers=heads["alice"]).json()
    assert cat["network"]["refresh"] == done  # the refusal released nothing
    service.dispose()


def test_a_site_offline_fails_the_scheduled_refresh_which_runs_again_later(
        site_dirs: list[Path], tmp_path: Path) -> None:
    clock = Clock()
    service = make_hub(f"sqlite:///{tmp_path / 'hub.db'}", tmp_path / "hub", site_dirs,
                       clock=clock)
    client = app_client(service)
    heads = onboard(client, service, site_dirs)
    text = catalogue_spec_text(diseases=DISEASES, fields=FIELDS, epsilon=1.0,
                               refresh_every_days=1)
    client.put("/api/catalogue/plan", headers=heads["admin"], json={"spec_yaml": text})
    _approve(client, heads, site_dirs[:2], text, budget=50.0)
    away = site_dirs[1].with_name("site-b-away")
    site_dirs[1].rename(away)  # site-b's node is not there
    clock.now += dt.timedelta(days=1)
    out = service.run_due_refresh()
    assert out is not None and "error" in out
    sched = service.catalogue_schedule()
    assert sched is not None and sched["last_outcome"] == "failed"
    assert sched["last_reason"] and "site-b" not in sched["last_reason"]
    assert sched["next_due"] == clock.now + dt.timedelta(days=1) and not sched["running"]
    assert service.run_due_refresh() is None  # rescheduled, not retried at once
    away.rename(site_dirs[1])
    clock.now += dt.timedelta(days=1)
    assert service.run_due_refresh() == {"refresh": 1, "sites": ["site-a", "site-b"],
                                         "epsilon": 1.0}
    assert service.catalogue_schedule()["last_outcome"] == "ok"  # type: ignore[index]
    service.dispose()


def test_a_claim_left_by_a_killed_hub_is_released_and_the_refresh_runs_once(
        site_dirs: list[Path], tmp_path: Path) -> None:
    clock = Clock()
    db_url = f"sqlite:///{tmp_path / 'hub.db'}"
    service = make_hub(db_url, tmp_path / "hub", site_dirs, clock=clock)
    client = app_client(service)
    heads = onboard(client, service, site_dirs)
    text = catalogue_spec_text(diseases=DISEASES, fields=FIELDS, epsilon=1.0,
                               refresh_every_days=1)
    client.put("/api/catalogue/plan", headers=heads["admin"], json={"spec_yaml": text})
    _approve(client, heads, site_dirs[:2], text, budget=50.0)
    clock.now += dt.timedelta(days=1, seconds=1)
    # another live hub process holds the due refresh: this one does not run it too
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("update catalogue_schedule set claimed_by = 'other-process'"))
    assert service.run_due_refresh() is None and _answered(site_dirs[0]) == 0
    r = client.post("/api/catalogue/refresh", headers=heads["admin"])
    assert r.status_code == 400 and "in progress" in r.json()["error"]
    service.dispose()
    # that process was killed mid-refresh: the restarted hub releases its claim, says so
    restarted = make_hub(db_url, tmp_path / "hub", site_dirs, clock=clock)
    sched = restarted.catalogue_schedule()
    assert sched is not None and sched["last_outcome"] == "interrupted"
    assert not sched["running"] and sched["next_due"] <= clock.now
    assert restarted.run_due_refresh() == {"refresh": 1, "sites": ["site-a", "site-b"],
                                           "epsilon": 1.0}
    assert restarted.run_due_refresh() is None
    assert [_answered(d) for d in site_dirs] == [1, 1, 0]
    with engine.connect() as conn:
        assert conn.execute(sa.text("select count(distinct refresh) from catalogue_releases")
                            ).scalar() == 1
    engine.dispose()
    restarted.dispose()




@pytest.mark.slow
def test_real_hub_killed_and_restarted_runs_the_due_refresh_once(site_dirs: list[Path],
                                                                 tmp_path: Path) -> None:
    """`hemafed hub serve` as a process: its scheduler refreshes when due; killed by PID
    (SIGKILL) and restarted after two intervals were missed, it runs the due refresh once."""
    interval = 4.0
    data = tmp_path / "hub"
    text = catalogue_spec_text(diseases=DISEASES, fields=FIELDS, epsilon=1.0,
                               refresh_every_days=interval / 86400)
    approving = site_dirs[:2]
    heads: dict[str, Any] = {}

    def refreshes(url: str) -> tuple[int, dt.datetime | None]:
        net = httpx.get(url + "/api/catalogue", headers=heads["alice"], timeout=10).json()[
            "network"]
        return (0, None) if net is None else (net["refresh"],
                                              dt.datetime.fromisoformat(net["time"]))

    def wait_for(url: str, n: int, timeout: float) -> dt.datetime:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got, when = refreshes(url)
            if got >= n:
                assert got == n and when is not None
                return when
            time.sleep(0.2)
        raise AssertionError(f"refresh {n} did not run in {timeout} s")

    with hub_process(data, site_dirs) as (url, proc):
        admin = ProcessAdmin(url)
        heads.update(onboard(admin, admin, site_dirs))  # type: ignore[arg-type]
        r = httpx.put(url + "/api/catalogue/plan", headers=heads["admin"],
                      json={"spec_yaml": text})
        assert r.status_code == 200, r.text
        _approve(admin.http, heads, approving, text, budget=50.0)
        # the scheduler, not the admin, refreshed; woken by the new plan (not its 30 s poll)
        wait_for(url, 1, interval + 15)
        os.kill(proc.pid, signal.SIGKILL)  # killed by PID, between two refreshes
        proc.wait(10)
    assert [_answered(d) for d in approving] == [1, 1]
    time.sleep(2 * interval + 1)  # down while two refreshes fall due
    engine = sa.create_engine(f"sqlite:///{data / 'hub.db'}")
    with engine.connect() as conn:
        due = conn.execute(sa.text("select next_due from catalogue_schedule")).scalar()
    engine.dispose()
    due = dt.datetime.fromisoformat(str(due)).replace(tzinfo=dt.UTC)
    assert due < dt.datetime.now(dt.UTC) - dt.timedelta(seconds=interval)  # missed twice
    with hub_process(data, site_dirs) as (url, _):
        second = wait_for(url, 2, 30)
        # exactly once: no catch-up of the second missed interval
        time.sleep(max(0.0, (second + dt.timedelta(seconds=interval / 2)
                             - dt.datetime.now(dt.UTC)).total_seconds()))
        assert refreshes(url)[0] == 2
        sched = httpx.get(url + "/api/catalogue", headers=heads["alice"], timeout=10).json()[
            "schedule"]
        assert sched["last_outcome"] == "ok" and sched["last_trigger"] == "schedule"
        assert dt.datetime.fromisoformat(sched["next_due"]) >= second + dt.timedelta(
            seconds=interval)
    # the sites' own audit logs: each approving site answered exactly twice; site-c never
    assert [_answered(d) for d in site_dirs] == [2, 2, 0]


@pytest.mark.slow
def test_real_hub_killed_during_a_refresh_publishes_it_once_after_restart(
        site_dirs: list[Path], tmp_path: Path) -> None:
    """SIGKILL while the scheduled refresh is in flight (claimed, not committed): nothing of it
    is published; the restarted hub records the interruption and runs the due refresh once."""
    from hemafed.site.audit import AuditLog

    interval = 3.0
    data = tmp_path / "hub"
    text = catalogue_spec_text(diseases=DISEASES, fields=FIELDS, epsilon=1.0,
                               refresh_every_days=interval / 86400)
    heads: dict[str, Any] = {}

    def catalogue(url: str) -> dict[str, Any]:
        return dict(httpx.get(url + "/api/catalogue", headers=heads["alice"], timeout=10).json())

    with hub_process(data, site_dirs) as (url, proc):
        admin = ProcessAdmin(url)
        heads.update(onboard(admin, admin, site_dirs))  # type: ignore[arg-type]
        httpx.put(url + "/api/catalogue/plan", headers=heads["admin"], json={"spec_yaml": text})
        _approve(admin.http, heads, site_dirs[:2], text, budget=50.0)
        deadline = time.monotonic() + 40
        while True:  # catch a refresh in flight (claimed in the database)
            cat = catalogue(url)
            if cat["schedule"]["running"]:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
                break
            assert time.monotonic() < deadline, "never saw a refresh in flight"
            time.sleep(0.02)
        published = 0 if cat["network"] is None else cat["network"]["refresh"]
    engine = sa.create_engine(f"sqlite:///{data / 'hub.db'}")
    with engine.connect() as conn:
        claimed, n = conn.execute(sa.text(
            "select claimed_by, (select count(distinct refresh) from catalogue_releases) "
            "from catalogue_schedule")).one()
    engine.dispose()
    assert claimed is not None and n == published  # killed holding the claim; not committed
    with hub_process(data, site_dirs) as (url, _):
        deadline = time.monotonic() + 30
        while (catalogue(url)["network"] or {}).get("refresh", 0) < published + 1:
            assert time.monotonic() < deadline, "the due refresh did not run after restart"
            time.sleep(0.1)
        cat = catalogue(url)
        assert cat["network"]["refresh"] == published + 1 and cat["schedule"]["last_outcome"] \
            == "ok"
    hub_audit = [e for e in AuditLog(data / "hub-audit.jsonl").entries()
                 if e["query"] == "refresh_catalogue"]
    assert any(e["reason"] == "hub restarted during a refresh" for e in hub_audit)
    # the interrupted attempt may have been answered (and charged) at the sites; it published
    # nothing: the sites answered at least once per published refresh, at most once more
    answered = [_answered(d) for d in site_dirs[:2]]
    assert all(published + 1 <= a <= published + 2 for a in answered), answered
