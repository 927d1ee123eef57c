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
SiteDirs = Annotated[list[Path] | None, typer.Option("--site", help="a site directory (repeat)")]
SitesDir = Annotated[Path | None, typer.Option(
    "--sites-dir", help="a folder of site directories (e.g. hemafed-demo/sites): all of them")]


def _site_dirs(sites: list[Path] | None, sites_dir: Path | None) -> list[Path]:
    found = list(sites or [])
    if sites_dir is not None:
        if not sites_dir.is_dir():
            raise HemafedError(f"--sites-dir {sites_dir}: not a folder")
        found += sorted(d for d in sites_dir.iterdir() if (d / "site.yaml").is_file())
    if not found:
        raise HemafedError("give the site directories with --site DIR (repeat) or --sites-dir "
                           "FOLDER")
    return found


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


@study_app.command("approve")
def approve(spec: Spec, sites: SiteDirs = None, sites_dir: SitesDir = None,
            approved_by: str = typer.Option(..., "--approved-by",
                                             help="who approved it, e.g. 'Ethics committee 2026-114'"),
            expires: str = typer.Option(..., "--expires", help="last valid day, YYYY-MM-DD"),
            epsilon: float | None = typer.Option(None, "--epsilon",
                                                 help="this study's privacy budget (default: the "
                                                 "policy's per-study budget)")) -> None:
    """Approve a study at sites you run: add its SHA-256 and queries to each site's policy.yaml.

    The site officer runs this on the site's own directory (the site decides). The policy is
    rewritten as plain YAML (its comments are not kept) and checked before it is written.
    """
    import datetime as dt

    import yaml

    from hemafed.atomic import write_text
    from hemafed.site.policy import SitePolicy
    from hemafed.site.studies import store_spec
    from hemafed.study.queries import needed_queries
    from hemafed.study.spec import StudySpec

    try:
        parsed = StudySpec.load(spec)
        try:
            until = dt.date.fromisoformat(expires)
        except ValueError as exc:
            raise HemafedError(f"--expires {expires!r}: expected a date YYYY-MM-DD") from exc
        if until < dt.date.today():
            raise HemafedError(f"--expires {expires}: that date has passed")
        for site_dir in _site_dirs(sites, sites_dir):
            path = site_dir / "policy.yaml"
            if not path.is_file():
                raise HemafedError(f"{site_dir}: no policy.yaml; is it a site directory "
                                   "(`hemafed site init`)?")
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            entry: dict[str, object] = {"study_id": parsed.study_id,
                                        "spec_sha256": parsed.sha256, "expires": until,
                                        "approved_by": approved_by}
            if epsilon is not None:
                entry["budget"] = {"epsilon": epsilon, "delta": parsed.delta}
            raw["studies"] = [s for s in raw.get("studies") or []
                              if s.get("study_id") != parsed.study_id] + [entry]
            allowed = list(raw.get("allowed_queries") or [])
            raw["allowed_queries"] = allowed + [q for q in needed_queries(parsed)
                                                if q not in allowed]
            SitePolicy.from_mapping(raw, source=str(path))  # refuse before writing
            write_text(path, yaml.safe_dump(raw, sort_keys=False))
            store_spec(site_dir, parsed)  # the site derives the study's plan from this text
            typer.echo(f"{site_dir}: approved {parsed.study_id} ({parsed.sha256[:12]}...) "
                       f"until {until}")
    except HemafedError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


@study_app.command("run")
def run(spec: Spec, sites: SiteDirs = None, sites_dir: SitesDir = None,
        transport: str = typer.Option("sim", "--transport", help="sim, inprocess or deploy"),
        out: Path = typer.Option(Path("study-out"), "--out", help="folder for results + report")
        ) -> None:
    """Run a study over local site directories (simulation, in-process or localhost deployment)."""
    from hemafed.atomic import write_text
    from hemafed.secure import FederationManifest
    from hemafed.site.runtime import MANIFEST_FILE
    from hemafed.site.store import site_id_of
    from hemafed.study.local import LocalSites, run_study_on
    from hemafed.study.report import write_report
    from hemafed.study.spec import StudySpec

    try:
        parsed = StudySpec.load(spec)
        sites = _site_dirs(sites, sites_dir)
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
    for doc in results["analyses"]:
        if doc.get("kind") == "gwas" and doc.get("status") == "ok":
            from hemafed.genomics.release import write_study_ssf

            write_study_ssf(doc, out, parsed.study_id)
    failed = [a["id"] for a in results["analyses"] if a.get("status") != "ok"]
    console.print(f"results: {out / 'results.json'}; report: {report}")
    if failed:
        console.print(f"[yellow]did not complete: {', '.join(failed)}[/yellow]")
        raise typer.Exit(2)
