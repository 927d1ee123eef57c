"""Benchmark: the local tabular VAE against the Gaussian copula on the real MDS IPSS-M cohort.

Usage: ``.venv/bin/python benchmarks/bench_tvae.py [--data ../shared/data] [--epochs 150]
[--dp-epsilons 1 4] [--out results.json]``.

One site holds the whole cohort (2,957 patients): it is split 80/20 into training and holdout
patients with the same seed and columns as ``bench_synth.py``. Each generator is fitted on the
training rows and evaluated with :func:`hemafed.synth.evaluate.evaluate` on as many synthetic
rows: mean two-way TVD, Kaplan-Meier OS max difference, TSTR Cox C-index on the holdout (against
TRTR), membership-inference AUC and the default release gate; plus the time to fit, to sample
10,000 patients, and the peak resident memory of the process so far (``resource.getrusage``, so
it only grows down the table: the copula runs first, before torch is imported). Rows: an
independent-columns baseline (each training column shuffled on its own), the copula, TVAE
without DP, and TVAE with DP-SGD (Opacus) for every ``--dp-epsilons`` value (delta 1e-6).
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hemafed.cohort.public import read_mds_ipssm
from hemafed.synth.copula import GaussianCopulaSynthesizer
from hemafed.synth.evaluate import evaluate

COLUMNS = ["age", "sex", "hb", "plt", "anc", "bm_blast", "cyto_ipssr", "os_time", "os_status",
           "amlt_time", "amlt_status"]


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run(label: str, model: Any, train: pd.DataFrame, holdout: pd.DataFrame) -> dict[str, Any]:
    t0 = time.perf_counter()
    model.fit(train)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    big = model.sample(10_000, seed=0)
    sample_s = time.perf_counter() - t0
    del big
    rep = evaluate(train, model.sample(len(train), seed=1), holdout)
    return {"method": label, "tvd2": rep.fidelity["tvd_2way_mean"],
            "km_os": rep.fidelity["km_max_diff_os"], "c_index_tstr": rep.utility["c_index_tstr"],
            "c_index_trtr": rep.utility["c_index_trtr"], "mia_auc": rep.privacy["mia_auc"],
            "passes_gate": rep.passes(), "epsilon_spent": getattr(model, "epsilon_", None),
            "fit_s": fit_s, "sample_10k_s": sample_s, "peak_rss_mb": peak_mb()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path,
                    default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--epochs", type=int, default=150)
    ap.add_argument("--dp-epochs", type=int, default=30)
    ap.add_argument("--dp-epsilons", type=float, nargs="*", default=[1.0, 4.0])
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    patients = read_mds_ipssm(args.data / "mds-ipssm-cohort").cohort.patients[COLUMNS]
    rng = np.random.default_rng(0)
    is_train = rng.random(len(patients)) < 0.8
    train = patients[is_train].reset_index(drop=True)
    holdout = patients[~is_train].reset_index(drop=True)
    print(f"MDS IPSS-M cohort, one site: {len(train)} training, {len(holdout)} holdout patients; "
          f"{len(COLUMNS)} columns\n", flush=True)

    perm = np.random.default_rng(1)
    shuffled = pd.DataFrame({c: train[c].to_numpy()[perm.permutation(len(train))]
                             for c in COLUMNS}).astype(train.dtypes.to_dict())
    base = evaluate(train, shuffled, holdout)
    rows = [{"method": "independent columns (shuffled training)",
             "tvd2": base.fidelity["tvd_2way_mean"], "km_os": base.fidelity["km_max_diff_os"],
             "c_index_tstr": base.utility["c_index_tstr"],
             "c_index_trtr": base.utility["c_index_trtr"], "mia_auc": base.privacy["mia_auc"],
             "passes_gate": base.passes(), "epsilon_spent": None, "fit_s": float("nan"),
             "sample_10k_s": float("nan"), "peak_rss_mb": peak_mb()}]
    rows.append(run("Gaussian copula", GaussianCopulaSynthesizer(seed=0), train, holdout))
    print(f"done copula: TVD {rows[-1]['tvd2']:.3f}", flush=True)

    from hemafed.synth.tvae import TabularVAESynthesizer

    rows.append(run(f"TVAE ({args.epochs} epochs)",
                    TabularVAESynthesizer(epochs=args.epochs, seed=0), train, holdout))
    print(f"done TVAE: TVD {rows[-1]['tvd2']:.3f}, fit {rows[-1]['fit_s']:.0f} s", flush=True)
    for eps in args.dp_epsilons:
        model = TabularVAESynthesizer(epochs=args.dp_epochs, seed=0, dp=(eps, 1e-6, 1.0))
        rows.append(run(f"TVAE DP-SGD eps {eps:g} ({args.dp_epochs} epochs)", model, train,
                        holdout))
        print(f"done TVAE DP eps {eps:g}: TVD {rows[-1]['tvd2']:.3f}, "
              f"fit {rows[-1]['fit_s']:.0f} s", flush=True)

    print("\n| method | 2-way TVD | KM OS max diff | C-index TSTR | C-index TRTR | MIA AUC | gate | "
          "epsilon spent | fit s | sample 10k s | peak RSS MB |")
    print("|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|")
    for r in rows:
        eps_s = "-" if r["epsilon_spent"] is None else f"{r['epsilon_spent']:.3f}"
        print(f"| {r['method']} | {r['tvd2']:.3f} | {r['km_os']:.3f} | {r['c_index_tstr']:.3f} | "
              f"{r['c_index_trtr']:.3f} | {r['mia_auc']:.3f} | "
              f"{'pass' if r['passes_gate'] else 'fail'} | {eps_s} | {r['fit_s']:.1f} | "
              f"{r['sample_10k_s']:.2f} | {r['peak_rss_mb']:.0f} |")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
