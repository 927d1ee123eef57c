"""Benchmark: federated DP synthesis (MST, AIM) on the real MDS IPSS-M cohort over 10 sites.

Usage: ``.venv/bin/python benchmarks/bench_synth.py [--data ../shared/data] [--sites 10]
[--epsilons 0.5 1 2 4] [--mechanism mst|aim|all] [--rounds R] [--out results.json]``.

The cohort (2,957 patients) is split 80/20 into training and holdout patients; the training
patients are spread over ``--sites`` heterogeneous sites (Zipf sizes, shifted case mix) and MST
runs through the test transport ``LocalSumFederation`` (noise added hub-side, same maths as the
site runtime). For every epsilon (delta 1e-6) it prints the mean two-way TVD of a federated fit
and of a central fit on the pooled training patients (different noise draws), the TSTR Cox
C-index on the holdout against TRTR, the membership-inference AUC, the time to fit and to
sample 10,000 patients, and the peak resident memory of the process (``resource.getrusage``).
Each epsilon is run for plain MST and for the survival-aware variant anchored on ``os_status``
(``--anchor``), and for AIM (``--mechanism aim`` runs only the AIM rows; ``--rounds`` is
AIM's planned number of rounds, default ``4 d``) and survival-aware AIM (``--mechanism
aim-anchor``: the workload's pairs of every covariate with the ``--aim-anchor`` outcome columns
weighted ``--aim-anchor-weight``; rows are printed as soon as they are done). The Gaussian
copula (local, non-DP) is reported as a reference line.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from hemafed.cohort.partition import split_sites
from hemafed.cohort.public import read_mds_ipssm
from hemafed.federation.local import LocalSumFederation
from hemafed.synth import FederatedAIM, FederatedMST
from hemafed.synth.copula import GaussianCopulaSynthesizer
from hemafed.synth.evaluate import evaluate

COLUMNS = ["age", "sex", "hb", "plt", "anc", "bm_blast", "cyto_ipssr", "os_time", "os_status",
           "amlt_time", "amlt_status"]


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def markdown_row(r: dict) -> str:
    return (f"| {r['method']} | {r['epsilon']:g} | {r['tvd2_federated']:.3f} | "
            f"{r['tvd2_central']:.3f} | {r['km_os_federated']:.3f} | {r['cox_log_hr_diff']:.3f} | "
            f"{r['c_index_tstr']:.3f} | {r['c_index_trtr']:.3f} | {r['mia_auc']:.3f} | "
            f"{'pass' if r['passes_gate'] else 'fail'} | {r['fit_s']:.1f} | "
            f"{r['sample_10k_s']:.2f} | {r['peak_rss_mb']:.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path,
                    default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--sites", type=int, default=10)
    ap.add_argument("--epsilons", type=float, nargs="+", default=[0.5, 1.0, 2.0, 4.0])
    ap.add_argument("--iters", type=int, default=1000)
    ap.add_argument("--anchor", default="os_status",
                    help="also fit the survival-aware variant anchored on this column ('' skips)")
    ap.add_argument("--mechanism", choices=["mst", "aim", "aim-anchor", "all"], default="all",
                    help="which mechanism's rows to run")
    ap.add_argument("--rounds", type=int, default=None, help="AIM's planned rounds (default 4 d)")
    ap.add_argument("--aim-anchor", default="os_status",
                    help="outcome columns (comma-separated) of the survival-aware AIM workload")
    ap.add_argument("--aim-anchor-weight", type=float, default=8.0,
                    help="weight of the covariate-outcome cliques in the AIM workload")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    cohort = read_mds_ipssm(args.data / "mds-ipssm-cohort").cohort
    rng = np.random.default_rng(0)
    is_train = rng.random(len(cohort)) < 0.8
    train_cohort = cohort.select(is_train)
    train = train_cohort.patients[COLUMNS].reset_index(drop=True)
    holdout = cohort.select(~is_train).patients[COLUMNS].reset_index(drop=True)
    sites = split_sites(train_cohort, args.sites, seed=1, size_skew=1.0, case_mix_shift=0.5)
    sizes = sorted((len(c) for c in sites.values()), reverse=True)
    print(f"MDS IPSS-M cohort: {len(train)} training patients over {args.sites} sites "
          f"(sizes {sizes}), {len(holdout)} holdout; {len(COLUMNS)} columns\n")

    rows = []
    variants: list[tuple[str, Callable[[float], FederatedMST | FederatedAIM]]] = []
    if args.mechanism in ("mst", "all"):
        variants.append(("MST", lambda e: FederatedMST(e, 1e-6, COLUMNS, iters=args.iters)))
        if args.anchor:
            variants.append((f"MST+{args.anchor}", lambda e: FederatedMST(
                e, 1e-6, COLUMNS, iters=args.iters, anchor=args.anchor)))
    if args.mechanism in ("aim", "all"):
        variants.append(("AIM", lambda e: FederatedAIM(e, 1e-6, COLUMNS, iters=args.iters,
                                                       rounds=args.rounds)))
    if args.mechanism in ("aim-anchor", "all"):
        outcome = tuple(c for c in args.aim_anchor.split(",") if c)
        variants.append((f"AIM+{'/'.join(outcome)}", lambda e: FederatedAIM(
            e, 1e-6, COLUMNS, iters=args.iters, rounds=args.rounds, anchor=outcome,
            anchor_weight=args.aim_anchor_weight)))
    for eps in args.epsilons:
        for label, make in variants:
            seed = int(eps * 100)
            t0 = time.perf_counter()
            fed = make(eps).fit(LocalSumFederation(sites, dp_seed=seed))
            fit_s = time.perf_counter() - t0
            central = make(eps).fit(LocalSumFederation({"pooled": train_cohort},
                                                       dp_seed=seed + 1))
            t0 = time.perf_counter()
            big = fed.sample(10_000, seed=0)
            sample_s = time.perf_counter() - t0
            del big
            rep_f = evaluate(train, fed.sample(len(train), seed=1), holdout)
            rep_c = evaluate(train, central.sample(len(train), seed=1), holdout)
            rows.append({
                "method": label, "epsilon": eps,
                "tvd2_federated": rep_f.fidelity["tvd_2way_mean"],
                "tvd2_central": rep_c.fidelity["tvd_2way_mean"],
                "km_os_federated": rep_f.fidelity["km_max_diff_os"],
                "cox_log_hr_diff": rep_f.fidelity.get("cox_log_hr_max_abs_diff", float("nan")),
                "c_index_tstr": rep_f.utility["c_index_tstr"],
                "c_index_trtr": rep_f.utility["c_index_trtr"],
                "mia_auc": rep_f.privacy["mia_auc"], "passes_gate": rep_f.passes(),
                "epsilon_spent": fed.privacy()["epsilon_spent"], "fit_s": fit_s,
                "sample_10k_s": sample_s, "peak_rss_mb": peak_mb(),
            })
            print(f"done {label} epsilon {eps:g}: TVD fed {rows[-1]['tvd2_federated']:.3f}, "
                  f"central {rows[-1]['tvd2_central']:.3f}, fit {fit_s:.0f} s, cliques "
                  f"{getattr(fed, 'selected', None)}", flush=True)
            print(markdown_row(rows[-1]), flush=True)
    t0 = time.perf_counter()
    cop = GaussianCopulaSynthesizer().fit(train)
    cop_big = cop.sample(10_000, seed=0)
    cop_s = time.perf_counter() - t0
    del cop_big
    rep = evaluate(train, cop.sample(len(train), seed=1), holdout)
    copula_row = {"tvd2": rep.fidelity["tvd_2way_mean"], "km_os": rep.fidelity["km_max_diff_os"],
                  "c_index_tstr": rep.utility["c_index_tstr"], "mia_auc": rep.privacy["mia_auc"],
                  "fit_and_sample_10k_s": cop_s}

    print("| method | epsilon | 2-way TVD fed | 2-way TVD central | KM OS max diff | "
          "Cox log-HR max diff | C-index TSTR | C-index TRTR | MIA AUC | gate | fit s | "
          "sample 10k s | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(markdown_row(r))
    print(f"\nGaussian copula (local, non-DP, pooled training rows): 2-way TVD "
          f"{copula_row['tvd2']:.3f}, KM OS max diff {copula_row['km_os']:.3f}, C-index TSTR "
          f"{copula_row['c_index_tstr']:.3f}, MIA AUC {copula_row['mia_auc']:.3f}, fit + sample "
          f"10k {copula_row['fit_and_sample_10k_s']:.2f} s")
    if args.out:
        args.out.write_text(json.dumps({"mst": rows, "copula": copula_row}, indent=2))


if __name__ == "__main__":
    main()
