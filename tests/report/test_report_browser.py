"""The demo's HTML report opened in a real headless Chromium: every plot and table renders."""

from __future__ import annotations

from pathlib import Path

import pytest
from chromium_page import OVERFLOW_JS, report_page

from hemafed.demo import run_demo


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
    with report_page(report, 1200) as page:
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


@pytest.mark.browser
@pytest.mark.parametrize(("media", "width"), [("screen", 1280), ("print", 688)])
def test_no_table_overflows_its_card(report: Path, media: str, width: int) -> None:
    # 688 px: an A4 page (210 mm) less the report's 14 mm print margins, at 96 px per inch
    with report_page(report, width, media) as page:
        tables = page.evaluate(OVERFLOW_JS)
        assert len(tables) >= 10
        wide = [t for t in tables if t["over"] > 1]
        assert not wide, f"tables wider than their card ({media}, {width}px): {wide}"


def test_report_speaks_to_a_clinician(report: Path) -> None:
    html = report.read_text()
    for field_name in ("logrank_chi2", "newton_rounds", "dropped sites", "bm_blast", "cyto_ipssr",
                       "exp(coef)", "10^0"):
        assert field_name not in html, field_name
    for phrase in ("Haemoglobin (g/dL)", "Marrow blasts (%)", "HR", "95% CI", "OR",
                   "C-index (concordance)", 'class="summary"', "AML transformation",
                   "Patients excluded"):
        assert phrase in html, phrase
    assert html.count('class="summary"') >= 6  # one plain-language summary per analysis
