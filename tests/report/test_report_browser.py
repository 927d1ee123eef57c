"""The demo's HTML report opened in a real headless Chromium: every plot and table renders."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hemafed.demo import run_demo

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "run"
    outcome = run_demo(out, n_patients=900, n_sites=5, seed=3, transport="inprocess")
    assert all(a["status"] == "ok" for a in outcome.results["analyses"]), [
        (a["id"], a.get("error")) for a in outcome.results["analyses"]]
    return outcome.report


def test_report_is_self_contained(report: Path) -> None:
    html = report.read_text()
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html
    assert html.count('data-kind="plot"') >= 3


@pytest.mark.browser
def test_every_plot_and_table_renders_in_chromium(report: Path, tmp_path: Path) -> None:
    if CHROMIUM is None:
        pytest.skip("no Chromium on this machine (Debian package 'chromium'); .ci/run installs it")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(report.as_uri())
            sections = page.locator("section[data-section]")
            assert sections.count() >= 5
            images = page.locator('figure[data-kind="plot"] img')
            assert images.count() >= 3
            for i in range(images.count()):
                img = images.nth(i)
                img.scroll_into_view_if_needed()
                size = img.evaluate("e => [e.complete, e.naturalWidth, e.naturalHeight]")
                assert size[0] and size[1] > 100 and size[2] > 100, f"plot {i} did not render"
            tables = page.locator('div[data-kind="table"] table')
            assert tables.count() >= 5
            for i in range(tables.count()):
                rows = tables.nth(i).locator("tbody tr")
                assert rows.count() >= 1, f"table {i} is empty"
                assert tables.nth(i).bounding_box()["height"] > 10
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            browser.close()
