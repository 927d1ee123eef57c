"""Release control (minimum MAC, GWAS-SSF, nearest genes, DP) and the study's ``gwas`` analysis
through the real study runner and report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from genomics_world import STUDY, World

from hemafed.demo import run_study_on
from hemafed.federation.api import DPRequest
from hemafed.federation.local import LocalSumFederation
from hemafed.genomics.gwas import FederatedGWAS
from hemafed.genomics.loci import HBF_LOCI, nearest_gene
from hemafed.genomics.release import (
    SSF_COLUMNS,
    top_hits,
    withhold_rare,
    write_ssf,
    write_study_ssf,
)
from hemafed.genomics.store import register_site_dir
from hemafed.site.store import load_cohort
from hemafed.study.report import write_report


@pytest.fixture(scope="module")
def local(world: World) -> LocalSumFederation:
    """The same sites through the plain-sum test double (for DP noise with a seed)."""
    for site_id, d in world.sites.site_dirs.items():
        register_site_dir(site_id, d)
    return LocalSumFederation({s: load_cohort(d) for s, d in world.sites.site_dirs.items()},
                              dp_seed=3)


@pytest.fixture(scope="module")
def exact(local: LocalSumFederation, world: World) -> FederatedGWAS:
    return FederatedGWAS(n_pcs=4).fit(local, world.vlist, study=STUDY, trait="hbf",
                                      study_id=STUDY)


def test_min_mac_and_ssf_export(exact: FederatedGWAS, tmp_path: Path) -> None:
    released = withhold_rare(exact.summary, 20)
    assert (released["mac"] >= 20).all() and len(released) < len(exact.summary)
    path = write_ssf(exact.summary, tmp_path / "hbf.tsv", min_mac=20)
    ssf = pd.read_csv(path, sep="\t", dtype={"chromosome": str}, keep_default_na=False)
    assert tuple(ssf.columns) == SSF_COLUMNS and len(ssf) == len(released)
    chrom_rank = ssf["chromosome"].astype(int)
    assert (np.diff(chrom_rank) >= 0).all()
    row = ssf.set_index("rsid").loc["rs1427407"]
    truth = exact.summary.set_index("id").loc["rs1427407"]
    assert row["effect_allele"] == truth["alt"] and row["other_allele"] == truth["ref"]
    assert row["base_pair_location"] == 60490908
    np.testing.assert_allclose(row["beta"], truth["beta"], rtol=1e-5)
    assert row["variant_id"] == f"2_60490908_{truth['ref']}_{truth['alt']}"
    assert (ssf["rsid"].eq("#NA") | ssf["rsid"].str.startswith("rs")).all()


def test_top_hits_name_the_hbf_genes(exact: FederatedGWAS) -> None:
    hits = top_hits(exact.summary, 30)
    genes = set(hits.loc[hits["genome_wide"], "nearest_gene"])
    assert {"BCL11A", "HBG2"} <= genes and genes & {"HBS1L", "MYB"}
    assert nearest_gene("11", HBF_LOCI[2].pos) == "HBG2"
    assert nearest_gene("7", 5) == ""


def test_dp_release_is_noisy_and_calibrated(local: LocalSumFederation, world: World,
                                            exact: FederatedGWAS) -> None:
    noisy = FederatedGWAS(n_pcs=0, dp=DPRequest(epsilon=50.0, delta=1e-6)).fit(
        local, world.vlist, study=STUDY, trait="hbf", study_id=STUDY)
    # store declarations (sensitivity 0: no noise), then counts, null model, association: each
    # a DP release
    assert noisy.secure_sums == 4
    assert not np.allclose(noisy.qc["alt_freq"], exact.qc["alt_freq"])
    # calibrated to the declared sensitivities: frequencies stay close, not equal
    assert np.abs(noisy.qc["alt_freq"] - exact.qc["alt_freq"]).max() < 0.2
    with pytest.raises(Exception, match="linear model only"):
        FederatedGWAS(model="logistic", dp=DPRequest(epsilon=1.0))


@pytest.mark.slow
def test_gwas_study_analysis_and_report(world: World, tmp_path: Path) -> None:
    results = run_study_on("inprocess", world.spec, world.sites)
    by_id = {a["id"]: a for a in results["analyses"]}
    pc, nopc = by_id["hbf"], by_id["hbf_nopc"]
    assert pc["status"] == "ok" and nopc["status"] == "ok", (pc.get("error"), nopc.get("error"))
    assert 0.95 <= pc["stats"]["lambda_gc"] <= 1.10
    assert nopc["stats"]["lambda_gc"] > 1.2
    assert pc["stats"]["genome_wide_hits"] >= 3 and pc["stats"]["min_mac"] == 10
    top = pd.DataFrame(pc["tables"]["top_hits"]["data"], columns=pc["tables"]["top_hits"]["columns"])
    assert "BCL11A" in set(top["nearest_gene"])
    assert pc["provenance"]["sites"] == 5
    # the GWAS-SSF file and its YAML metadata, as `hemafed study run` writes them
    tsv, meta = write_study_ssf(pc, tmp_path, STUDY)
    ssf = pd.read_csv(tsv, sep="\t", dtype={"chromosome": str})
    assert tuple(ssf.columns) == SSF_COLUMNS and len(ssf) == pc["stats"]["released"]
    info = yaml.safe_load(meta.read_text())
    assert info["data_file_name"] == "hbf.tsv" and info["genome_assembly"] == "GRCh38"
    assert info["minimum_minor_allele_count"] == 10 and info["samples"][0]["sample_size"] > 300
    html = write_report(results, tmp_path / "report.html").read_text()
    assert html.count("<img") >= 4 and "membership inference" in html and "lambda" in html
