"""Fine-Gray for AML transformation (death without transformation competing) on the real MDS
IPSS-M cohort: federated through fixed-point secure-sum arithmetic vs ``cmprsk::crr`` pooled,
plus Gray's test by sex vs ``cmprsk::cuminc``.

    .venv/bin/python benchmarks/bench_finegray_mds.py --data ../shared/data/mds-ipssm-cohort \
        --sites 3 10

Prints a markdown table for docs/benchmarks.md (needs Rscript with cmprsk).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from bench_cox_sites import FixedPointFederation

FORMULA = "age + sex + hb + plt + bm_blast + cyto_ipssr"
R_SCRIPT = """
suppressMessages(library(cmprsk))
d <- read.csv(commandArgs(TRUE)[1], stringsAsFactors = FALSE)
X <- model.matrix(~ age + factor(sex, levels = c("M", "F")) + hb + plt + bm_blast +
  factor(cyto_ipssr, levels = c("Very Good", "Good", "Intermediate", "Poor", "Very Poor")), d)[, -1]
f <- crr(d$ftime, d$fstatus, X, gtol = 1e-13)
ci <- cuminc(d$ftime, d$fstatus, d$sex)
write.csv(data.frame(coef = f$coef, se = sqrt(diag(f$var)), gray = ci$Tests[1, "stat"]),
          commandArgs(TRUE)[2])
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/mds-ipssm-cohort"))
    ap.add_argument("--sites", type=int, nargs="+", default=[3, 10])
    args = ap.parse_args()
    rscript = shutil.which("Rscript")
    if rscript is None or not args.data.is_dir():
        sys.exit("needs Rscript (cmprsk) and the MDS cohort folder")

    from hemafed.analytics.competing import MDS_AML_VS_DEATH, first_cause
    from hemafed.analytics.finegray import FederatedFineGray
    from hemafed.analytics.graytest import federated_gray_test
    from hemafed.demo import demo_cohorts

    print(f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}; "
          f"command: {' '.join(sys.argv)}\n")
    print("| sites | patients (complete) | AML transformations | deaths without AML "
          "| max rel. diff coef vs crr | max rel. diff robust SE vs crr | Gray's test by sex: "
          "fed / cuminc | Newton rounds | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    causes = list(MDS_AML_VS_DEATH)
    cols = ["age", "sex", "hb", "plt", "bm_blast", "cyto_ipssr",
            *[c for pair in causes for c in pair]]
    for n_sites in args.sites:
        t0 = time.perf_counter()
        cohorts = demo_cohorts("MDS", 0, n_sites, 7, real=args.data)
        fed = FixedPointFederation(cohorts)
        fg = FederatedFineGray().fit(fed, FORMULA, causes)
        gray = federated_gray_test(fed, causes, "sex", ["M", "F"])
        seconds = time.perf_counter() - t0
        pooled = pd.concat([c.patients for c in cohorts.values()], ignore_index=True)
        cc = pooled.dropna(subset=cols).copy()
        t, k = first_cause(cc[["amlt_time", "os_time"]].astype(float).to_numpy(),
                           cc[["amlt_status", "os_status"]].astype(float).to_numpy())
        cc["ftime"], cc["fstatus"] = t, k
        gray_rows = pooled.dropna(subset=[c for pair in causes for c in pair] + ["sex"]).copy()
        with tempfile.TemporaryDirectory() as tmp:
            # Gray's test runs on every patient with the outcome (not only covariate-complete)
            gt, gk = first_cause(gray_rows[["amlt_time", "os_time"]].astype(float).to_numpy(),
                                 gray_rows[["amlt_status", "os_status"]].astype(float).to_numpy())
            out = cc[["age", "sex", "hb", "plt", "bm_blast", "cyto_ipssr", "ftime", "fstatus"]]
            out.to_csv(Path(tmp) / "d.csv", index=False)
            g = pd.DataFrame({"ftime": gt, "fstatus": gk, "sex": gray_rows["sex"].astype(str)})
            g.to_csv(Path(tmp) / "g.csv", index=False)
            script = R_SCRIPT.replace('ci <- cuminc(d$ftime, d$fstatus, d$sex)',
                                      'g <- read.csv(commandArgs(TRUE)[3])\n'
                                      'ci <- cuminc(g$ftime, g$fstatus, g$sex)')
            (Path(tmp) / "run.R").write_text(script)
            subprocess.run([rscript, str(Path(tmp) / "run.R"), str(Path(tmp) / "d.csv"),
                            str(Path(tmp) / "r.csv"), str(Path(tmp) / "g.csv")], check=True,
                           capture_output=True, timeout=600)
            ref = pd.read_csv(Path(tmp) / "r.csv", index_col=0)
        rel_c = np.max(np.abs(fg.params_.to_numpy() / ref["coef"].to_numpy() - 1))
        rel_s = np.max(np.abs(fg.standard_errors_.to_numpy() / ref["se"].to_numpy() - 1))
        print(f"| {n_sites} | {fg.n_} | {fg.events_} | {fg.competing_} | {rel_c:.1e} "
              f"| {rel_s:.1e} | {gray.statistic:.6f} / {ref['gray'].iloc[0]:.6f} "
              f"| {fg.rounds} | {seconds:.0f} |", flush=True)
    print("\nsubdistribution hazard ratios (federated, last split):\n")
    print("| covariate | SHR | 95% CI | p |\n|---|---|---|---|")
    for name, row in fg.summary.iterrows():
        print(f"| {name} | {row['exp(coef)']:.3f} | {row['exp(coef) lower 95%']:.3f} to "
              f"{row['exp(coef) upper 95%']:.3f} | {row['p']:.2g} |")


if __name__ == "__main__":
    main()
