"""Helpers and the shared world of the genomics tests: one small virtual SCD cohort (400 patients, 3,000 variants,
5 uneven sites that differ in ancestry) written as files, imported into real site directories,
and a runner of hub code over SecureFederation on the in-process transport."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from hemafed.cohort.validate import validate_cohort
from hemafed.demo import LocalSites, build_sites
from hemafed.federation.inprocess import run_in_process
from hemafed.federation.runtime import SecureFederation
from hemafed.genomics.intake import import_genotypes
from hemafed.genomics.simulate import CohortDesign, VirtualGenotypes, simulate_cohort, write_cohort
from hemafed.genomics.variants import VariantList
from hemafed.study.site_runtime import site_handler
from hemafed.study.spec import StudySpec

STUDY = "gwas-test"


def study_spec(variant_list: Path) -> StudySpec:
    return StudySpec.from_mapping({"study_id": STUDY, "requester": "tester", "analyses": [
        {"id": "hbf", "kind": "gwas", "trait": "hbf", "variant_list": str(variant_list),
         "covariates": ["age", "sex"], "n_pcs": 4, "min_mac": 10},
        {"id": "hbf_nopc", "kind": "gwas", "trait": "hbf", "variant_list": str(variant_list),
         "covariates": ["age", "sex"], "n_pcs": 0},
        # the binary trait of the logistic tests (abnormal TCD velocity)
        {"id": "tcd", "kind": "gwas", "trait": "tcd_velocity", "threshold": 200.0,
         "variant_list": str(variant_list), "covariates": ["age", "sex"]}]})


@dataclass
class World:
    cohort: VirtualGenotypes
    files: Path
    sites: LocalSites
    spec: StudySpec
    vlist: VariantList

    def run(self, body: Callable[[SecureFederation], Any]) -> Any:
        """Run ``body(federation)`` at the hub over the five sites; returns its value."""
        box: list[Any] = []

        def hub(exchange: Any, site_ids: list[str], config: dict[str, Any]) -> Any:
            fed = SecureFederation(exchange, self.sites.manifest, site_ids=site_ids,
                                   spec_sha256=self.spec.sha256, requester="tester")
            box.append(body(fed))
            return {}

        run_in_process(hub, site_handler, self.sites.site_configs(), {}, raise_errors=True)
        return box[0]


def make_world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("genomics")
    cohort = simulate_cohort(CohortDesign(n_patients=400, n_variants=3000, seed=19))
    files = root / "files"
    write_cohort(cohort, files, vcf_sites=["site2"])
    spec = study_spec(files / "variants.tsv")
    cohorts = {s: validate_cohort(pd.read_csv(files / s / "patients.csv"))
               for s in cohort.site_ids}
    sites = build_sites(root / "sites", cohorts, spec)
    vlist = VariantList.read(files / "variants.tsv")
    for s, site_dir in sites.site_dirs.items():
        # sample QC off here so the pooled reference file holds the same patients
        import_genotypes(site_dir, files / s / "genotypes.bed", vlist, study=STUDY,
                         build="GRCh38", min_call_rate=0.5, max_abs_f=1.0)
    return World(cohort, files, sites, spec, vlist)


def plink2(*args: str) -> None:
    """Run plink2 (skips the test when it is not installed)."""
    exe = shutil.which("plink2")
    if exe is None:
        pytest.skip("plink2 is not installed (Debian package plink2)")
    subprocess.run([exe, "--threads", "1", *args], check=True, capture_output=True)


def pooled_covariates(world: World, pcs: np.ndarray | None, path: Path) -> Path:
    pts = pd.read_csv(world.files / "pooled_patients.csv")
    cov = pd.DataFrame({"#FID": pts.patient_id, "IID": pts.patient_id, "age": pts.age,
                        "sex": (pts.sex == "F").astype(int)})
    for i in range(0 if pcs is None else pcs.shape[1]):
        cov[f"PC{i + 1}"] = pcs[:, i]  # type: ignore[index]
    cov.to_csv(path, sep="\t", index=False)
    return path


def pooled_phenotypes(world: World, path: Path) -> Path:
    pts = pd.read_csv(world.files / "pooled_patients.csv")
    pd.DataFrame({"#FID": pts.patient_id, "IID": pts.patient_id, "hbf": pts.hbf,
                  "tcd": (pts.tcd_velocity >= 200).astype(int) + 1}).to_csv(path, sep="\t",
                                                                          index=False)
    return path


def close_to_printed(ours: np.ndarray, printed: np.ndarray, digits: int = 6) -> np.ndarray:
    """True where ``ours`` rounds to PLINK's printed value (``digits`` significant digits):
    the tightest check its output allows (half a unit of the last printed digit, plus 1e-12)."""
    ours, printed = np.asarray(ours, float), np.asarray(printed, float)
    scale = 10.0 ** (np.floor(np.log10(np.maximum(np.abs(printed), 1e-300))) - digits + 1)
    return np.asarray(np.abs(ours - printed) <= 0.5 * scale * (1 + 1e-6) + 1e-12)
