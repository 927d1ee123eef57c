"""The ``hemafed`` command. Sub-commands live beside the code they drive and are mounted here."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import typer
from rich.console import Console

from hemafed import __version__
from hemafed.cohort.schema import DISEASES, FIELDS
from hemafed.errors import HemafedError
from hemafed.federation.cli import hub_app, site_app_hash, site_keygen, site_serve
from hemafed.federation.membership_cli import hub_manifest, site_identity, site_join
from hemafed.genomics.cli import app as genomics_app
from hemafed.imaging.cli import mount as mount_imaging
from hemafed.scores.cli import app as score_app
from hemafed.service.cli import hub_serve, site_console
from hemafed.site.cli import app as site_app
from hemafed.study.cli import study_app
from hemafed.synth.cli import app as synth_app

app = typer.Typer(help="hemafed: federated analysis for haematology research networks.",
                  no_args_is_help=True, add_completion=False)
console = Console(stderr=True)

site_app.command("serve")(site_serve)
site_app.command("keygen")(site_keygen)
site_app.command("app-hash")(site_app_hash)
site_app.command("identity")(site_identity)
site_app.command("join")(site_join)
mount_imaging(site_app)  # hemafed site import-images / extract-features
hub_app.command("manifest")(hub_manifest)
hub_app.command("serve")(hub_serve)
site_app.command("console")(site_console)
app.add_typer(site_app, name="site", help="A hospital's site: intake, policy, audit, vault, serve.")
app.add_typer(hub_app, name="hub", help="The hub: Flower SuperLink with TLS and node auth.")
app.add_typer(score_app, name="score", help="White-box clinical scores with explanations.")
app.add_typer(study_app, name="study", help="Validate and run study specifications.")
app.add_typer(synth_app, name="synth",
              help="Synthetic virtual patients (federated DP MST) and their evaluation.")
app.add_typer(genomics_app, name="genomics", help="Genotype intake and the virtual SCD cohort.")


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="log progress details")) -> None:
    level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    # libraries with their own loggers (Flower logs at DEBUG) propagate to our handler: filter
    for handler in logging.getLogger().handlers:
        handler.setLevel(level)
    logging.getLogger("flwr").setLevel(level)


@app.command()
def version() -> None:
    """Print the hemafed version."""
    typer.echo(__version__)


@app.command()
def schema(disease: str = typer.Option("", help=f"only fields of one of {', '.join(DISEASES)}"),
           as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """List the canonical cohort fields with their units, ranges and codes."""
    fields = [f for f in FIELDS.values() if not disease or disease in f.diseases]
    if as_json:
        typer.echo(json.dumps([f.__dict__ for f in fields], indent=2, default=list))
        return
    for f in fields:
        rng = f"[{f.low:g}, {f.high:g}]" if f.low is not None and f.high is not None else ""
        typer.echo(f"{f.name:18} {f.kind:9} {f.unit or '':8} {rng:16} {f.loinc or '':8} {f.description}")


@app.command()
def demo(out: Path = typer.Option(Path("hemafed-demo"), "--out", help="output folder"),
         disease: str = typer.Option("MDS", "--disease", help="MDS, AML, MM or SCD"),
         patients: int = typer.Option(3000, "--patients", min=100, help="virtual patients"),
         sites: int = typer.Option(10, "--sites", min=2, help="virtual hospitals"),
         seed: int = typer.Option(7, "--seed"),
         real: Path | None = typer.Option(None, "--real", help="the real MDS IPSS-M cohort folder "
                                          "(e.g. ../shared/data/mds-ipssm-cohort)"),
         transport: str = typer.Option("sim", "--transport", help="sim, inprocess or deploy"),
         serve: bool = typer.Option(False, "--serve", help="then open the portal on the demo "
                                    "federation (http://127.0.0.1:8700)")
         ) -> None:
    """Run the demo study on a federation of virtual hospitals and write an HTML report."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from hemafed.demo import run_demo

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=console, transient=False) as bar:
        task = bar.add_task("starting", total=None)

        def progress(message: str) -> None:
            bar.update(task, description=message)

        try:
            outcome = run_demo(out, disease=disease, n_patients=patients, n_sites=sites,
                               seed=seed, real=real, transport=transport, progress=progress)
        except HemafedError as exc:
            console.print(f"[red]demo failed:[/red] {exc}")
            raise typer.Exit(1) from exc
        bar.update(task, description="done")
    failed = [a["id"] for a in outcome.results["analyses"] if a.get("status") != "ok"]
    console.print(f"report: [bold]{outcome.report}[/bold] ({outcome.seconds:.0f} s)")
    console.print(f"site directories (audit logs, ledgers): {out / 'sites'}")
    if failed:
        console.print(f"[yellow]analyses that did not complete: {', '.join(failed)}[/yellow]")
    if serve:
        from hemafed.service.serve import serve_demo

        serve_demo(out, list(outcome.site_dirs.values()), (out / "study.yaml").read_text())


if __name__ == "__main__":  # pragma: no cover
    app()
