"""Myeloma staging and sickle-cell flags against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pandas as pd

from hemafed.scores.iss import iss, r2iss, riss
from hemafed.scores.scd import scd


def mm() -> pd.DataFrame:
    return pd.DataFrame({
        "patient_id": ["i", "ii", "iii", "miss"],
        "b2m": [2.0, 4.0, 6.0, 2.0], "albumin": [4.0, 3.0, 3.0, 4.0],
        "ldh": [100, 100, 400, 100], "ldh_uln": [250, 250, 250, 250],
        "del17_17p": [0, 1, 0, None], "t_4_14": [0, 0, 1, 0], "t_14_16": [0, 0, 0, 0],
        "gain1q": [0, 1, 1, 0]})


def test_iss_and_riss() -> None:
    assert iss(mm()).values["category"].tolist() == ["I", "II", "III", "I"]
    r = riss(mm()).values["category"]
    assert r.tolist()[:3] == ["I", "II", "III"]
    assert r["miss"] is None  # ISS I, FISH unknown: R-ISS I or II


def test_r2iss_points() -> None:
    r = r2iss(mm())
    # ii: ISS II 1 + del17p 1 + 1q 0.5 = 2.5 -> III ; iii: 1.5 + LDH 1 + t(4;14) 1 + 1q 0.5 = 4
    assert r.values["value"].tolist()[:3] == [0.0, 2.5, 4.0]
    assert r.values["category"].tolist()[:3] == ["I", "III", "IV"]
    assert r.contributions.loc["iii"].sum() == 4.0
    # miss: 0 points known, del17p unknown (0 or 1) -> I or II: undetermined
    assert r.values.loc["miss", "category"] is None


def test_scd_thresholds() -> None:
    p = pd.DataFrame({"patient_id": list("abcde"), "tcd_velocity": [169.9, 170, 199, 200, None],
                      "trv": [2.4, 2.5, 3.0, 2.0, 2.0], "nt_probnp": [100, 100, 100, 160, None]})
    v = scd(p).values
    assert v["category"].tolist() == ["normal", "conditional", "conditional", "abnormal", None]
    assert v["ph_risk"].tolist() == ["not elevated", "elevated", "high", "elevated", None]
    p.loc[0, "trv"] = 9.0
    r = scd(p)
    assert r.errors["patient_id"].tolist() == ["a"] and np.isnan(r.values.loc["a", "value"])
