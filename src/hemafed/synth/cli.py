"""``hemafed synth ...``: fit a federated MST or AIM generator, sample synthetic patients, and
evaluate them against real data with the release gate.

``fit`` runs here on a cohort file or a demo cohort split into virtual sites (the in-process
test transport, noise added with a seed): a local simulation of what a network run does.
``sample`` needs only the fitted JSON (DP post-processing); ``evaluate`` exits with status 1
when the release gate fails, so scripts can stop synthetic data from leaving a site.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from hemafed.atomic import write_text
from hemafed.cohort.model import canonical_dtype
from hemafed.cohort.schema import FIELDS
from hemafed.errors import InvalidInput
from hemafed.synth.aim import FederatedAIM
from hemafed.synth.evaluate import DEFAULT_THRESHOLDS, evaluate
from hemafed.synth.mst import FederatedMST

log = logging.getLogger(__name__)
app = typer.Typer(help="Synthetic virtual patients (federated DP MST/AIM) and their evaluation.",
                  no_args_is_help=True, add_completion=False)

_TH = DEFAULT_THRESHOLDS
DEFAULT_COLUMNS = "age,sex,hb,plt,anc,bm_blast,cyto_ipssr,os_time,os_status"


def read_frame(path: Path) -> pd.DataFrame:
    """A CSV/TSV patient table with canonical columns typed as in a validated cohort."""
    sep = "\t" if path.suffix.lower() in (".tsv", ".tab", ".txt") else ","
    try:
        raw = pd.read_csv(path, sep=sep, dtype="string", keep_default_na=False,
                          na_values=["", "NA", "NaN", "nan", "<NA>"])
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{path}: cannot read the table ({exc}); expected CSV or TSV") from exc
    out = {}
    for col in raw.columns:
        if col not in FIELDS:
            out[col] = raw[col]
            continue
        dtype = canonical_dtype(col)
        if dtype == "boolean":
            text = raw[col].str.strip().str.lower()
            out[col] = text.map({"true": True, "1": True, "false": False, "0": False}
                                ).astype("boolean")
        elif dtype in ("Float64", "Int64"):
            out[col] = pd.to_numeric(raw[col], errors="raise").astype(dtype)
        else:
            out[col] = raw[col]
    return pd.DataFrame(out)


@app.command()
def fit(
    out: Annotated[Path, typer.Option("--out", help="fitted generator, .json")],
    epsilon: Annotated[float, typer.Option(help="total epsilon of the fit")] = 1.0,
    delta: Annotated[float, typer.Option(help="total delta of the fit")] = 1e-6,
    columns: Annotated[str, typer.Option(help="comma-separated canonical columns")] = (
        DEFAULT_COLUMNS),
    cohort: Annotated[Path | None, typer.Option(
        exists=True, dir_okay=False, help="cohort table (canonical columns)")] = None,
    demo: Annotated[str | None, typer.Option(
        help="use a demo cohort of this disease instead")] = None,
    n: Annotated[int, typer.Option(help="demo cohort size")] = 2000,
    sites: Annotated[int, typer.Option(help="number of virtual sites")] = 10,
    seed: Annotated[int, typer.Option(help="seed of the split and of the DP noise")] = 0,
    mechanism: Annotated[str, typer.Option(help="mst or aim")] = "mst",
) -> None:
    """Fit MST or AIM over a cohort split into virtual sites (local simulation); save as JSON."""
    from hemafed.cohort.partition import split_sites
    from hemafed.federation.local import LocalSumFederation

    if mechanism.lower() not in ("mst", "aim"):
        raise typer.BadParameter(f"--mechanism must be mst or aim, got {mechanism!r}")
    if (cohort is None) == (demo is None):
        raise typer.BadParameter("give exactly one of --cohort or --demo")
    if demo is not None:
        from hemafed.cohort.demo import generate

        data = generate(demo, n, seed=seed)
    else:
        from hemafed.cohort.io import read_cohort

        assert cohort is not None
        data = read_cohort(cohort)
    cols = [c.strip() for c in columns.split(",") if c.strip()]
    fed = LocalSumFederation(split_sites(data, sites, seed=seed), dp_seed=seed)
    model: FederatedMST | FederatedAIM = (
        FederatedAIM(epsilon, delta, cols) if mechanism.lower() == "aim"
        else FederatedMST(epsilon, delta, cols))
    model.fit(fed)
    write_text(out, model.to_json())
    spent = model.privacy()["epsilon_spent"]
    typer.echo(f"{mechanism.upper()} over {sites} sites, {len(cols)} columns, epsilon spent "
               f"{spent:.3g} (delta {delta:g}): written to {out}", err=True)


@app.command()
def sample(
    model: Annotated[Path, typer.Argument(
        exists=True, dir_okay=False, help="fitted generator .json")],
    out: Annotated[Path, typer.Option("--out", help="synthetic patients, .csv")],
    n: Annotated[int, typer.Option(help="number of synthetic patients")] = 1000,
    seed: Annotated[int, typer.Option(help="sampling seed")] = 0,
) -> None:
    """Sample synthetic patients from a fitted generator."""
    text = model.read_text()
    try:
        method = json.loads(text).get("method")
    except (json.JSONDecodeError, AttributeError) as exc:
        raise InvalidInput(f"{model}: not a fitted generator JSON document ({exc})") from exc
    generator = FederatedAIM.from_json(text) if method == "AIM" else FederatedMST.from_json(text)
    frame = generator.sample(n, seed=seed)
    write_text(out, frame.to_csv(index=False))
    typer.echo(f"{n} synthetic patient(s) written to {out}", err=True)


@app.command("evaluate")
def evaluate_cmd(
    train: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="real training table")],
    synthetic: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="synthetic table")],
    holdout: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="real holdout table")],
    out: Annotated[Path, typer.Option("--out", help="report, .json")],
    max_mia_auc: Annotated[float, typer.Option()] = _TH["max_mia_auc"],
    max_exact_match_rate: Annotated[float, typer.Option()] = _TH["max_exact_match_rate"],
    max_attribute_advantage: Annotated[float, typer.Option()] = _TH["max_attribute_advantage"],
    min_dcr_ratio: Annotated[float, typer.Option()] = _TH["min_dcr_ratio"],
) -> None:
    """Fidelity, utility and privacy report; exit status 1 when the release gate fails."""
    report = evaluate(read_frame(train), read_frame(synthetic), read_frame(holdout))
    thresholds = {"max_mia_auc": max_mia_auc, "max_exact_match_rate": max_exact_match_rate,
                  "max_attribute_advantage": max_attribute_advantage,
                  "min_dcr_ratio": min_dcr_ratio}
    failures = report.failures(thresholds)
    doc = json.loads(report.to_json())
    doc["gate"] = {"thresholds": thresholds, "passes": not failures, "failures": failures}
    write_text(out, json.dumps(doc, indent=2))
    if failures:
        typer.echo("release gate FAILED: " + "; ".join(failures), err=True)
        raise typer.Exit(1)
    typer.echo(f"release gate passed; report written to {out}", err=True)
