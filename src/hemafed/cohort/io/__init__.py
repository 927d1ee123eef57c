"""Importers and exporters between site files and the canonical cohort.

``read_cohort`` is the one entry point the site intake calls; each format lives in its own module:
:mod:`.mapping` (site tables with a YAML column mapping), :mod:`.fhir` (HL7 FHIR R4B bundles),
:mod:`.phenopackets` (GA4GH Phenopackets v2) and :mod:`.vcf` (variant calls of one sample).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from hemafed.cohort.io.mapping import (
    SEQUENCED_GENES,
    apply_mapping,
    load_yaml,
    panels_from_genes,
    parse_mapping,
    parse_panels,
)
from hemafed.cohort.model import Cohort
from hemafed.cohort.validate import validate_cohort
from hemafed.errors import InvalidInput, Problem, ValidationFailed

TABLE_FORMATS = ("csv", "tsv", "parquet")
FORMATS = (*TABLE_FORMATS, "fhir", "phenopackets")


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


def _panels_arg(panels: Mapping[str, Iterable[str]] | str | Path | None
                ) -> tuple[dict[str, tuple[str, ...]] | None, list[Problem]]:
    if panels is None:
        return None, []
    if isinstance(panels, str | Path):
        return parse_panels(load_yaml(panels), str(panels))
    return {str(k): tuple(v) for k, v in panels.items()}, []


def read_cohort(
    path: str | Path,
    fmt: str | None = None,
    *,
    mutations: str | Path | None = None,
    panels: Mapping[str, Iterable[str]] | str | Path | None = None,
    mapping: str | Path | Mapping[str, Any] | None = None,
) -> Cohort:
    """Read a site export into a validated cohort; every problem is reported at once.

    ``path`` is a patient table (csv/tsv/parquet) in canonical columns, or in the site's own
    columns when ``mapping`` (a YAML path or dict, see :mod:`hemafed.cohort.io.mapping`) is given.
    ``mutations`` is an optional long mutation table (mapped by the mapping's ``mutations:``
    section when present), ``panels`` a dict or YAML file {panel: [genes]} (it overrides the
    mapping's panels). ``fmt`` may also be ``"fhir"`` (a bundle) or ``"phenopackets"`` (a file
    or folder), which carry everything themselves.
    """
    path = Path(path)
    fmt = fmt or guess_format(path)
    if fmt not in FORMATS:
        raise InvalidInput(f"{path}: unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if fmt in ("fhir", "phenopackets"):
        if mutations is not None or panels is not None or mapping is not None:
            raise InvalidInput(f"{path}: a {fmt} input carries its own mutations and panels; "
                               "do not pass mutations, panels or mapping")
        if fmt == "fhir":
            from hemafed.cohort.io.fhir import read_fhir_bundle

            return read_fhir_bundle(path)
        from hemafed.cohort.io.phenopackets import read_phenopackets

        return read_phenopackets(path)
    patients = _read_table(path, fmt)
    muts = None
    if mutations is not None:
        mpath = Path(mutations)
        muts = _read_table(mpath, guess_format(mpath))
    problems: list[Problem] = []
    panel_map, panel_problems = _panels_arg(panels)
    problems += panel_problems
    if mapping is not None:
        cmap, map_problems = parse_mapping(mapping)
        problems += map_problems
        patients, p = apply_mapping(patients, cmap.patients, where="patients")
        problems += p
        if muts is not None and cmap.mutations is not None:
            muts, p = apply_mapping(muts, cmap.mutations, where="mutations")
            problems += [Problem(q.row, f"mutations.{q.column}", q.reason) for q in p]
        if panel_map is None and cmap.panels is not None:
            panel_map = dict(cmap.panels)
    if SEQUENCED_GENES in patients.columns:
        patients, derived, p = panels_from_genes(patients)
        problems += p
        clash = sorted(set(derived) & set(panel_map or {}))
        problems += [Problem(None, SEQUENCED_GENES, f"panel {n!r} is declared twice (panels and "
                                                   "sequenced_genes)") for n in clash
                     if (panel_map or {})[n] != derived[n]]
        panel_map = {**(panel_map or {}), **derived}
    try:
        cohort = validate_cohort(patients, muts, panel_map, source=str(path))
    except ValidationFailed as exc:
        raise ValidationFailed([*problems, *exc.problems], source=str(path)) from None
    if problems:
        raise ValidationFailed(problems, source=str(path))
    return cohort


__all__ = ["FORMATS", "guess_format", "read_cohort"]
