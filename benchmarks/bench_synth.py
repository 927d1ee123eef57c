"""Benchmark: federated DP synthesis (MST, AIM) through the real runtime vs the central mechanism.

Usage: ``.venv/bin/python benchmarks/bench_synth.py [--data ../shared/data] [--sites 10]
[--epsilons 0.5 1 2 4] [--mechanism mst|aim|aim-anchor|all] [--repeats 5]
[--noise-shares all|threshold] [--iters 1000] [--rounds R] [--out results.json]``.

The question (issue 6): is the federated fit's error (mean two-way marginal TVD over the chosen
columns) within 5% of the same mechanism run centrally on the pooled data?

Data. The MDS IPSS-M cohort (2,957 patients) is split 80/20 into training and holdout patients
(``numpy`` generator seed 0); the training patients are spread over ``--sites`` heterogeneous
sites with ``split_sites(seed=1, size_skew=1.0, case_mix_shift=0.5)``.

Federated arm: the real runtime. Each site cohort goes through the site intake into its own site
directory (``hemafed.demo.build_sites``: validation, pseudonyms, policy approving the benchmark
study's hash, ledger, hash-chained audit log, signing identity, pinned federation manifest), in a
temporary directory that is deleted at the end. Every fit is one ``run_in_process`` session over
the in-process transport: the hub builds ``SecureFederation`` and fits the model; each site
checks the request against its policy, charges its ledger, adds its own Gaussian noise share
(drawn from OS entropy, so the federated arm is not reproducible draw for draw) and masks its
answer for secure aggregation. ``--noise-shares`` is passed to ``SecureFederation``: ``all``
(each of the n sites adds variance sigma^2/n, so the released sum carries exactly sigma^2) or
``threshold`` (sigma^2/t, t the secure-aggregation threshold: tolerates dropouts, n/t times the
variance); the mode is printed and saved.

Budget: so that every repeat can be charged, the benchmark raises each site's per-study and
total epsilon in ``policy.yaml`` to :data:`BUDGET_EPSILON` (one study id for all fits); every
release is still checked and charged, and the end of the run prints each site's number of
ledger charges and composed epsilon.

Central arm: the same mechanism on the pooled training cohort as a single site,
``LocalSumFederation({"pooled": train_cohort}, dp_seed=...)``: one Gaussian noise draw of the full
sigma per release, i.e. exactly the central mechanism (seeded, reproducible).

Repeats and statistics. Each (mechanism, epsilon) cell is fitted ``--repeats`` times per arm with
independent noise; the synthetic cohort of repeat r is ``sample(n_train, seed=r + 1)`` in both
arms. The table reports the mean 2-way TVD of each arm with its standard error, and the relative
difference ``mean_fed / mean_central - 1`` with a 95% Welch t interval: the interval of the
difference of means (Welch-Satterthwaite degrees of freedom) divided by the central mean (the
uncertainty of the denominator is ignored; it is small next to that of the difference). The full
evaluation (KM, Cox, TSTR, membership inference, sampling 10,000 patients, peak RSS) is done on
the first repeat of each arm only; the table shows the federated one, the JSON (``--out``) holds
every repeat's numbers. Before fitting, the benchmark checks that the site intake preserved the
data: the exact (non-DP) marginal counts of the site directories equal those of the pooled
training cohort. The Gaussian copula (local, non-DP) is reported as a reference line.

Long runs: JAX's compiled code is dropped after every fit (see :func:`release_compiled_code`),
and the JSON is rewritten after every cell (``"complete": false`` until the end).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from scipy import stats

from hemafed.atomic import write_text
from hemafed.cohort.model import Cohort
from hemafed.cohort.partition import split_sites
from hemafed.cohort.public import read_mds_ipssm
from hemafed.demo import LocalSites, build_sites
from hemafed.federation.inprocess import run_in_process
from hemafed.federation.local import LocalSumFederation
from hemafed.federation.runtime import SecureFederation
from hemafed.study.site_runtime import site_handler
from hemafed.study.spec import StudySpec
from hemafed.synth import FederatedAIM, FederatedMST
from hemafed.synth.copula import GaussianCopulaSynthesizer
from hemafed.synth.domain import SynthDomain
from hemafed.synth.evaluate import evaluate, marginal_tvds
from hemafed.synth.queries import QUERY, query_params

COLUMNS = ["age", "sex", "hb", "plt", "anc", "bm_blast", "cyto_ipssr", "os_time", "os_status",
           "amlt_time", "amlt_status"]
DELTA = 1e-6
BUDGET_EPSILON = 10_000.0
"""Per-study and total epsilon written into every site's policy so that all repeats fit."""
STUDY = {"study_id": "bench-synth", "requester": "bench-synth",
         "analyses": [{"id": "km", "kind": "km", "duration": "os_time", "event": "os_status"}]}
HEADER = ("| method | epsilon | repeats | TVD federated mean ± SE | TVD central mean ± SE | "
          "fed/central - 1 (95% CI) | KM max diff | TSTR C-index | TRTR | MIA AUC | "
          "fit s (fed) | sample 10,000 s | peak RSS MB |")
RULE = "|---|---|---|---|---|---|---|---|---|---|---|---|---|"

Model = FederatedMST | FederatedAIM


# --- statistics (pure) --------------------------------------------------------------------------

def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (NaN standard error for fewer than 2 values)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return float("nan"), float("nan")
    se = float(x.std(ddof=1) / math.sqrt(x.size)) if x.size > 1 else float("nan")
    return float(x.mean()), se


def relative_difference_ci(federated: Sequence[float], central: Sequence[float],
                           level: float = 0.95) -> tuple[float, float, float]:
    """``mean(fed) / mean(central) - 1`` and its Welch t interval (divided by the central mean).

    >>> point, lo, hi = relative_difference_ci([1.1, 1.2, 1.0], [1.0, 0.9, 1.1])
    >>> round(point, 3), lo < point < hi
    (0.1, True)
    """
    f = np.asarray(federated, dtype=float)
    c = np.asarray(central, dtype=float)
    mf, mc = float(f.mean()), float(c.mean())
    point = mf / mc - 1.0
    if f.size < 2 or c.size < 2:
        return point, float("nan"), float("nan")
    vf, vc = f.var(ddof=1) / f.size, c.var(ddof=1) / c.size
    se = math.sqrt(vf + vc)
    if se == 0:
        return point, point, point
    df = (vf + vc) ** 2 / (vf**2 / (f.size - 1) + vc**2 / (c.size - 1))
    half = float(stats.t.ppf(0.5 + level / 2, df)) * se
    return point, (mf - mc - half) / mc, (mf - mc + half) / mc


def tvd2_mean(train: pd.DataFrame, synthetic: pd.DataFrame, domain: SynthDomain) -> float:
    """Mean two-way marginal TVD, as ``evaluate(...).fidelity['tvd_2way_mean']`` computes it."""
    return float(np.mean(list(marginal_tvds(train, synthetic, domain, 2).values())))


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --- the two arms -------------------------------------------------------------------------------

def raise_budgets(site_dir: Path, epsilon: float) -> None:
    """Set the per-study and total epsilon of a site's policy (so that every repeat is charged)."""
    policy = yaml.safe_load((site_dir / "policy.yaml").read_text())
    policy["privacy_budget"]["per_study"]["epsilon"] = epsilon
    policy["privacy_budget"]["total"]["epsilon"] = epsilon
    write_text(site_dir / "policy.yaml", yaml.safe_dump(policy, sort_keys=False))


def fit_federated(sites: LocalSites, spec: StudySpec, model: Model,
                  noise_shares: str) -> Model:
    """Fit ``model`` through the real runtime (secure aggregation, site noise, ledgers)."""
    fitted: dict[str, Model] = {}

    def hub(exchange: Any, site_ids: list[str], config: dict[str, Any]) -> Any:
        fed = SecureFederation(exchange, sites.manifest, site_ids=site_ids,
                               spec_sha256=spec.sha256, requester=spec.requester,
                               noise_shares=noise_shares)
        fitted["model"] = model.fit(fed, study=spec.study_id)
        return model.privacy()

    run_in_process(hub, site_handler, sites.site_configs(), {}, raise_errors=True)
    return fitted["model"]


def release_compiled_code() -> None:
    """Drop JAX's compiled functions after a fit.

    Every Private-PGM estimate over a new set of cliques compiles new XLA code, kept in JAX's
    caches; over a few hundred AIM fits the executable mappings exceed the kernel's
    ``vm.max_map_count`` (LLVM "Cannot allocate memory", then a segmentation fault).
    """
    import gc

    import jax

    jax.clear_caches()
    gc.collect()


def fit_central(train_cohort: Cohort, model: Model, seed: int) -> Model:
    """The same mechanism on the pooled cohort as one site: one noise draw of the full sigma."""
    return model.fit(LocalSumFederation({"pooled": train_cohort}, dp_seed=seed))


def intake_preserved(sites: LocalSites, train_cohort: Cohort, domain: SynthDomain) -> int:
    """Largest |difference| of exact two-way counts between the site directories and the pool."""
    from hemafed.site.store import load_cohort
    from hemafed.study.derived import with_derived_scores

    stored = {s: with_derived_scores(load_cohort(d)) for s, d in sites.site_dirs.items()}
    params = query_params(domain, [(a, b) for i, a in enumerate(domain.names)
                                   for b in domain.names[i + 1:]])
    a = LocalSumFederation(stored).secure_sum(QUERY, params)
    b = LocalSumFederation({"pooled": with_derived_scores(train_cohort)}).secure_sum(QUERY, params)
    return int(max(np.abs(np.asarray(a[k]) - np.asarray(b[k])).max() for k in a.values))


# --- one cell -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Data:
    train_cohort: Cohort
    train: pd.DataFrame
    holdout: pd.DataFrame
    domain: SynthDomain


def full_evaluation(model: Model, data: Data) -> dict[str, Any]:
    t0 = time.perf_counter()
    big = model.sample(10_000, seed=0)
    sample_s = time.perf_counter() - t0
    del big
    rep = evaluate(data.train, model.sample(len(data.train), seed=1), data.holdout)
    return {"tvd2": rep.fidelity["tvd_2way_mean"], "km_os": rep.fidelity["km_max_diff_os"],
            "cox_log_hr_diff": rep.fidelity.get("cox_log_hr_max_abs_diff", float("nan")),
            "c_index_tstr": rep.utility["c_index_tstr"],
            "c_index_trtr": rep.utility["c_index_trtr"], "mia_auc": rep.privacy["mia_auc"],
            "passes_gate": rep.passes(), "sample_10k_s": sample_s}


def run_cell(label: str, eps: float, make: Callable[[float], Model], data: Data,
             sites: LocalSites, spec: StudySpec, repeats: int,
             noise_shares: str) -> dict[str, Any]:
    """Fit one (mechanism, epsilon) cell ``repeats`` times per arm; every repeat's numbers."""
    arms: dict[str, list[dict[str, Any]]] = {"federated": [], "central": []}
    first: dict[str, dict[str, Any]] = {}
    for r in range(repeats):
        for arm in ("federated", "central"):
            t0 = time.perf_counter()
            if arm == "federated":
                model = fit_federated(sites, spec, make(eps), noise_shares)
            else:
                model = fit_central(data.train_cohort, make(eps),
                                    seed=100_000 * r + round(eps * 1000) + 1)
            fit_s = time.perf_counter() - t0
            release_compiled_code()
            tvd = tvd2_mean(data.train, model.sample(len(data.train), seed=r + 1), data.domain)
            arms[arm].append({"repeat": r, "tvd2": tvd, "fit_s": fit_s,
                              "epsilon_spent": model.privacy()["epsilon_spent"],
                              "selected": [list(c) for c in getattr(model, "selected", None)
                                           or getattr(model, "tree", [])]})
            if r == 0:
                first[arm] = full_evaluation(model, data)
            print(f"  {label} eps {eps:g} repeat {r + 1}/{repeats} {arm}: TVD {tvd:.4f}, "
                  f"fit {fit_s:.1f} s", file=sys.stderr, flush=True)
    fed = [x["tvd2"] for x in arms["federated"]]
    cen = [x["tvd2"] for x in arms["central"]]
    point, lo, hi = relative_difference_ci(fed, cen)
    return {"method": label, "epsilon": eps, "delta": DELTA, "repeats": repeats,
            "tvd2_federated": mean_se(fed), "tvd2_central": mean_se(cen),
            "relative_difference": point, "relative_difference_ci95": [lo, hi],
            "within_5pct": abs(point) <= 0.05, "ci_excludes_5pct": hi < 0.05,
            "fit_s_federated_mean": float(np.mean([x["fit_s"] for x in arms["federated"]])),
            "fit_s_central_mean": float(np.mean([x["fit_s"] for x in arms["central"]])),
            "first_repeat_evaluation": first, "repeats_detail": arms,
            "peak_rss_mb": peak_mb()}


def markdown_row(r: Mapping[str, Any]) -> str:
    (mf, sf), (mc, sc) = r["tvd2_federated"], r["tvd2_central"]
    lo, hi = r["relative_difference_ci95"]
    ev = r["first_repeat_evaluation"]["federated"]
    return (f"| {r['method']} | {r['epsilon']:g} | {r['repeats']} | {mf:.4f} ± {sf:.4f} | "
            f"{mc:.4f} ± {sc:.4f} | {100 * r['relative_difference']:+.1f}% "
            f"({100 * lo:+.1f}%, {100 * hi:+.1f}%) | {ev['km_os']:.3f} | "
            f"{ev['c_index_tstr']:.3f} | {ev['c_index_trtr']:.3f} | {ev['mia_auc']:.3f} | "
            f"{r['fit_s_federated_mean']:.1f} | {ev['sample_10k_s']:.2f} | "
            f"{r['peak_rss_mb']:.0f} |")


# --- main ---------------------------------------------------------------------------------------

def variants(args: argparse.Namespace) -> list[tuple[str, Callable[[float], Model]]]:
    out: list[tuple[str, Callable[[float], Model]]] = []
    if args.mechanism in ("mst", "all"):
        out.append(("MST", lambda e: FederatedMST(e, DELTA, COLUMNS, iters=args.iters)))
        if args.anchor:
            out.append((f"MST+{args.anchor}", lambda e: FederatedMST(
                e, DELTA, COLUMNS, iters=args.iters, anchor=args.anchor)))
    if args.mechanism in ("aim", "all"):
        out.append(("AIM", lambda e: FederatedAIM(e, DELTA, COLUMNS, iters=args.iters,
                                                  rounds=args.rounds)))
    if args.mechanism in ("aim-anchor", "all"):
        outcome = tuple(c for c in args.aim_anchor.split(",") if c)
        out.append((f"AIM+{'/'.join(outcome)}", lambda e: FederatedAIM(
            e, DELTA, COLUMNS, iters=args.iters, rounds=args.rounds, anchor=outcome,
            anchor_weight=args.aim_anchor_weight)))
    return out


def save(path: Path, doc: Mapping[str, Any]) -> None:
    write_text(path, json.dumps(doc, indent=2, default=float) + "\n")


def copula_reference(data: Data) -> dict[str, float]:
    t0 = time.perf_counter()
    cop = GaussianCopulaSynthesizer().fit(data.train)
    cop_big = cop.sample(10_000, seed=0)
    cop_s = time.perf_counter() - t0
    del cop_big
    rep = evaluate(data.train, cop.sample(len(data.train), seed=1), data.holdout)
    return {"tvd2": rep.fidelity["tvd_2way_mean"], "km_os": rep.fidelity["km_max_diff_os"],
            "c_index_tstr": rep.utility["c_index_tstr"], "mia_auc": rep.privacy["mia_auc"],
            "fit_and_sample_10k_s": cop_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path,
                    default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--sites", type=int, default=10)
    ap.add_argument("--epsilons", type=float, nargs="+", default=[0.5, 1.0, 2.0, 4.0])
    ap.add_argument("--repeats", type=int, default=5,
                    help="fits per arm and cell, each with independent noise")
    ap.add_argument("--noise-shares", choices=["all", "threshold"], default="all",
                    help="SecureFederation noise_shares: 'all' (sigma^2/n per site, exact "
                         "central noise) or 'threshold' (sigma^2/t, tolerates dropouts)")
    ap.add_argument("--iters", type=int, default=1000)
    ap.add_argument("--anchor", default="os_status",
                    help="also fit the survival-aware MST anchored on this column ('' skips)")
    ap.add_argument("--mechanism", choices=["mst", "aim", "aim-anchor", "all"], default="all",
                    help="which mechanism's rows to run")
    ap.add_argument("--rounds", type=int, default=None, help="AIM's planned rounds (default 4 d)")
    ap.add_argument("--aim-anchor", default="os_status",
                    help="outcome columns (comma-separated) of the survival-aware AIM workload")
    ap.add_argument("--aim-anchor-weight", type=float, default=8.0,
                    help="weight of the covariate-outcome cliques in the AIM workload")
    ap.add_argument("--out", type=Path, default=None, help="JSON file with every repeat's numbers")
    args = ap.parse_args()
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")

    start = time.perf_counter()
    cohort = read_mds_ipssm(args.data / "mds-ipssm-cohort").cohort
    rng = np.random.default_rng(0)
    is_train = rng.random(len(cohort)) < 0.8
    train_cohort = cohort.select(is_train)
    data = Data(train_cohort, train_cohort.patients[COLUMNS].reset_index(drop=True),
                cohort.select(~is_train).patients[COLUMNS].reset_index(drop=True),
                SynthDomain.for_columns(COLUMNS))
    site_cohorts = split_sites(train_cohort, args.sites, seed=1, size_skew=1.0,
                               case_mix_shift=0.5)
    sizes = sorted((len(c) for c in site_cohorts.values()), reverse=True)
    noise_shares: str = args.noise_shares
    mode = f"noise shares: {noise_shares}"
    print(f"MDS IPSS-M cohort: {len(data.train)} training patients over {args.sites} sites "
          f"(sizes {sizes}), {len(data.holdout)} holdout; {len(COLUMNS)} columns; delta {DELTA:g}; "
          f"{args.repeats} repeat(s) per arm; {mode}", flush=True)

    head: dict[str, Any] = {
        "noise_shares": noise_shares, "repeats": args.repeats,
        "sites": args.sites, "site_sizes": sizes, "delta": DELTA,
        "ci_method": "Welch t interval of mean difference / central mean, 95%"}
    spec = StudySpec.from_mapping(STUDY)
    rows: list[dict[str, Any]] = []
    ledgers: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="hemafed-bench-synth-") as root:
        sites = build_sites(Path(root) / "sites", site_cohorts, spec, today=dt.date.today())
        for site_dir in sites.site_dirs.values():
            raise_budgets(site_dir, BUDGET_EPSILON)
        diff = intake_preserved(sites, train_cohort, data.domain)
        head.update(threshold=sites.manifest.threshold, intake_max_count_diff=diff)
        print(f"secure-aggregation threshold {sites.manifest.threshold} of {args.sites}; site "
              f"intake check: max |exact 2-way count difference| sites vs pool = {diff}",
              flush=True)
        print(HEADER)
        print(RULE, flush=True)
        for eps in args.epsilons:
            for label, make in variants(args):
                rows.append(run_cell(label, eps, make, data, sites, spec, args.repeats,
                                     noise_shares))
                print(markdown_row(rows[-1]), flush=True)
                if args.out:  # after every cell, so a crash keeps the finished cells
                    save(args.out, {**head, "rows": rows, "complete": False})
        from hemafed.site.ledger import PrivacyLedger
        from hemafed.site.policy import SitePolicy

        for site_id, site_dir in sites.site_dirs.items():
            ledger = PrivacyLedger.from_policy(site_dir / "ledger.jsonl",
                                               SitePolicy.load(site_dir / "policy.yaml"))
            spent = ledger.spent(spec.study_id)
            ledgers[site_id] = {"charges": len(ledger.charges()), "epsilon": spent.epsilon}
    copula = copula_reference(data)
    wall = time.perf_counter() - start

    print(f"\n{mode}; {args.repeats} repeat(s) per arm; fed/central - 1: 95% Welch t interval "
          "of the difference of mean TVDs divided by the central mean; KM/TSTR/MIA/sample/RSS "
          "from the first federated repeat\n")
    print(HEADER)
    print(RULE)
    for r in rows:
        print(markdown_row(r))
    print(f"\nGaussian copula (local, non-DP, pooled training rows): 2-way TVD "
          f"{copula['tvd2']:.3f}, KM OS max diff {copula['km_os']:.3f}, C-index TSTR "
          f"{copula['c_index_tstr']:.3f}, MIA AUC {copula['mia_auc']:.3f}, fit + sample "
          f"10k {copula['fit_and_sample_10k_s']:.2f} s")
    charges = sorted({v["charges"] for v in ledgers.values()})
    print(f"site ledgers: {charges} charge(s) per site, composed epsilon of the study "
          f"{min(v['epsilon'] for v in ledgers.values()):.3g}.."
          f"{max(v['epsilon'] for v in ledgers.values()):.3g} (budget raised to "
          f"{BUDGET_EPSILON:g} for the repeats)")
    within = [r for r in rows if r["within_5pct"]]
    print(f"cells within 5%: {len(within)}/{len(rows)}; cells whose CI upper bound is below +5%: "
          f"{sum(r['ci_excludes_5pct'] for r in rows)}/{len(rows)}; wall time {wall:.0f} s")
    if args.out:
        save(args.out, {**head, "rows": rows, "copula": copula, "ledgers": ledgers,
                        "wall_s": wall, "complete": True})


if __name__ == "__main__":
    main()
