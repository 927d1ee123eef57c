"""IPSS-R, IPSS-RA and IPSS against hand-computed cases and the published MDS cohort."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hemafed.scores.ipssr import ipss, ipssr, ipssra

CATS = {"Very-Low": "Very Low", "Low": "Low", "Int": "Intermediate", "High": "High",
        "Very-High": "Very High"}


def test_hand_computed_points() -> None:
    p = pd.DataFrame({"patient_id": ["a", "b"], "hb": [7.9, 10.0], "plt": [49, 100],
                      "anc": [0.79, 0.8], "bm_blast": [10.5, 2.0],
                      "cyto_ipssr": ["Poor", "Very Good"], "age": [80, 60]})
    r = ipssr(p)
    assert r.contributions.loc["a"].to_dict() == {"cytogenetics": 3.0, "bm_blast": 3.0,
                                                  "hb": 1.5, "plt": 1.0, "anc": 0.5}
    assert r.values.loc["a", "value"] == 9.0 and r.values.loc["a", "category"] == "Very High"
    assert r.values.loc["b", "value"] == 0.0 and r.values.loc["b", "category"] == "Very Low"
    ra = ipssra(p)
    # 9 + (80 - 70) * (0.05 - 0.045) = 9.05 ; 0 + (60 - 70) * 0.05 = -0.5
    assert ra.values["value"].tolist() == pytest.approx([9.05, -0.5])
    assert ra.contributions.sum(axis=1).tolist() == pytest.approx([9.05, -0.5])


def test_missing_and_unknown_inputs_are_per_patient_errors() -> None:
    p = pd.DataFrame({"patient_id": ["a", "b", "c"], "hb": [9, None, 9], "plt": [90, 90, 90],
                      "anc": [1, 1, 1], "bm_blast": [3, 3, 3],
                      "cyto_ipssr": ["Good", "Good", "Bad"]})
    r = ipssr(p)
    assert r.values.loc["a", "value"] == 3.5
    assert set(r.errors["patient_id"]) == {"b", "c"}
    assert r.reasons.loc["b", "reason"].startswith("not scored: hb")


def test_ipss_1997() -> None:
    p = pd.DataFrame({"patient_id": ["a", "b"], "hb": [9, 12], "plt": [90, 200],
                      "anc": [2, 2], "bm_blast": [12, 3], "cyto_ipss": ["Poor", "Good"]})
    r = ipss(p)
    # a: blasts 11-20 1.5 + poor 1 + two cytopenias 0.5 = 3.0 -> High
    assert r.values["value"].tolist() == [3.0, 0.0]
    assert r.values["category"].tolist() == ["High", "Low"]
    assert len(ipss(p.drop(columns="cyto_ipss")).errors) == 2


@pytest.mark.realdata
def test_reproduces_published_cohort(shared_data: Path) -> None:
    import mds_cohort

    table, clin = mds_cohort.load(shared_data / "mds-ipssm-cohort")
    p = pd.DataFrame({"patient_id": table["ID"], "hb": table["HB"], "plt": table["PLT"],
                      "anc": table["ANC"], "bm_blast": table["BM_BLAST"],
                      "cyto_ipssr": table["CYTO_IPSSR"], "age": table["AGE"]})
    pub = clin.set_index("ID")
    r = ipssr(p).values
    has = pub["IPSSR_SCORE"].notna()
    assert has.sum() == 2649
    assert r["value"].notna().equals(has)  # scored exactly when inputs are complete
    assert np.abs(r["value"] - pub["IPSSR_SCORE"])[has].max() == 0.0
    assert (r["category"] == pub["IPSSR"].map(CATS))[has].all()

    ra = ipssra(p).values
    has = pub["IPSSRA_SCORE"].notna()
    diff = (ra["value"] - pub["IPSSRA_SCORE"])[has]
    # The released AGE is in whole years; the published IPSS-RA used exact age. |d age| < 1
    # moves the score by at most |0.05 - 0.005 * IPSS-R| <= 0.05.
    assert diff.abs().max() < 0.05
    agree = (ra["category"] == pub["IPSSRA"].map(CATS))[has]
    near_cut = np.min(np.abs(pub["IPSSRA_SCORE"].to_numpy()[:, None]
                             - np.array([1.5, 3.0, 4.5, 6.0])[None, :]), axis=1) < 0.05
    assert (~agree.to_numpy() <= near_cut[has.to_numpy()]).all()
    assert agree.mean() > 0.99
