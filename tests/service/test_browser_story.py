"""The whole story in headless Chromium against a real hub service and three site consoles.

An admin onboards three sites; a researcher submits the demo MDS study (a first draft shows its
validation errors inline); each site officer reviews it in their own console, two approve and one
refuses; the researcher amends the spec, every site approves the new hash; the researcher starts
the run, watches the progress advance (server-sent events), reads the Kaplan-Meier plot and the
Cox table, and the downloaded results equal `hemafed study run` on the same site directories
(run once for both databases: the two stories' site directories are copies of the same ones).
Screenshots of every page go to ``$HEMAFED_SCREENSHOTS`` (``docs/img`` to refresh the docs).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from browserkit import CHROMIUM, FLAGS, Server, _login
from hubkit import PASSWORD
from typer.testing import CliRunner

from hemafed.cli import app as cli_app
from hemafed.demo import demo_spec
from hemafed.service.app import create_app
from hemafed.service.approval import identity_public_key
from hemafed.service.catalogue import catalogue_spec_text
from hemafed.service.console import create_console_app, set_console_password
from hemafed.service.db import Database
from hemafed.service.hub import HubService
from hemafed.service.runs import LocalFederation
from hemafed.study.plan import StudyPlan

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def shots(tmp_path: Path) -> Iterator[Any]:
    out = Path(os.environ.get("HEMAFED_SCREENSHOTS", tmp_path / "shots"))
    out.mkdir(parents=True, exist_ok=True)

    def shot(page: Any, name: str, full_page: bool = True) -> None:
        page.screenshot(path=str(out / f"{name}.png"), full_page=full_page)
    yield shot


@pytest.fixture(scope="module")
def cli_runs() -> dict[str, dict[str, Any]]:
    """``hemafed study run``'s results by spec hash, kept across the two databases: each story
    runs on its own copy of the same site directories (``site_root``) and approves the same
    amended spec, so a second command-line run would repeat the first's numbers (and minutes)."""
    return {}


def _cli_results(spec_yaml: str, sha256: str, site_dirs: list[Path], out: Path,
                 cli_runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The results of ``hemafed study run`` of ``spec_yaml`` on ``site_dirs`` (once per hash)."""
    if sha256 not in cli_runs:
        out.mkdir(parents=True, exist_ok=True)
        spec_file = out / "spec.yaml"
        spec_file.write_text(spec_yaml)
        args = ["study", "run", str(spec_file), "--transport", "inprocess", "--out",
                str(out / "cli")]
        for d in site_dirs:
            args += ["--site", str(d)]
        res = CliRunner().invoke(cli_app, args)
        assert res.exit_code == 0, res.output
        cli_runs[sha256] = json.loads((out / "cli" / "results.json").read_text())
    return cli_runs[sha256]


def _decide(page: Any, console: str, study_title: str, decision: str, reason: str = "") -> None:
    page.goto(console + "/")
    page.click(f"#pending a:has-text('{study_title[:30]}')")
    if decision == "approved":
        page.click("#approve")
    else:
        page.fill("#reason", reason)
        page.click("#refuse")
    page.wait_for_load_state()


def _plan_rows(page: Any) -> dict[str, int]:
    """query -> cap, as the page's ``#plan-requests`` table shows them."""
    rows = page.locator("#plan-requests tr[data-query]")
    return {rows.nth(i).get_attribute("data-query"): int(rows.nth(i).get_attribute("data-cap"))
            for i in range(rows.count())}


# on both databases (the db_url fixture: SQLite and the PostgreSQL server)
def test_the_whole_story(db_url: str, site_dirs: list[Path], tmp_path: Path, shots: Any,
                         cli_runs: dict[str, dict[str, Any]]) -> None:
    if CHROMIUM is None:
        pytest.skip("no Chromium on this machine (Debian package 'chromium'); .ci/run installs it")
    sync_api = pytest.importorskip("playwright.sync_api")
    service = HubService(Database(db_url), tmp_path / "hub",
                         federation=LocalFederation.from_dirs(site_dirs, "inprocess"))
    service.ensure_admin("admin", PASSWORD)
    spec = demo_spec("MDS")
    title = spec.title
    with Server(create_app(service)) as hub, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            ctx = {name: browser.new_context(viewport={"width": 1280, "height": 900})
                   for name in ("admin", "alice", *[d.name for d in site_dirs])}
            # 1. the admin onboards three sites, each with its officer, and a researcher
            admin = ctx["admin"].new_page()
            _login(admin, hub.url, "admin")
            for d in site_dirs:
                admin.goto(f"{hub.url}/admin")
                admin.fill("#onboard input[name=site_id]", d.name)
                admin.fill("#onboard input[name=name]", f"Hospital {d.name[-1].upper()}")
                admin.fill("#onboard input[name=identity_key]", identity_public_key(d))
                admin.fill("#onboard input[name=officer]", f"officer-{d.name}")
                admin.fill("#onboard input[name=officer_password]", PASSWORD)
                admin.click("#onboard button")
                admin.wait_for_load_state()
            admin.fill("#adduser input[name=username]", "alice")
            admin.fill("#adduser input[name=password]", PASSWORD)
            admin.click("#adduser button")
            admin.wait_for_load_state()
            assert admin.locator("#sites tr").count() == 4
            shots(admin, "hub-admin-sites")

            # each site's console: its own login; it calls the hub with its officer's token
            consoles = []
            for d in site_dirs:
                token = httpx.post(f"{hub.url}/api/login", json={
                    "username": f"officer-{d.name}", "password": PASSWORD}).json()["token"]
                set_console_password(d, "dpo", PASSWORD)
                client = httpx.Client(base_url=hub.url, timeout=60,
                                      headers={"Authorization": f"Bearer {token}"})
                consoles.append(Server(create_console_app(d, client)).__enter__())
            console_url = {d.name: c.url for d, c in zip(site_dirs, consoles, strict=True)}

            # 2. the researcher submits the demo MDS study; a broken draft shows its problems
            alice = ctx["alice"].new_page()
            _login(alice, hub.url, "alice")
            # feasibility first: the admin sets the network's catalogue plan; two officers
            # approve it once in their consoles (site-c does not); the admin refreshes it
            # through the secure path; the researcher reads it before writing a study
            admin_token = httpx.post(f"{hub.url}/api/login", json={
                "username": "admin", "password": PASSWORD}).json()["token"]
            r = httpx.put(f"{hub.url}/api/catalogue/plan",
                          headers={"Authorization": f"Bearer {admin_token}"},
                          json={"spec_yaml": catalogue_spec_text()})
            assert r.status_code == 200, r.text
            for d in site_dirs[:2]:
                page = ctx[d.name].new_page()
                _login(page, console_url[d.name], "dpo")
                page.goto(console_url[d.name] + "/catalogue")
                page.fill("#approve input[name=budget]", "2")
                page.click("#approve button")
                page.wait_for_selector("#approved")
                if d.name == "site-a":
                    shots(page, "console-catalogue")
                page.close()
            admin.goto(f"{hub.url}/catalogue")
            admin.click("#refresh button")
            admin.wait_for_load_state()
            alice.goto(f"{hub.url}/catalogue")
            table = alice.locator("#catalogue").inner_text()
            assert alice.locator("#catalogue tr").count() == 5  # header, 3 sites, network
            assert "MDS: about" in table and "DP, epsilon 2 " in table  # the default
            site_c = alice.locator("#catalogue tr", has_text="site-c").inner_text()
            assert "not published" in site_c and "about" not in site_c
            assert "about" in alice.locator("#network").inner_text()
            shots(alice, "portal-catalogue")
            alice.goto(f"{hub.url}/studies/new")
            broken = spec.to_yaml().replace("kind: km", "kind: kaplan").replace(
                "duration: os_time\n  event: os_status\n  formula", "duration: os_time\n  formula")
            alice.fill("#spec_yaml", broken)
            alice.click("#spec-form button")
            problems = alice.locator("#problems").inner_text()
            assert "unknown kind 'kaplan'" in problems and "missing 'event'" in problems
            shots(alice, "portal-new-study-errors")
            alice.fill("#spec_yaml", spec.to_yaml())
            alice.click("#spec-form button")
            alice.wait_for_url("**/studies/*")
            assert alice.locator("#sha256").inner_text() == spec.sha256
            assert "epsilon 1" in alice.locator("#epsilon").inner_text()
            assert alice.locator("#approvals .pending").count() == 3
            plan = StudyPlan.from_spec(spec)  # what every site will enforce
            want = {q: plan.cap(q) for q in plan.queries}
            assert len(want) > 5 and _plan_rows(alice) == want
            shots(alice, "portal-study-submitted")

            # 3. the officers decide in their consoles: site-c refuses first
            officers = {}
            for d in site_dirs:
                page = ctx[d.name].new_page()
                _login(page, console_url[d.name], "dpo")
                officers[d.name] = page
            a = officers["site-a"]
            a.goto(console_url["site-a"] + "/")
            assert a.locator("#pending tr").count() == 2
            shots(a, "console-pending")
            a.click(f"#pending a:has-text('{title[:30]}')")
            assert "epsilon 1" in a.locator("#epsilon").inner_text()
            assert a.locator("#analyses tr").count() == len(spec.analyses) + 1
            assert _plan_rows(a) == want
            assert a.locator("#plan-genes").inner_text() == ", ".join(sorted(plan.genes))
            shots(a, "console-study")
            a.click("#approve")
            a.wait_for_load_state()
            _decide(officers["site-b"], console_url["site-b"], title, "approved")
            _decide(officers["site-c"], console_url["site-c"], title, "refused",
                    "state the study's purpose in the description")
            alice.reload()
            assert alice.locator("#approvals .ok").count() == 2
            assert "purpose" in alice.locator("#approvals tr[data-site=site-c]").inner_text()
            assert alice.locator("#start-run button").is_disabled()
            shots(alice, "portal-study-refused")

            # 4. the researcher amends; the new hash needs every site again
            amended = spec.to_yaml() + "description: prognosis of MDS by IPSS-M across sites\n"
            alice.fill("#amend-form textarea", amended)
            alice.fill("#amend-form input[name=note]", "added the purpose (site-c)")
            alice.click("#amend-form button")
            alice.wait_for_load_state()
            assert alice.locator("#approvals .pending").count() == 3
            new_sha = alice.locator("#sha256").inner_text()
            assert new_sha != spec.sha256
            for d in site_dirs:
                _decide(officers[d.name], console_url[d.name], title, "approved")
            alice.reload()
            assert alice.locator("#approvals .ok").count() == 3

            # 5. the run: progress advances live, then the report's plots and tables
            alice.click("#start-run button")
            alice.wait_for_url("**/runs/*")
            run_id = int(alice.url.rsplit("/", 1)[-1])
            seen: list[str] = []
            deadline = time.monotonic() + 900  # generous: CI machines are shared
            shot_taken = False
            while alice.locator("#state").inner_text() != "succeeded":
                assert alice.locator("#state").inner_text() not in ("failed", "interrupted"), \
                    alice.locator("#error").inner_text()
                text = alice.locator("#progress").inner_text()
                if "round" in text and (not seen or seen[-1] != text):
                    seen.append(text)
                    if not shot_taken and "analysis 2" in text:
                        shots(alice, "portal-run-progress")
                        shot_taken = True
                assert time.monotonic() < deadline, "the run did not finish"
                time.sleep(0.1)
            rounds = [int(t.split("round ")[1].split(" ")[0]) for t in seen]
            assert len(set(rounds)) >= 3 and rounds == sorted(rounds), seen
            assert "3 sites answering" in seen[-1]
            frame = alice.frame_locator("#report")
            frame.locator("section[data-section]").first.wait_for()
            km = frame.locator("section[data-section]", has_text="Kaplan-Meier").first
            img = km.locator('figure[data-kind="plot"] img').first
            img.scroll_into_view_if_needed()
            size = img.evaluate("e => [e.complete, e.naturalWidth, e.naturalHeight]")
            assert size[0] and size[1] > 100 and size[2] > 100
            cox = frame.locator("section[data-section]", has_text="Cox model").first
            cox_text = cox.locator('div[data-kind="table"] table').first.inner_text()
            assert "HR" in cox_text and "Age" in cox_text
            shots(alice, "portal-run-results")
            alice.goto(f"{hub.url}/models")
            assert alice.locator("#models tr").count() >= 3
            shots(alice, "portal-models")
            doc = alice.request.get(f"{hub.url}/api/runs/{run_id}/results.json").json()

            # the console pages after the run
            for path, name in (("/audit", "console-audit"), ("/budget", "console-budget"),
                               ("/quality", "console-quality"), ("/runs", "console-runs")):
                a.goto(console_url["site-a"] + path)
                shots(a, name, full_page=path != "/audit")
            a.goto(console_url["site-a"] + "/audit")
            assert "hash chain verified" in a.locator("#verify").inner_text()
            a.goto(console_url["site-a"] + "/runs")
            assert "succeeded" in a.locator("#hub-runs").inner_text()
            for c in consoles:
                c.__exit__()
        finally:
            browser.close()
    service.dispose()

    # 6. the same spec through the command line, on the same site directories (or, for the
    # second database, on the first story's copy of them)
    cli = _cli_results(amended, new_sha, site_dirs, tmp_path, cli_runs)
    assert doc["spec_sha256"] == cli["spec_sha256"] == new_sha
    for hub_a, cli_a in zip(doc["analyses"], cli["analyses"], strict=True):
        assert hub_a["status"] == cli_a["status"] == "ok", (hub_a["id"], hub_a.get("error"))
        if hub_a["kind"] == "synth":  # differentially private: fresh noise in every run
            continue
        for name, table in cli_a["tables"].items():
            got = np.array(hub_a["tables"][name]["data"], dtype=object)
            want = np.array(table["data"], dtype=object)
            assert got.shape == want.shape, (hub_a["id"], name)
            for g, w in zip(got.ravel(), want.ravel(), strict=True):
                if isinstance(w, float):
                    assert g == pytest.approx(w, rel=1e-9, abs=1e-12), (hub_a["id"], name)
                else:
                    assert g == w, (hub_a["id"], name)
        for c_hub, c_cli in zip(hub_a.get("curves", []), cli_a.get("curves", []), strict=True):
            np.testing.assert_allclose(np.array(c_hub["y"], dtype=float),
                                       np.array(c_cli["y"], dtype=float), rtol=1e-12)
