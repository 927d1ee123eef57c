"""``hemafed study validate|run``: study specifications from the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from hemafed.errors import HemafedError

study_app = typer.Typer(no_args_is_help=True)
console = Console(stderr=True)

Spec = Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="study spec (YAML)")]


@study_app.command("validate")
def validate(spec: Spec) -> None:
    """Check a study spec; print the SHA-256 sites approve and the queries their policy needs."""
    from hemafed.study.queries import policy_block
    from hemafed.study.spec import StudySpec

    try:
        parsed = StudySpec.load(spec)
    except HemafedError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"{parsed.study_id}: {len(parsed.analyses)} analyses")
    typer.echo(f"spec_sha256: {parsed.sha256}")
    typer.echo("")
    typer.echo(policy_block(parsed))


@study_app.command("run")
def run(spec: Spec,
        sites: Annotated[list[Path], typer.Option("--site", help="a site directory (repeat)")],
        transport: str = typer.Option("sim", "--transport", help="sim, inprocess or deploy"),
        out: Path = typer.Option(Path("study-out"), "--out", help="folder for results + report")
        ) -> None:
    """Run a study over local site directories (simulation, in-process or localhost deployment)."""
    from hemafed.atomic import write_text
    from hemafed.demo import LocalSites, run_study_on
    from hemafed.federation.runtime import MANIFEST_FILE
    from hemafed.secure import FederationManifest
    from hemafed.site.store import site_id_of
    from hemafed.study.report import write_report
    from hemafed.study.spec import StudySpec

    try:
        parsed = StudySpec.load(spec)
        if not sites:
            raise HemafedError("give the site directories with --site DIR (repeat)")
        for site_dir in sites:
            if not (site_dir / MANIFEST_FILE).is_file():
                raise HemafedError(
                    f"{site_dir} has no {MANIFEST_FILE}: the site has not joined a federation. "
                    "Create the manifest with `hemafed hub manifest` and give it to each site "
                    "with `hemafed site join` (docs/quickstart.md, 'Run a study')")
        manifest = FederationManifest.load(sites[0] / MANIFEST_FILE)
        fed = LocalSites({site_id_of(d): d for d in sites}, manifest)
        results = run_study_on(transport, parsed, fed)
    except HemafedError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "results.json", json.dumps(results, indent=1, default=str) + "\n")
    report = write_report(results, out / "report.html")
    failed = [a["id"] for a in results["analyses"] if a.get("status") != "ok"]
    console.print(f"results: {out / 'results.json'}; report: {report}")
    if failed:
        console.print(f"[yellow]did not complete: {', '.join(failed)}[/yellow]")
        raise typer.Exit(2)
