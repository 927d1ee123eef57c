"""The site console against a hub: its own login, CSRF, the hash check at the site, signed
decisions that update the site's policy, and the audit head (with tampering) reported to the hub."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from fastapi.testclient import TestClient
from hubkit import PASSWORD, SMALL_SPEC, app_client, make_hub, onboard

from hemafed.service.console import create_console_app, set_console_password
from hemafed.site.store import SitePaths, audit_log, load_cohort, load_policy
from hemafed.study.spec import StudySpec


def _csrf(html: str) -> str:
    return html.split('name="csrf" value="')[1].split('"')[0]


def test_console_decides_and_reports(db_url: str, site_dirs: list[Path], tmp_path: Path) -> None:
    service = make_hub(db_url, tmp_path / "hub", site_dirs)
    hub = app_client(service)
    heads = onboard(hub, service, site_dirs)
    study = hub.post("/api/studies", headers=heads["alice"], json={"spec_yaml": SMALL_SPEC}).json()
    site = site_dirs[0]
    set_console_password(site, "dpo", PASSWORD)
    officer_hub = app_client(service)
    officer_hub.headers.update(heads["site-a"])
    console = TestClient(create_console_app(site, officer_hub))

    assert console.get("/", follow_redirects=False).headers["location"] == "/login"
    for _ in range(5):
        assert console.post("/login", data={"username": "dpo", "password": "nope"}).status_code == 401
    assert console.post("/login", data={"username": "dpo", "password": PASSWORD}).status_code == 429
    console = TestClient(create_console_app(site, officer_hub))  # a restarted console
    r = console.post("/login", data={"username": "dpo", "password": PASSWORD})
    assert r.status_code == 200 and "Survival by IPSS-M category" in r.text
    # the site's audit head reached the hub, verified
    head = hub.get("/api/sites/site-a", headers=heads["admin"]).json()["audit_head"]
    entries = audit_log(site).entries()
    assert head == {"seq": len(entries), "hash": entries[-1]["hash"], "verified": True}

    page = console.get(f"/studies/{study['id']}")
    assert "epsilon 0" in page.text
    refused = console.post(f"/studies/{study['id']}/decide",
                           data={"decision": "approved"})  # no CSRF token
    assert refused.status_code == 403
    assert load_policy(site).study("small-mds") is None
    r = console.post(f"/studies/{study['id']}/decide",
                     data={"decision": "approved", "csrf": _csrf(page.text)})
    assert r.status_code == 200  # back on the pending list, now empty
    assert 'id="pending-none"' in r.text
    approved = load_policy(site).study("small-mds")
    spec = StudySpec.from_mapping(__import__("yaml").safe_load(SMALL_SPEC))
    assert approved is not None and approved.spec_sha256 == spec.sha256
    assert approved.expires > dt.date.today()
    assert hub.get(f"/api/studies/{study['id']}", headers=heads["alice"]).json()[
        "approvals"]["site-a"]["decision"] == "approved"

    # a hub that serves a spec whose hash is not the one it claims: the console refuses it
    from sqlalchemy import update

    from hemafed.service.models import Study

    with service.db.session() as s:
        s.execute(update(Study).values(spec_yaml=SMALL_SPEC.replace("age + hb + plt", "age")))
        s.commit()
    r = console.get(f"/studies/{study['id']}")
    assert r.status_code == 400 and "do not approve" in r.text

    # an edited audit line: the console says so and the hub learns the head is not verified
    log = SitePaths(site).audit
    lines = log.read_text().splitlines()
    lines[0] = lines[0].replace('"decision":"allowed"', '"decision":"refused"', 1) \
        if '"decision":"allowed"' in lines[0] else lines[0].replace('"seq":1', '"seq":7', 1)
    log.write_text("\n".join(lines) + "\n")
    r = console.get("/audit")
    assert "TAMPERED" in r.text
    assert hub.get("/api/sites/site-a", headers=heads["admin"]).json()["audit_head"][
        "verified"] is False
    for page_path in ("/budget", "/quality", "/runs"):
        assert console.get(page_path).status_code == 200

    # the catalogue: the officer approves the network's standing plan once, with its budget
    from hemafed.service.catalogue import CATALOGUE_ID, catalogue_spec_text

    assert "no catalogue plan" in console.get("/catalogue").text
    plan_text = catalogue_spec_text(epsilon=0.25)
    assert hub.put("/api/catalogue/plan", headers=heads["admin"],
                   json={"spec_yaml": plan_text}).status_code == 200
    page = console.get("/catalogue")
    assert "epsilon 0.25" in page.text and 'id="approve"' in page.text
    # the officer sees what the schedule costs a year before choosing the budget
    assert "Privacy cost: each refresh costs epsilon 0.25" in page.text
    assert "2 scheduled refresh(es) a year compose to epsilon" in page.text
    assert 'id="entry">not published' in page.text
    assert console.post("/catalogue/approve", data={"budget": "2"}).status_code == 403
    assert load_policy(site).study(CATALOGUE_ID) is None
    r = console.post("/catalogue/approve", data={"budget": "2", "csrf": _csrf(page.text)})
    assert r.status_code == 200 and 'id="approved"' in r.text, r.text
    approved = load_policy(site).study(CATALOGUE_ID)
    assert approved is not None and approved.budget is not None
    assert approved.budget.epsilon == 2.0 and approved.require_dp
    assert approved.allowed_queries == ("catalogue_counts@1",)
    assert "catalogue_counts@1" in load_policy(site).allowed_queries
    assert service.catalogue_sites() == ["site-a"]
    assert audit_log(site).entries()[-1]["query"] == "console.approve_catalogue"
    # the public description: names only; a count is refused
    r = console.post("/catalogue/describe", data={"csrf": _csrf(page.text), "diseases": "MDS",
                                                  "fields": "age, hb, os_time"})
    assert r.status_code == 200
    (mine,) = [x for x in hub.get("/api/catalogue", headers=heads["alice"]).json()["sites"]
               if x["site_id"] == "site-a"]
    assert mine["description"] == {"diseases": ["MDS"], "fields": ["age", "hb", "os_time"]}
    assert mine["release"] is None  # approved but not refreshed: nothing is published
    n = len(load_cohort(site).patients)
    bad = officer_hub.post("/api/site/description",
                           json={"diseases": ["MDS"], "fields": ["age"], "patients": n})
    assert bad.status_code == 400
    service.dispose()


def _plan_rows(html: str) -> dict[str, int]:
    """query -> cap, read from the rendered ``#plan-requests`` table."""
    import re

    table = html.split('id="plan-requests"')[1].split("</table>")[0]
    return {q: int(c) for q, c in re.findall(r'data-query="([^"]+)" data-cap="(\d+)"', table)}


def test_console_and_portal_list_the_plans_exact_requests(db_url: str, site_dirs: list[Path],
                                                          tmp_path: Path) -> None:
    """Both pages show the queries and caps the site enforces, derived independently here."""
    from hemafed.study.plan import StudyPlan

    service = make_hub(db_url, tmp_path / "hub", site_dirs)
    hub = app_client(service)
    heads = onboard(hub, service, site_dirs)
    study = hub.post("/api/studies", headers=heads["alice"], json={"spec_yaml": SMALL_SPEC}).json()
    plan = StudyPlan.from_spec(StudySpec.from_mapping(__import__("yaml").safe_load(SMALL_SPEC)))
    want = {q: plan.cap(q) for q in plan.queries}
    assert len(want) > 3 and all(c > 0 for c in want.values())

    site = site_dirs[0]
    set_console_password(site, "dpo", PASSWORD)
    officer_hub = app_client(service)
    officer_hub.headers.update(heads["site-a"])
    console = TestClient(create_console_app(site, officer_hub))
    assert console.post("/login", data={"username": "dpo", "password": PASSWORD}).status_code == 200
    page = console.get(f"/studies/{study['id']}")
    assert page.status_code == 200 and _plan_rows(page.text) == want
    for col, (lo, hi) in plan.bounds.items():
        assert f'data-column="{col}"><td><code>{col}</code></td><td>[{lo}, {hi}]' in page.text

    portal = app_client(service)
    assert portal.post("/login", data={"username": "alice", "password": PASSWORD},
                       follow_redirects=False).status_code == 303
    page = portal.get(f"/studies/{study['id']}")
    assert page.status_code == 200 and _plan_rows(page.text) == want
    doc = hub.get(f"/api/studies/{study['id']}", headers=heads["alice"]).json()
    assert {r["query"]: r["cap"] for r in doc["plan"]["requests"]} == want
    assert {r["query"] for r in doc["plan"]["requests"] if r["dp_only"]} == \
        set(plan.dp_required) & set(plan.queries)
    service.dispose()
