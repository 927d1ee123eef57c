"""``hemafed genomics ...``: write the virtual SCD genotype cohort, and import a site's genotype
file (VCF/BCF, PLINK 1, PLINK 2) against the study's public variant list."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from hemafed.errors import HemafedError

app = typer.Typer(no_args_is_help=True, add_completion=False)
console = Console(stderr=True)


@app.command("simulate")
def simulate(out: Path = typer.Option(Path("scd-genotypes"), "--out", help="output folder"),
             patients: int = typer.Option(400, "--patients", min=50),
             variants: int = typer.Option(3000, "--variants", min=100),
             sites: int = typer.Option(5, "--sites", min=1, max=50),
             vcf: bool = typer.Option(False, "--vcf", help="also write each site's VCF"),
             seed: int = typer.Option(19, "--seed")) -> None:
    """Simulate the virtual SCD genotype cohort (msprime) and write per-site PLINK 1 files,
    patients.csv, the public variants.tsv and the pooled reference file."""
    import numpy as np

    from hemafed.genomics.simulate import CohortDesign, simulate_cohort, write_cohort

    try:
        sizes = tuple(float(x) for x in np.geomspace(3.0, 1.0, sites))
        cohort = simulate_cohort(CohortDesign(n_patients=patients, n_variants=variants,
                                              site_sizes=sizes, seed=seed))
        ids = cohort.site_ids
        write_cohort(cohort, out, vcf_sites=ids if vcf else ())
    except (HemafedError, ValueError) as exc:
        console.print(f"[red]simulate failed:[/red] {exc}")
        raise typer.Exit(1) from exc
    console.print(f"{len(cohort.variants)} variants x {len(cohort.patients)} patients at "
                  f"{len(ids)} sites written to [bold]{out}[/bold]")


@app.command("import")
def import_cmd(site_dir: Path = typer.Argument(..., help="the site directory"),
               genotypes: Path = typer.Argument(..., help=".vcf/.vcf.gz/.bcf, .bed or .pgen"),
               variant_list: Path = typer.Option(..., "--variant-list", help="public variants.tsv"),
               study: str = typer.Option(..., "--study", help="study id (pseudonym domain)"),
               build: str | None = typer.Option(None, "--build", help="GRCh38 or GRCh37 when "
                                                "the file does not say"),
               multiallelic: str = typer.Option("refuse", "--multiallelic", help="refuse or drop"),
               min_call_rate: float = typer.Option(0.95, "--min-call-rate"),
               max_abs_f: float = typer.Option(0.2, "--max-abs-f")) -> None:
    """Import genotypes into the site: checked against the variant list and build, linked to the
    cohort's pseudonyms, sample QC at the site; all or nothing."""
    from hemafed.genomics.intake import import_genotypes
    from hemafed.genomics.variants import VariantList

    try:
        store = import_genotypes(site_dir, genotypes, VariantList.read(variant_list),
                                 study=study, build=build, multiallelic=multiallelic,
                                 min_call_rate=min_call_rate, max_abs_f=max_abs_f)
    except HemafedError as exc:
        console.print(f"[red]import refused:[/red] {exc}")
        raise typer.Exit(1) from exc
    console.print(f"{store.n_variants} variants x {len(store.samples)} patients imported for "
                  f"study {study} ({store.meta['sample_qc_excluded']} excluded by sample QC)")
    console.print(f"store declared for study {study}: build {store.build}, variant list "
                  f"{store.variant_list_sha256[:12]}... (the hub learns only this)")
