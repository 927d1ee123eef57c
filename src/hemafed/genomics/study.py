"""The ``gwas`` analysis of a study spec: a federated GWAS whose results (top hits with nearest
genes, lambda, plot points, released GWAS-SSF rows) go into the study results and report.

Spec options: ``trait`` (cohort column), ``variant_list`` (path of the public list at the hub),
``threshold`` (binary trait ``trait >= threshold``, logistic model), ``covariates`` (default age,
sex), ``n_pcs`` (default 10), ``genotypes`` (store name, default the study id), ``min_mac``
(release control, default 10), ``top`` (hits listed, default 10), ``test`` (wald or score),
``firth`` (no, fallback or always; default fallback, as plink2).

Variants some site leaves out under its disclosure rule (:mod:`hemafed.genomics.disclosure`)
are never tested or published; ``stats`` and the GWAS-SSF metadata state how many
(``dropped_by_site_disclosure_rule``).

The analysis covers the sites that declare a genotype store for the study (``genotype_sites``);
when others of the federation do not, the study runner restarts it over those (its
``restarts`` record says so) before any genotype is summed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hemafed.documents import frame_json
from hemafed.federation.api import Federation
from hemafed.genomics.gwas import FederatedGWAS
from hemafed.genomics.plots import plot_points
from hemafed.genomics.release import MEMBERSHIP_CAVEAT, ssf_text, top_hits, withhold_rare
from hemafed.genomics.variants import VariantList

if TYPE_CHECKING:
    from hemafed.studyplan.spec import Analysis, StudySpec


def run_gwas_analysis(fed: Federation, a: Analysis, spec: StudySpec) -> dict[str, Any]:
    vlist = VariantList.read(a.get("variant_list"))
    threshold = a.get("threshold")
    gwas = FederatedGWAS(model="linear" if threshold is None else "logistic",
                         covariates=tuple(a.get("covariates", ("age", "sex"))),
                         n_pcs=int(a.get("n_pcs", 10)), test=str(a.get("test", "wald")),
                         firth=str(a.get("firth", "fallback")))
    gwas.fit(fed, vlist, study=str(a.get("genotypes", spec.study_id)), trait=a.get("trait"),
             threshold=threshold, study_id=spec.study_id)
    min_mac = int(a.get("min_mac", 10))
    released = withhold_rare(gwas.summary, min_mac)
    hits = top_hits(released, int(a.get("top", 10)))
    points = plot_points(released)
    points["lambda"] = gwas.genomic_lambda  # over every tested variant, as in the stats
    cols = ["chrom", "pos", "id", "ref", "alt", "a1_freq", "n", "beta", "se", "p",
            "nearest_gene", "genome_wide"]
    return {"tables": {"top_hits": frame_json(hits[cols].set_index("id"))},
            "stats": {"lambda_gc": gwas.genomic_lambda, "variants": len(vlist),
                      "tested": len(gwas.summary), "released": len(released),
                      "genome_wide_hits": int((released["p"] < 5e-8).sum()),
                      "min_mac": min_mac, "n_pcs": gwas.n_pcs, "model": gwas.model,
                      # variants some site left out (site disclosure rule): never published
                      "dropped_by_site_disclosure_rule": gwas.disclosure_dropped,
                      "secure_sums": gwas.secure_sums},
            # the sites whose declared genotype stores the results cover (study.plan: a
            # site's store declaration is public; see genomics.gwas.store_sites)
            "genotype_sites": list(gwas.sites_),
            "sites_without_genotype_store": list(gwas.sites_without_store),
            "gwas_points": points, "caveat": MEMBERSHIP_CAVEAT,
            # the released rows as GWAS-SSF; `hemafed study run` writes <id>.tsv + its YAML
            "ssf": {"text": ssf_text(gwas.summary, min_mac=min_mac), "min_mac": min_mac,
                    "dropped_by_site_disclosure_rule": gwas.disclosure_dropped,
                    "trait": str(a.get("trait")) + ("" if threshold is None
                                                    else f" >= {threshold}"),
                    "n": int(gwas.summary["n"].max()) if len(gwas.summary) else 0,
                    "build": vlist.build}}
