"""The admin's catalogue plan form (/admin/catalogue), in headless Chromium and through HTTP.

The admin sets the plan through the form; a bad value is shown as a clear message naming the
field (status 400, the values kept, no traceback); the noise s.d. next to the epsilon field
follows what is typed and equals the noise the sites' release reports; the stored plan equals
what ``GET /api/catalogue/plan`` returns; CSRF and the admin role are enforced.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pytest
from hubkit import PASSWORD, app_client, bearer, make_hub, onboard

from hemafed.privacy.accounting import composed_epsilon, noise_multiplier_for
from hemafed.service.catalogue import (
    DELTA,
    EPSILON,
    REFRESH_EVERY_DAYS,
    TOTAL_BUDGET,
    approve_catalogue,
    catalogue_spec_text,
    cost_text,
    noise_std,
    parse_plan,
)

GOOD = {"diseases": "MDS, AML", "fields": "age, hb, plt", "epsilon": "1", "delta": "1e-6",
        "round_to": "5", "min_cell": "20", "refresh_every_days": "30"}


def _check_stored(plan_yaml: str) -> None:
    plan = parse_plan(plan_yaml)
    assert plan.diseases == ("MDS", "AML") and plan.fields == ("age", "hb", "plt")
    assert (plan.epsilon, plan.delta, plan.round_to, plan.min_cell) == (1.0, 1e-6, 5, 20)
    assert plan.refresh_every_days == 30.0


def test_noise_sd_is_the_release_noise(site_dirs: list[Path], tmp_path: Path) -> None:
    """The s.d. the form shows is the one the sites' noise shares add up to in a release (the
    release reports the noise the sites calibrated), and sqrt(2 + fields) times the multiplier."""
    service = make_hub(f"sqlite:///{tmp_path / 'hub.db'}", tmp_path / "hub", site_dirs)
    client = app_client(service)
    heads = onboard(client, service, site_dirs)
    r = client.post("/admin/catalogue", headers=heads["admin"], data=GOOD)
    assert r.status_code in (200, 303), r.text
    plan = parse_plan(client.get("/api/catalogue/plan", headers=heads["admin"]).json()
                      ["spec_yaml"])
    for d in site_dirs[:2]:  # a secure sum needs two sites at least
        signed = approve_catalogue(d, plan.spec, budget=3.0, officer="dpo")
        assert client.post("/api/site/catalogue/approval", headers=heads[d.name], json={
            "payload": signed.payload, "signature": signed.signature}).status_code == 200
    r = client.post("/api/catalogue/refresh", headers=heads["admin"])
    assert r.status_code == 200, r.text
    rel = client.get("/api/catalogue", headers=heads["alice"]).json()["sites"][0]["release"]
    assert rel["noise_std"]["patients"] == pytest.approx(plan.noise_std, rel=1e-6)
    assert plan.noise_std == pytest.approx(math.sqrt(5) * noise_multiplier_for(1.0, 1e-6))
    # the default plan's figure the docs state: 12.8 at epsilon 1, 6.7 at epsilon 2 (6 fields)
    assert round(noise_std(1.0, 1e-6, 6), 1) == 12.8 and round(noise_std(2.0, 1e-6, 6), 1) == 6.7
    # ... and the default's year: two refreshes fit the default catalogue budget, three do not
    m = noise_multiplier_for(EPSILON, DELTA)
    assert composed_epsilon([(m, 2)], DELTA) <= TOTAL_BUDGET < composed_epsilon([(m, 3)], DELTA)
    assert abs(365 / REFRESH_EVERY_DAYS - 2) < 0.01
    assert cost_text(parse_plan(catalogue_spec_text())) == (
        "each refresh costs epsilon 2 (noise s.d. 6.7 per count); 2 scheduled refresh(es) a "
        "year compose to epsilon 2.92 at delta 1e-06")
    text = client.get("/api/catalogue/noise", headers=heads["admin"],
                      params={"epsilon": "1", "delta": "1e-6", "fields": "age, hb, plt"}).json()
    assert f"noise s.d. {plan.noise_std:.1f} per count" in text["text"]
    service.dispose()


def test_form_needs_the_admin_and_the_csrf_token(db_url: str, site_dirs: list[Path],
                                                 tmp_path: Path) -> None:
    service = make_hub(db_url, tmp_path / "hub", site_dirs)
    client = app_client(service)
    heads = onboard(client, service, site_dirs)
    assert client.get("/admin/catalogue", headers=heads["alice"]).status_code == 403
    assert client.post("/admin/catalogue", headers=heads["site-a"], data=GOOD).status_code == 403
    # a browser session must send the form's CSRF token
    client.cookies.clear()
    r = client.post("/login", data={"username": "admin", "password": PASSWORD},
                    follow_redirects=False)
    assert r.status_code == 303
    assert client.post("/admin/catalogue", data=GOOD).status_code == 403
    assert service.catalogue_plan() is None
    bad = client.post("/admin/catalogue", data={**GOOD, "csrf": _csrf(client),
                                                "delta": "0.5", "round_to": "ten"})
    assert bad.status_code == 400
    assert "delta must be above 0 and below 0.001; got 0.5" in bad.text
    assert "round_to: the rounding base must be a whole number" in bad.text
    assert "Traceback" not in bad.text and service.catalogue_plan() is None
    ok = client.post("/admin/catalogue", data={**GOOD, "csrf": _csrf(client)},
                     follow_redirects=False)
    assert ok.status_code == 303
    _check_stored(client.get("/api/catalogue/plan", headers=bearer(client, "admin")).json()
                  ["spec_yaml"])
    service.dispose()


def _csrf(client: Any) -> str:
    page = client.get("/admin/catalogue").text
    return page.split('name="csrf" value="', 1)[1].split('"', 1)[0]


@pytest.mark.browser
@pytest.mark.slow
def test_admin_sets_the_plan_in_chromium(site_dirs: list[Path], tmp_path: Path) -> None:
    from browserkit import CHROMIUM, FLAGS, Server, _login

    from hemafed.service.app import create_app

    if CHROMIUM is None:
        pytest.skip("no Chromium on this machine (Debian package 'chromium')")
    sync_api = pytest.importorskip("playwright.sync_api")
    service = make_hub(f"sqlite:///{tmp_path / 'hub.db'}", tmp_path / "hub", site_dirs)
    service.ensure_admin("admin", PASSWORD)
    with Server(create_app(service)) as hub, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page()
            _login(page, hub.url, "admin")
            page.goto(f"{hub.url}/admin")
            page.click("#catalogue-plan-link")
            page.wait_for_url("**/admin/catalogue")
            form = page.locator("#plan-form")
            # the defaults, with the noise of the default epsilon next to it
            assert form.locator("input[name=epsilon]").input_value() == "2"
            assert form.locator("input[name=refresh_every_days]").input_value() == "182"
            assert "noise s.d. 6.7 per count" in page.locator("#noise-sd").inner_text()
            # a bad value: a clear message naming the field, the typed values kept
            form.locator("input[name=epsilon]").fill("lots")
            form.locator("input[name=min_cell]").fill("-3")
            form.locator("button").click()
            page.wait_for_selector("#problems")
            problems = page.locator("#problems").inner_text()
            assert "epsilon: epsilon per refresh must be a number from 0 (no noise) to 100; " \
                   "'lots' is not a number" in problems
            assert "min_cell: the minimum cell must be a whole number from 0 to 10000; got -3" \
                   in problems
            assert "Traceback" not in page.content()
            assert form.locator("input[name=epsilon]").input_value() == "lots"
            assert service.catalogue_plan() is None
            # the s.d. follows the typed epsilon and fields (the hub calibrates it)
            for name, value in GOOD.items():
                form.locator(f"input[name={name}]").fill(value)
            want = f"noise s.d. {noise_std(1.0, 1e-6, 3):.1f} per count"
            page.wait_for_function(
                "w => document.getElementById('noise-sd').textContent.includes(w)", arg=want)
            form.locator("button").click()
            page.wait_for_load_state()
            assert page.locator("#problems").count() == 0
            api = page.request.get(f"{hub.url}/api/catalogue/plan").json()
            assert page.locator("#plan-sha").inner_text() == api["spec_sha256"]
            _check_stored(api["spec_yaml"])
            row = service.catalogue_plan()
            assert row is not None and row.spec_yaml == api["spec_yaml"]
            assert "Next refresh due" in page.locator("#schedule").inner_text()
            assert "12 scheduled refresh(es) a year" in page.locator("#cost").inner_text()
            assert form.locator("input[name=fields]").input_value() == "age, hb, plt"
            shots = os.environ.get("HEMAFED_SCREENSHOTS")
            if shots:  # docs/img to refresh the docs
                page.screenshot(path=str(Path(shots) / "hub-admin-catalogue.png"),
                                full_page=True)
        finally:
            browser.close()
    service.dispose()


def test_form_fields_are_checked_one_by_one() -> None:
    """Every bad field is named in one message; good values give the plan the API takes."""
    from hemafed.errors import InvalidInput
    from hemafed.service.catalogue import plan_text_from_form

    with pytest.raises(InvalidInput) as exc:
        plan_text_from_form({"diseases": "MDS, MDS", "fields": "age, h b", "epsilon": "-1",
                             "delta": "", "round_to": "0", "min_cell": "1.5",
                             "refresh_every_days": "5000"})
    lines = str(exc.value).splitlines()[1:]
    assert [ln.split(":")[0].strip(" -") for ln in lines] == [
        "diseases", "fields", "epsilon", "delta", "round_to", "min_cell", "refresh_every_days"]
    assert "the field is empty" in lines[3] and "'1.5' is not a number" in lines[5]
    text = plan_text_from_form({**GOOD, "diseases": "MDS/MPN, AML", "refresh_every_days": "0"})
    plan = parse_plan(text)
    assert plan.diseases == ("MDS/MPN", "AML") and plan.interval is None
    assert "refresh_every_days" not in text  # by hand only: no schedule key in the plan
