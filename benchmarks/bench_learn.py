"""Benchmark: federated boosting on the real MDS IPSS-M cohort split over heterogeneous sites.

Usage: ``.venv/bin/python benchmarks/bench_learn.py [--data ../shared/data] [--sites 10]
[--rounds 100] [--seed 0]``.

Answers the clinician's question on held-out patients of every site: does the federated Cox
boosting model beat what each hospital could train alone (difference with a paired bootstrap
95% CI), does it match the pooled model, and how does the IPSS-M (computed at the sites from
their own data) do on the same patients? Also times one boosting round at 10 and 86 simulated
sites through ``LocalSumFederation`` (the transport will change). Prints markdown.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
from lifelines.utils import concordance_index

from hemafed.cohort.partition import split_sites
from hemafed.cohort.public import read_mds_ipssm
from hemafed.federation.local import LocalSumFederation
from hemafed.learn.gbdt import FederatedGBDT, default_grid
from hemafed.learn.study import compare_site_federated_pooled, pool_cohorts

GENES = ("TP53", "MLL_PTD", "FLT3", "SF3B1", "NPM1", "RUNX1", "NRAS", "ETV6", "IDH2", "CBL",
         "EZH2", "U2AF1", "SRSF2", "DNMT3A", "ASXL1", "KRAS", "BCOR", "STAG2", "TET2", "ZRSR2")
FEATURES = ["age", "sex", "hb", "plt", "anc", "bm_blast", "cyto_ipssr", "complex", "del5q",
            "del7_7q", "del17_17p", *(f"gene:{g}" for g in GENES)]
GRID = default_grid(25.0)


def split(cohort, n_sites: int, seed: int) -> dict:
    return split_sites(cohort, n_sites, seed, size_skew=1.0, case_mix_shift=0.5,
                       panel_variation=True, missingness=0.1)


def round_seconds(cohort, n_sites: int, seed: int, rounds: int = 5) -> tuple[float, int]:
    sites = split(cohort, n_sites, seed)
    model = FederatedGBDT("survival:cox", n_rounds=rounds, max_depth=3, grid=GRID).fit(
        LocalSumFederation(sites), FEATURES, ("os_time", "os_status"))
    return float(np.mean(model.round_seconds_)), model.secure_sums_


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared"
                    / "data")
    ap.add_argument("--sites", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--boot", type=int, default=1000)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    public = read_mds_ipssm(args.data / "mds-ipssm-cohort")
    cohort = public.cohort
    sites = split(cohort, args.sites, args.seed)
    start = time.perf_counter()
    res = compare_site_federated_pooled(
        sites, FEATURES, ("os_time", "os_status"), 0.3, args.seed, n_rounds=args.rounds,
        learning_rate=0.05, max_depth=3, min_child_weight=1.0, horizon=5.0, n_boot=args.boot,
        grid=GRID)
    wall = time.perf_counter() - start
    s = res.summary
    print(f"## Federated boosting on the MDS IPSS-M cohort ({len(cohort)} patients, "
          f"{args.sites} sites, size skew 1, case-mix shift 0.5, panel variation, 10% lab "
          f"missingness; {args.rounds} rounds, depth 3, learning rate 0.05; held-out 30%)\n")
    print("| site | n train | n held-out | events | site alone | federated | pooled | "
          "IPSS-M (computed at the site) |")
    print("|---|---|---|---|---|---|---|---|")
    for site, r in res.table.iterrows():
        print(f"| {site} | {int(r.n_train)} | {int(r.n_test)} | {int(r.events_test)} | "
              f"{r.c_site_alone:.3f} | "
              f"{r.c_federated:.3f} | {r.c_pooled:.3f} | {r.c_published:.3f} |")
    print()
    print(f"- mean held-out C-index over {int(s['sites'])} sites: site alone "
          f"{s['c_site_alone']:.3f}, federated {s['c_federated']:.3f}, pooled "
          f"{s['c_pooled']:.3f}, IPSS-M {s['c_published']:.3f}")
    print(f"- federated - site alone: {s['diff_fed_site']:+.3f} (95% CI "
          f"{s['diff_fed_site_low']:+.3f} to {s['diff_fed_site_high']:+.3f})")
    print(f"- federated - pooled: {s['diff_fed_pooled']:+.4f} (within 0.01: "
          f"{abs(s['diff_fed_pooled']) <= 0.01})")
    print(f"- federated - IPSS-M: {s['diff_fed_published']:+.3f} (95% CI "
          f"{s['diff_fed_published_low']:+.3f} to {s['diff_fed_published_high']:+.3f})")
    print(f"- site-alone models on the other sites' held-out patients: mean C = "
          f"{s['c_site_alone_elsewhere']:.3f}")
    print("\nAll held-out patients, evaluated through the federation (secure sums):\n")
    print("| model | C-index | time-dependent AUC (5 y) | integrated Brier (to 5 y) | n |")
    print("|---|---|---|---|---|")
    labels = {"published": "IPSS-M (site-computed)"}
    for name, r in res.overall.iterrows():
        print(f"| {labels.get(str(name), name)} | {r.c_index:.3f} | {r.td_auc:.3f} | "
              f"{r.integrated_brier:.3f} | "
              f"{int(r.n)} |")
    # sanity: the published IPSSM_SCORE's C-index on the whole cohort (plain lifelines)
    held = pool_cohorts(sites)
    ref = public.reference["IPSSM_SCORE"].reindex(held.ids).to_numpy(dtype=float)
    t = held.patients["os_time"].astype("Float64").to_numpy(dtype=float, na_value=np.nan)
    e = held.patients["os_status"].astype("Float64").to_numpy(dtype=float, na_value=np.nan)
    ok = ~np.isnan(ref) & ~np.isnan(t) & ~np.isnan(e)
    print(f"\n- published IPSSM_SCORE, whole cohort (lifelines): C = "
          f"{concordance_index(t[ok], -ref[ok], e[ok]):.3f} (n = {int(ok.sum())})")
    print(f"- study wall time: {wall:.1f} s; mean federated round "
          f"{np.mean(res.round_seconds):.3f} s at {args.sites} sites")
    for n in (10, 86):
        sec, sums = round_seconds(cohort, n, args.seed)
        print(f"- training time per round (Cox, depth 3, LocalSumFederation): {n} sites "
              f"{sec:.3f} s ({sums} secure sums for 5 rounds)")


if __name__ == "__main__":
    main()
