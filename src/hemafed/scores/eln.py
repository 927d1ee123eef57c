"""ELN 2017 and ELN 2022 genetic risk classification of AML (Döhner et al., Blood 2017 and 2022),
as ordered rule tables: the first rule that holds gives the class, and the rule is reported.

Precedence (footnotes of the published tables, made explicit by the rule order):

* ELN 2022: t(8;21)/inv(16) are favourable whatever else is present; t(9;11) is intermediate and
  takes precedence over concurrent adverse gene mutations; adverse cytogenetics win over NPM1
  (NPM1 with adverse cytogenetics is adverse); TP53 (VAF >= 10%) is adverse; NPM1 without FLT3-ITD
  and in-frame bZIP CEBPA are favourable, and then myelodysplasia-related gene mutations (ASXL1,
  BCOR, EZH2, RUNX1, SF3B1, SRSF2, STAG2, U2AF1, ZRSR2) are not counted as adverse; FLT3-ITD
  without other lesions is intermediate (allelic ratio no longer used).
* ELN 2017: t(8;21)/inv(16) favourable; t(9;11) intermediate (before the adverse KMT2A
  t(v;11), since cohorts often flag t(9;11) as an 11q23 rearrangement too); adverse cytogenetics;
  TP53 adverse;
  NPM1 with no or low-ratio (< 0.5) FLT3-ITD and biallelic CEBPA favourable; wild-type NPM1 with
  high-ratio FLT3-ITD adverse; RUNX1/ASXL1 adverse (not in favourable subtypes); NPM1 with
  high-ratio FLT3-ITD intermediate.
* APL with t(15;17) is outside both tables (managed separately); we report it as favourable with
  its own rule, as the Tazi et al. 2022 cohorts do.

Inputs: canonical patient flags (``t_8_21``, ``inv_16``, ``t_15_17``, ``t_9_11``, ``t_v_11``,
``t_6_9``, ``t_9_22``, ``inv_3``, ``minus5`` or ``del5q``, ``minus7``, ``minus17`` or
``del17_17p``, ``complex``, ``monosomal``) and a gene matrix (1/0/NA; ``NPM1``, ``FLT3_ITD``,
``TP53``, ``RUNX1``, ``ASXL1`` ...) given apart or inline. Optional patient columns:
``flt3_itd_high`` (allelic ratio >= 0.5, ELN 2017), ``cebpa_biallelic`` (ELN 2017),
``cebpa_bzip`` (in-frame bZIP, ELN 2022), ``tp53_vaf`` (fraction; ELN 2022 needs >= 0.10).
Missing inputs (NA) make a patient undetermined only when they could change the class. A
cytogenetic flag column absent from the table is read as "not present" for everyone; an absent
gene column means "not sequenced" (unknown).

>>> import pandas as pd
>>> p = pd.DataFrame({"patient_id": ["a"], "t_8_21": [1], "RUNX1": [1]})
>>> r = eln2022(p)
>>> r.values.loc["a", "category"], r.contributions.loc["a", "rule"]
('favorable', 't(8;21)')
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Literal

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

CATEGORIES: Final[tuple[str, ...]] = ("favorable", "intermediate", "adverse")
MR_GENES: Final[tuple[str, ...]] = ("ASXL1", "BCOR", "EZH2", "RUNX1", "SF3B1", "SRSF2", "STAG2",
                                    "U2AF1", "ZRSR2")
ItdRatio = Literal["undetermined", "high", "low"]


class _Inputs:
    """Three-valued (1/0/NaN) lookups of patient flags and genes."""

    def __init__(self, patients: pd.DataFrame, genes: pd.DataFrame | None, log: ErrorLog) -> None:
        self.p = patients
        self.ids = log.ids
        self.log = log
        self.g = genes.reindex(self.ids) if genes is not None else None

    def flag(self, *names: str) -> np.ndarray:
        present = [n for n in names if n in self.p.columns]
        if not present:  # a cytogenetic column the table lacks entirely: not recorded as present
            return np.zeros(len(self.ids))
        return k_or(*(flag(self.p, n, self.log) for n in present))

    def gene(self, *names: str) -> np.ndarray:
        arrs = []
        for n in names:
            if self.g is not None and n in self.g.columns:
                arrs.append(pd.to_numeric(self.g[n], errors="coerce").to_numpy(
                    dtype=float, na_value=np.nan))
            elif n in self.p.columns:
                arrs.append(flag(self.p, n, self.log))
        if not arrs:
            return np.full(len(self.ids), np.nan)
        return k_or(*arrs)


def _adverse_cyto(x: _Inputs, year: int) -> np.ndarray:
    parts = [x.flag("t_6_9"), x.flag("t_v_11"), x.flag("t_9_22"), x.flag("inv_3"),
             x.flag("minus5", "del5q"), x.flag("minus7"), x.flag("minus17", "del17_17p"),
             x.flag("complex"), x.flag("monosomal")]
    if year == 2022 and "t_8_16" in x.p.columns:
        parts.append(x.flag("t_8_16"))
    return _or_known(parts)


def _or_known(parts: list[np.ndarray]) -> np.ndarray:
    """OR over the inputs that a cohort records at all: a column entirely absent (every patient
    NaN) is treated as not recorded rather than making every patient undetermined."""
    used = [a for a in parts if not np.isnan(a).all()]
    return k_or(*used) if used else np.full(len(parts[0]), np.nan)


def _run(name: str, label: str, patients: pd.DataFrame, genes: pd.DataFrame | None,
         build: Callable[[_Inputs], list[tuple[Rule, np.ndarray, str]]]) -> ScoreResult:
    ids = patient_ids(patients)
    log = ErrorLog(ids)
    x = _Inputs(patients, genes, log)
    table = build(x)
    category, fired, reason = apply_rules([t[0] for t in table], [t[1] for t in table],
                                          [t[2] for t in table])
    errs = log.first_reason()
    bad = log.bad
    category = none_where(bad, category)
    fired = none_where(bad, fired)
    reason = np.where(bad, errs, np.where(category == None, reason,  # noqa: E711
                                          [f"{label} {c}: {r}" for c, r in zip(category, reason,
                                                                               strict=True)]))
    code = pd.Series(category).map({c: i for i, c in enumerate(CATEGORIES)}).to_numpy(dtype=float)
    values = pd.DataFrame({"value": code, "category": category}, index=ids)
    contributions = pd.DataFrame({"rule": fired}, index=ids)
    return ScoreResult(name, values, contributions, pd.DataFrame({"reason": reason}, index=ids),
                       log.frame())


def eln2022(patients: pd.DataFrame, genes: pd.DataFrame | None = None) -> ScoreResult:
    """ELN 2022 genetic risk; ``value`` is 0 favourable, 1 intermediate, 2 adverse."""

    def build(x: _Inputs) -> list[tuple[Rule, np.ndarray, str]]:
        npm1, itd = x.gene("NPM1"), x.gene("FLT3_ITD", "ITD")
        tp53 = x.gene("TP53")
        if "tp53_vaf" in x.p.columns:
            vaf = numeric(x.p, "tp53_vaf", x.log, 0.0, 1.0)
            tp53 = k_and(tp53, np.where(np.isnan(vaf) & (tp53 == 1), np.nan,
                                        np.where(np.isnan(vaf), 1.0, cmp(vaf, ">=", 0.10))))
        mr = k_or(*(x.gene(g) for g in MR_GENES))
        cebpa = x.flag("cebpa_bzip") if "cebpa_bzip" in x.p.columns else x.gene("CEBPA_bZIP")
        return [
            (Rule("t(15;17)", "favorable", "APL with t(15;17) (outside the ELN table)"),
             x.flag("t_15_17"), "t_15_17"),
            (Rule("t(8;21)", "favorable", "t(8;21) RUNX1::RUNX1T1"), x.flag("t_8_21"), "t_8_21"),
            (Rule("inv(16)", "favorable", "inv(16)/t(16;16) CBFB::MYH11"), x.flag("inv_16"),
             "inv_16"),
            (Rule("t(9;11)", "intermediate", "t(9;11) MLLT3::KMT2A (precedes adverse mutations)"),
             x.flag("t_9_11"), "t_9_11"),
            (Rule("adverse cytogenetics", "adverse",
                  "adverse-risk cytogenetics (e.g. -5/del(5q), -7, -17/abn(17p), complex, "
                  "monosomal, KMT2A/MECOM/DEK::NUP214/BCR::ABL1)"),
             _adverse_cyto(x, 2022), "a cytogenetic flag"),
            (Rule("TP53", "adverse", "mutated TP53 (VAF >= 10%)"), tp53, "TP53"),
            (Rule("NPM1 without FLT3-ITD", "favorable", "mutated NPM1 without FLT3-ITD"),
             k_and(npm1, k_not(itd)), "NPM1/FLT3_ITD"),
            (Rule("CEBPA bZIP", "favorable", "in-frame bZIP CEBPA mutation"), cebpa,
             "cebpa_bzip"),
            (Rule("MR gene", "adverse", "myelodysplasia-related gene mutation (ASXL1, BCOR, EZH2, "
                  "RUNX1, SF3B1, SRSF2, STAG2, U2AF1, ZRSR2)"), mr, "an MR gene"),
            (Rule("other", "intermediate", "no favourable- or adverse-defining lesion (incl. "
                  "FLT3-ITD, NPM1 with FLT3-ITD)"), np.ones(len(x.ids)), ""),
        ]

    return _run("eln2022", "ELN 2022", patients, genes, build)


def eln2017(patients: pd.DataFrame, genes: pd.DataFrame | None = None,
            itd_ratio_unknown: ItdRatio = "undetermined") -> ScoreResult:
    """ELN 2017 genetic risk; ``value`` is 0 favourable, 1 intermediate, 2 adverse.

    The FLT3-ITD allelic ratio is read from ``flt3_itd_high``; when it is not recorded,
    ``itd_ratio_unknown`` says whether to treat a present ITD as high or low ratio, or leave the
    patients it matters for undetermined (the default).
    """

    def build(x: _Inputs) -> list[tuple[Rule, np.ndarray, str]]:
        npm1, itd = x.gene("NPM1"), x.gene("FLT3_ITD", "ITD")
        if "flt3_itd_high" in x.p.columns:
            high = k_and(itd, x.flag("flt3_itd_high"))
        elif itd_ratio_unknown == "high":
            high = itd
        elif itd_ratio_unknown == "low":
            high = np.where(np.isnan(itd), np.nan, 0.0)
        else:
            high = np.where(itd == 0, 0.0, np.nan)
        cebpa = x.flag("cebpa_biallelic") if "cebpa_biallelic" in x.p.columns else x.gene(
            "CEBPA_bi", "CEBPA_biallelic")
        return [
            (Rule("t(15;17)", "favorable", "APL with t(15;17) (outside the ELN table)"),
             x.flag("t_15_17"), "t_15_17"),
            (Rule("t(8;21)", "favorable", "t(8;21) RUNX1::RUNX1T1"), x.flag("t_8_21"), "t_8_21"),
            (Rule("inv(16)", "favorable", "inv(16)/t(16;16) CBFB::MYH11"), x.flag("inv_16"),
             "inv_16"),
            (Rule("t(9;11)", "intermediate", "t(9;11) MLLT3::KMT2A"), x.flag("t_9_11"),
             "t_9_11"),
            (Rule("adverse cytogenetics", "adverse",
                  "adverse-risk cytogenetics (-5/del(5q), -7, -17/abn(17p), complex, monosomal, "
                  "t(6;9), t(v;11), t(9;22), inv(3))"), _adverse_cyto(x, 2017),
             "a cytogenetic flag"),
            (Rule("TP53", "adverse", "mutated TP53"), x.gene("TP53"), "TP53"),
            (Rule("NPM1 without high FLT3-ITD", "favorable",
                  "mutated NPM1 without FLT3-ITD or with low allelic ratio"),
             k_and(npm1, k_not(high)), "NPM1/FLT3-ITD ratio"),
            (Rule("biallelic CEBPA", "favorable", "biallelic CEBPA"), cebpa, "CEBPA biallelic"),
            (Rule("wt NPM1 with high FLT3-ITD", "adverse",
                  "wild-type NPM1 with high allelic ratio FLT3-ITD"),
             k_and(k_not(npm1), high), "NPM1/FLT3-ITD ratio"),
            (Rule("RUNX1", "adverse", "mutated RUNX1"), x.gene("RUNX1"), "RUNX1"),
            (Rule("ASXL1", "adverse", "mutated ASXL1"), x.gene("ASXL1"), "ASXL1"),
            (Rule("other", "intermediate", "no favourable- or adverse-defining lesion (incl. "
                  "NPM1 with high FLT3-ITD)"), np.ones(len(x.ids)), ""),
        ]

    return _run("eln2017", "ELN 2017", patients, genes, build)
