"""Benchmark: federated Cox PH on the real MDS IPSS-M cohort (10 sites) against pooled lifelines.

Usage: ``.venv/bin/python benchmarks/bench_cox.py [--data ../shared/data] [--sites 10]``.
Prints markdown tables: rounds, wall time of the federated fit (through the test transport
``LocalSumFederation`` for now; the site cache is emptied before each fit so that each fit pays
for building its design matrices once), pooled lifelines time, their ratio and the largest
relative coefficient / SE difference; the numbers each site returns per round (first round,
later rounds, against the layout of ``cox_risk_set_sums@1``, which sent full ``p x p`` blocks
at every grid time in every round); and the Schoenfeld proportional-hazards test against
lifelines' ``proportional_hazard_test`` on the pooled rows.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter
from lifelines.statistics import proportional_hazard_test

from hemafed.analytics.cox import FederatedCoxPH
from hemafed.analytics.cox_cache import COX_SITE_CACHE
from hemafed.cohort.validate import validate_cohort
from hemafed.federation.local import LocalSumFederation

GENES = ("TP53", "SF3B1", "ASXL1", "RUNX1", "SRSF2", "EZH2", "U2AF1", "DNMT3A", "TET2")
CLINICAL = {"AGE": "age", "HB": "hb", "PLT": "plt", "BM_BLAST": "bm_blast", "ANC": "anc",
            "SEX": "sex", "complex": "complex"}


def load(root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    clin = pd.read_csv(root / "mds-ipssm-cohort" / "df_clinical.tsv", sep="\t")
    mut = pd.read_csv(root / "mds-ipssm-cohort" / "df_mut.tsv", sep="\t").set_index("ID")
    df = clin[["ID", *CLINICAL, "OS_YEARS", "OS_STATUS"]].rename(columns=CLINICAL)
    df = df.rename(columns={"ID": "patient_id"}).assign(disease="MDS")
    df["os_time"] = np.round(df.pop("OS_YEARS") * 365.25) / 365.25
    df["os_status"] = df.pop("OS_STATUS")
    df["complex"] = df["complex"].map({"complex": 1, "non-complex": 0})
    df = df.dropna().reset_index(drop=True)
    df = df[df["os_time"] > 0].reset_index(drop=True)
    genes = mut.reindex(df["patient_id"])[list(GENES)].fillna(0).astype(int)
    return df, genes.set_axis(df.index)


def sites(df: pd.DataFrame, genes: pd.DataFrame, n_sites: int, seed: int = 1) -> list:
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.ones(n_sites) * 2)
    order = np.argsort(df["age"].to_numpy() + rng.normal(0, 8, len(df)))
    out = []
    for idx in np.split(order, (np.cumsum(weights)[:-1] * len(df)).astype(int)):
        part = df.iloc[np.sort(idx)].assign(panel="myeloid")
        g = genes.loc[part.index]
        rows, cols = np.nonzero(g.to_numpy())
        muts = pd.DataFrame({"patient_id": part["patient_id"].to_numpy()[rows],
                             "gene": np.array(GENES)[cols]})
        out.append(validate_cohort(part.reset_index(drop=True), muts, {"myeloid": GENES}))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--sites", type=int, default=10)
    args = ap.parse_args()
    df, genes = load(args.data)
    fed = LocalSumFederation(sites(df, genes, args.sites))
    terms = ["age", "hb", "plt", "bm_blast", "anc", "sex", "complex", *[f"gene:{g}" for g in GENES]]
    print("| ties | covariates | patients | events | rounds | federated s | pooled lifelines s "
          "| ratio | C-index fed / pooled | max rel diff coef | max rel diff se |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    pooled = df[["os_time", "os_status", "age", "hb", "plt", "bm_blast", "anc"]].copy()
    pooled["sex[F]"] = (df["sex"] == "F").astype(float)
    pooled["complex"] = df["complex"].astype(float)
    for g in GENES:
        pooled[f"gene:{g}"] = genes[g].astype(float)
    sizes, fits = [], {}
    for ties in ("efron", "breslow"):
        COX_SITE_CACHE.clear()
        t0 = time.perf_counter()
        cph = FederatedCoxPH(ties=ties).fit(fed, "os_time", "os_status", terms)
        fed_s = time.perf_counter() - t0
        fits[ties] = cph
        if ties == "efron":
            t0 = time.perf_counter()
            ref = CoxPHFitter().fit(pooled, "os_time", "os_status",
                                    fit_options={"precision": 1e-14, "r_precision": 1e-15})
            ref_s = time.perf_counter() - t0
            dc = np.max(np.abs(cph.params_.to_numpy() / ref.params_.to_numpy() - 1))
            ds = np.max(np.abs(cph.standard_errors_.to_numpy() / ref.standard_errors_.to_numpy() - 1))
            cref = f"{ref.concordance_index_:.4f}"
            diffs = f"{dc:.1e} | {ds:.1e}"
        else:
            ref_s, cref, diffs = float("nan"), "n/a", "n/a (lifelines: Efron only) | n/a"
        print(f"| {ties} | {cph.spec.width} | {cph.n_} | {cph.events_} | {cph.rounds} | "
              f"{fed_s:.2f} | {ref_s:.2f} | {fed_s / ref_s:.1f} | "
              f"{cph.concordance_index_:.4f} / {cref} | {diffs} |")
        m, p = len(cph._grid), cph.spec.width
        old = m * (2 + 2 * p + p * p) + 2 + (m * (1 + p + p * p) if ties == "efron" else 0)
        sizes.append((ties, m, old, cph.numbers_per_round_[0], cph.numbers_per_round_[-1]))
    print()
    print("| ties | grid times | numbers per site reply, v1 (every round) | v2 first round "
          "| v2 later rounds | later / v1 |")
    print("|---|---|---|---|---|---|")
    for ties, m, old, first, later in sizes:
        print(f"| {ties} | {m} | {old} ({old * 8 / 1e6:.2f} MB) | {first} ({first * 8 / 1e6:.2f} MB)"
              f" | {later} ({later * 8 / 1e6:.2f} MB) | {later / old:.2f} |")
    print()
    print("| PH test transform | federated s | lifelines s | max rel diff (statistic, p) |")
    print("|---|---|---|---|")
    for tt in ("km", "identity", "rank"):
        t0 = time.perf_counter()
        ours = fits["efron"].proportional_hazard_test(tt)
        ours_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        theirs = proportional_hazard_test(ref, pooled, time_transform=tt).summary.loc[ours.index]
        ref_s = time.perf_counter() - t0
        diff = np.max(np.abs(ours[["test_statistic", "p"]].to_numpy()
                             / theirs[["test_statistic", "p"]].to_numpy() - 1))
        note = " (tied event times: mid-ranks vs lifelines' row-order ranks)" if tt == "rank" else ""
        print(f"| {tt} | {ours_s:.3f} | {ref_s:.2f} | {diff:.1e}{note} |")


if __name__ == "__main__":
    main()
