"""IPTW, illness-death Aalen-Johansen and REML mixed models through the secure runtime, against R.

On the real MDS cohort (``../shared/data/mds-ipssm-cohort``, times rounded to whole days), split
into uneven sites with real site directories (intake, policy, audit, pseudonyms), every secure
sum runs the full secure-aggregation protocol in process. It reports

* the IPTW estimate of the effect of hypomethylating agents (``hma``) on overall survival:
  stabilised weights from a propensity model on age, sex, haemoglobin, platelets, marrow
  blasts and IPSS-R cytogenetics; weighted Cox with robust SEs, against
  ``survival::coxph(Surv(os_time, os_status) ~ hma, weights = w, robust = TRUE)`` on the pooled
  rows; balance before and after weighting;
* MDS -> AML -> death state probabilities (``survival::survfit`` multi-state) at 1, 2 and 5 years;
* a seeded M-protein trajectory model (``lme4::lmer(y ~ t + x + (1 + t | id))``): rounds, time.

    .venv/bin/python benchmarks/bench_stats_methods.py --data ../shared/data/mds-ipssm-cohort
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

CONFOUNDERS = "age + sex + hb + plt + bm_blast + cyto_ipssr"

R_IPTW = """
library(survival)
d <- read.csv("mds.csv")
x <- d[, setdiff(names(d), c("hma", "os_time", "os_status"))]
ps <- glm(d$hma ~ ., family = binomial, data = x,
          control = glm.control(epsilon = 1e-14, maxit = 100))
e <- fitted(ps); pi1 <- mean(d$hma)
d$w <- ifelse(d$hma == 1, pi1 / e, (1 - pi1) / (1 - e))
fit <- coxph(Surv(os_time, os_status) ~ hma, data = d, weights = w, robust = TRUE,
             control = coxph.control(eps = 1e-14, iter.max = 100))
naive <- coxph(Surv(os_time, os_status) ~ hma, data = d,
               control = coxph.control(eps = 1e-14, iter.max = 100))
ms <- read.csv("rows.csv")
ms$state <- factor(ms$state, levels = c("censor", "AML", "death"))
aj <- summary(survfit(Surv(tstart, tstop, state) ~ 1, data = ms, id = id), times = c(1, 2, 5))
res <- list(coef = unname(coef(fit)), robust_se = sqrt(diag(fit$var)),
            naive_se = sqrt(diag(fit$naive.var)), n = fit$n, events = fit$nevent,
            unweighted_coef = unname(coef(naive)), unweighted_se = sqrt(diag(naive$var)),
            aj_p = as.vector(aj$pstate), aj_se = as.vector(aj$std.err))
enc <- function(v) paste0("[", paste(formatC(as.numeric(v), digits = 17, format = "g"),
                                      collapse = ","), "]")
writeLines(paste0("{", paste(sprintf('"%s":%s', names(res), sapply(res, enc)), collapse = ","),
                  "}"), "out.json")
"""


def pooled_iptw_frame(patients: pd.DataFrame) -> pd.DataFrame:
    from hemafed.cohort.schema import CYTO_IPSSR

    cols = ["age", "sex", "hb", "plt", "bm_blast", "cyto_ipssr", "hma", "os_time", "os_status"]
    d = patients[cols].dropna(subset=cols[:7]).reset_index(drop=True)
    out = pd.DataFrame({"age": d["age"].astype(float), "sexF": (d["sex"] == "F").astype(float),
                        "hb": d["hb"].astype(float), "plt": d["plt"].astype(float),
                        "bm_blast": d["bm_blast"].astype(float)})
    for k, level in enumerate(CYTO_IPSSR[1:]):
        out[f"cyto{k}"] = (d["cyto_ipssr"] == level).astype(float)
    out["hma"] = d["hma"].astype(int)
    out["os_time"] = d["os_time"].astype(float)
    out["os_status"] = d["os_status"].astype(float)
    return out


def counting_rows(patients: pd.DataFrame) -> pd.DataFrame:
    cols = ["amlt_time", "amlt_status", "os_time", "os_status"]
    df = patients[cols].dropna().astype(float)
    rows = []
    for i, (u, su, t, st) in enumerate(df.itertuples(index=False)):
        if su == 1 and u < t:
            rows += [(i, 0.0, u, "AML"), (i, u, t, "death" if st else "censor")]
        elif su == 1:
            rows.append((i, 0.0, u, "AML"))
        else:
            rows.append((i, 0.0, min(u, t), "death" if (st and t <= u) else "censor"))
    return pd.DataFrame(rows, columns=["id", "tstart", "tstop", "state"])


def run_r(frames: dict[str, pd.DataFrame]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        for name, frame in frames.items():
            frame.to_csv(Path(tmp) / f"{name}.csv", index=False)
        (Path(tmp) / "s.R").write_text(R_IPTW)
        subprocess.run(["Rscript", "s.R"], cwd=tmp, check=True, capture_output=True)
        return dict(json.loads((Path(tmp) / "out.json").read_text()))


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="../shared/data/mds-ipssm-cohort")
    parser.add_argument("--sites", type=int, default=5)
    parser.add_argument("--lmm-patients", type=int, default=500)
    parser.add_argument("--max-weight", type=float, default=None,
                        help="public cap on the IPTW weights (default: from the design bounds)")
    args = parser.parse_args()
    from hemafed.analytics.multistate import FederatedIllnessDeath
    from hemafed.analytics.weighting import FederatedIPTW
    from hemafed.cohort.partition import split_sites
    from hemafed.cohort.public import read_mds_ipssm
    from hemafed.demo import build_sites, on_day_lattice
    from hemafed.federation.inprocess import run_in_process
    from hemafed.federation.runtime import SecureFederation
    from hemafed.study.site_runtime import site_handler
    from hemafed.study.spec import StudySpec

    cohort = on_day_lattice(read_mds_ipssm(args.data).cohort)
    spec = StudySpec.from_mapping({"study_id": "bench-stats", "requester": "bench",
                                   "analyses": [{"id": "size", "kind": "describe",
                                                 "columns": ["sex"]}]})
    with tempfile.TemporaryDirectory() as tmp:
        sites = build_sites(Path(tmp), split_sites(cohort, args.sites, seed=4, size_skew=0.8),
                            spec)

        def hub(exchange: Any, site_ids: list[str], config: dict[str, Any]) -> Any:
            fed = SecureFederation(exchange, sites.manifest, spec_sha256=spec.sha256,
                                   requester="bench")
            t0 = time.perf_counter()
            fit = FederatedIPTW().fit(fed, "hma", CONFOUNDERS, study=spec.study_id,
                                      max_weight=args.max_weight)
            t1 = time.perf_counter()
            ms = FederatedIllnessDeath().fit(fed, study=spec.study_id)
            t2 = time.perf_counter()
            return {"coef": float(fit.params_.iloc[0]),
                    "robust_se": float(fit.standard_errors_.iloc[0]),
                    "naive_se": float(fit.naive_standard_errors_.iloc[0]),
                    "n": fit.n_, "events": fit.events_, "rounds": fit.rounds,
                    "seconds": t1 - t0, "balance": fit.balance_.to_dict(),
                    "ess": fit.effective_sample_size_.to_dict(),
                    "aj": ms.predict([1.0, 2.0, 5.0]).to_numpy().tolist(),
                    "aj_se": ms.standard_errors_.reindex(
                        ms.state_probabilities_.index).to_numpy()[np.searchsorted(
                            ms.state_probabilities_.index.to_numpy(), [1.0, 2.0, 5.0],
                            side="right") - 1].tolist()
                    if ms.standard_errors_ is not None else [],
                    "aj_t": ms.state_probabilities_.index.tolist(),
                    "aj_rounds": ms.rounds, "aj_seconds": t2 - t1, "aj_n": ms.n_}

        out = run_in_process(hub, site_handler, sites.site_configs(), {})
    ref = run_r({"mds": pooled_iptw_frame(cohort.patients),
                 "rows": counting_rows(cohort.patients)})
    hr = np.exp(out["coef"])
    lo, hi = np.exp(out["coef"] - 1.959964 * out["robust_se"]), np.exp(
        out["coef"] + 1.959964 * out["robust_se"])
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print(f"IPTW over {args.sites} sites: n={out['n']}, events={out['events']}, "
          f"secure sums={out['rounds']}, {out['seconds']:.1f} s")
    print(f"  HR {hr:.4f} (95% CI {lo:.4f}-{hi:.4f}), coef {out['coef']:.10f} "
          f"(R {ref['coef'][0]:.10f}, rel {rel(out['coef'], ref['coef'][0]):.1e}); robust SE "
          f"{out['robust_se']:.10f} (R {ref['robust_se'][0]:.10f}, rel "
          f"{rel(out['robust_se'], ref['robust_se'][0]):.1e}); naive SE {out['naive_se']:.10f} "
          f"(R {ref['naive_se'][0]:.10f}); R n={ref['n'][0]:g} events={ref['events'][0]:g}")
    print(f"  unweighted Cox (R): HR {np.exp(ref['unweighted_coef'][0]):.4f} "
          f"(SE {ref['unweighted_se'][0]:.4f})")
    bal = pd.DataFrame(out["balance"])
    print(bal[["smd", "weighted_smd"]].round(3).to_string())
    print("  ESS", {k: round(v, 1) for k, v in out["ess"].items()})
    aj = np.asarray(out["aj"])
    ref_p = np.asarray(ref["aj_p"]).reshape(3, 3).T
    print(f"illness-death over {args.sites} sites: n={out['aj_n']}, secure sums "
          f"{out['aj_rounds']}, {out['aj_seconds']:.1f} s, grid {len(out['aj_t'])} times")
    aj_se, ref_se = np.asarray(out["aj_se"]), np.asarray(ref["aj_se"]).reshape(3, 3).T
    for k, t in enumerate((1, 2, 5)):
        print(f"  t={t}: P(MDS, AML, death) = {np.round(aj[k], 5).tolist()} "
              f"SE {np.round(aj_se[k], 5).tolist()}; max rel diff to R: P "
              f"{float(np.max(np.abs(aj[k] - ref_p[k]) / np.abs(ref_p[k]))):.1e}, SE "
              f"{float(np.max(np.abs(aj_se[k] - ref_se[k]) / np.abs(ref_se[k]))):.1e}")
    bench_lmm(args.lmm_patients, args.sites)


R_LMER = """
library(lme4)
d <- read.csv("long.csv")
tight <- lmerControl(optimizer = "nloptwrap", calc.derivs = FALSE,
                     optCtrl = list(xtol_abs = 1e-14, ftol_abs = 1e-14, xtol_rel = 0,
                                    ftol_rel = 0, maxeval = 100000))
t0 <- proc.time()[["elapsed"]]
fit <- lmer(y ~ t + x + (1 + t | id), data = d, REML = TRUE, control = tight)
secs <- proc.time()[["elapsed"]] - t0
vc <- as.data.frame(VarCorr(fit))
res <- list(beta = fixef(fit), se = sqrt(diag(as.matrix(vcov(fit)))), sdcor = vc$sdcor,
            seconds = secs)
enc <- function(v) paste0("[", paste(formatC(as.numeric(v), digits = 17, format = "g"),
                                      collapse = ","), "]")
writeLines(paste0("{", paste(sprintf('"%s":%s', names(res), sapply(res, enc)), collapse = ","),
                  "}"), "out.json")
"""


def mprotein(n: int, seed: int = 17) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Seeded M-protein trajectories (as tests/analytics/test_mixed.py generates them)."""
    rng = np.random.default_rng(seed)
    age = np.round(rng.normal(66, 9, n).clip(35, 90), 1)
    b0, b1 = rng.normal(0, 8, n), rng.normal(0, 3, n)
    rows = []
    for i in range(n):
        visits = rng.integers(3, 11)
        t = np.round(np.cumsum(np.r_[0, rng.uniform(1, 3, visits - 1)]) / 12, 4)
        y = 35 + b0[i] + 0.15 * (age[i] - 66) + (-6.0 + b1[i]) * t + rng.normal(0, 2.5, t.size)
        rows += [(f"mm{i:04d}", tt, max(yy, 0.0)) for tt, yy in zip(t, y, strict=True)]
    return (pd.DataFrame({"patient_id": [f"mm{i:04d}" for i in range(n)], "disease": "MM",
                          "age": age}),
            pd.DataFrame(rows, columns=["patient_id", "time", "mprotein"]))


def bench_lmm(n_patients: int, n_sites: int) -> None:
    from hemafed.analytics.mixed import (
        FederatedLinearMixedModel,
        import_measurements,
    )
    from hemafed.cohort.validate import validate_cohort
    from hemafed.demo import build_sites
    from hemafed.federation.inprocess import run_in_process
    from hemafed.federation.runtime import SecureFederation
    from hemafed.study.site_runtime import longitudinal_site_handler
    from hemafed.study.spec import StudySpec

    patients, long = mprotein(n_patients)
    spec = StudySpec.from_mapping({"study_id": "bench-lmm", "requester": "bench",
                                   "analyses": [{"id": "size", "kind": "describe",
                                                 "columns": ["sex"]}]})
    groups = np.array_split(np.random.default_rng(1).permutation(n_patients), n_sites)
    bounds = {"mprotein": [0.0, 150.0], "time": [0.0, 10.0], "age": [0.0, 110.0]}
    with tempfile.TemporaryDirectory() as tmp:
        ids = {f"site{k}": patients["patient_id"].iloc[np.sort(g)] for k, g in enumerate(groups)}
        sites = build_sites(Path(tmp), {s: validate_cohort(patients[patients["patient_id"].isin(
            v)]) for s, v in ids.items()}, spec)
        for s, v in ids.items():
            import_measurements(sites.site_dirs[s], long[long["patient_id"].isin(v)],
                                spec.study_id)

        def hub(exchange: Any, site_ids: list[str], config: dict[str, Any]) -> Any:
            fed = SecureFederation(exchange, sites.manifest, spec_sha256=spec.sha256,
                                   requester="bench")
            t0 = time.perf_counter()
            fit = FederatedLinearMixedModel().fit(fed, "mprotein", "time", ["age"],
                                                  bounds=bounds, study=spec.study_id)
            vc = fit.variance_components
            return {"beta": fit.params_.tolist(), "se": fit.standard_errors_.tolist(),
                    "sdcor": [vc["std_dev"].iloc[0], vc["std_dev"].iloc[1], vc["corr"].iloc[1],
                              vc["std_dev"].iloc[2]],
                    "rounds": fit.rounds, "seconds": time.perf_counter() - t0}

        out = run_in_process(hub, longitudinal_site_handler, sites.site_configs(), {})
    pooled = long.merge(patients[["patient_id", "age"]], on="patient_id").rename(
        columns={"patient_id": "id", "mprotein": "y", "time": "t", "age": "x"})
    with tempfile.TemporaryDirectory() as tmp:
        pooled.to_csv(Path(tmp) / "long.csv", index=False)
        (Path(tmp) / "s.R").write_text(R_LMER)
        subprocess.run(["Rscript", "s.R"], cwd=tmp, check=True, capture_output=True)
        ref = json.loads((Path(tmp) / "out.json").read_text())
    diffs = {k: float(np.max(np.abs(np.asarray(out[k]) - ref[k]) / np.abs(ref[k])))
             for k in ("beta", "se", "sdcor")}
    print(f"LMM, {n_patients} patients / {len(long)} measurements over {n_sites} sites: "
          f"{out['rounds']} secure sums, {out['seconds']:.1f} s (lme4 pooled "
          f"{ref['seconds'][0]:.2f} s); max rel diff to lme4 (tight): "
          + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()))


if __name__ == "__main__":
    main()
