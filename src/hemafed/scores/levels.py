"""The public levels of the derived score categories (``<score>_category``), reference first.

A study may group by a derived category without listing its levels (the plan and the hub step
read them here); they sit with the scores, below the study package, so a kind's hub step
beside its estimator can read them too (:mod:`hemafed.study.derived` computes the columns).
"""

from __future__ import annotations

IPSSM_CATEGORIES = ("Very Low", "Low", "Moderate Low", "Moderate High", "High", "Very High")
IPSSR_CATEGORIES = ("Very Low", "Low", "Intermediate", "High", "Very High")
ELN_CATEGORIES = ("favorable", "intermediate", "adverse")
RISS_CATEGORIES = ("I", "II", "III")

DERIVED_LEVELS: dict[str, tuple[str, ...]] = {
    "ipssm_category": IPSSM_CATEGORIES,
    "ipssr_category": IPSSR_CATEGORIES,
    "eln2022_category": ELN_CATEGORIES,
    "riss_category": RISS_CATEGORIES,
}
