"""``hemafed score ...``: compute a clinical score for every patient of a CSV/TSV table and write
the values, contributions and reasons as CSV or JSON, optionally one HTML explanation per patient.

The table has canonical column names (``hemafed schema``) plus gene columns named by gene symbol
(1 mutated, 0 wild type, empty/NA not sequenced). ``hemafed score ipssm`` also takes, as is, the
input table of the authors' IPSS-M calculator (detected by its columns) and then writes their
output columns (IPSSMscore_best/mean/worst, IPSSMcat_best/mean/worst).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import typer

from hemafed.atomic import write_text
from hemafed.errors import InvalidInput
from hemafed.scores.eln import eln2017, eln2022
from hemafed.scores.explain import write_html
from hemafed.scores.ipssm import (
    calculator_output,
    ipssm,
    ipssm_from_calculator_table,
    is_calculator_table,
)
from hemafed.scores.ipssr import ipssr, ipssra
from hemafed.scores.iss import iss, r2iss, riss
from hemafed.scores.result import ScoreResult
from hemafed.scores.scd import scd

log = logging.getLogger(__name__)
app = typer.Typer(help="Clinical scores with per-patient explanations.", no_args_is_help=True,
                  add_completion=False)

FileArg = typer.Argument(..., exists=True, dir_okay=False, help="CSV or TSV patient table")
OutOpt = typer.Option(..., "--out", help="output file, .csv or .json")
HtmlOpt = typer.Option(None, "--html", help="folder for one HTML explanation per patient")


def read_table(path: Path) -> pd.DataFrame:
    """Read a CSV (comma) or TSV (tab) file; 'NA' and empty cells are missing."""
    sep = "\t" if path.suffix.lower() in (".tsv", ".tab", ".txt") else ","
    try:
        return pd.read_csv(path, sep=sep, na_values=["NA", ""], keep_default_na=True,
                           dtype={"TP53mut": "string", "ID": "string", "patient_id": "string"})
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{path}: cannot read the table ({exc}); expected CSV or TSV") from exc


def _write(table: pd.DataFrame, out: Path, result: ScoreResult) -> None:
    suffix = out.suffix.lower()
    if suffix == ".csv":
        write_text(out, table.to_csv(index=False))
    elif suffix == ".json":
        doc = {"score": result.score,
               "patients": json.loads(table.to_json(orient="records")),
               "errors": json.loads(result.errors.to_json(orient="records"))}
        write_text(out, json.dumps(doc, indent=2))
    else:
        raise typer.BadParameter(f"--out {out}: use a .csv or .json file name")


def _run(result: ScoreResult, out: Path, html: Path | None,
         table: pd.DataFrame | None = None) -> None:
    if table is None:
        table = result.table().reset_index()
    _write(table, out, result)
    if html is not None:
        write_html(result, html)
    if len(result.errors):
        typer.echo(f"{result.errors['patient_id'].nunique()} patient(s) not scored; see the "
                   f"reason column in {out}", err=True)
    typer.echo(f"{result.score}: {len(result)} patient(s) written to {out}", err=True)


def _simple(fn: Callable[[pd.DataFrame], ScoreResult]) -> Callable[..., None]:
    def command(file: Path = FileArg, out: Path = OutOpt, html: Path | None = HtmlOpt) -> None:
        _run(fn(read_table(file)), out, html)

    command.__doc__ = fn.__doc__.splitlines()[0] if fn.__doc__ else fn.__name__
    return command


@app.command("ipssm")
def ipssm_command(file: Path = FileArg, out: Path = OutOpt, html: Path | None = HtmlOpt) -> None:
    """IPSS-M (best/mean/worst scenarios, reported score, per-variable contributions)."""
    table = read_table(file)
    if is_calculator_table(table):
        result = ipssm_from_calculator_table(table)
        wide = calculator_output(result).set_index("ID")
        contrib = result.contributions.add_prefix("contrib_")
        merged = table.set_index("ID").join(wide).join(contrib).join(result.reasons)
        _run(result, out, html, merged.reset_index())
    else:
        _run(ipssm(table), out, html)


app.command("ipssr")(_simple(ipssr))
app.command("ipssra")(_simple(ipssra))
app.command("eln2022")(_simple(eln2022))
app.command("eln2017")(_simple(eln2017))
app.command("iss")(_simple(iss))
app.command("riss")(_simple(riss))
app.command("r2iss")(_simple(r2iss))
app.command("scd")(_simple(scd))
