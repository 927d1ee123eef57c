"""Federated Cox on the real MDS cohort through the whole stack, against pooled lifelines.

Real site directories (intake, policy, audit, ledger), secure aggregation, Flower simulation
(or in-process, or a localhost deployment), the study runner: rounds, secure sums, wall time, and
the ratio to pooled lifelines on the same rows in the same run.

    .venv/bin/python benchmarks/bench_federation.py --data ../shared/data/mds-ipssm-cohort \
        --sites 10 86 --transport sim
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

FORMULA = ("age + hb + plt + anc + bm_blast + sex + gene:TP53 + gene:SF3B1 + gene:ASXL1 + "
           "gene:RUNX1 + gene:SRSF2 + gene:U2AF1 + gene:EZH2 + gene:DNMT3A + gene:TET2 + "
           "gene:STAG2 + gene:BCOR + gene:NRAS + gene:IDH2 + gene:CBL")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/mds-ipssm-cohort"))
    ap.add_argument("--sites", type=int, nargs="+", default=[10])
    ap.add_argument("--transport", default="sim", choices=["sim", "inprocess", "deploy"])
    args = ap.parse_args()

    from lifelines import CoxPHFitter

    from hemafed.analytics.pooled import pooled_design as _design
    from hemafed.demo import build_sites, demo_cohorts
    from hemafed.study.runner import frame_from_json
    from hemafed.study.spec import StudySpec

    spec = StudySpec.from_mapping({
        "study_id": "bench-cox", "disease": "MDS", "analyses": [
            {"id": "cox", "kind": "cox", "duration": "os_time", "event": "os_status",
             "formula": FORMULA}]})
    from hemafed.demo import run_study_on

    print(f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"{platform.machine()}; command: {' '.join(sys.argv)}\n")
    print("| sites | transport | patients | events | covariates | Newton rounds | secure sums "
          "| round trips | federated s | s per Newton round | pooled lifelines s | ratio "
          "| max rel diff coef | max rel diff SE |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for n_sites in args.sites:
        cohorts = demo_cohorts("MDS", 0, n_sites, 7, real=args.data)
        with tempfile.TemporaryDirectory(prefix="bench-fed-") as tmp:
            fed = build_sites(Path(tmp) / "sites", cohorts, spec)
            t0 = time.perf_counter()
            results = run_study_on(args.transport, spec, fed)
            fed_s = time.perf_counter() - t0
            doc = results["analyses"][0]
            if doc["status"] != "ok":
                raise SystemExit(f"federated Cox failed: {doc.get('error')}")
            from hemafed.site.store import load_cohort

            site_cohorts = [load_cohort(d) for d in fed.site_dirs.values()]
        x, names, extra = _design(site_cohorts, FORMULA, ["os_time", "os_status"])
        frame = pd.DataFrame(x, columns=names)
        frame["T"] = extra["os_time"].astype(float).to_numpy()
        frame["E"] = extra["os_status"].astype(float).to_numpy()
        t1 = time.perf_counter()
        ref = CoxPHFitter().fit(frame, "T", "E", fit_options={"precision": 1e-14, "r_precision": 1e-15})
        pooled_s = time.perf_counter() - t1
        table = frame_from_json(doc["tables"]["summary"])
        coef = table["coef"].astype(float).to_numpy()
        se = table["se(coef)"].astype(float).to_numpy()
        rel_c = float(np.max(np.abs(coef - ref.params_.to_numpy()) / np.abs(ref.params_.to_numpy())))
        rel_s = float(np.max(np.abs(se - ref.standard_errors_.to_numpy())
                             / ref.standard_errors_.to_numpy()))
        stats, prov = doc["stats"], doc["provenance"]
        rounds = int(stats["newton_rounds"])
        print(f"| {n_sites} | {args.transport} | {stats['n']} | {stats['events']} | {len(names)} "
              f"| {rounds} | {prov['secure sums']} | {prov['round trips']} | {fed_s:.1f} "
              f"| {fed_s / max(rounds, 1):.2f} | {pooled_s:.2f} | {fed_s / pooled_s:.0f}x "
              f"| {rel_c:.1e} | {rel_s:.1e} |", flush=True)
        print(json.dumps({"sites": n_sites, "provenance": prov}), file=sys.stderr)


if __name__ == "__main__":
    main()
