"""Sickle cell disease risk flags: the STOP transcranial Doppler category and pulmonary
hypertension mortality-risk markers, with the rule that fired per patient.

* TCD (STOP trial, Adams et al. 1998; time-averaged mean of maximum velocity in the MCA/ICA):
  normal < 170 cm/s, conditional 170-199 cm/s, abnormal >= 200 cm/s.
* Pulmonary hypertension risk (Gladwin et al. 2004; Machado et al. 2006; ATS guideline 2014):
  tricuspid regurgitant velocity >= 3.0 m/s is high risk; TRV >= 2.5 m/s or NT-proBNP >= 160 pg/mL
  is elevated risk; both measured and below is not elevated.

>>> import pandas as pd
>>> p = pd.DataFrame({"patient_id": ["a", "b"], "tcd_velocity": [185, 120], "trv": [2.6, 2.0],
...                   "nt_probnp": [50, 40]})
>>> list(scd(p).values["category"]), list(scd(p).values["ph_risk"])
(['conditional', 'normal'], ['elevated', 'not elevated'])
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
    k_or,
    none_where,
    numeric,
    patient_ids,
)

TCD_CATEGORIES = ("normal", "conditional", "abnormal")
PH_CATEGORIES = ("not elevated", "elevated", "high")


def scd(patients: pd.DataFrame) -> ScoreResult:
    """TCD STOP category (``category``, ``value`` = TCD velocity) and pulmonary-hypertension risk
    (``ph_risk``, flags ``trv_ge_2_5``, ``trv_ge_3_0``, ``ntprobnp_ge_160``)."""
    ids = patient_ids(patients)
    log = ErrorLog(ids)
    tcd = numeric(patients, "tcd_velocity", log, 0.0, 400.0)
    trv = numeric(patients, "trv", log, 0.0, 7.0)
    bnp = numeric(patients, "nt_probnp", log, 0.0, 100000.0)
    tcd_rules = [Rule("TCD >= 200", "abnormal", "TCD velocity >= 200 cm/s (abnormal, STOP)"),
                 Rule("TCD 170-199", "conditional", "TCD velocity 170-199 cm/s (conditional)"),
                 Rule("TCD < 170", "normal", "TCD velocity < 170 cm/s (normal)")]
    tcd_cat, tcd_rule, tcd_reason = apply_rules(
        tcd_rules, [cmp(tcd, ">=", 200), cmp(tcd, ">=", 170), cmp(tcd, "<", 170)],
        ["tcd_velocity"] * 3)
    trv25, trv30, bnp160 = cmp(trv, ">=", 2.5), cmp(trv, ">=", 3.0), cmp(bnp, ">=", 160)
    ph_rules = [Rule("TRV >= 3.0", "high", "TRV >= 3.0 m/s"),
                Rule("TRV >= 2.5 or NT-proBNP >= 160", "elevated",
                     "TRV >= 2.5 m/s or NT-proBNP >= 160 pg/mL"),
                Rule("below thresholds", "not elevated", "TRV < 2.5 m/s and NT-proBNP < 160")]
    ph_cat, ph_rule, ph_reason = apply_rules(
        ph_rules, [trv30, k_or(trv25, bnp160), np.ones(len(ids))], ["trv", "trv/nt_probnp", ""])
    errs = log.first_reason()
    bad = log.bad
    reasons = np.where(bad, errs, np.array(
        [f"TCD {t or 'not assessed'}: {tr}; pulmonary hypertension risk {p or 'undetermined'}: "
         f"{pr}" for t, tr, p, pr in zip(tcd_cat, tcd_reason, ph_cat, ph_reason, strict=True)],
        dtype=object))
    values = pd.DataFrame({
        "value": np.where(bad, np.nan, tcd), "category": none_where(bad, tcd_cat),
        "ph_risk": none_where(bad, ph_cat), "trv_ge_2_5": trv25, "trv_ge_3_0": trv30,
        "ntprobnp_ge_160": bnp160}, index=ids)
    contributions = pd.DataFrame({"tcd_rule": tcd_rule, "ph_rule": ph_rule}, index=ids)
    return ScoreResult("scd", values, contributions, pd.DataFrame({"reason": reasons}, index=ids),
                       log.frame())
