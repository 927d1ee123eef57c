"""Benchmark: federated neural survival model (DeepSurv-style) on the real MDS IPSS-M cohort.

Usage: ``.venv/bin/python benchmarks/bench_neural.py [--data ../shared/data] [--sites 10]
[--repeats 3] [--plot docs/img/dp_tradeoff.png]``.

20% of the patients (seeded) are held out; the rest are split over ``--sites`` heterogeneous
sites. Reports Harrell's C on the held-out patients of:

* the pooled lifelines Cox model and pooled (one-site) neural training, as references;
* FedAvg with the Cox (site-stratified) and the discrete-time loss, no DP (epsilon = inf);
* DP-FedSGD (discrete-time loss, per-patient clipping, noise added by the sites) for
  epsilon in {1, 2, 4, 8}, ``--repeats`` noise seeds each (mean and range), and the same
  algorithm without noise (epsilon = inf).

Writes the epsilon / C-index trade-off plot (matplotlib, atomically) and prints markdown tables,
including seconds per FedAvg round at 10 and 86 sites through ``LocalSumFederation`` (plain
in-process sums: the local training cost, not the secure-aggregation transport).
"""

from __future__ import annotations

import argparse
import io
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lifelines import CoxPHFitter
from lifelines.utils import concordance_index

from hemafed import atomic
from hemafed.analytics.design import complete_case_mask, design_matrix, parse_formula
from hemafed.cohort.model import Cohort
from hemafed.cohort.partition import split_sites
from hemafed.cohort.public import read_mds_ipssm
from hemafed.federation.local import LocalSumFederation
from hemafed.learn.neural import DPTraining, FederatedDeepSurv

GENES = ("TP53", "MLL_PTD", "FLT3", "SF3B1", "NPM1", "RUNX1", "NRAS", "ETV6", "IDH2", "CBL",
         "EZH2", "U2AF1", "SRSF2", "DNMT3A", "ASXL1", "KRAS", "BCOR", "STAG2", "TET2", "ZRSR2")
FORMULA = " + ".join(["age", "sex", "hb", "plt", "anc", "bm_blast", "cyto_ipssr",
                      *(f"gene:{g}" for g in GENES)])
EPSILONS = (1.0, 2.0, 4.0, 8.0, math.inf)
INF_X = 16.0  # where epsilon = inf sits on the plot's log axis
FEDAVG: dict[str, Any] = {"hidden": (32, 16), "dropout": 0.1, "lr": 1e-2, "local_epochs": 2, "rounds": 20}
DP: dict[str, Any] = {"hidden": (32, 16), "dropout": 0.0, "lr": 2e-2, "rounds": 80}


def subset(cohort: Cohort, keep: np.ndarray) -> Cohort:
    patients = cohort.patients[keep].reset_index(drop=True)
    ids = set(patients["patient_id"])
    muts = cohort.mutations[cohort.mutations["patient_id"].isin(ids)].reset_index(drop=True)
    return Cohort(patients, muts, cohort.panels)


def c_index(model: FederatedDeepSurv, test: Cohort) -> float:
    risk = model.predict_risk(test)
    p = test.patients
    ok = np.isfinite(risk) & p["os_time"].notna().to_numpy() & p["os_status"].notna().to_numpy()
    return float(concordance_index(p["os_time"][ok].astype(float), -risk[ok],
                                   p["os_status"][ok].astype(float)))


def lifelines_c(train: Cohort, test: Cohort) -> float:
    spec = parse_formula(FORMULA)

    def frame(c: Cohort) -> Any:
        rows = complete_case_mask(c, spec, ["os_time", "os_status"])
        x, names = design_matrix(c, spec, rows)
        import pandas as pd
        df = pd.DataFrame(x, columns=names)
        df["T"] = c.patients["os_time"][rows].astype(float).to_numpy()
        df["E"] = c.patients["os_status"][rows].astype(float).to_numpy()
        return df

    tr, te = frame(train), frame(test)
    cph = CoxPHFitter(penalizer=0.01).fit(tr, "T", "E")
    return float(concordance_index(te["T"], -cph.predict_partial_hazard(te), te["E"]))


def round_seconds(train: Cohort, n_sites: int, seed: int, rounds: int = 3) -> float:
    sites = split_sites(train, n_sites, seed, size_skew=1.0, case_mix_shift=0.5)
    settings = FEDAVG | {"rounds": rounds}
    FederatedDeepSurv(**settings | {"rounds": 1}).fit(  # warm-up (torch imports)
        LocalSumFederation(sites), "os_time", "os_status", FORMULA)
    start = time.perf_counter()
    FederatedDeepSurv(**settings).fit(LocalSumFederation(sites), "os_time", "os_status", FORMULA)
    return (time.perf_counter() - start) / rounds


def plot(rows: dict[float, list[float]], refs: dict[str, float], n_sites: int,
         path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    eps = sorted(rows)
    xs = [INF_X if math.isinf(e) else e for e in eps]
    means = [float(np.mean(rows[e])) for e in eps]
    lo = [means[i] - min(rows[e]) for i, e in enumerate(eps)]
    hi = [max(rows[e]) - means[i] for i, e in enumerate(eps)]
    ax.errorbar(xs, means, yerr=[lo, hi], marker="o", capsize=4,
                label="DP-FedSGD, discrete loss (mean, range)")
    styles = iter([("--", "tab:orange"), (":", "tab:green"), ("-.", "grey")])
    for label, value in refs.items():
        style, colour = next(styles)
        ax.axhline(value, linestyle=style, color=colour, label=f"{label} ({value:.3f})")
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs, ["inf\n(no noise)" if math.isinf(e) else f"{e:g}" for e in eps])
    ax.set_xlabel("epsilon (per patient, whole training; delta = 1e-6)")
    ax.set_ylabel("held-out Harrell's C")
    ax.set_title(f"MDS IPSS-M cohort, {n_sites} sites: privacy vs discrimination")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(path, buf.getvalue())
    path.chmod(0o644)  # a documentation image, readable by all


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path,
                    default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--sites", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--plot", type=Path,
                    default=Path(__file__).resolve().parents[1] / "docs" / "img" / "dp_tradeoff.png")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    cohort = read_mds_ipssm(args.data / "mds-ipssm-cohort").cohort
    rng = np.random.default_rng(args.seed)
    test_mask = rng.random(len(cohort)) < 0.2
    train, test = subset(cohort, ~test_mask), subset(cohort, test_mask)
    sites = split_sites(train, args.sites, args.seed, size_skew=1.0, case_mix_shift=0.5)
    fed = LocalSumFederation(sites)
    print(f"MDS IPSS-M cohort: {len(train)} training patients over {args.sites} sites, "
          f"{len(test)} held out; covariates: {FORMULA}\n")

    results: list[tuple[str, str, float, float]] = []
    ref_cox = lifelines_c(train, test)
    results.append(("pooled lifelines Cox (linear)", "inf", ref_cox, math.nan))
    t0 = time.perf_counter()
    pooled = FederatedDeepSurv(**FEDAVG).fit(LocalSumFederation([train]), "os_time",
                                             "os_status", FORMULA)
    results.append(("pooled neural (Cox loss)", "inf", c_index(pooled, test),
                    time.perf_counter() - t0))
    t0 = time.perf_counter()
    fed_cox = FederatedDeepSurv(**FEDAVG).fit(fed, "os_time", "os_status", FORMULA)
    c_fed_cox = c_index(fed_cox, test)
    results.append(("FedAvg neural, Cox loss", "inf", c_fed_cox, time.perf_counter() - t0))
    t0 = time.perf_counter()
    fed_disc = FederatedDeepSurv(**FEDAVG, loss="discrete").fit(fed, "os_time", "os_status",
                                                                FORMULA)
    c_fed_disc = c_index(fed_disc, test)
    results.append(("FedAvg neural, discrete loss", "inf", c_fed_disc, time.perf_counter() - t0))

    trade: dict[float, list[float]] = {}
    for eps in EPSILONS:
        for rep in range(args.repeats):
            t0 = time.perf_counter()
            dp = DPTraining(eps, 1e-6, max_grad_norm=1.0)
            noise_seed = 100 * rep + (int(eps) if math.isfinite(eps) else 0)
            model = FederatedDeepSurv(**DP, loss="discrete", dp=dp, seed=rep).fit(
                LocalSumFederation(sites, dp_seed=noise_seed), "os_time", "os_status", FORMULA)
            c = c_index(model, test)
            trade.setdefault(eps, []).append(c)
            results.append((f"DP-FedSGD (repeat {rep}, sigma {model.noise_multiplier_:.2f}, "
                            f"spent {model.epsilon_:.3f})", f"{eps:g}", c,
                            time.perf_counter() - t0))
            if math.isinf(eps):
                break  # no noise: every repeat is the same

    print("| model | epsilon | held-out C | fit seconds |")
    print("| --- | --- | --- | --- |")
    for name, eps_s, c, secs in results:
        print(f"| {name} | {eps_s} | {c:.3f} | {'' if math.isnan(secs) else f'{secs:.1f}'} |")
    print("\n| epsilon | mean C | min | max |")
    print("| --- | --- | --- | --- |")
    for eps in EPSILONS:
        v = trade[eps]
        print(f"| {eps:g} | {np.mean(v):.3f} | {min(v):.3f} | {max(v):.3f} |")
    print(f"| inf (FedAvg, discrete loss, 20 rounds x 2 local epochs) | {c_fed_disc:.3f} | | |")

    plot(trade, {"FedAvg, discrete, no DP": c_fed_disc, "FedAvg, Cox, no DP": c_fed_cox,
                 "pooled lifelines Cox": ref_cox}, args.sites, args.plot)
    print(f"\nplot written to {args.plot}\n")

    print("| sites | seconds per FedAvg round (2 local epochs, batch 64) |")
    print("| --- | --- |")
    for n_sites in (10, 86):
        print(f"| {n_sites} | {round_seconds(train, n_sites, args.seed):.2f} |")


if __name__ == "__main__":
    main()
