"""Importers and exporters between site files and the canonical cohort.

``read_cohort`` is the one entry point the site intake calls; each format lives in its own module.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from hemafed.cohort.model import Cohort
from hemafed.cohort.validate import validate_cohort
from hemafed.errors import InvalidInput

FORMATS = ("csv", "tsv", "parquet")


def guess_format(path: Path) -> str:
    """Format from the file name; raises ``InvalidInput`` when it cannot tell."""
    suffixes = [s.lower() for s in path.suffixes]
    for fmt, exts in (("csv", [".csv"]), ("tsv", [".tsv", ".txt"]), ("parquet", [".parquet"])):
        if any(s in exts for s in suffixes):
            return fmt
    raise InvalidInput(f"{path}: cannot tell the format from the name; pass --format ({', '.join(FORMATS)})")


def _read_table(path: Path, fmt: str) -> pd.DataFrame:
    if not path.is_file():
        raise InvalidInput(f"{path}: no such file")
    try:
        if fmt == "parquet":
            return pd.read_parquet(path)
        sep = "," if fmt == "csv" else "\t"
        return pd.read_csv(path, sep=sep, dtype="string", keep_default_na=False,
                           na_values=["", "NA", "NaN", "nan", "null", "NULL"])
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise InvalidInput(f"{path}: cannot be read as {fmt}: {exc}") from exc


def read_cohort(
    path: str | Path,
    fmt: str | None = None,
    *,
    mutations: str | Path | None = None,
    panels: Mapping[str, Iterable[str]] | None = None,
) -> Cohort:
    """Read a table in canonical columns (plus optional mutation table) into a validated cohort."""
    path = Path(path)
    fmt = fmt or guess_format(path)
    if fmt not in FORMATS:
        raise InvalidInput(f"{path}: unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    patients = _read_table(path, fmt)
    muts = None
    if mutations is not None:
        mpath = Path(mutations)
        muts = _read_table(mpath, guess_format(mpath))
    return validate_cohort(patients, muts, panels, source=str(path))
