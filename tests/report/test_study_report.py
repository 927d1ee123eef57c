"""The study report's pieces: labels from the schema, ratio ticks, "not reached", pooled AJ."""

from __future__ import annotations

import numpy as np
import pandas as pd

from hemafed.analytics.survival_kinds import render_km
from hemafed.cohort.schema import label
from hemafed.report import Report
from hemafed.report.drawing import ratio_ticks
from hemafed.study.runner import frame_json


def test_labels_and_units_come_from_the_schema() -> None:
    assert label("hb") == "Haemoglobin (g/dL)"
    assert label("plt") == "Platelets (×10⁹/L)"
    assert label("hb", unit=False) == "Haemoglobin"
    assert label("gene:TP53") == "TP53 mutated"
    assert label("sex[F]") == "Sex: F"
    assert label("ipssm_category") == "IPSS-M risk category"
    assert label("not_a_field") == "not_a_field"


def test_ratio_ticks_are_powers_of_two_around_one() -> None:
    assert ratio_ticks(0.7, 1.6) == [0.5, 1.0, 2.0]
    assert ratio_ticks(0.3, 6.0) == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0]
    assert 1.0 in ratio_ticks(1.2, 1.5)


def test_median_not_reached_and_summary() -> None:
    med = pd.Series({"Very Low": np.nan, "High": 3.6, "Very High": 1.2},
                    name="median survival (years)")
    doc = {"kind": "km", "options": {"group": "ipssm_category"},
           "tables": {"median_survival": frame_json(med)},
           "stats": {"logrank_chi2": 800.0, "logrank_df": 2, "logrank_p": 1e-100}}
    s = Report("t").section("km")
    render_km(s, doc, {"sites": ["a", "b"]})
    html = "".join(s.blocks)
    assert "not reached" in html
    assert ("ranged from 1.2 years (Very High) to not reached (Very Low)" in html)
    assert "log-rank p &lt; 0.001" in html
    assert html.index('class="summary"') < html.index("<table")  # the summary comes first
