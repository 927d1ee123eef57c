"""IPSS-M, the Molecular International Prognostic Scoring System for MDS (Bernard et al., NEJM
Evidence 2022), vectorised over a cohort, with per-variable contributions.

The weights, reference means and best/worst imputation values are those of the authors' R package
(papaemmelab/ipssm, ``IPSSMmain``) and web calculator (papaemmelab/ipssm-api). The risk score is
``sum_j beta_j (x_j - mean_j) / log(2)``, rounded to 2 decimals, cut at -1.5, -0.5, 0, 0.5, 1.5.
Missing inputs are handled the published way: the score is computed three times, with missing
values set to their best, mean (reference average) and worst values, and a single score is
reported only when ``worst - best <= 1`` (or, category only, when best and worst categories agree).

Where the R package and the web calculator differ, we follow the R package, which reproduces the
published cohort scores (see the tests on ``../shared/data/mds-ipssm-cohort``):

* haemoglobin is clipped to [4, 20] g/dL (R) and the worst imputed Hb is 4 (R), not 2 (JS);
* TP53 maximal VAF is a *fraction* (R); the JS code divides by 100 (its form takes percent);
* derived variables (SF3B1_5q, SF3B1_alpha, TP53multi) use Kleene three-valued logic on missing
  inputs. On complete data this equals both implementations. With missing inputs R silently treats
  an unknown derived variable as 0 (hiding uncertainty); JS marks it unknown in most cases; ours
  marks it unknown exactly when the missing inputs could change it, which is what JS intends.
* TP53 LOH: set when max VAF > 0.55 or del(17p)/-17 is present (both implementations); an
  explicitly given LOH of 0 is trusted (R); otherwise LOH is unknown.

>>> import pandas as pd
>>> t = pd.DataFrame({"ID": ["zero"], "HB": [10], "PLT": [10], "BM_BLAST": [10],
...                   "CYTO_IPSSR": ["Very Good"], "del5q": [0], "del7_7q": [0], "del17_17p": [0],
...                   "complex": [0], "TP53mut": ["0"], "TP53maxvaf": [0], "TP53loh": [0]})
>>> genes = {g: [0] for g in ALL_GENES}
>>> r = ipssm_from_calculator_table(t.assign(**genes))
>>> float(r.values.loc["zero", "score_mean"])
-0.33
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
import pandas as pd

from hemafed.scores.result import (
    ErrorLog,
    ScoreResult,
    flag,
    k_and,
    k_not,
    k_or,
    none_where,
    numeric,
    patient_ids,
)

CYTO_ORDINAL: Final[dict[str, int]] = {"Very Good": 0, "Good": 1, "Intermediate": 2, "Poor": 3,
                                       "Very Poor": 4}
_CYTO_ALIASES: Final[dict[str, str]] = {"int": "Intermediate", "very-good": "Very Good",
                                        "very-poor": "Very Poor"}

# name: (beta, reference mean, best, worst), in the order of the R package.
MODEL: Final[dict[str, tuple[float, float, float, float]]] = {
    "HB1": (-0.171, 9.87, 20.0, 4.0),
    "TRANSF_PLT100": (-0.222, 1.41, 2.5, 0.0),
    "BLAST5": (0.352, 0.922, 0.0, 4.0),
    "CYTOVEC": (0.287, 1.39, 0.0, 4.0),
    "TP53multi": (1.18, 0.0710, 0.0, 1.0),
    "FLT3": (0.798, 0.0108, 0.0, 1.0),
    "MLL_PTD": (0.798, 0.0247, 0.0, 1.0),
    "SF3B1_5q": (0.504, 0.0166, 0.0, 1.0),
    "NPM1": (0.430, 0.0112, 0.0, 1.0),
    "RUNX1": (0.423, 0.1260, 0.0, 1.0),
    "NRAS": (0.417, 0.0362, 0.0, 1.0),
    "ETV6": (0.391, 0.0216, 0.0, 1.0),
    "IDH2": (0.379, 0.0429, 0.0, 1.0),
    "CBL": (0.295, 0.0473, 0.0, 1.0),
    "EZH2": (0.270, 0.0588, 0.0, 1.0),
    "U2AF1": (0.247, 0.0866, 0.0, 1.0),
    "SRSF2": (0.239, 0.1580, 0.0, 1.0),
    "DNMT3A": (0.221, 0.1610, 0.0, 1.0),
    "ASXL1": (0.213, 0.2520, 0.0, 1.0),
    "KRAS": (0.202, 0.0271, 0.0, 1.0),
    "SF3B1_alpha": (-0.0794, 0.1860, 1.0, 0.0),
    "nRes2": (0.231, 0.3880, 0.0, 2.0),
}
VARIABLES: Final[tuple[str, ...]] = tuple(MODEL)
MAIN_GENES: Final[tuple[str, ...]] = ("FLT3", "MLL_PTD", "NPM1", "RUNX1", "NRAS", "ETV6", "IDH2",
                                      "CBL", "EZH2", "U2AF1", "SRSF2", "DNMT3A", "ASXL1", "KRAS")
RESIDUAL_GENES: Final[tuple[str, ...]] = ("BCOR", "BCORL1", "CEBPA", "ETNK1", "GATA2", "GNB1",
                                          "IDH1", "NF1", "PHF6", "PPM1D", "PRPF8", "PTPN11",
                                          "SETBP1", "STAG2", "WT1")
ALL_GENES: Final[tuple[str, ...]] = (*MAIN_GENES, "SF3B1", *RESIDUAL_GENES)
NREF: Final[float] = 0.3880
CUTPOINTS: Final[tuple[float, ...]] = (-1.5, -0.5, 0.0, 0.5, 1.5)
CATEGORIES: Final[tuple[str, ...]] = ("Very Low", "Low", "Moderate Low", "Moderate High", "High",
                                      "Very High")
REPORT_RANGE_MAX: Final[float] = 1.0
SCENARIOS: Final[tuple[str, ...]] = ("best", "mean", "worst")
CALCULATOR_COLUMNS: Final[frozenset[str]] = frozenset(
    {"ID", "HB", "PLT", "BM_BLAST", "CYTO_IPSSR", "TP53mut"})
_LN2 = math.log(2.0)
_BETA = np.array([MODEL[v][0] for v in VARIABLES])
_MEAN = np.array([MODEL[v][1] for v in VARIABLES])
_BEST = np.array([MODEL[v][2] for v in VARIABLES])
_WORST = np.array([MODEL[v][3] for v in VARIABLES])
_LABELS: Final[dict[str, str]] = {"HB1": "haemoglobin", "TRANSF_PLT100": "platelets",
                                  "BLAST5": "marrow blasts", "CYTOVEC": "cytogenetics",
                                  "TP53multi": "multi-hit TP53", "SF3B1_5q": "SF3B1 with del(5q)",
                                  "SF3B1_alpha": "SF3B1 (favourable context)",
                                  "nRes2": "residual genes"}


def cyto_ordinal(values: pd.Series, log: ErrorLog, column: str) -> np.ndarray:
    """IPSS-R cytogenetic category names -> 0..4 (NaN missing); unknown names are logged.
    Case, hyphens and the abbreviation 'Int' are tolerated ('Very-Good', 'int')."""
    by_lower = {k.lower(): float(v) for k, v in CYTO_ORDINAL.items()}
    by_lower.update({k: float(CYTO_ORDINAL[v]) for k, v in _CYTO_ALIASES.items()})
    codes, uniques = pd.factorize(values.astype("string").str.strip())
    lookup = np.array([by_lower.get(str(u).lower(), -1.0) for u in uniques] + [np.nan])
    out = lookup[np.where(codes < 0, len(uniques), codes)]
    unknown = out == -1
    if unknown.any():
        log.add(unknown, column, [f"unknown cytogenetic category {v!r}; expected one of "
                                  f"{', '.join(CYTO_ORDINAL)}" for v in values.to_numpy()])
    return np.where(unknown, np.nan, out)


def model_variables(hb: np.ndarray, plt: np.ndarray, blast: np.ndarray, cytovec: np.ndarray,
                    del5q: np.ndarray, del7_7q: np.ndarray, del17_17p: np.ndarray,
                    complex_: np.ndarray, tp53_n: np.ndarray, tp53_maxvaf: np.ndarray,
                    tp53_loh: np.ndarray, genes: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    """Derive the model variables (NaN where unknown). Returns (X without nRes2, nRes2 best,
    mean, worst) with X columns in :data:`VARIABLES` order minus ``nRes2``."""
    g = genes
    sf3b1_5q = k_and(cmp_eq(g["SF3B1"], 1), cmp_eq(del5q, 1), cmp_eq(del7_7q, 0),
                     cmp_eq(complex_, 0))
    sf3b1_alpha = k_and(cmp_eq(g["SF3B1"], 1), k_not(sf3b1_5q), *(cmp_eq(g[x], 0) for x in (
        "SRSF2", "STAG2", "BCOR", "BCORL1", "RUNX1", "NRAS")))
    with np.errstate(invalid="ignore"):
        vaf_high = np.where(np.isnan(tp53_maxvaf), np.nan, (tp53_maxvaf > 0.55).astype(float))
    loh = k_or(vaf_high, cmp_eq(del17_17p, 1), cmp_eq(tp53_loh, 1))
    # An explicit LOH = 0 is trusted when VAF is unknown (R package behaviour).
    loh = np.where(np.isnan(loh) & (tp53_loh == 0) & (del17_17p != 1), 0.0, loh)
    multi = k_or(cmp_ge(tp53_n, 2), k_and(cmp_ge(tp53_n, 1), loh))
    hb1 = np.clip(hb, 4.0, 20.0)
    blast5 = np.minimum(blast, 20.0) / 5.0
    plt100 = np.minimum(plt, 250.0) / 100.0
    cols = [hb1, plt100, blast5, cytovec, multi, *(g[x] for x in ("FLT3", "MLL_PTD")), sf3b1_5q,
            *(g[x] for x in ("NPM1", "RUNX1", "NRAS", "ETV6", "IDH2", "CBL", "EZH2", "U2AF1",
                             "SRSF2", "DNMT3A", "ASXL1", "KRAS")), sf3b1_alpha]
    x = np.column_stack(cols)
    res = np.column_stack([g[r] for r in RESIDUAL_GENES])
    missing = np.isnan(res).sum(axis=1)
    ns = np.nansum(res, axis=1)
    best = np.minimum(ns, 2.0)
    worst = np.minimum(ns + missing, 2.0)
    mean = best + np.maximum((2.0 - ns) / 2.0 * (missing / len(RESIDUAL_GENES)) * NREF, 0.0)
    return x, best, mean, worst


def cmp_eq(x: np.ndarray, v: float) -> np.ndarray:
    return np.where(np.isnan(x), np.nan, (x == v).astype(float))


def cmp_ge(x: np.ndarray, v: float) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.where(np.isnan(x), np.nan, (x >= v).astype(float))


def categorise(score: np.ndarray) -> np.ndarray:
    """IPSS-M category of (rounded) scores; intervals closed on the right, like R's ``cut``."""
    idx = np.searchsorted(np.array(CUTPOINTS), score, side="left")
    cats = np.array(CATEGORIES, dtype=object)[np.minimum(idx, len(CATEGORIES) - 1)]
    return none_where(np.isnan(score), cats)


def _score_variables(ids: pd.Index, x: np.ndarray, nres: dict[str, np.ndarray],
                     log: ErrorLog) -> ScoreResult:
    fill = {"best": _BEST[:-1], "mean": _MEAN[:-1], "worst": _WORST[:-1]}
    missing = np.isnan(x)
    scores: dict[str, np.ndarray] = {}
    raw: dict[str, np.ndarray] = {}
    contrib_mean = np.empty((len(ids), len(VARIABLES)))
    for scen in SCENARIOS:
        filled = np.where(missing, fill[scen], x)
        full = np.column_stack([filled, nres[scen]])
        contrib = (full - _MEAN) * _BETA / _LN2
        raw[scen] = contrib.sum(axis=1)
        scores[scen] = np.round(raw[scen], 2)
        if scen == "mean":
            contrib_mean = contrib
    bad = log.bad
    for scen in SCENARIOS:
        scores[scen] = np.where(bad, np.nan, scores[scen])
        raw[scen] = np.where(bad, np.nan, raw[scen])
    cats = {s: categorise(scores[s]) for s in SCENARIOS}
    spread = scores["worst"] - scores["best"]
    with np.errstate(invalid="ignore"):
        narrow = spread <= REPORT_RANGE_MAX + 1e-9
        stable = (~narrow) & (cats["worst"] == cats["best"])
    value = np.where(narrow, scores["mean"], np.nan)
    category = none_where(~(narrow | stable), cats["mean"])
    comment = np.where(spread == 0, "no uncertainty (no missing data)",
                       np.where(narrow, "range (worst - best) below limit",
                                np.where(stable, "range (worst - best) above limit, but stable "
                                         "category", "range (worst - best) above limit")))
    comment = np.where(bad, "not scored", comment)
    values = pd.DataFrame({
        "value": value, "category": category,
        **{f"score_{s}": scores[s] for s in SCENARIOS},
        **{f"category_{s}": cats[s] for s in SCENARIOS},
        "score_mean_unrounded": raw["mean"], "comment": comment,
        "n_missing": np.where(bad, -1, missing.sum(axis=1)),
    }, index=ids)
    contributions = pd.DataFrame(np.where(bad[:, None], np.nan, contrib_mean), index=ids,
                                 columns=list(VARIABLES))
    reasons = _reasons(contrib_mean, value, category, cats, comment, log)
    return ScoreResult("ipssm", values, contributions,
                       pd.DataFrame({"reason": reasons}, index=ids), log.frame())


def _fmt(values: np.ndarray, spec: str) -> np.ndarray:
    """Format rounded numbers through their few distinct values (fast on large cohorts)."""
    uniq, inverse = np.unique(np.round(np.nan_to_num(values), 2), return_inverse=True)
    return np.array([format(u, spec) for u in uniq], dtype=object)[inverse.reshape(-1)]


def _reasons(contrib: np.ndarray, value: np.ndarray, category: np.ndarray,
             cats: dict[str, np.ndarray], comment: np.ndarray, log: ErrorLog) -> np.ndarray:
    """One sentence per patient, built with array operations (fast on large cohorts)."""
    order = np.argsort(-np.abs(contrib), axis=1)[:, :2]
    labels = np.array([_LABELS.get(v, v) for v in VARIABLES], dtype=object)
    top_val = np.take_along_axis(contrib, order, axis=1)
    top = (labels[order[:, 0]] + " " + _fmt(top_val[:, 0], "+.2f")
           + ", " + labels[order[:, 1]] + " "
           + _fmt(top_val[:, 1], "+.2f"))
    cat = category.astype(object)
    score_txt = _fmt(value, ".2f")
    reported = "IPSS-M " + cat.astype(str).astype(object) + " (score " + score_txt \
        + "); largest terms " + top
    stable = "IPSS-M " + cat.astype(str).astype(object) \
        + " (score uncertain, category stable); largest terms " + top
    unreported = ("IPSS-M not reportable: missing data leave it between "
                  + cats["best"].astype(str).astype(object) + " and "
                  + cats["worst"].astype(str).astype(object) + "; largest terms " + top)
    out = np.where(category == None, unreported,  # noqa: E711
                   np.where(np.isnan(value), stable, reported))
    errs = log.first_reason()
    return np.where(errs != "", errs, out)


def ipssm(patients: pd.DataFrame, genes: pd.DataFrame | None = None,
          mutations: pd.DataFrame | None = None) -> ScoreResult:
    """IPSS-M of every patient of a canonical cohort.

    ``patients``: canonical columns ``patient_id``, ``hb``, ``plt``, ``bm_blast``,
    ``cyto_ipssr``, ``del5q``, ``del7_7q``, ``del17_17p``, ``complex`` (optional ``tp53_loh``).
    ``genes``: patients x genes, 1 mutated / 0 wild type / NA not sequenced, indexed by patient id
    (``Cohort.gene_matrix()``); ``FLT3`` counts ITD and TKD (``FLT3_ITD`` and ``FLT3_TKD`` columns
    are merged in), ``MLL_PTD`` or ``KMT2A_PTD``; a gene absent from ``genes`` is not sequenced.
    Gene columns may instead be given inline in ``patients``. ``mutations``: the long mutation
    table (``patient_id``, ``gene``, ``vaf`` as a fraction) giving the number of TP53 mutations
    and the TP53 maximal VAF; without it a mutated TP53 counts as one mutation of unknown VAF.
    """
    ids = patient_ids(patients)
    log = ErrorLog(ids)
    n = len(patients)
    gm = genes if genes is not None else patients.set_index(ids)
    gm = gm.reindex(ids) if genes is not None else gm

    def gene(*names: str) -> np.ndarray:
        cols = [gm[c] for c in names if c in gm.columns]
        if not cols:
            return np.full(n, np.nan)
        arrs = [pd.to_numeric(c, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
                for c in cols]
        return k_or(*arrs) if len(arrs) > 1 else arrs[0]

    g = {name: gene(name) for name in ALL_GENES}
    g["FLT3"] = gene("FLT3", "FLT3_ITD", "FLT3_TKD")
    g["MLL_PTD"] = gene("MLL_PTD", "KMT2A_PTD")
    tp53 = gene("TP53")
    tp53_n = tp53.copy()
    tp53_vaf = np.full(n, np.nan)
    if mutations is not None and len(mutations):
        m = mutations[mutations["gene"].astype(str) == "TP53"]
        pid = m["patient_id"].astype(str)
        counts = pid.value_counts().reindex(ids).fillna(0).to_numpy(dtype=float)
        vaf = pd.to_numeric(m.get("vaf", pd.Series(np.nan, index=m.index)), errors="coerce")
        maxvaf = vaf.groupby(pid.to_numpy()).max().reindex(ids).to_numpy(dtype=float)
        tp53_n = np.where(tp53 == 1, np.maximum(counts, 1.0), tp53)
        tp53_vaf = np.where(tp53 == 1, maxvaf, np.where(tp53 == 0, 0.0, np.nan))
        bad_vaf = tp53_vaf > 1.0
        log.add(bad_vaf, "vaf", "TP53 VAF above 1; VAF is a fraction in [0, 1], not a percent")
    hb = numeric(patients, "hb", log, 2.0, 25.0)
    plt = numeric(patients, "plt", log, 0.0, 3000.0)
    blast = numeric(patients, "bm_blast", log, 0.0, 100.0)
    if "cyto_ipssr" in patients.columns:
        cyto = cyto_ordinal(patients["cyto_ipssr"], log, "cyto_ipssr")
    else:
        cyto = np.full(n, np.nan)
    x, b, m_, w = model_variables(
        hb, plt, blast, cyto, flag(patients, "del5q", log), flag(patients, "del7_7q", log),
        flag(patients, "del17_17p", log), flag(patients, "complex", log), tp53_n, tp53_vaf,
        flag(patients, "tp53_loh", log), g)
    return _score_variables(ids, x, {"best": b, "mean": m_, "worst": w}, log)


def is_calculator_table(df: pd.DataFrame) -> bool:
    """True if ``df`` has the columns of the authors' IPSS-M calculator input."""
    return CALCULATOR_COLUMNS.issubset(df.columns)


def ipssm_from_calculator_table(table: pd.DataFrame) -> ScoreResult:
    """IPSS-M of the authors' calculator input table (columns ID, HB, PLT, BM_BLAST, CYTO_IPSSR,
    del5q, del7_7q, del17_17p, complex, TP53mut ('0', '1', '2 or more'), TP53maxvaf (fraction),
    TP53loh, and gene columns; NA = not sequenced). Missing gene columns count as not sequenced."""
    ids = patient_ids(table, "ID")
    log = ErrorLog(ids)
    n = len(table)
    mut = table["TP53mut"].astype("string").str.strip().str.lower()
    tp53_n = mut.map({"0": 0.0, "1": 1.0, "2 or more": 2.0, "2": 2.0}).astype(float).to_numpy()
    unknown = (mut.notna() & ~mut.isin(["0", "1", "2", "2 or more", "na", "nan", ""])).to_numpy(
        dtype=bool)
    log.add(unknown, "TP53mut", "expected '0', '1' or '2 or more'")
    vaf = numeric(table, "TP53maxvaf", log, 0.0, 1.0)

    def gene(name: str) -> np.ndarray:
        if name not in table.columns:
            return np.full(n, np.nan)
        return flag(table, name, log)

    g = {name: gene(name) for name in ALL_GENES}
    x, b, m_, w = model_variables(
        numeric(table, "HB", log, 2.0, 25.0), numeric(table, "PLT", log, 0.0, 3000.0),
        numeric(table, "BM_BLAST", log, 0.0, 100.0),
        cyto_ordinal(table["CYTO_IPSSR"], log, "CYTO_IPSSR"),
        flag(table, "del5q", log), flag(table, "del7_7q", log), flag(table, "del17_17p", log),
        flag(table, "complex", log), tp53_n, vaf, flag(table, "TP53loh", log), g)
    return _score_variables(ids, x, {"best": b, "mean": m_, "worst": w}, log)


def calculator_output(result: ScoreResult) -> pd.DataFrame:
    """The result in the authors' column names (IPSSMscore_best ... IPSSMcat_worst, IPSSMscore,
    IPSSMcat, Comment), one row per patient, ``ID`` first."""
    v = result.values
    out = pd.DataFrame({"ID": v.index})
    for s in SCENARIOS:
        out[f"IPSSMscore_{s}"] = v[f"score_{s}"].to_numpy()
    for s in SCENARIOS:
        out[f"IPSSMcat_{s}"] = v[f"category_{s}"].to_numpy()
    out["IPSSMscore"] = v["value"].to_numpy()
    out["IPSSMcat"] = v["category"].to_numpy()
    out["Comment"] = v["comment"].to_numpy()
    return out
