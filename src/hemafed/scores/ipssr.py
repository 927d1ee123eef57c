"""IPSS-R and the age-adjusted IPSS-RA (Greenberg et al., Blood 2012), and the original IPSS
(Greenberg et al., Blood 1997), vectorised, with the points of each component.

IPSS-R points: marrow blasts <=2% 0, >2-<5% 1, 5-10% 2, >10% 3; cytogenetics Very Good 0, Good 1,
Intermediate 2, Poor 3, Very Poor 4; Hb >=10 0, 8-<10 1, <8 1.5 g/dL; platelets >=100 0, 50-<100
0.5, <50 1 x10^9/L; ANC >=0.8 0, <0.8 0.5 x10^9/L. Categories: <=1.5 Very Low, >1.5-3 Low, >3-4.5
Intermediate, >4.5-6 High, >6 Very High. IPSS-RA adds ``(age - 70) * (0.05 - 0.005 * IPSS-R)``,
rounded to 4 decimals, with the same cut points (as in the authors' calculator).

>>> import pandas as pd
>>> p = pd.DataFrame({"patient_id": ["a"], "hb": [7.6], "plt": [119], "anc": [0.2],
...                   "bm_blast": [14], "cyto_ipssr": ["Good"], "age": [64]})
>>> r = ipssr(p)
>>> float(r.values.loc["a", "value"]), r.values.loc["a", "category"]
(6.0, 'High')
>>> float(ipssra(p).values.loc["a", "value"])
5.88
"""

from __future__ import annotations

from typing import Final

import numpy as np
import pandas as pd

from hemafed.scores.ipssm import cyto_ordinal
from hemafed.scores.result import ErrorLog, ScoreResult, none_where, numeric, patient_ids

CATEGORIES: Final[tuple[str, ...]] = ("Very Low", "Low", "Intermediate", "High", "Very High")
CUTPOINTS: Final[tuple[float, ...]] = (1.5, 3.0, 4.5, 6.0)
IPSS_CATEGORIES: Final[tuple[str, ...]] = ("Low", "Intermediate-1", "Intermediate-2", "High")
IPSS_KARYOTYPE: Final[dict[str, float]] = {"Good": 0.0, "Intermediate": 0.5, "Poor": 1.0}


def _points(df: pd.DataFrame, log: ErrorLog) -> dict[str, np.ndarray]:
    hb = numeric(df, "hb", log, 2.0, 25.0, required=True)
    plt = numeric(df, "plt", log, 0.0, 3000.0, required=True)
    anc = numeric(df, "anc", log, 0.0, 200.0, required=True)
    blast = numeric(df, "bm_blast", log, 0.0, 100.0, required=True)
    if "cyto_ipssr" in df.columns:
        cyto = cyto_ordinal(df["cyto_ipssr"], log, "cyto_ipssr")
        log.add(df["cyto_ipssr"].isna().to_numpy(), "cyto_ipssr", "is missing")
    else:
        cyto = np.full(len(df), np.nan)
        log.add(np.ones(len(df), dtype=bool), "cyto_ipssr", "is missing (column absent)")
    # Blast breaks as in the authors' calculator: (-inf, 2], (2, 4.99], (4.99, 10], (10, inf).
    blast_pts = np.select([blast <= 2, blast <= 4.99, blast <= 10], [0.0, 1.0, 2.0], 3.0)
    hb_pts = np.select([hb < 8, hb < 10], [1.5, 1.0], 0.0)
    plt_pts = np.select([plt < 50, plt < 100], [1.0, 0.5], 0.0)
    anc_pts = np.where(anc < 0.8, 0.5, 0.0)
    return {"cytogenetics": cyto, "bm_blast": blast_pts, "hb": hb_pts, "plt": plt_pts,
            "anc": anc_pts}


def _categorise(score: np.ndarray, cuts: tuple[float, ...], cats: tuple[str, ...]) -> np.ndarray:
    idx = np.searchsorted(np.array(cuts), score, side="left")
    out = np.array(cats, dtype=object)[np.minimum(idx, len(cats) - 1)]
    return none_where(np.isnan(score), out)


def _result(name: str, label: str, ids: pd.Index, score: np.ndarray, category: np.ndarray,
            contrib: pd.DataFrame, log: ErrorLog, extra: dict[str, np.ndarray]) -> ScoreResult:
    score = np.where(log.bad, np.nan, score)
    category = none_where(log.bad, category)
    contrib = contrib.where(np.repeat(~log.bad[:, None], contrib.shape[1], axis=1))
    errs = log.first_reason()
    reasons = []
    cols = list(contrib.columns)
    arr = contrib.to_numpy(dtype=float)
    for i in range(len(ids)):
        if errs[i]:
            reasons.append(errs[i])
            continue
        parts = ", ".join(f"{c} {arr[i, j]:g}" for j, c in enumerate(cols) if arr[i, j] != 0)
        reasons.append(f"{label} {category[i]} (score {score[i]:g}): {parts or 'no points'}")
    values = pd.DataFrame({"value": score, "category": category, **extra}, index=ids)
    return ScoreResult(name, values, contrib, pd.DataFrame({"reason": reasons}, index=ids),
                       log.frame())


def ipssr(patients: pd.DataFrame) -> ScoreResult:
    """IPSS-R of every patient (canonical columns hb, plt, anc, bm_blast, cyto_ipssr).
    Contributions are the points of each component; they sum to the score."""
    ids = patient_ids(patients)
    log = ErrorLog(ids)
    pts = _points(patients, log)
    contrib = pd.DataFrame(pts, index=ids)
    score = contrib.to_numpy().sum(axis=1)
    return _result("ipssr", "IPSS-R", ids, score, _categorise(score, CUTPOINTS, CATEGORIES),
                   contrib, log, {})


def ipssra(patients: pd.DataFrame) -> ScoreResult:
    """Age-adjusted IPSS-R: IPSS-R + (age - 70) * (0.05 - 0.005 * IPSS-R), rounded to 4 digits.
    Contributions: the IPSS-R points plus an ``age`` term; they sum to the score."""
    ids = patient_ids(patients)
    log = ErrorLog(ids)
    pts = _points(patients, log)
    age = numeric(patients, "age", log, 0.0, 110.0, required=True)
    base = np.sum(np.column_stack(list(pts.values())), axis=1)
    age_term = (age - 70.0) * (0.05 - base * 0.005)
    score = np.round(base + age_term, 4)
    contrib = pd.DataFrame({**pts, "age": score - base}, index=ids)
    return _result("ipssra", "IPSS-RA", ids, score, _categorise(score, CUTPOINTS, CATEGORIES),
                   contrib, log, {"ipssr": base})


def ipss(patients: pd.DataFrame) -> ScoreResult:
    """Original IPSS (1997): blasts <5% 0, 5-10% 0.5, 11-20% 1.5, 21-30% 2; karyotype Good 0,
    Intermediate 0.5, Poor 1; cytopenias (Hb <10 g/dL, ANC <1.8, platelets <100) 0-1 lineage 0,
    2-3 lineages 0.5. Categories Low 0, Int-1 0.5-1, Int-2 1.5-2, High >=2.5.

    The IPSS karyotype group is read from column ``cyto_ipss`` (Good/Intermediate/Poor). IPSS
    groups cannot be derived from the IPSS-R category alone (e.g. del(11q) is IPSS-R Very Good but
    IPSS Intermediate), so a patient without it is reported in ``errors``. Blasts above 30% are
    AML, not MDS, and are reported too.
    """
    ids = patient_ids(patients)
    log = ErrorLog(ids)
    hb = numeric(patients, "hb", log, 2.0, 25.0, required=True)
    plt = numeric(patients, "plt", log, 0.0, 3000.0, required=True)
    anc = numeric(patients, "anc", log, 0.0, 200.0, required=True)
    blast = numeric(patients, "bm_blast", log, 0.0, 100.0, required=True)
    log.add(blast > 30, "bm_blast", "above 30%: IPSS applies to MDS (<= 30% blasts)")
    if "cyto_ipss" in patients.columns:
        kary_text = patients["cyto_ipss"].astype("string").str.strip()
        kary = kary_text.map(IPSS_KARYOTYPE).astype(float).to_numpy()
        log.add(kary_text.notna().to_numpy() & np.isnan(kary), "cyto_ipss",
                "unknown IPSS karyotype group; expected Good, Intermediate or Poor")
        log.add(kary_text.isna().to_numpy(), "cyto_ipss", "is missing")
    else:
        kary = np.full(len(ids), np.nan)
        log.add(np.ones(len(ids), dtype=bool), "cyto_ipss", "is missing (column absent)")
    blast_pts = np.select([blast < 5, blast <= 10, blast <= 20], [0.0, 0.5, 1.5], 2.0)
    lineages = (hb < 10).astype(int) + (anc < 1.8).astype(int) + (plt < 100).astype(int)
    cyto_pts = np.where(lineages >= 2, 0.5, 0.0)
    contrib = pd.DataFrame({"bm_blast": blast_pts, "karyotype": kary, "cytopenias": cyto_pts},
                           index=ids)
    score = contrib.to_numpy().sum(axis=1)
    cats = _categorise(score, (0.0, 1.0, 2.0), IPSS_CATEGORIES)
    return _result("ipss", "IPSS", ids, score, cats, contrib, log, {})
