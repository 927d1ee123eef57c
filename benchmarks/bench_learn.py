"""Benchmark: federated boosting on real cohorts: site alone vs federated vs pooled vs the
published score vs XGBoost pooled, on held-out patients of every site; leave-one-site-out.

Usage: ``.venv/bin/python benchmarks/bench_learn.py [--cohort mds|aml] [--data ../shared/data]
[--sites 10] [--rounds 100] [--seed 0] [--boot 1000] [--no-loso] [--no-timing] [--no-plot]``.

``--cohort mds``: the MDS IPSS-M cohort split over ``--sites`` heterogeneous simulated sites;
the score is the IPSS-M computed at each site from its own data. ``--cohort aml``: the two Tazi
et al. 2022 AML cohorts as two real sites (different trial groups); the score is the published
ELN 2017 class of each patient. 30% of every site is held out (seeded); all arms are scored on
the same held-out patients. The federated model's edge over each hospital alone comes with a
paired bootstrap 95% CI; XGBoost (``survival:cox``, ``tree_method="hist"``, same depth, rounds,
learning rate, lambda, min child weight and bins) is trained on the pooled training parts.
Leave-one-site-out trains on all sites but one and evaluates at that site. For MDS it also
times one boosting round at 10 and 86 simulated sites through ``LocalSumFederation``.

Prints markdown; writes the per-site held-out C-index plot to ``docs/img/learn_<cohort>.png``.
"""

from __future__ import annotations

import argparse
import io
import logging
import time
from pathlib import Path

import numpy as np
from lifelines.utils import concordance_index

from hemafed import atomic
from hemafed.cohort.model import Cohort
from hemafed.cohort.partition import split_sites
from hemafed.cohort.public import read_aml_tazi, read_mds_ipssm
from hemafed.federation.local import LocalSumFederation
from hemafed.learn.gbdt import FederatedGBDT, default_grid
from hemafed.learn.metrics import column_predictor
from hemafed.learn.study import (
    AML_FEATURES,
    ELN2017_RISK,
    StudyResult,
    compare_site_federated_pooled,
    pool_cohorts,
    with_score_column,
)
from hemafed.learn.validation import (
    leave_one_site_out,
    local_federations,
    xgboost_cox_trainer,
)

GENES = ("TP53", "MLL_PTD", "FLT3", "SF3B1", "NPM1", "RUNX1", "NRAS", "ETV6", "IDH2", "CBL",
         "EZH2", "U2AF1", "SRSF2", "DNMT3A", "ASXL1", "KRAS", "BCOR", "STAG2", "TET2", "ZRSR2")
MDS_FEATURES = ["age", "sex", "hb", "plt", "anc", "bm_blast", "cyto_ipssr", "complex", "del5q",
                "del7_7q", "del17_17p", *(f"gene:{g}" for g in GENES)]
GRID = default_grid(25.0)
OUTCOME = ("os_time", "os_status")
ROOT = Path(__file__).resolve().parents[1]
ARM_LABELS = {"site_alone": "site alone", "federated": "federated", "pooled": "pooled",
              "published": "score", "xgboost": "XGBoost pooled"}


def split(cohort: Cohort, n_sites: int, seed: int) -> dict[str, Cohort]:
    return split_sites(cohort, n_sites, seed, size_skew=1.0, case_mix_shift=0.5,
                       panel_variation=True, missingness=0.1)


def aml_sites(data: Path) -> dict[str, Cohort]:
    """The two AML cohorts as two sites, each with its published ELN 2017 class as a column."""
    sites = {}
    for which in ("training", "validation"):
        public = read_aml_tazi(data / "aml-tazi-2022", which)
        sites[f"tazi_{which}"] = with_score_column(
            public.cohort, "eln2017_published", public.reference["eln_2017"].map(ELN2017_RISK))
    return sites


def round_seconds(cohort: Cohort, n_sites: int, seed: int, rounds: int = 5) -> tuple[float, int]:
    sites = split(cohort, n_sites, seed)
    model = FederatedGBDT("survival:cox", n_rounds=rounds, max_depth=3, grid=GRID).fit(
        LocalSumFederation(sites), MDS_FEATURES, OUTCOME)
    return float(np.mean(model.round_seconds_)), model.secure_sums_


def plot(res: StudyResult, score_label: str, title: str, path: Path) -> None:
    """Grouped bars: per site (and the mean over sites), held-out C-index of every arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = [a for a in ARM_LABELS if f"c_{a}" in res.table.columns]
    table = res.table[[f"c_{a}" for a in arms]].copy()
    table.loc["mean"] = [res.summary[f"c_{a}"] for a in arms]
    x = np.arange(len(table))
    width = 0.8 / len(arms)
    fig, ax = plt.subplots(figsize=(max(7.0, 0.9 * len(table) + 2), 4.6))
    for k, arm in enumerate(arms):
        label = score_label if arm == "published" else ARM_LABELS[arm]
        ax.bar(x + (k - (len(arms) - 1) / 2) * width, table[f"c_{arm}"], width, label=label)
    ax.set_xticks(x, [str(i) for i in table.index], rotation=30, ha="right")
    ax.set_ylabel("held-out C-index (overall survival)")
    low = float(np.nanmin(table.to_numpy()))
    ax.set_ylim(max(0.4, low - 0.05), min(1.0, float(np.nanmax(table.to_numpy())) + 0.05))
    ax.set_title(title)
    ax.legend(fontsize=8, ncol=len(arms), loc="upper center", bbox_to_anchor=(0.5, -0.2),
              frameon=False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic.write_bytes(path, buf.getvalue())


def print_study(res: StudyResult, score_label: str) -> None:
    s = res.summary
    has_xgb = "c_xgboost" in res.table.columns
    print("| site | n train | n held-out | events | site alone | federated | pooled | "
          f"{score_label} |" + (" XGBoost pooled |" if has_xgb else ""))
    print("|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if has_xgb else ""))
    for site, r in res.table.iterrows():
        print(f"| {site} | {int(r.n_train)} | {int(r.n_test)} | {int(r.events_test)} | "
              f"{r.c_site_alone:.3f} | {r.c_federated:.3f} | {r.c_pooled:.3f} | "
              f"{r.c_published:.3f} |" + (f" {r.c_xgboost:.3f} |" if has_xgb else ""))
    print(f"| **mean** | | | | **{s['c_site_alone']:.3f}** | **{s['c_federated']:.3f}** | "
          f"**{s['c_pooled']:.3f}** | **{s['c_published']:.3f}** |"
          + (f" **{s['c_xgboost']:.3f}** |" if has_xgb else ""))
    print()
    print(f"- federated - site alone: {s['diff_fed_site']:+.3f} (95% CI "
          f"{s['diff_fed_site_low']:+.3f} to {s['diff_fed_site_high']:+.3f})")
    print(f"- federated - pooled: {s['diff_fed_pooled']:+.4f} (within 0.01: "
          f"{abs(s['diff_fed_pooled']) <= 0.01})")
    print(f"- federated - {score_label}: {s['diff_fed_published']:+.3f} (95% CI "
          f"{s['diff_fed_published_low']:+.3f} to {s['diff_fed_published_high']:+.3f})")
    if has_xgb:
        print(f"- federated - XGBoost pooled: {s['diff_fed_xgboost']:+.3f} (95% CI "
              f"{s['diff_fed_xgboost_low']:+.3f} to {s['diff_fed_xgboost_high']:+.3f})")
    print(f"- site-alone models on the other sites' held-out patients: mean C = "
          f"{s['c_site_alone_elsewhere']:.3f}")
    print("\nAll held-out patients, evaluated through the federation (secure sums):\n")
    print("| model | C-index | time-dependent AUC (5 y) | integrated Brier (to 5 y) | n |")
    print("|---|---:|---:|---:|---:|")
    for name, r in res.overall.iterrows():
        label = score_label if name == "published" else str(name)
        print(f"| {label} | {r.c_index:.3f} | {r.td_auc:.3f} | {r.integrated_brier:.3f} | "
              f"{int(r.n)} |")
    print()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cohort", choices=("mds", "aml"), default="mds")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--sites", type=int, default=10, help="simulated sites (MDS only)")
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--learning-rate", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--no-loso", action="store_true", help="skip leave-one-site-out")
    ap.add_argument("--no-timing", action="store_true", help="skip round timing (MDS)")
    ap.add_argument("--no-plot", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    kw = {"n_rounds": args.rounds, "learning_rate": args.learning_rate, "max_depth": 3,
          "min_child_weight": 1.0, "max_bins": 32}
    if args.cohort == "mds":
        public = read_mds_ipssm(args.data / "mds-ipssm-cohort")
        sites = split(public.cohort, args.sites, args.seed)
        features: list[str] = MDS_FEATURES
        published: str | dict = "ipssm"
        score_label = "IPSS-M (computed at the site)"
        setting = (f"MDS IPSS-M cohort ({len(public.cohort)} patients, {args.sites} sites, size "
                   f"skew 1, case-mix shift 0.5, panel variation, 10% lab missingness")
    else:
        sites = aml_sites(args.data)
        features = list(AML_FEATURES)
        published = column_predictor("eln2017_published", 0.0, 2.0)
        score_label = "ELN 2017 (published class)"
        setting = (f"two AML cohorts of Tazi et al. 2022 as two real sites "
                   f"({', '.join(f'{k} {len(c)}' for k, c in sites.items())} patients")
    start = time.perf_counter()
    res = compare_site_federated_pooled(
        sites, features, OUTCOME, 0.3, args.seed, horizon=5.0, n_boot=args.boot, grid=GRID,
        published=published,
        extra_arms={"xgboost": xgboost_cox_trainer(features, OUTCOME, grid=GRID, seed=args.seed,
                                                   **kw)}, **kw)
    wall = time.perf_counter() - start
    print(f"## Federated boosting on the {setting}; Cox boosting {args.rounds} rounds, depth 3, "
          f"learning rate {args.learning_rate}, 32 bins; 30% of each site held out, seed "
          f"{args.seed})\n")
    print_study(res, score_label)
    if args.cohort == "mds":
        held = pool_cohorts(sites)
        ref = public.reference["IPSSM_SCORE"].reindex(held.ids).to_numpy(dtype=float)
        t = held.patients["os_time"].astype("Float64").to_numpy(dtype=float, na_value=np.nan)
        e = held.patients["os_status"].astype("Float64").to_numpy(dtype=float, na_value=np.nan)
        ok = ~np.isnan(ref) & ~np.isnan(t) & ~np.isnan(e)
        print(f"- published IPSSM_SCORE, whole cohort (lifelines): C = "
              f"{concordance_index(t[ok], -ref[ok], e[ok]):.3f} (n = {int(ok.sum())})")
    print(f"- study wall time: {wall:.1f} s; mean federated round "
          f"{np.mean(res.round_seconds):.3f} s at {len(sites)} sites")
    if not args.no_plot:
        path = ROOT / "docs" / "img" / f"learn_{args.cohort}.png"
        plot(res, score_label, f"{args.cohort.upper()}: held-out C-index per site", path)
        print(f"- plot: {path.relative_to(ROOT)}")
    if not args.no_loso:
        start = time.perf_counter()
        loso = leave_one_site_out(local_federations(sites), list(sites), features, OUTCOME,
                                  grid=GRID, horizon=5.0, **kw)
        print(f"\n### Leave-one-site-out ({time.perf_counter() - start:.0f} s): trained "
              f"federated on the other sites, evaluated by the left-out site on all its "
              f"patients\n")
        print("| held-out site | training sites | n | events | C-index | td-AUC (5 y) | "
              "integrated Brier |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for site, r in loso.table.iterrows():
            print(f"| {site} | {int(r.training_sites)} | {int(r.n_test)} | "
                  f"{int(r.events_test)} | {r.c_index:.3f} | {r.td_auc:.3f} | "
                  f"{r.integrated_brier:.3f} |")
        print(f"\n- {loso.report()}")
    if args.cohort == "mds" and not args.no_timing:
        for n in (10, 86):
            sec, sums = round_seconds(public.cohort, n, args.seed)
            print(f"- training time per round (Cox, depth 3, LocalSumFederation): {n} sites "
                  f"{sec:.3f} s ({sums} secure sums for 5 rounds)")


if __name__ == "__main__":
    main()
