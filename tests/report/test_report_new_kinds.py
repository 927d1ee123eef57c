"""Report pages of the newer methods (Fine-Gray, start-stop Cox, IPTW, multi-state, linear
mixed models) from real fits through the study runner: each page has its plots (forest plots on
the 0.25-4 log axis, the IPTW love plot and weighted Kaplan-Meier, state occupation over time),
its tables with the schema's labels, a plain-language summary, and, in a real headless
Chromium, every plot renders and no table overflows its card (screen and A4 print)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from chromium_page import OVERFLOW_JS, report_page

from hemafed.analytics.mixed import LongitudinalCohort
from hemafed.cohort.demo import generate
from hemafed.cohort.partition import split_sites
from hemafed.cohort.validate import validate_cohort
from hemafed.federation.local import LocalSumFederation
from hemafed.study.report import build_report
from hemafed.study.runner import run_study
from hemafed.study.spec import StudySpec

CAUSES = [["amlt_time", "amlt_status"], ["os_time", "os_status"]]
NEW_KINDS = ("finegray", "cox_tv", "iptw", "multistate", "lmm")


def longitudinal(n: int, seed: int) -> LongitudinalCohort:
    rng = np.random.default_rng(seed)
    ids = [f"m{seed}-{i}" for i in range(n)]
    rows = []
    for pid in ids:
        t = np.round(np.cumsum(np.r_[0, rng.uniform(1, 3, rng.integers(3, 9) - 1)]) / 12, 4)
        y = 35 + rng.normal(0, 8) + (-6.0 + rng.normal(0, 3)) * t + rng.normal(0, 2.5, t.size)
        rows += [(pid, tt, float(np.clip(yy, 0, 150))) for tt, yy in zip(t, y, strict=True)]
    pat = pd.DataFrame({"patient_id": ids, "disease": "MM",
                        "age": np.round(rng.normal(66, 9, n).clip(35, 90), 1)})
    return LongitudinalCohort.attach(validate_cohort(pat),
                                     pd.DataFrame(rows, columns=["patient_id", "time", "mprotein"]))


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    spec = StudySpec.from_mapping({"study_id": "report-new", "analyses": [
        {"id": "fg", "kind": "finegray", "causes": CAUSES, "formula": "age + hb + sex",
         "cause_names": ["AML", "death"], "title": "Fine-Gray: AML transformation"},
        {"id": "tv", "kind": "cox_tv", "duration": "os_time", "event": "os_status",
         "formula": "age + hb", "switch": ["amlt_time", "amlt_status"],
         "title": "Cox with AML as a time-varying covariate"},
        {"id": "iptw", "kind": "iptw", "treatment": "hma", "formula": "age + hb + sex",
         "title": "Hypomethylating agents by propensity weighting"},
        {"id": "ms", "kind": "multistate", "title": "MDS, AML, death"}]})
    # the virtual MDS cohort (hypomethylating agents, AML transformation, death), 3 uneven sites
    fed = LocalSumFederation(split_sites(generate("MDS", 400, 7), 3, 7, size_skew=0.6))
    out = run_study(spec, fed)
    lmm = StudySpec.from_mapping({"study_id": "report-lmm", "analyses": [
        {"id": "lmm", "kind": "lmm", "outcome": "mprotein", "time": "time",
         "covariates": ["age"], "title": "M-protein trajectories",
         "bounds": {"mprotein": [0.0, 150.0], "time": [0.0, 10.0], "age": [0.0, 110.0]}}]})
    out["analyses"] += run_study(lmm, LocalSumFederation([longitudinal(30, 1),
                                                          longitudinal(25, 2)]))["analyses"]
    bad = [(a["id"], a.get("error")) for a in out["analyses"] if a["status"] != "ok"]
    assert not bad, bad
    return out


@pytest.fixture(scope="module")
def report(results: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("report") / "report.html"
    build_report(results).write(path)
    return path


def _section(html: str, title: str) -> str:
    start = html.index(f"<h2>{title}</h2>")
    end = html.find("<section", start)
    return html[start:end if end > 0 else len(html)]


def test_each_new_kind_has_its_page(report: Path) -> None:
    html = report.read_text()
    fg = _section(html, "Fine-Gray: AML transformation")
    assert "subdistribution hazard ratio" in fg and "SHR" in fg and "Haemoglobin (g/dL)" in fg
    assert fg.count('data-kind="plot"') >= 1 and 'class="summary"' in fg
    tv = _section(html, "Cox with AML as a time-varying covariate")
    assert "start-stop" in tv and tv.count('data-kind="plot"') >= 1 and "HR" in tv
    assert "AML transformation (time-varying)" in tv and "amlt_status" not in tv
    iptw = _section(html, "Hypomethylating agents by propensity weighting")
    assert iptw.count('data-kind="plot"') >= 2  # love plot and weighted Kaplan-Meier
    for phrase in ("Weighted SMD", "95% CI (robust)", "SE (naive)", "love plot",
                   "Effective sample size, treated"):
        assert phrase in iptw, phrase
    ms = _section(html, "MDS, AML, death")
    assert ms.count('data-kind="plot"') >= 1 and "state occupation" in ms and "%" in ms
    lmm = _section(html, "M-protein trajectories")
    assert " to " in lmm  # a negative slope's CI stays readable
    for phrase in ("fixed effects", "Time (per year)", "between patients: slope",
                   "within patient (residual)", "REML criterion", "Measurements"):
        assert phrase in lmm, phrase
    for raw in ("exp(coef)", "weighted_smd", "ess_treated", "reml_criterion", "n_obs",
                "std_error", "(Intercept)"):
        assert raw not in html, raw
    assert html.count('class="summary"') >= len(NEW_KINDS)


def test_summaries_state_the_estimates(results: dict[str, Any], report: Path) -> None:
    from hemafed.study.runner import frame_from_json

    html = report.read_text()
    docs = {d["kind"]: d for d in results["analyses"]}
    hr = frame_from_json(docs["iptw"]["tables"]["summary"])["exp(coef)"].astype(float).iloc[0]
    assert f"hazard ratio of treated vs untreated (Treated with a hypomethylating agent) was " \
        f"{hr:.2f}" in html
    slope = frame_from_json(docs["lmm"]["tables"]["fixed_effects"]).loc["time", "estimate"]
    assert f"changed by {float(slope):.3g} per year" in html
    at5 = frame_from_json(docs["multistate"]["tables"]["state_probabilities"]).iloc[-1]
    assert re.search(rf"At 5 years: MDS {100 * float(at5['MDS']):.0f}%", html)


@pytest.mark.browser
@pytest.mark.parametrize(("media", "width"), [("screen", 1280), ("print", 688)])
def test_new_pages_render_without_overflow(report: Path, media: str, width: int,
                                           tmp_path: Path) -> None:
    with report_page(report, width, media) as page:
        images = page.locator('figure[data-kind="plot"] img')
        assert images.count() >= 5  # two forests, love plot, weighted KM, states
        for i in range(images.count()):
            img = images.nth(i)
            img.scroll_into_view_if_needed()
            ok, w, h = img.evaluate("e => [e.complete, e.naturalWidth, e.naturalHeight]")
            assert ok and w > 100 and h > 100, f"plot {i} did not render"
            box = img.bounding_box()
            card = img.evaluate("e => e.closest('section').getBoundingClientRect().right")
            assert box["x"] + box["width"] <= card + 1, f"plot {i} wider than its card"
        tables = page.evaluate(OVERFLOW_JS)
        assert len(tables) >= 9
        wide = [t for t in tables if t["over"] > 1]
        assert not wide, f"tables wider than their card ({media}, {width}px): {wide}"
        page.screenshot(path=str(tmp_path / f"new-kinds-{media}.png"), full_page=True)


def test_finegray_page_draws_released_cif_curves(results: dict[str, Any]) -> None:
    from hemafed.report import Report
    from hemafed.study.report import RENDERERS

    doc = next(d for d in results["analyses"] if d["kind"] == "finegray")
    plain = Report("t").section("fg")
    RENDERERS["finegray"](plain, doc, results)
    curve = {"label": "AML", "x": [0.0, 1.0, 2.0], "y": [0.0, 0.1, 0.2],
             "lower": [0.0, 0.05, 0.12], "upper": [0.0, 0.15, 0.28]}
    with_cif = Report("t").section("fg")
    RENDERERS["finegray"](with_cif, {**doc, "curves": [curve]}, results)
    count = lambda s: "".join(s.blocks).count('data-kind="plot"')  # noqa: E731
    assert count(with_cif) == count(plain) + 1
    assert "cumulative incidence of each competing event" in "".join(with_cif.blocks)
