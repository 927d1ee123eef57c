"""Seeded virtual demo cohorts for MDS, AML, multiple myeloma and sickle cell disease.

:func:`generate` draws realistic but entirely synthetic patients from published summary statistics:
marginal frequencies of mutations, cytogenetic classes and blood counts, the best-known correlations
between them, and survival from a proportional-hazards model whose hazard ratios approximate the
published prognostic models. No real patient is involved; identifiers look like ``DEMO-MDS-000123``.

Sources (each disease's constants below name the table they come from):

- MDS: Bernard E et al., *Molecular International Prognostic Scoring System for Myelodysplastic
  Syndromes*, NEJM Evidence 2022 (IPSS-M cohort, n=2,957: gene frequencies, IPSS-M weights and median
  survival per risk group); Greenberg PL et al., *Revised International Prognostic Scoring System for
  Myelodysplastic Syndromes*, Blood 2012 (IPSS-R cytogenetic category frequencies, blood counts);
  Schanz J et al., JCO 2012 (cytogenetic risk groups).
- AML: Papaemmanuil E et al., *Genomic Classification and Prognosis in Acute Myeloid Leukemia*, NEJM
  2016; Tazi Y et al., *Unified classification and risk-stratification in AML*, Nat Commun 2022
  (mutation and cytogenetic frequencies); Döhner H et al., ELN 2017 recommendations, Blood 2017.
- MM: Palumbo A et al., *Revised International Staging System for Multiple Myeloma*, JCO 2015
  (ISS stages, FISH del(17p) ~10%, t(4;14) ~12%, t(14;16) ~3%, high LDH ~12%, R-ISS survival).
- SCD: genotype mix of the Cooperative Study of Sickle Cell Disease (Gaston 1984); STOP trial
  (Adams RJ et al., NEJM 1998) for transcranial Doppler velocities; Gladwin MT et al., *Pulmonary
  hypertension as a risk factor for death in patients with sickle cell disease*, NEJM 2004
  (tricuspid regurgitant velocity >= 2.5 m/s in ~30% of adults, and its mortality risk).

The cohort is returned validated by :func:`hemafed.cohort.validate.validate_cohort`.

>>> c = generate("MDS", 200, seed=1)
>>> len(c), c.patients["patient_id"].iloc[0]
(200, 'DEMO-MDS-000000')
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd

from hemafed.cohort.model import Cohort
from hemafed.cohort.schema import DISEASE_CODES
from hemafed.cohort.validate import validate_cohort
from hemafed.errors import InvalidInput

# ---------------------------------------------------------------------------------------------
# Published frequency tables (fractions of patients with >= 1 mutation in the gene)

MDS_GENE_FREQUENCIES: dict[str, float] = {
    # Bernard et al. NEJM Evid 2022, IPSS-M cohort (n=2,957), Figure 1 / Table S-genes.
    "TET2": 0.31, "ASXL1": 0.25, "SF3B1": 0.24, "DNMT3A": 0.16, "SRSF2": 0.16, "RUNX1": 0.13,
    "TP53": 0.11, "STAG2": 0.09, "U2AF1": 0.09, "EZH2": 0.06, "ZRSR2": 0.06, "BCOR": 0.05,
    "CBL": 0.05, "IDH2": 0.04, "NRAS": 0.036, "CUX1": 0.036, "NF1": 0.033, "SETBP1": 0.033,
    "PHF6": 0.033, "DDX41": 0.03, "KRAS": 0.027, "IDH1": 0.026, "JAK2": 0.025, "MLL_PTD": 0.025,
    "ETNK1": 0.023, "ETV6": 0.022, "MPL": 0.022, "CEBPA": 0.02, "PTPN11": 0.018, "PPM1D": 0.018,
    "WT1": 0.015, "GATA2": 0.012, "NPM1": 0.01, "FLT3": 0.01,
}
"""MDS gene mutation frequencies (Bernard et al. 2022)."""

MDS_CYTO_FREQUENCIES: dict[str, float] = {
    # Greenberg et al. Blood 2012 (IPSS-R, n=7,012), cytogenetic risk categories.
    "Very Good": 0.04, "Good": 0.72, "Intermediate": 0.13, "Poor": 0.04, "Very Poor": 0.07,
}
"""IPSS-R cytogenetic category frequencies (Greenberg et al. 2012)."""

MDS_MEDIAN_OS_BY_IPSSM: dict[str, float] = {
    # Bernard et al. 2022, median overall survival (years) per IPSS-M risk category.
    "Very Low": 10.6, "Low": 6.0, "Moderate Low": 4.6, "Moderate High": 2.8, "High": 1.7,
    "Very High": 1.0,
}
"""Published median OS (years) per IPSS-M category; the generator is calibrated towards these."""

AML_GENE_FREQUENCIES: dict[str, float] = {
    # Papaemmanuil et al. NEJM 2016 (n=1,540) / Tazi et al. Nat Commun 2022 (n=3,653).
    "NPM1": 0.27, "DNMT3A": 0.25, "FLT3_ITD": 0.20, "NRAS": 0.19, "TET2": 0.12, "RUNX1": 0.10,
    "IDH2": 0.10, "ASXL1": 0.10, "IDH1": 0.08, "TP53": 0.07, "FLT3_TKD": 0.07, "PTPN11": 0.07,
    "SRSF2": 0.07, "STAG2": 0.06, "CEBPA": 0.06, "WT1": 0.06, "KIT": 0.05, "KRAS": 0.05,
    "BCOR": 0.04, "EZH2": 0.03, "GATA2": 0.03, "U2AF1": 0.03, "SF3B1": 0.03, "CBL": 0.03,
}
"""AML gene mutation frequencies (Papaemmanuil 2016 / Tazi 2022)."""

AML_CYTO_FREQUENCIES: dict[str, float] = {
    # Papaemmanuil 2016 / Grimwade 2010: mutually exclusive cytogenetic classes.
    "t_15_17": 0.04, "t_8_21": 0.05, "inv_16": 0.05, "t_9_11": 0.02, "t_v_11": 0.02,
    "t_6_9": 0.01, "inv_3": 0.015, "t_9_22": 0.01, "complex": 0.12, "other": 0.215, "normal": 0.45,
}
"""AML cytogenetic class frequencies."""

MM_FREQUENCIES: dict[str, float] = {
    # Palumbo et al. JCO 2015 (n=3,060): ISS stage, FISH abnormalities and LDH above ULN.
    "ISS I": 0.35, "ISS II": 0.37, "ISS III": 0.28, "del17_17p": 0.10, "t_4_14": 0.12,
    "t_14_16": 0.03, "ldh_high": 0.12, "gain1q": 0.35,
}
"""Multiple myeloma staging and FISH frequencies (Palumbo et al. 2015)."""

MM_GENE_FREQUENCIES: dict[str, float] = {
    # Walker BA et al., JCO 2015 (myeloma exome drivers).
    "KRAS": 0.21, "NRAS": 0.19, "TENT5C": 0.09, "DIS3": 0.09, "TRAF3": 0.07, "TP53": 0.06,
    "BRAF": 0.06,
}

SCD_GENOTYPE_FREQUENCIES: dict[str, float] = {
    # Cooperative Study of Sickle Cell Disease (Gaston et al. 1984, US cohort).
    "HbSS": 0.65, "HbSC": 0.24, "HbSbeta+": 0.06, "HbSbeta0": 0.04, "other": 0.01,
}
SCD_TRV_HIGH_ADULTS = 0.30
"""Fraction of adults with TRV >= 2.5 m/s (Gladwin et al. NEJM 2004: 32%)."""

_PROTEIN_HOTSPOTS: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {
    "SF3B1": (("p.K700E", "p.K666N", "p.R625C", "p.H662Q", "p.K666T"), (.5, .15, .15, .1, .1)),
    "SRSF2": (("p.P95H", "p.P95L", "p.P95R", "p.P95_R102del"), (.5, .25, .15, .1)),
    "U2AF1": (("p.S34F", "p.S34Y", "p.Q157P", "p.Q157R"), (.45, .15, .25, .15)),
    "IDH1": (("p.R132H", "p.R132C", "p.R132S"), (.5, .4, .1)),
    "IDH2": (("p.R140Q", "p.R172K", "p.R140W"), (.75, .2, .05)),
    "NRAS": (("p.G12D", "p.G13D", "p.Q61K", "p.G12V", "p.Q61R"), (.3, .25, .2, .15, .1)),
    "KRAS": (("p.G12D", "p.G12V", "p.G13D", "p.Q61H"), (.4, .25, .2, .15)),
    "JAK2": (("p.V617F",), (1.0,)),
    "NPM1": (("p.W288fs*12",), (1.0,)),
    "DNMT3A": (("p.R882H", "p.R882C", "p.R635W", "p.W860R"), (.45, .3, .15, .1)),
    "TP53": (("p.R248Q", "p.R273H", "p.R175H", "p.Y220C", "p.R248W", "p.M237I", "p.C176F"),
             (.2, .2, .15, .15, .1, .1, .1)),
    "KIT": (("p.D816V", "p.N822K"), (.6, .4)),
    "FLT3_TKD": (("p.D835Y", "p.D835H"), (.6, .4)),
    "BRAF": (("p.V600E", "p.G469A", "p.D594N"), (.4, .3, .3)),
    "MPL": (("p.W515L", "p.W515K"), (.7, .3)),
    "CBL": (("p.C404Y", "p.Y371H", "p.C419Y", "p.R420Q"), (.25, .25, .25, .25)),
    "PTPN11": (("p.E76K", "p.A72V", "p.D61Y"), (.4, .3, .3)),
    "SETBP1": (("p.D868N", "p.G870S"), (.5, .5)),
    "GNB1": (("p.K57E",), (1.0,)),
}
_EVENT_EFFECTS = {"MLL_PTD": ("PTD", "PTD"), "FLT3_ITD": ("ITD", "p.?"), "KMT2A_PTD": ("PTD", "PTD")}
_NONE = np.array(None, dtype=object)
_PROTEIN_LENGTH = 1200  # for random truncating changes; a plausible codon range for most drivers


# ---------------------------------------------------------------------------------------------
# Small pure helpers


_GH_NODES, _GH_WEIGHTS = np.polynomial.hermite_e.hermegauss(40)
_GH_WEIGHTS = _GH_WEIGHTS / _GH_WEIGHTS.sum()


def _expit(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _calibrated_intercept(p: float, slope: float, eligible: np.ndarray | None = None) -> float:
    """Intercept a with E_z[eligible(z) * expit(a + slope z)] = p for z ~ N(0, 1) (bisection).

    ``eligible`` is the probability of being eligible at each Gauss-Hermite node (default 1).
    """
    w = _GH_WEIGHTS * (eligible if eligible is not None else 1.0)
    lo, hi = -20.0, 20.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if float(np.sum(w * _expit(mid + slope * _GH_NODES))) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _latent_binary(rng: np.random.Generator, z: np.ndarray, p: float, slope: float) -> np.ndarray:
    a = _calibrated_intercept(p, slope)
    return rng.random(len(z)) < _expit(a + slope * z)


def _categorical(rng: np.random.Generator, probs: np.ndarray, labels: list[str]) -> np.ndarray:
    """One draw per row of ``probs`` (n x k, rows summing to 1)."""
    cum = np.cumsum(probs, axis=1)
    u = rng.random(len(probs))[:, None]
    idx = np.minimum((u > cum).sum(axis=1), len(labels) - 1)
    return np.asarray(labels, dtype=object)[idx]


def _weibull_times(rng: np.random.Generator, median: float, shape: float,
                   lp: np.ndarray) -> np.ndarray:
    """Weibull proportional-hazards times: S(t) = exp(-ln2 (t/median)^shape exp(lp))."""
    e = rng.exponential(size=len(lp))
    return median * (e / (np.log(2) * np.exp(lp))) ** (1.0 / shape)


def _censoring(rng: np.random.Generator, n: int, low: float, high: float) -> np.ndarray:
    """Administrative censoring: uniform staggered entry between ``low`` and ``high`` years."""
    return rng.uniform(low, high, size=n)


def _ids(disease: str, n: int) -> list[str]:
    return [f"DEMO-{disease}-{i:06d}" for i in range(n)]


def _base(disease: str, n: int, rng: np.random.Generator, male: float, age_mean: float,
          age_sd: float, age_low: float, age_high: float) -> dict[str, object]:
    icd, mondo, _ = DISEASE_CODES[disease]
    return {
        "patient_id": _ids(disease, n),
        "disease": np.full(n, disease, dtype=object),
        "sex": np.where(rng.random(n) < male, "M", "F"),
        "age": np.round(np.clip(rng.normal(age_mean, age_sd, n), age_low, age_high), 1),
        "icd10": np.full(n, icd, dtype=object),
        "mondo": np.full(n, mondo, dtype=object),
    }


def _mutation_rows(rng: np.random.Generator, ids: np.ndarray,
                   mutated: Mapping[str, np.ndarray], second_hit: Mapping[str, float],
                   vaf_mean: Mapping[str, float]) -> pd.DataFrame:
    """Long mutation table: one row per variant, plausible VAF, protein change and effect."""
    frames = []
    for gene, mask in mutated.items():
        rows = np.flatnonzero(mask)
        if not len(rows):
            continue
        extra = rows[rng.random(len(rows)) < second_hit.get(gene, 0.0)]
        rows = np.concatenate([rows, extra])
        k = len(rows)
        m = vaf_mean.get(gene, 0.32)
        vaf = np.round(np.clip(rng.beta(8 * m, 8 * (1 - m), k), 0.02, 0.98), 3)
        if gene in _EVENT_EFFECTS:
            effect = np.full(k, _EVENT_EFFECTS[gene][0], dtype=object)
            protein = np.full(k, _EVENT_EFFECTS[gene][1], dtype=object)
        elif gene in _PROTEIN_HOTSPOTS:
            names, probs = _PROTEIN_HOTSPOTS[gene]
            protein = rng.choice(np.asarray(names, dtype=object), size=k, p=np.asarray(probs))
            effect = np.where(np.char.find(protein.astype(str), "fs") >= 0, "frameshift_variant",
                              np.where(np.char.find(protein.astype(str), "del") >= 0,
                                       "inframe_codon_loss", "non_synonymous_codon")).astype(object)
        else:
            codon = rng.integers(20, _PROTEIN_LENGTH, k)
            kind = rng.random(k)
            aa = rng.choice(np.array(list("RQEWKSYLC"), dtype=object), size=k)
            frame = np.array([f"p.{a}{c}fs*{(c % 23) + 2}" for a, c in zip(aa, codon, strict=True)],
                             dtype=object)
            stop = np.array([f"p.{a}{c}*" for a, c in zip(aa, codon, strict=True)], dtype=object)
            miss = np.array([f"p.{a}{c}P" for a, c in zip(aa, codon, strict=True)], dtype=object)
            protein = np.where(kind < 0.45, frame, np.where(kind < 0.8, stop, miss))
            effect = np.where(kind < 0.45, "frameshift_variant",
                              np.where(kind < 0.8, "stop_gained", "non_synonymous_codon"))
        frames.append(pd.DataFrame({"patient_id": ids[rows], "gene": gene, "vaf": vaf,
                                    "protein_change": protein, "effect": effect}))
    if not frames:
        return pd.DataFrame({"patient_id": [], "gene": []})
    return pd.concat(frames, ignore_index=True)


# ---------------------------------------------------------------------------------------------
# MDS

_IPSSM_WEIGHTS: dict[str, float] = {
    # Bernard et al. 2022, IPSS-M main-effect gene weights (log hazard ratio for LFS).
    "ASXL1": 0.213, "CBL": 0.248, "DNMT3A": 0.221, "ETV6": 0.391, "EZH2": 0.27, "FLT3": 0.798,
    "IDH2": 0.379, "KRAS": 0.202, "MLL_PTD": 0.798, "NPM1": 0.43, "NRAS": 0.417,
    "RUNX1": 0.423, "SRSF2": 0.233, "U2AF1": 0.247, "SF3B1": -0.0794,
}
_IPSSM_RESIDUAL = ("BCOR", "CEBPA", "ETNK1", "GATA2", "IDH1", "NF1", "PHF6", "PPM1D", "PTPN11",
                   "SETBP1", "STAG2", "WT1")
_CYTO_ORDER = list(MDS_CYTO_FREQUENCIES)


def _mds(n: int, rng: np.random.Generator) -> tuple[dict[str, object], pd.DataFrame, str]:
    cols = _base("MDS", n, rng, male=0.60, age_mean=71.0, age_sd=11.0, age_low=18.0,
                 age_high=100.0)
    ids = np.asarray(cols["patient_id"], dtype=object)
    z = rng.standard_normal(n)  # latent disease aggressiveness shared by genes, blasts, counts
    mut: dict[str, np.ndarray] = {}
    # Splicing factors are nearly mutually exclusive: draw them in turn among the not-yet-mutated.
    spliced = np.zeros(n, dtype=bool)
    eligible_weight = np.ones_like(_GH_NODES)
    for gene, slope in (("SF3B1", -0.9), ("SRSF2", 0.6), ("U2AF1", 0.3), ("ZRSR2", 0.0)):
        p = MDS_GENE_FREQUENCIES[gene]
        a = _calibrated_intercept(p, slope, eligible_weight)
        hit = ~spliced & (rng.random(n) < _expit(a + slope * z))
        mut[gene] = hit
        spliced |= hit
        eligible_weight = eligible_weight * (1 - _expit(a + slope * _GH_NODES))
    slopes = {"TP53": 1.4, "ASXL1": 0.6, "RUNX1": 0.7, "EZH2": 0.5, "STAG2": 0.6, "BCOR": 0.5,
              "NRAS": 0.6, "KRAS": 0.5, "ETV6": 0.6, "FLT3": 0.8, "NPM1": 0.9, "MLL_PTD": 0.8,
              "IDH2": 0.5, "CBL": 0.4, "SETBP1": 0.5, "WT1": 0.8, "TET2": 0.0, "DNMT3A": 0.1,
              "PPM1D": 0.3}
    for gene, p in MDS_GENE_FREQUENCIES.items():
        if gene not in mut:
            mut[gene] = _latent_binary(rng, z, p, slopes.get(gene, 0.3))
    tp53 = mut["TP53"]
    # Cytogenetics conditional on TP53 (TP53 goes with complex / Very Poor karyotypes), keeping
    # the published marginal: p(cat | wild-type) = (p(cat) - f p(cat | TP53)) / (1 - f).
    f = MDS_GENE_FREQUENCIES["TP53"]
    marg = np.array(list(MDS_CYTO_FREQUENCIES.values()))
    given_tp53 = np.array([0.0, 0.2, 0.1, 0.1, 0.6])
    given_wt = np.clip((marg - f * given_tp53) / (1 - f), 0.001, None)
    given_wt = given_wt / given_wt.sum()
    probs = np.where(tp53[:, None], given_tp53[None, :], given_wt[None, :])
    cyto = _categorical(rng, probs, _CYTO_ORDER)
    cat = pd.Series(cyto).map({c: i for i, c in enumerate(_CYTO_ORDER)}).to_numpy(dtype=float)
    u = rng.random((4, n))
    complex_ = (cyto == "Very Poor") | ((cyto == "Poor") & (u[0] < 0.4))
    del5q = u[1] < np.select([cyto == "Good", cyto == "Intermediate", cyto == "Poor",
                              cyto == "Very Poor"], [0.08, 0.05, 0.3, 0.75], 0.0)
    del7 = u[2] < np.select([cyto == "Intermediate", cyto == "Poor", cyto == "Very Poor"],
                            [0.2, 0.6, 0.55], 0.0)
    del17 = u[3] < np.where(cyto == "Very Poor", np.where(tp53, 0.45, 0.15), 0.0)
    # del(5q) MDS rarely carries SF3B1-independent high-risk lesions; keep del(5q) isolated in Good.
    blasts = np.clip(np.exp(1.5 + 1.0 * (0.65 * z + 0.76 * rng.standard_normal(n))) - 1.5,
                     0.0, 19.5)
    blasts = np.round(np.maximum(blasts, 0.0) * 2) / 2
    pb = np.where((blasts >= 5) & (rng.random(n) < 0.45), np.round(rng.uniform(0, 0.4 * blasts), 0),
                  0.0)
    rs = np.where(mut["SF3B1"], np.round(rng.uniform(15, 75, n)),
                  np.where(rng.random(n) < 0.15, np.round(rng.uniform(1, 14, n)), 0.0))
    hb = np.round(np.clip(rng.normal(9.9 - 0.45 * z - 0.6 * mut["SF3B1"] + 0.2 * del5q, 1.8),
                          4.0, 16.6), 1)
    plt = np.round(np.clip(np.exp(rng.normal(4.85 - 0.35 * z + 0.5 * del5q, 0.85)), 3, 1450))
    anc = np.round(np.clip(np.exp(rng.normal(0.62 - 0.2 * z, 0.8)), 0.02, 12), 2)
    mono = np.round(np.clip(np.exp(rng.normal(-1.1 + 0.3 * mut["SRSF2"], 0.9)), 0.0, 6.4), 2)
    wbc = np.round(anc + mono + np.clip(rng.normal(1.3, 0.5, n), 0.3, None), 1)
    iso5q = del5q & (cyto == "Good") & (blasts < 5)
    who = np.select(
        [blasts >= 10, blasts >= 5, iso5q, rs >= 15],
        ["MDS-EB2", "MDS-EB1", "MDS-del5q", np.where(rng.random(n) < 0.55, "MDS-RS-SLD",
                                                      "MDS-RS-MLD")],
        np.where(rng.random(n) < 0.7, "MDS-MLD", "MDS-SLD"))
    # IPSS-M-like linear predictor (log hazard), Bernard 2022 weights.
    lp = (0.0352 * np.minimum(blasts, 20) - 0.171 * np.minimum(hb, 20)
          - 0.00222 * np.minimum(plt, 250) + 0.287 * cat + 1.18 * tp53 * (1 + 0.3 * complex_)
          + 0.504 * (mut["SF3B1"] & del5q))
    for gene, w in _IPSSM_WEIGHTS.items():
        lp = lp + w * mut[gene]
    resid = sum(mut[g].astype(int) for g in _IPSSM_RESIDUAL)
    lp = lp + 0.231 * np.minimum(resid, 2)
    lp = lp - float(np.mean(lp))
    age_eff = 0.035 * (cols["age"] - 70.0)  # type: ignore[operator]
    # AML transformation and non-leukaemic death compete; death follows transformation quickly.
    t_aml = _weibull_times(rng, 28.0, 0.9, 1.45 * lp)
    t_death = _weibull_times(rng, 6.5, 1.1, 0.75 * lp + age_eff)
    t_post = rng.exponential(0.6, n)
    censor = _censoring(rng, n, 0.5, 12.0)
    transformed = t_aml < t_death
    death = np.where(transformed, t_aml + t_post, t_death)
    os_time = np.minimum(death, censor)
    amlt_time = np.minimum(t_aml, os_time)
    amlt_status = transformed & (t_aml <= censor)
    # Treatment: HMA and transplant for higher risk, lenalidomide for del(5q) lower risk.
    high = lp > np.quantile(lp, 0.6)
    hma = rng.random(n) < np.where(high, 0.4, 0.06)
    transplant = rng.random(n) < np.where(high & (cols["age"] < 70), 0.35, 0.02)  # type: ignore[operator]
    len_ = rng.random(n) < np.where(del5q & ~high, 0.55, 0.02)
    chemo = rng.random(n) < np.where(high & (blasts >= 10), 0.08, 0.005)
    response = np.where(hma | len_, _categorical(
        rng, np.tile([0.15, 0.0, 0.05, 0.25, 0.3, 0.25, 0, 0, 0], (n, 1)),
        ["CR", "CRi", "PR", "HI", "SD", "PD", "VGPR", "sCR", "NR"]), _NONE)
    response = np.where(len_ & ~hma & (rng.random(n) < 0.6), "HI", response)
    # Very small fraction of karyotypes written out in ISCN; the flags are authoritative.
    sexchr = np.where(cols["sex"] == "M", "xy", "xx")
    kary = np.select(
        [complex_, del5q & del7, del5q, del7, cyto == "Very Good"],
        [np.char.add(np.char.add("44,", sexchr.astype(str)), ",-5,-7,del(17)(p11),+mar"),
         np.char.add(np.char.add("45,", sexchr.astype(str)), ",del(5)(q13q33),-7"),
         np.char.add(np.char.add("46,", sexchr.astype(str)), ",del(5)(q13q33)"),
         np.char.add(np.char.add("45,", sexchr.astype(str)), ",-7"),
         np.char.add("45,", np.where(cols["sex"] == "M", "x,-y", "xx,del(11)(q14)"))],
        np.char.add("46,", sexchr.astype(str)))
    cols.update({
        "who2016": who, "secondary": rng.random(n) < 0.08, "hb": hb, "plt": plt, "anc": anc,
        "wbc": wbc, "mono": mono, "bm_blast": blasts, "pb_blast": pb, "ring_sideroblasts": rs,
        "karyotype": kary, "cyto_ipssr": cyto, "del5q": del5q, "del7_7q": del7,
        "del17_17p": del17, "complex": complex_, "hma": hma, "lenalidomide": len_,
        "chemotherapy": chemo, "transplant": transplant, "response": response,
        "os_time": np.round(os_time, 4), "os_status": death <= censor,
        "lfs_time": np.round(amlt_time, 4), "lfs_status": amlt_status | (death <= censor),
        "amlt_time": np.round(amlt_time, 4), "amlt_status": amlt_status,
    })
    # after rounding, keep amlt/lfs <= os exactly
    cols["amlt_time"] = np.minimum(cols["amlt_time"], cols["os_time"])  # type: ignore[call-overload]
    cols["lfs_time"] = cols["amlt_time"]
    second = {"TET2": 0.45, "TP53": 0.6, "ASXL1": 0.05, "DNMT3A": 0.1}
    vaf = {"SF3B1": 0.38, "TP53": 0.4, "SRSF2": 0.4, "U2AF1": 0.38, "TET2": 0.35, "NRAS": 0.15,
           "KRAS": 0.15, "CBL": 0.2, "FLT3": 0.15, "MLL_PTD": 0.3}
    muts = _mutation_rows(rng, ids, mut, second, vaf)
    return cols, muts, "demo-myeloid-mds"


# ---------------------------------------------------------------------------------------------
# AML

_AML_CYTO_FLAGS = ("t_15_17", "t_8_21", "inv_16", "t_9_11", "t_v_11", "t_6_9", "inv_3", "t_9_22")
_AML_KARYOTYPE = {
    "t_15_17": ",t(15;17)(q24;q21)", "t_8_21": ",t(8;21)(q22;q22)", "inv_16": ",inv(16)(p13q22)",
    "t_9_11": ",t(9;11)(p21;q23)", "t_v_11": ",t(11;19)(q23;p13.1)", "t_6_9": ",t(6;9)(p23;q34)",
    "inv_3": ",inv(3)(q21q26)", "t_9_22": ",t(9;22)(q34;q11)", "other": ",+8",
    "normal": "",
}


def _aml(n: int, rng: np.random.Generator) -> tuple[dict[str, object], pd.DataFrame, str]:
    cols = _base("AML", n, rng, male=0.55, age_mean=60.0, age_sd=15.0, age_low=18.0,
                 age_high=95.0)
    ids = np.asarray(cols["patient_id"], dtype=object)
    age = np.asarray(cols["age"], dtype=float)
    labels = list(AML_CYTO_FREQUENCIES)
    base = np.array(list(AML_CYTO_FREQUENCIES.values()))
    # complex karyotypes are more frequent with age: tilt, then renormalise
    tilt = np.exp(np.outer((age - 60) / 15, np.where(np.array(labels) == "complex", 0.5, 0.0)))
    probs = base[None, :] * tilt
    probs = probs / probs.sum(axis=1, keepdims=True)
    cyto = _categorical(rng, probs, labels)
    nk = cyto == "normal"
    cbf = (cyto == "t_8_21") | (cyto == "inv_16")
    cx = cyto == "complex"
    u = lambda: rng.random(n)  # noqa: E731 - local shorthand for a fresh uniform vector
    mut: dict[str, np.ndarray] = {}
    # NPM1 is a normal-karyotype disease; FLT3-ITD and DNMT3A co-occur with NPM1 (Papaemmanuil).
    mut["NPM1"] = u() < np.select([nk, cyto == "other", cbf | cx], [0.52, 0.12, 0.01], 0.05)
    mut["FLT3_ITD"] = u() < np.where(mut["NPM1"], 0.38, np.where(cyto == "t_15_17", 0.3, 0.12))
    mut["DNMT3A"] = u() < np.where(mut["NPM1"], 0.5, np.where(cbf, 0.02, 0.17))
    mut["TP53"] = u() < np.where(cx, 0.55, 0.008)
    mut["KIT"] = u() < np.where(cbf, 0.3, 0.015)
    mut["CEBPA"] = u() < np.where(nk & ~mut["NPM1"], 0.2, 0.01)
    mut["RUNX1"] = u() < np.where(cbf | mut["NPM1"], 0.0, 0.15)
    mut["ASXL1"] = u() < np.where(mut["NPM1"] | cbf, 0.02, 0.14) * (1 + (age > 60))/1.5
    for gene, p in AML_GENE_FREQUENCIES.items():
        if gene not in mut:
            mut[gene] = rng.random(n) < p
    blasts = np.round(np.clip(rng.beta(3.0, 1.6, n) * 100, 20, 100), 0)
    blasts = np.where(cbf & (rng.random(n) < 0.1), np.round(rng.uniform(10, 19, n)), blasts)
    wbc = np.round(np.clip(np.exp(rng.normal(2.3 + 0.8 * mut["NPM1"] + 0.6 * mut["FLT3_ITD"],
                                             1.3)), 0.2, 450), 1)
    hb = np.round(np.clip(rng.normal(9.0, 1.7, n), 4.0, 15.5), 1)
    plt = np.round(np.clip(np.exp(rng.normal(3.9, 0.9, n)), 3, 900))
    minus5 = cx & (rng.random(n) < 0.6)
    minus7 = (cx & (rng.random(n) < 0.5)) | ((cyto == "other") & (rng.random(n) < 0.1))
    minus17 = cx & (rng.random(n) < np.where(mut["TP53"], 0.5, 0.15))
    monosomal = cx & (minus5 | minus7 | minus17) & (rng.random(n) < 0.7)
    favorable = (cyto == "t_15_17") | cbf | (mut["NPM1"] & ~mut["FLT3_ITD"]) | (
        mut["CEBPA"] & nk)
    adverse = ~favorable & (np.isin(cyto, ["t_6_9", "t_v_11", "t_9_22", "inv_3", "complex"])
                            | minus5 | minus7 | minus17 | mut["TP53"] | mut["RUNX1"]
                            | mut["ASXL1"])
    eln_lp = np.where(favorable, 0.0, np.where(adverse, 1.25, 0.6))
    eln_lp = np.where(cyto == "t_15_17", -0.8, eln_lp)
    lp = eln_lp + 0.035 * (age - 60) + 0.25 * np.log(wbc / 10) * (wbc > 10)
    intensive = age < 72
    chemo = rng.random(n) < np.where(intensive, 0.9, 0.25)
    hma = ~chemo & (rng.random(n) < 0.6)
    transplant = chemo & (rng.random(n) < np.where(adverse | ~favorable, 0.35, 0.1))
    lp = lp + 0.6 * ~(chemo | hma) - 0.25 * transplant
    t_death = _weibull_times(rng, 2.4, 0.85, lp - float(np.mean(lp)))
    censor = _censoring(rng, n, 0.5, 10.0)
    cr_p = np.where(favorable, 0.85, np.where(adverse, 0.45, 0.65)) * np.where(chemo, 1.0, 0.5)
    ur = rng.random(n)
    response = np.where(ur < cr_p, "CR", np.where(ur < cr_p + 0.08, "CRi", "NR"))
    response = np.where(chemo | hma, response, _NONE)
    relapse_t = np.minimum(_weibull_times(rng, 1.5, 1.0, lp - float(np.mean(lp))), t_death)
    os_time = np.round(np.minimum(t_death, censor), 4)
    rel_time = np.minimum(np.round(np.minimum(relapse_t, censor), 4), os_time)
    sexchr = np.where(cols["sex"] == "M", "XY", "XX").astype(str)
    suffix = np.array([_AML_KARYOTYPE.get(c, "") for c in cyto], dtype=object)
    kary = np.where(cx, np.char.add("44,", np.char.add(sexchr, ",-5,-7,+8,del(17)(p11)")),
                    np.char.add(np.char.add("46,", sexchr), suffix.astype(str)))
    cols.update({
        "who2016": np.where(mut["NPM1"], "AML with mutated NPM1",
                            np.where(cx, "AML-MRC", "AML-NOS")),
        "secondary": rng.random(n) < 0.15, "hb": hb, "plt": plt, "wbc": wbc,
        "bm_blast": blasts, "pb_blast": np.round(blasts * rng.uniform(0, 0.8, n)),
        "karyotype": kary, "del5q": minus5, "del7_7q": minus7, "del17_17p": minus17,
        "complex": cx, "monosomal": monosomal,
        **{flag: cyto == flag for flag in _AML_CYTO_FLAGS},
        "minus5": minus5, "minus7": minus7, "minus17": minus17,
        "hma": hma, "chemotherapy": chemo, "transplant": transplant, "response": response,
        "os_time": os_time, "os_status": t_death <= censor,
        "lfs_time": rel_time, "lfs_status": (relapse_t <= censor),
        "relapse_time": rel_time, "relapse_status": (relapse_t < t_death) & (relapse_t <= censor),
    })
    vaf = {"NPM1": 0.4, "FLT3_ITD": 0.25, "KIT": 0.3, "NRAS": 0.2, "KRAS": 0.2, "TP53": 0.45}
    muts = _mutation_rows(rng, ids, mut, {"CEBPA": 0.6, "TET2": 0.3, "TP53": 0.3}, vaf)
    return cols, muts, "demo-myeloid-aml"


# ---------------------------------------------------------------------------------------------
# Multiple myeloma


def _mm(n: int, rng: np.random.Generator) -> tuple[dict[str, object], pd.DataFrame, str]:
    cols = _base("MM", n, rng, male=0.56, age_mean=63.0, age_sd=9.5, age_low=30.0,
                 age_high=92.0)
    ids = np.asarray(cols["patient_id"], dtype=object)
    age = np.asarray(cols["age"], dtype=float)
    f = MM_FREQUENCIES
    iss = _categorical(rng, np.tile([f["ISS I"], f["ISS II"], f["ISS III"]], (n, 1)),
                       ["I", "II", "III"])
    # ISS: I b2m < 3.5 and albumin >= 3.5; III b2m >= 5.5; II otherwise.
    b2m = np.where(iss == "I", rng.uniform(1.2, 3.49, n),
                   np.where(iss == "III", 5.5 + rng.exponential(3.5, n), rng.uniform(2.0, 5.49, n)))
    alb = np.where(iss == "I", rng.uniform(3.5, 5.0, n), rng.normal(3.4, 0.5, n))
    ii_low_b2m = (iss == "II") & (b2m < 3.5)
    alb = np.where(ii_low_b2m, rng.uniform(2.2, 3.49, n), alb)
    alb = np.round(np.clip(alb, 1.5, 5.5), 1)
    b2m = np.round(b2m, 2)
    uln = rng.choice(np.array([225.0, 246.0, 250.0]), size=n)
    ldh_high = rng.random(n) < f["ldh_high"] * np.where(iss == "III", 1.6, 0.75)
    ldh = np.round(np.where(ldh_high, uln * rng.uniform(1.05, 3.0, n),
                            uln * rng.uniform(0.4, 0.99, n)))
    del17 = rng.random(n) < f["del17_17p"]
    t414 = rng.random(n) < f["t_4_14"]
    t1416 = ~t414 & (rng.random(n) < f["t_14_16"] / (1 - f["t_4_14"]))
    gain1q = rng.random(n) < np.where(t414, 0.6, 0.32)
    high_risk_ca = del17 | t414 | t1416
    riss = np.where((iss == "I") & ~high_risk_ca & ~ldh_high, 1,
                    np.where((iss == "III") & (high_risk_ca | ldh_high), 3, 2))
    transplant = (age < 66) & (rng.random(n) < 0.75)
    len_ = rng.random(n) < 0.7
    chemo = transplant | (rng.random(n) < 0.3)
    # Palumbo 2015: 5-year OS 82% / 62% / 40% for R-ISS I / II / III (Weibull PH, median ~8y).
    lp = np.select([riss == 1, riss == 2], [-0.8, 0.0], 0.85) + 0.03 * (age - 63) \
        - 0.3 * transplant
    t_death = _weibull_times(rng, 7.0, 1.1, lp)
    t_prog = np.minimum(_weibull_times(rng, 3.5, 1.2, 0.7 * lp), t_death)
    censor = _censoring(rng, n, 0.5, 9.0)
    os_time = np.round(np.minimum(t_death, censor), 4)
    response = _categorical(rng, np.tile([0.2, 0, 0.35, 0, 0.05, 0.05, 0.3, 0.05, 0], (n, 1)),
                            ["CR", "CRi", "PR", "HI", "SD", "PD", "VGPR", "sCR", "NR"])
    cols.update({
        "b2m": b2m, "albumin": alb, "ldh": ldh, "ldh_uln": uln, "del17_17p": del17,
        "t_4_14": t414, "t_14_16": t1416, "gain1q": gain1q, "lenalidomide": len_,
        "chemotherapy": chemo, "transplant": transplant, "response": response,
        "hb": np.round(np.clip(rng.normal(10.8 - 0.6 * (iss == "III"), 1.8), 5, 16.5), 1),
        "plt": np.round(np.clip(np.exp(rng.normal(5.3, 0.4, n)), 15, 700)),
        "wbc": np.round(np.clip(np.exp(rng.normal(1.7, 0.35, n)), 1.0, 25), 1),
        "os_time": os_time, "os_status": t_death <= censor,
        "relapse_time": np.minimum(np.round(np.minimum(t_prog, censor), 4), os_time),
        "relapse_status": (t_prog < t_death) & (t_prog <= censor),
    })
    mut = {g: rng.random(n) < p for g, p in MM_GENE_FREQUENCIES.items()}
    mut["TP53"] = mut["TP53"] | (del17 & (rng.random(n) < 0.3))
    muts = _mutation_rows(rng, ids, mut, {}, {"KRAS": 0.3, "NRAS": 0.3})
    return cols, muts, "demo-myeloma"


# ---------------------------------------------------------------------------------------------
# Sickle cell disease


def _scd(n: int, rng: np.random.Generator) -> tuple[dict[str, object], pd.DataFrame, None]:
    cols = _base("SCD", n, rng, male=0.48, age_mean=0.0, age_sd=1.0, age_low=0.0, age_high=1.0)
    age = np.round(np.clip(rng.gamma(2.2, 11.0, n), 1.0, 80.0), 1)
    cols["age"] = age
    cols["icd10"] = np.full(n, "D57.1", dtype=object)
    geno = _categorical(rng, np.tile(list(SCD_GENOTYPE_FREQUENCIES.values()), (n, 1)),
                        list(SCD_GENOTYPE_FREQUENCIES))
    severe = np.isin(geno, ["HbSS", "HbSbeta0"])
    cols["icd10"] = np.where(geno == "HbSC", "D57.2", np.where(severe, "D57.1", "D57.4"))
    hu = rng.random(n) < np.where(severe, 0.55, 0.1)
    hbf = np.round(np.clip(np.exp(rng.normal(np.where(severe, 1.8, 0.7) + 0.7 * hu, 0.6)),
                           0.3, 40), 1)
    hb = np.round(np.clip(rng.normal(np.where(severe, 8.4, 11.0) + 0.06 * hbf, 1.1), 4.0, 15.0), 1)
    child = (age >= 2) & (age <= 16)
    adult = age >= 18
    # STOP trial: TAMMV in HbSS children ~ mean 130-140 cm/s; ~7-10% >= 200 cm/s (abnormal).
    tcd = np.where(child & severe, np.round(np.clip(rng.normal(140 - 0.5 * hbf, 45), 40, 330)),
                   np.nan)
    # Gladwin 2004: TRV >= 2.5 m/s in ~30% of adults; higher in HbSS.
    trv = np.where(adult, np.round(np.clip(rng.normal(np.where(severe, 2.36, 2.2), 0.34), 1.2, 5.0),
                                   2), np.nan)
    ntp = np.where(adult, np.round(np.exp(rng.normal(4.3 + 1.5 * np.nan_to_num(trv - 2.3), 0.9))),
                   np.nan)
    crp = np.round(np.clip(np.exp(rng.normal(1.3, 1.0, n)), 0.1, 300), 1)
    malb = np.round(np.clip(np.exp(rng.normal(np.where(severe, 3.0, 2.4) + 0.02 * age, 1.2)),
                            1, 5000), 1)
    # Mortality: low in children, ~2%/year in adults, risk ratio ~5 for TRV >= 2.5 (Gladwin).
    lp = np.where(adult, 0.0, -1.8) + 1.6 * (np.nan_to_num(trv) >= 2.5) + 0.5 * severe \
        + 0.02 * np.maximum(age - 18, 0)
    t_death = _weibull_times(rng, 60.0, 1.0, lp)
    censor = _censoring(rng, n, 0.5, 10.0)
    cols.update({
        "scd_genotype": geno, "hbf": hbf, "hb": hb, "tcd_velocity": tcd, "trv": trv,
        "nt_probnp": ntp, "crp": crp, "microalbuminuria": malb, "hydroxyurea": hu,
        "transplant": severe & (age < 16) & (rng.random(n) < 0.03),
        "wbc": np.round(np.clip(rng.normal(np.where(severe, 10.5, 8.0), 2.5), 2, 30), 1),
        "plt": np.round(np.clip(rng.normal(380, 110, n), 80, 900)),
        "os_time": np.round(np.minimum(t_death, censor), 4), "os_status": t_death <= censor,
    })
    return cols, pd.DataFrame({"patient_id": [], "gene": []}), None


_GENERATORS: dict[str, Callable[[int, np.random.Generator],
                                tuple[dict[str, object], pd.DataFrame, str | None]]] = {
    "MDS": _mds, "AML": _aml, "MM": _mm, "SCD": _scd,
}


DAYS_PER_YEAR = 365.25


def _on_day_lattice(patients: pd.DataFrame) -> pd.DataFrame:
    """Round every time to whole days (as clinical records are kept), at least one day.

    Rounding is monotone, so ``amlt_time <= os_time`` and ``lfs = min(...)`` still hold, and
    federated survival analysis on the day grid is exact.
    """
    for col in [c for c in patients.columns if c.endswith("_time")]:
        days = np.maximum(np.round(patients[col].to_numpy(dtype=float) * DAYS_PER_YEAR), 1.0)
        patients[col] = np.where(np.isnan(patients[col].to_numpy(dtype=float)), np.nan,
                                 days / DAYS_PER_YEAR)
    return patients


def generate(disease: str, n: int, seed: int) -> Cohort:
    """A validated virtual cohort of ``n`` patients with ``disease`` ("MDS", "AML", "MM", "SCD").

    The same ``seed`` gives the same cohort; sequenced patients share one panel named after the
    disease (``demo-myeloid-mds``, ``demo-myeloid-aml``, ``demo-myeloma``; SCD has no panel).
    """
    if disease not in _GENERATORS:
        raise InvalidInput(f"generate: unknown disease {disease!r}; expected one of "
                           f"{', '.join(_GENERATORS)}")
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise InvalidInput(f"generate: n must be a positive integer, got {n!r}")
    rng = np.random.default_rng([int(seed), list(_GENERATORS).index(disease)])
    cols, muts, panel = _GENERATORS[disease](int(n), rng)
    patients = _on_day_lattice(pd.DataFrame(cols))
    panels: dict[str, tuple[str, ...]] = {}
    if panel is not None:
        genes = {"demo-myeloid-mds": MDS_GENE_FREQUENCIES,
                 "demo-myeloid-aml": AML_GENE_FREQUENCIES,
                 "demo-myeloma": MM_GENE_FREQUENCIES}[panel]
        panels[panel] = tuple(sorted(genes))
        patients["panel"] = panel
    for c in patients.columns:
        if patients[c].dtype == object:
            patients[c] = patients[c].where(pd.notna(patients[c]), None)
    return validate_cohort(patients, muts if len(muts) else None, panels,
                           source=f"demo {disease} cohort (seed {seed})")
