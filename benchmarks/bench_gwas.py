"""Benchmark: federated GWAS (QC + PCA + linear association, secure sums over the in-process
transport) against PLINK 2 on the pooled file, same run, same machine.

Usage: ``.venv/bin/python benchmarks/bench_gwas.py [--variants 100000] [--patients 3000]
[--sites 10] [--pcs 10] [--threads 2] [--workdir DIR] [--reuse]``.

Steps: simulate the virtual SCD cohort (msprime; not timed against PLINK) and write per-site and
pooled PLINK 1 files; build the site directories and import each site's genotypes (timed as
"site intake"); then, each arm in its own child process so that peak memory is its own:

* federated: ``FederatedGWAS(n_pcs)`` over ``SecureFederation`` (every sum masked, signed and
  unmasked; all ten sites and the hub in one process, so its wall time is the *sum* of every
  site's work plus the hub's, not the latency of a real network);
* PLINK 2: ``--freq --hardy``, ``--pca`` on the same PCA variants, ``--glm`` with the same
  covariates (its own PCs), run with ``--threads``.

Prints a markdown table (wall and CPU seconds, peak RSS MB, secure sums, ratios) and the largest
differences of beta / SE / p between the arms. CPU seconds are the fairer comparison on a shared
machine (wall time counts the waits for a core).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

STUDY = "bench-gwas"


def _design(args: argparse.Namespace) -> Any:
    from hemafed.genomics.simulate import CohortDesign

    sizes = tuple(float(x) for x in np.geomspace(3.0, 1.0, args.sites))
    return CohortDesign(n_patients=args.patients, n_variants=args.variants, site_sizes=sizes,
                        null_segments=max(9, args.variants // 1100), segment_length=500_000,
                        seed=7)


def prepare(args: argparse.Namespace, work: Path) -> dict[str, float]:
    from hemafed.cohort.validate import validate_cohort
    from hemafed.demo import build_sites
    from hemafed.genomics.intake import import_genotypes
    from hemafed.genomics.simulate import simulate_cohort, write_cohort
    from hemafed.genomics.variants import VariantList
    from hemafed.study.spec import StudySpec

    t0 = time.perf_counter()
    cohort = simulate_cohort(_design(args))
    t_sim = time.perf_counter() - t0
    files = work / "files"
    write_cohort(cohort, files)
    spec = StudySpec.from_mapping({"study_id": STUDY, "analyses": [
        {"id": "g", "kind": "gwas", "trait": "hbf", "variant_list": str(files / "variants.tsv")}]})
    cohorts = {s: validate_cohort(pd.read_csv(files / s / "patients.csv")) for s in cohort.site_ids}
    sites = build_sites(work / "sites", cohorts, spec)
    vlist = VariantList.read(files / "variants.tsv")
    t0 = time.perf_counter()
    for s, d in sites.site_dirs.items():
        import_genotypes(d, files / s / "genotypes.bed", vlist, study=STUDY, build="GRCh38",
                         min_call_rate=0.5, max_abs_f=1.0)
    t_intake = time.perf_counter() - t0
    (work / "sites.json").write_text(json.dumps({"sites": {k: str(v) for k, v in
                                                           sites.site_dirs.items()},
                                                 "spec_sha256": spec.sha256}))
    return {"simulate_s": t_sim, "intake_s": t_intake, "variants": len(vlist),
            "patients": len(cohort.patients)}


def arm_federated(work: Path, pcs: int) -> dict[str, Any]:
    from hemafed.demo import LocalSites
    from hemafed.federation.inprocess import run_in_process
    from hemafed.federation.runtime import SecureFederation
    from hemafed.genomics.gwas import FederatedGWAS
    from hemafed.genomics.variants import VariantList
    from hemafed.secure import FederationManifest
    from hemafed.site.runtime import MANIFEST_FILE
    from hemafed.study.site_runtime import site_handler

    meta = json.loads((work / "sites.json").read_text())
    dirs = {k: Path(v) for k, v in meta["sites"].items()}
    sites = LocalSites(dirs, FederationManifest.load(next(iter(dirs.values())) / MANIFEST_FILE))
    vlist = VariantList.read(work / "files" / "variants.tsv")
    box: list[FederatedGWAS] = []

    def hub(exchange: Any, site_ids: list[str], config: dict[str, Any]) -> Any:
        fed = SecureFederation(exchange, sites.manifest, site_ids=site_ids,
                               spec_sha256=meta["spec_sha256"], requester="bench")
        box.append(FederatedGWAS(model="linear", n_pcs=pcs).fit(
            fed, vlist, study=STUDY, trait="hbf", study_id=STUDY))
        return {}

    use0 = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = use0.ru_utime + use0.ru_stime
    t0 = time.perf_counter()
    run_in_process(hub, site_handler, sites.site_configs(), {}, raise_errors=True)
    wall = time.perf_counter() - t0
    g = box[0]
    g.summary.to_parquet(work / "federated.parquet")
    assert g.pca is not None
    ids = vlist.frame["id"].iloc[g.pca.variants]
    (work / "pca.snps").write_text("\n".join(ids) + "\n")
    use = resource.getrusage(resource.RUSAGE_SELF)
    return {"wall_s": wall, "cpu_s": use.ru_utime + use.ru_stime - cpu0,
            "secure_sums": g.secure_sums, "phases_s": g.seconds,
            "lambda": g.genomic_lambda, "tested": len(g.summary),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def arm_plink(work: Path, pcs: int, threads: int) -> dict[str, Any]:
    exe = shutil.which("plink2")
    if exe is None:
        return {"skipped": "plink2 not installed"}
    files = work / "files"
    pts = pd.read_csv(files / "pooled_patients.csv")
    pheno = work / "pheno.tsv"
    pd.DataFrame({"#FID": pts.patient_id, "IID": pts.patient_id, "hbf": pts.hbf}).to_csv(
        pheno, sep="\t", index=False)
    base = [exe, "--threads", str(threads), "--bfile", str(files / "pooled")]
    t0 = time.perf_counter()
    subprocess.run([*base, "--freq", "--hardy", "--out", str(work / "plk")], check=True,
                   capture_output=True)
    subprocess.run([*base, "--extract", str(work / "pca.snps"), "--pca", str(pcs), "--out",
                    str(work / "plk")], check=True, capture_output=True)
    vec = pd.read_csv(work / "plk.eigenvec", sep="\t")
    cov = pd.DataFrame({"#FID": pts.patient_id, "IID": pts.patient_id, "age": pts.age,
                        "sex": (pts.sex == "F").astype(int)})
    cov = cov.merge(vec.drop(columns=["#FID"], errors="ignore"), on="IID")
    cov.to_csv(work / "cov.tsv", sep="\t", index=False)
    subprocess.run([*base, "--pheno", str(pheno), "--pheno-name", "hbf", "--covar",
                    str(work / "cov.tsv"), "--covar-variance-standardize", "--glm", "hide-covar",
                    "omit-ref", "--out", str(work / "plk")], check=True, capture_output=True)
    wall = time.perf_counter() - t0
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"wall_s": wall, "cpu_s": use.ru_utime + use.ru_stime,
            "peak_rss_mb": use.ru_maxrss / 1024}


def compare(work: Path) -> dict[str, float]:
    ours = pd.read_parquet(work / "federated.parquet")
    theirs = pd.read_csv(work / "plk.hbf.glm.linear", sep="\t")
    m = ours.merge(theirs, left_on="id", right_on="ID")
    rel = {k: float(np.nanmax(np.abs(m[a] - m[b]) / np.abs(m[b])))
           for k, a, b in (("beta", "beta", "BETA"), ("se", "se", "SE"))}
    rel["p_log10"] = float(np.nanmax(np.abs(np.log10(m["p"]) - np.log10(m["P"]))))
    rel["matched"] = len(m)
    return rel


def _child(arm: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--arm", arm, "--workdir", str(work), "--pcs", str(args.pcs),
           "--threads", str(args.threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", type=int, default=100_000)
    ap.add_argument("--patients", type=int, default=3000)
    ap.add_argument("--sites", type=int, default=10)
    ap.add_argument("--pcs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--arm", choices=("federated", "plink"), default=None)
    ap.add_argument("--reuse", action="store_true", help="reuse the simulated data in --workdir")
    args = ap.parse_args()
    if args.arm is not None:
        res = (arm_federated(args.workdir, args.pcs) if args.arm == "federated"
               else arm_plink(args.workdir, args.pcs, args.threads))
        print(json.dumps(res))
        return
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-gwas-"))
    work.mkdir(parents=True, exist_ok=True)
    prep = (json.loads((work / "prep.json").read_text()) if args.reuse and (work / "prep.json").exists()
            else prepare(args, work))
    (work / "prep.json").write_text(json.dumps(prep))
    fed = _child("federated", work, args)
    plk = _child("plink", work, args)
    diff = compare(work) if "wall_s" in plk else {}
    print(f"{prep['variants']} variants x {prep['patients']} patients x {args.sites} sites, "
          f"{args.pcs} PCs; simulate {prep['simulate_s']:.1f} s, site intake (10 sites) "
          f"{prep['intake_s']:.1f} s\n")
    print("| arm | wall s | CPU s | peak RSS MB | secure sums | wall / PLINK 2 | CPU / PLINK 2 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    ratio = fed["wall_s"] / plk["wall_s"] if "wall_s" in plk else float("nan")
    cpu_ratio = fed["cpu_s"] / plk["cpu_s"] if "cpu_s" in plk else float("nan")
    print(f"| federated (QC + PCA + linear GWAS, secure sums, in process) | {fed['wall_s']:.1f} | "
          f"{fed['cpu_s']:.1f} | {fed['peak_rss_mb']:.0f} | {fed['secure_sums']} | {ratio:.2f} | "
          f"{cpu_ratio:.2f} |")
    if "wall_s" in plk:
        print(f"| PLINK 2 pooled (--freq --hardy, --pca, --glm; {args.threads} threads) | "
              f"{plk['wall_s']:.1f} | {plk['cpu_s']:.1f} | {plk['peak_rss_mb']:.0f} | - | 1 | 1 |")
    print(f"\nphases (s): {json.dumps({k: round(v, 1) for k, v in fed['phases_s'].items()})}; "
          f"lambda {fed['lambda']:.3f}; tested {fed['tested']}; differences vs PLINK 2: {diff}")


if __name__ == "__main__":
    main()
