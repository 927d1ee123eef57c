"""The ``hemafed`` command. Sub-commands live beside the code they drive and are mounted here."""

from __future__ import annotations

import json
import logging

import typer
from rich.console import Console

from hemafed import __version__
from hemafed.cohort.schema import DISEASES, FIELDS

app = typer.Typer(help="hemafed: federated analysis for haematology research networks.",
                  no_args_is_help=True, add_completion=False)
console = Console(stderr=True)


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="log progress details")) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


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


if __name__ == "__main__":  # pragma: no cover
    app()
