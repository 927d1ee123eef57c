"""The main job: a federation of virtual hospitals running a realistic study end to end.

``run_demo`` builds N site directories from a seeded virtual cohort (or a real public cohort),
imports each hospital's patients through the real site intake (validation, pseudonyms), writes a
policy that approves the study's specification hash, gives every site a signing identity pinned by
a federation manifest, runs the study on Flower's simulation runtime with secure aggregation, and
writes one self-contained HTML report. Because the demo holds the pooled virtual cohort, it also
computes the pooled analyses (lifelines, statsmodels) and shows how far the federated numbers are
from them.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from hemafed.atomic import write_text
from hemafed.cohort.model import Cohort
from hemafed.errors import InvalidInput
from hemafed.federation.queries import registered
from hemafed.secure import FederationManifest
from hemafed.site.runtime import ensure_identity, install_manifest
from hemafed.study import catalogue as _catalogue  # noqa: F401  (registers every site query)
from hemafed.study.local import LocalSites as LocalSites
from hemafed.study.local import run_study_on as run_study_on
from hemafed.study.spec import StudySpec

log = logging.getLogger(__name__)

MARKER = ".hemafed-demo"
DISEASE_SPECS = {"MDS": "demo_mds.yaml", "AML": "demo_aml.yaml", "MM": "demo_mm.yaml",
                 "SCD": "demo_scd.yaml"}


def demo_spec(disease: str) -> StudySpec:
    """The packaged demo study for a disease."""
    name = DISEASE_SPECS.get(disease.upper())
    if name is None:
        raise InvalidInput(f"unknown disease {disease!r}; expected one of {', '.join(DISEASE_SPECS)}")
    text = resources.files("hemafed.study").joinpath("specs", name).read_text(encoding="utf-8")
    return StudySpec.from_mapping(yaml.safe_load(text), source=f"packaged spec {name}")


def threshold_for(n_sites: int) -> int:
    """Secure-aggregation threshold: two thirds of the sites, at least 2 (tolerates n - t drops)."""
    return max(2, math.ceil(2 * n_sites / 3)) if n_sites > 2 else n_sites


def _fresh_dir(out_dir: Path) -> None:
    if out_dir.exists():
        if not (out_dir / MARKER).exists():
            if any(out_dir.iterdir()):
                raise InvalidInput(f"{out_dir} exists and was not made by `hemafed demo`; "
                                   "choose another --out folder")
        else:
            shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MARKER).write_text("made by hemafed demo; safe to delete\n")


def site_policy(site_id: str, spec: StudySpec, *, today: dt.date,
                per_study_epsilon: float = 4.0) -> dict[str, Any]:
    """A policy approving ``spec`` for a year, with every registered query allowed.

    The study binds its requests: ``require_plan`` is on (:func:`build_sites` stores the
    specification, the site derives the plan from it). The site-side minimum-cell and
    subgroup rules are off **explicitly**: the demo runs non-DP analyses on small virtual
    cohorts and checks them against the pooled analysis, which per-time event counts of one
    patient would refuse; the ``site init`` template and any policy that omits the keys have
    them on (docs/security.md).
    """
    return {
        "site_id": site_id,
        "allowed_queries": sorted({f"{q.name}@{q.version}" for q in registered()}),
        "min_cell_size": spec.min_cell,
        "require_plan": True,
        "enforce_min_cell": False,
        "min_subgroup_size": 0,
        "allow_non_secure": False,
        "privacy_budget": {"total": {"epsilon": 20.0, "delta": 1e-5},
                           "per_study": {"epsilon": per_study_epsilon, "delta": 1e-6}},
        "studies": [{"study_id": spec.study_id, "spec_sha256": spec.sha256,
                     "expires": (today + dt.timedelta(days=365)).isoformat(),
                     "approved_by": "demo ethics committee (virtual)"}],
    }


def build_sites(root: Path, cohorts: Mapping[str, Cohort], spec: StudySpec, *,
                today: dt.date | None = None, name: str = "hemafed-demo",
                store_plan: bool = True,
                policy_overrides: Mapping[str, Any] | None = None) -> LocalSites:
    """Create one site directory per cohort through the real site intake, approve ``spec``.

    ``store_plan``: store the spec at each site, so the site answers only the requests the
    spec implies (its plan, :mod:`hemafed.study.plan`); ``False`` approves the hash alone.
    ``policy_overrides``: top-level policy settings that replace the demo's (for example
    ``{"refuse_differencing": False}`` for sites that accept a restart on the survivors).
    """
    from hemafed.site.store import import_into_site, init_site
    from hemafed.site.studies import store_spec

    today = today or dt.date.today()
    root.mkdir(parents=True, exist_ok=True)
    site_dirs: dict[str, Path] = {}
    identities = []
    with tempfile.TemporaryDirectory(prefix="hemafed-staging-") as staging:
        for site_id, cohort in cohorts.items():
            site_dir = root / site_id
            init_site(site_dir, site_id)
            patients = Path(staging) / f"{site_id}-patients.parquet"
            mutations = Path(staging) / f"{site_id}-mutations.parquet"
            cohort.patients.to_parquet(patients, index=False)
            cohort.mutations.to_parquet(mutations, index=False)
            import_into_site(site_dir, patients, "parquet", mutations=mutations,
                             panels={k: list(v) for k, v in cohort.panels.items()},
                             study=spec.study_id, requester="demo-data-manager")
            policy = {**site_policy(site_id, spec, today=today),
                      # approved by hash alone: no plan to check against (the caller's choice)
                      **({} if store_plan else {"require_plan": False}),
                      **(policy_overrides or {})}
            write_text(site_dir / "policy.yaml", yaml.safe_dump(policy, sort_keys=False))
            if store_plan:
                store_spec(site_dir, spec)  # the site derives the study's plan from this text
            identities.append(ensure_identity(site_dir, site_id))
            site_dirs[site_id] = site_dir
    manifest = FederationManifest.build(name, identities, threshold_for(len(identities)))
    for site_dir in site_dirs.values():
        install_manifest(site_dir, manifest)
    return LocalSites(site_dirs, manifest)


def on_day_lattice(cohort: Cohort, days_per_year_in: float = 365.25) -> Cohort:
    """Times rounded to whole days and expressed in years of 365.25 days (exact survival grid)."""
    p = cohort.patients.copy()
    for col in [c for c in p.columns if c.endswith("_time")]:
        t = p[col].astype("Float64").to_numpy(dtype=float, na_value=np.nan)
        days = np.maximum(np.round(t * days_per_year_in), 1.0)
        p[col] = pd.array(np.where(np.isnan(t), np.nan, days / 365.25), dtype="Float64")
    return Cohort(p, cohort.mutations, cohort.panels)


def demo_cohorts(disease: str, n_patients: int, n_sites: int, seed: int,
                 real: Path | None = None) -> dict[str, Cohort]:
    """Site cohorts: the seeded virtual cohort (or a real public cohort) split heterogeneously."""
    from hemafed.cohort.demo import generate
    from hemafed.cohort.partition import split_sites

    if real is not None:
        from hemafed.cohort.public import read_mds_ipssm

        if disease.upper() != "MDS":
            raise InvalidInput("--real takes the MDS IPSS-M cohort folder; use --disease MDS")
        cohort = on_day_lattice(read_mds_ipssm(real).cohort, days_per_year_in=365.0)
    else:
        cohort = generate(disease.upper(), n_patients, seed)
    return split_sites(cohort, n_sites, seed, size_skew=0.6, case_mix_shift=0.3,
                       missingness=0.02)


def pooled_comparisons(results: dict[str, Any], site_dirs: Mapping[str, Path],
                       spec: StudySpec, holdout: pd.DataFrame | None = None) -> None:
    """Add, to each analysis the demo can check, the distance to the pooled analysis."""
    from hemafed.site.store import load_cohort
    from hemafed.study.derived import with_derived_scores
    from hemafed.study.pooled import compare

    cohorts = [with_derived_scores(load_cohort(d)) for d in site_dirs.values()]
    for doc, analysis in zip(results["analyses"], spec.analyses, strict=True):
        if doc.get("status") != "ok":
            continue
        try:
            check = compare(analysis, doc, cohorts, holdout)
        except Exception as exc:  # the comparison is a bonus; never lose the report over it
            log.warning("pooled comparison of %s failed: %s", analysis.id, exc)
            continue
        if check:
            doc["pooled"] = check


@dataclass(frozen=True)
class DemoOutcome:
    report: Path
    results: dict[str, Any]
    site_dirs: dict[str, Path]
    seconds: float


def run_demo(out_dir: str | Path = "hemafed-demo", *, disease: str = "MDS",
             n_patients: int = 3000, n_sites: int = 10, seed: int = 7,
             real: str | Path | None = None, transport: str = "sim",
             progress: Callable[[str], None] | None = None) -> DemoOutcome:
    """Run the demo study and write ``out_dir/report.html``; returns where everything is."""
    import time

    from hemafed.study.report import write_report

    say = progress or (lambda message: None)
    start = time.perf_counter()
    out = Path(out_dir)
    spec = demo_spec(disease)
    _fresh_dir(out)
    say(f"building {n_sites} virtual hospitals")
    cohorts = demo_cohorts(disease, n_patients, n_sites, seed,
                           Path(real) if real is not None else None)
    fed = build_sites(out / "sites", cohorts, spec)
    write_text(out / "study.yaml", spec.to_yaml())
    say(f"running the study on Flower {'simulation' if transport == 'sim' else transport}")
    results = run_study_on(transport, spec, fed)
    say("comparing with the pooled analysis")
    holdout = None
    if real is None:  # fresh virtual patients from the same generator, never seen by the sites
        from hemafed.cohort.demo import generate

        holdout = generate(disease.upper(), min(n_patients, 2000), seed + 1).patients
    pooled_comparisons(results, fed.site_dirs, spec, holdout)
    for doc in results["analyses"]:
        synthetic = doc.pop("synthetic", None)
        if synthetic is not None:
            frame = pd.DataFrame(synthetic["data"], columns=synthetic["columns"])
            frame.to_csv(out / f"synthetic-{doc['id']}.csv", index=False)
    write_text(out / "results.json", _json(results))
    report = write_report(
        results, out / "report.html",
        subtitle=(f"{n_sites} hospitals, {sum(len(c) for c in cohorts.values())} patients, "
                  f"secure aggregation (threshold {fed.manifest.threshold} of {n_sites}); "
                  f"transport: {transport}"),
        extra={"intro": ("Every hospital kept its patients in its own site directory "
                         f"({out / 'sites'}), checked each request against its policy and "
                         "wrote it to its hash-chained audit log. The hub received only "
                         "secure sums.")})
    return DemoOutcome(report, results, fed.site_dirs, time.perf_counter() - start)


def _json(doc: Any) -> str:
    import json

    return json.dumps(doc, indent=1, default=str) + "\n"
