"""Multiple myeloma staging: ISS (Greipp 2005), R-ISS (Palumbo et al., JCO 2015) and R2-ISS
(D'Agostino et al., JCO 2022), vectorised, with the rule that fired or the points of each factor.

* ISS: I  beta2-microglobulin < 3.5 mg/L and albumin >= 3.5 g/dL; III  beta2m >= 5.5 mg/L;
  II otherwise.
* R-ISS: I  ISS I, standard-risk FISH (no del(17p), t(4;14), t(14;16)) and LDH <= upper limit of
  normal; III  ISS III and (high-risk FISH or LDH > ULN); II otherwise.
* R2-ISS points: ISS II 1, ISS III 1.5, del(17p) 1, LDH > ULN 1, t(4;14) 1, 1q gain 0.5;
  groups I 0, II 0.5-1, III 1.5-2.5, IV 3-5.

>>> import pandas as pd
>>> p = pd.DataFrame({"patient_id": ["a"], "b2m": [6.0], "albumin": [3.0], "ldh": [300],
...                   "ldh_uln": [250], "del17_17p": [0], "t_4_14": [1], "t_14_16": [0],
...                   "gain1q": [1]})
>>> iss(p).values.loc["a", "category"], riss(p).values.loc["a", "category"]
('III', 'III')
>>> float(r2iss(p).values.loc["a", "value"]), r2iss(p).values.loc["a", "category"]
(4.0, 'IV')
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hemafed.scores.result import (
    ErrorLog,
    Rule,
    ScoreResult,
    apply_rules,
    cmp,
    flag,
    k_and,
    k_not,
    k_or,
    none_where,
    numeric,
    patient_ids,
)

ISS_STAGES = ("I", "II", "III")
R2ISS_GROUPS = ("I", "II", "III", "IV")


def _iss_stage(b2m: np.ndarray, alb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ISS stage 1/2/3 (NaN undetermined) and the rule text."""
    rules = [Rule("b2m >= 5.5", "III", "beta2-microglobulin >= 5.5 mg/L"),
             Rule("b2m < 3.5 and albumin >= 3.5", "I",
                  "beta2-microglobulin < 3.5 mg/L and albumin >= 3.5 g/dL"),
             Rule("otherwise", "II", "neither stage I nor stage III")]
    conds = [cmp(b2m, ">=", 5.5), k_and(cmp(b2m, "<", 3.5), cmp(alb, ">=", 3.5)),
             np.ones(len(b2m))]
    cat, _, reason = apply_rules(rules, conds, ["b2m", "b2m/albumin", ""])
    stage = pd.Series(cat).map({"I": 1.0, "II": 2.0, "III": 3.0}).to_numpy(dtype=float)
    return stage, reason


def _inputs(patients: pd.DataFrame, log: ErrorLog) -> dict[str, np.ndarray]:
    b2m = numeric(patients, "b2m", log, 0.0, 100.0)
    alb = numeric(patients, "albumin", log, 0.5, 7.0)
    ldh = numeric(patients, "ldh", log, 0.0, 20000.0)
    uln = numeric(patients, "ldh_uln", log, 50.0, 1000.0)
    with np.errstate(invalid="ignore"):
        high_ldh = np.where(np.isnan(ldh) | np.isnan(uln), np.nan, (ldh > uln).astype(float))
    return {"b2m": b2m, "albumin": alb, "high_ldh": high_ldh,
            "del17p": flag(patients, "del17_17p", log), "t_4_14": flag(patients, "t_4_14", log),
            "t_14_16": flag(patients, "t_14_16", log), "gain1q": flag(patients, "gain1q", log)}


def _finish(name: str, ids: pd.Index, log: ErrorLog, value: np.ndarray, category: np.ndarray,
            contributions: pd.DataFrame, reasons: np.ndarray) -> ScoreResult:
    errs = log.first_reason()
    value = np.where(log.bad, np.nan, value)
    category = none_where(log.bad, category)
    reasons = np.where(log.bad, errs, reasons)
    return ScoreResult(name, pd.DataFrame({"value": value, "category": category}, index=ids),
                       contributions, pd.DataFrame({"reason": reasons}, index=ids), log.frame())


def iss(patients: pd.DataFrame) -> ScoreResult:
    """International Staging System; ``value`` is the stage number 1-3."""
    ids = patient_ids(patients)
    log = ErrorLog(ids)
    x = _inputs(patients, log)
    stage, reason = _iss_stage(x["b2m"], x["albumin"])
    cat = np.array([None if np.isnan(s) else ISS_STAGES[int(s) - 1] for s in stage], dtype=object)
    text = np.array([f"ISS {c}: {r}" if c else r for c, r in zip(cat, reason, strict=True)],
                    dtype=object)
    return _finish("iss", ids, log, stage, cat, pd.DataFrame({"rule": reason}, index=ids), text)


def riss(patients: pd.DataFrame) -> ScoreResult:
    """Revised ISS (Palumbo 2015); ``value`` is the stage number 1-3."""
    ids = patient_ids(patients)
    log = ErrorLog(ids)
    x = _inputs(patients, log)
    stage, _ = _iss_stage(x["b2m"], x["albumin"])
    iss1 = np.where(np.isnan(stage), np.nan, (stage == 1).astype(float))
    iss3 = np.where(np.isnan(stage), np.nan, (stage == 3).astype(float))
    high_fish = k_or(x["del17p"], x["t_4_14"], x["t_14_16"])
    rules = [Rule("ISS I, standard FISH, normal LDH", "I",
                  "ISS I with standard-risk FISH and normal LDH"),
             Rule("ISS III with high-risk FISH or high LDH", "III",
                  "ISS III with high-risk FISH (del(17p), t(4;14), t(14;16)) or LDH > ULN"),
             Rule("otherwise", "II", "neither R-ISS I nor R-ISS III")]
    conds = [k_and(iss1, k_not(high_fish), k_not(x["high_ldh"])),
             k_and(iss3, k_or(high_fish, x["high_ldh"])), np.ones(len(ids))]
    cat, fired, reason = apply_rules(rules, conds, ["ISS/FISH/LDH", "ISS/FISH/LDH", ""])
    value = pd.Series(cat).map({"I": 1.0, "II": 2.0, "III": 3.0}).to_numpy(dtype=float)
    text = np.array([f"R-ISS {c}: {r}" if c else r for c, r in zip(cat, reason, strict=True)],
                    dtype=object)
    return _finish("riss", ids, log, value, cat, pd.DataFrame({"rule": fired}, index=ids), text)


def r2iss(patients: pd.DataFrame) -> ScoreResult:
    """Second revision of the ISS (D'Agostino 2022); ``value`` is the point total, contributions
    are the points of each factor (NaN where that factor is missing)."""
    ids = patient_ids(patients)
    log = ErrorLog(ids)
    x = _inputs(patients, log)
    stage, _ = _iss_stage(x["b2m"], x["albumin"])
    pts = pd.DataFrame({
        "iss": np.select([stage == 2, stage == 3, stage == 1], [1.0, 1.5, 0.0], np.nan),
        "del17p": x["del17p"] * 1.0, "high_ldh": x["high_ldh"] * 1.0,
        "t_4_14": x["t_4_14"] * 1.0, "gain1q": x["gain1q"] * 0.5}, index=ids)
    arr = pts.to_numpy()
    total = arr.sum(axis=1)  # NaN when any factor is missing
    lo = np.nansum(arr, axis=1)
    hi = lo + np.where(np.isnan(arr), np.array([1.5, 1.0, 1.0, 1.0, 0.5]), 0.0).sum(axis=1)
    idx_lo = np.searchsorted(np.array([0.25, 1.25, 2.75]), lo)
    idx_hi = np.searchsorted(np.array([0.25, 1.25, 2.75]), hi)
    groups = np.array(R2ISS_GROUPS, dtype=object)
    cat = none_where(idx_lo != idx_hi, groups[idx_lo])
    reasons = []
    for i in range(len(ids)):
        parts = ", ".join(f"{c} +{arr[i, j]:g}" for j, c in enumerate(pts.columns)
                          if arr[i, j] > 0)
        if cat[i] is None:
            reasons.append(f"R2-ISS undetermined: missing factors leave it between "
                           f"{groups[idx_lo[i]]} and {groups[idx_hi[i]]}")
        else:
            reasons.append(f"R2-ISS {cat[i]} ({lo[i]:g} points): {parts or 'no risk factor'}")
    value = np.where(cat == None, np.nan, np.where(np.isnan(total), lo, total))  # noqa: E711
    return _finish("r2iss", ids, log, value, cat, pts, np.array(reasons, dtype=object))
