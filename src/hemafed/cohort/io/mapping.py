"""Column mappings: how a site's own table becomes the canonical cohort tables.

A mapping is a YAML file (or the same structure as a dict) written once per site export::

    patients:
      columns:
        PatientID: patient_id
        Diagnosis: {field: disease, values: {"Myelodysplastic syndrome": MDS}}
        Sex: {field: sex, values: {Male: M, Female: F}}
        Hb: {field: hb, unit: g/L}
        OS_days: {field: os_time, unit: days}
        Dead: {field: os_status, values: {"yes": 1, "no": 0}}
        Genes: sequenced_genes          # optional: genes sequenced, separated by , ; | or space
      ignore: [MRN, Comment]            # source columns deliberately left out
      constants: {disease: MDS}         # optional: a field with one value for every row
    mutations:                          # optional: the long mutation table
      columns: {ID: patient_id, Gene: gene, VAF: {field: vaf, unit: percent}}
    panels: {myeloid: [TP53, SF3B1]}    # optional: panel name -> genes sequenced

A bare mapping with ``columns``/``ignore`` at the top level maps the patient table only.
``unit`` names the source unit; values are converted into the schema unit (see
:mod:`hemafed.cohort.io.units`). ``values`` replaces source values before validation; values not
listed pass through unchanged and are then validated. A source column that is neither mapped
nor listed under ``ignore`` is an error, so that no column is dropped by accident.

>>> m, problems = parse_mapping({"columns": {"ID": "patient_id", "Hb": {"field": "hb", "unit": "g/L"}}})
>>> (m.patients.rules[1].target, m.patients.rules[1].unit, problems)
('hb', 'g/L', [])
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml

from hemafed.cohort.io.units import accepted_units, conversion_factor
from hemafed.cohort.model import MUTATION_COLUMNS, PANEL_COLUMN
from hemafed.cohort.schema import FIELDS
from hemafed.errors import InvalidInput, Problem, ValidationFailed

SEQUENCED_GENES = "sequenced_genes"
"""Pseudo-field of the patient table: the genes sequenced for that patient, as one string."""

Table = Literal["patients", "mutations"]

_YAML_TRUE = ("yes", "true", "on", "y")
_YAML_FALSE = ("no", "false", "off", "n")
_GENE_SPLIT = re.compile(r"[,;|\s]+")


@dataclass(frozen=True)
class ColumnRule:
    """One source column: the field it fills, its source unit and value replacements."""

    source: str
    target: str
    unit: str | None = None
    values: Mapping[str, str | None] = field(default_factory=dict)
    factor: float = 1.0

    def __post_init__(self) -> None:
        if not self.source or not self.target:
            raise ValueError("a column rule needs a source column and a target field")
        if self.factor <= 0 or not np.isfinite(self.factor):
            raise ValueError(f"column {self.source!r}: conversion factor must be positive")


@dataclass(frozen=True)
class TableMapping:
    """The rules of one table; ``broken`` lists source columns whose rule was invalid."""

    rules: tuple[ColumnRule, ...] = ()
    ignore: frozenset[str] = frozenset()
    constants: Mapping[str, str] = field(default_factory=dict)
    broken: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        targets = [r.target for r in self.rules] + list(self.constants)
        dup = sorted({t for t in targets if targets.count(t) > 1})
        if dup:
            raise ValueError(f"field(s) filled twice: {', '.join(dup)}")


@dataclass(frozen=True)
class CohortMapping:
    """A whole site export: patient table, optional mutation table, optional panels."""

    patients: TableMapping
    mutations: TableMapping | None = None
    panels: Mapping[str, tuple[str, ...]] | None = None


def _allowed_targets(table: Table) -> set[str]:
    if table == "mutations":
        return set(MUTATION_COLUMNS)
    return set(FIELDS) | {PANEL_COLUMN, SEQUENCED_GENES}


def _value_key(key: object) -> list[str]:
    """Source spellings a YAML key stands for (YAML 1.1 reads an unquoted yes/no as a bool)."""
    if isinstance(key, bool):
        words = _YAML_TRUE if key else _YAML_FALSE
        return [w for word in words for w in (word, word.capitalize(), word.upper())]
    return [str(key)]


def _value_target(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _parse_table(spec: object, table: Table, where: str) -> tuple[TableMapping, list[Problem]]:
    problems: list[Problem] = []
    if not isinstance(spec, Mapping):
        return TableMapping(), [Problem(None, where, "expected a mapping with 'columns'")]
    unknown_keys = sorted(set(spec) - {"columns", "ignore", "constants"})
    problems += [Problem(None, f"{where}.{k}", "unknown key; expected columns, ignore, constants")
                 for k in unknown_keys]
    columns = spec.get("columns") or {}
    if not isinstance(columns, Mapping):
        return TableMapping(), [*problems, Problem(None, f"{where}.columns",
                                                   "expected source column -> field")]
    allowed = _allowed_targets(table)
    rules: list[ColumnRule] = []
    broken: set[str] = set()
    for source, rule in columns.items():
        col = f"{where}.columns.{source}"
        if isinstance(rule, str):
            rule = {"field": rule}
        if not isinstance(rule, Mapping) or "field" not in rule:
            problems.append(Problem(None, col, "expected a field name or {field:, unit:, values:}"))
            broken.add(str(source))
            continue
        extra = sorted(set(rule) - {"field", "unit", "values"})
        if extra:
            problems.append(Problem(None, col, f"unknown key(s) {extra}; expected field, unit, values"))
        target = str(rule["field"])
        if target not in allowed:
            problems.append(Problem(None, col, f"{target!r} is not a {table} field"))
            broken.add(str(source))
            continue
        unit = rule.get("unit")
        factor = 1.0
        if unit is not None:
            try:
                if target != "vaf" and (target not in FIELDS or not accepted_units(target)):
                    raise InvalidInput(f"field {target!r} has no unit; remove unit {unit!r} "
                                       "from its mapping")
                factor = conversion_factor(target, str(unit))
            except InvalidInput as exc:
                problems.append(Problem(None, col, str(exc)))
                broken.add(str(source))
                continue
        values_spec = rule.get("values") or {}
        if not isinstance(values_spec, Mapping):
            problems.append(Problem(None, col, "values must map source value -> schema value"))
            broken.add(str(source))
            continue
        values = {k: _value_target(v) for key, v in values_spec.items() for k in _value_key(key)}
        rules.append(ColumnRule(str(source), target, None if unit is None else str(unit),
                                values, factor))
    ignore = spec.get("ignore") or []
    if not isinstance(ignore, list):
        problems.append(Problem(None, f"{where}.ignore", "expected a list of column names"))
        ignore = []
    constants = spec.get("constants") or {}
    if not isinstance(constants, Mapping):
        problems.append(Problem(None, f"{where}.constants", "expected field -> value"))
        constants = {}
    for k in constants:
        if str(k) not in allowed:
            problems.append(Problem(None, f"{where}.constants.{k}", f"{k!r} is not a {table} field"))
    consts = {str(k): str(_value_target(v)) for k, v in constants.items() if str(k) in allowed}
    targets = [r.target for r in rules] + list(consts)
    dup = sorted({t for t in targets if targets.count(t) > 1})
    if dup:
        problems += [Problem(None, where, f"field {t!r} is filled by more than one column")
                     for t in dup]
        keep = {t: False for t in dup}
        deduped = []
        for r in rules:
            if r.target in keep:
                if keep[r.target]:
                    broken.add(r.source)
                    continue
                keep[r.target] = True
            deduped.append(r)
        rules = deduped
        consts = {k: v for k, v in consts.items() if k not in keep}
    return TableMapping(tuple(rules), frozenset(str(c) for c in ignore), consts,
                        frozenset(broken)), problems


def load_yaml(source: str | Path) -> Any:
    """Parse a YAML file; ``InvalidInput`` naming the file when it is missing or malformed."""
    path = Path(source)
    if not path.is_file():
        raise InvalidInput(f"{path}: no such file")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{path}: not valid YAML: {exc}") from exc


def parse_panels(spec: object, where: str = "panels") -> tuple[dict[str, tuple[str, ...]],
                                                               list[Problem]]:
    """Panels as {name: [genes]}; problems when the structure is wrong (genes checked later)."""
    if not isinstance(spec, Mapping):
        return {}, [Problem(None, where, "expected panel name -> list of genes")]
    out: dict[str, tuple[str, ...]] = {}
    problems: list[Problem] = []
    for name, genes in spec.items():
        if isinstance(genes, str):
            genes = [g for g in _GENE_SPLIT.split(genes) if g]
        if not isinstance(genes, list | tuple) or not genes:
            problems.append(Problem(None, f"{where}.{name}", "expected a non-empty list of genes"))
            continue
        out[str(name)] = tuple(str(g) for g in genes)
    return out, problems


def parse_mapping(spec: str | Path | Mapping[str, Any]) -> tuple[CohortMapping, list[Problem]]:
    """Read a mapping (YAML path or dict); return it and every problem found in it."""
    data = load_yaml(spec) if isinstance(spec, str | Path) else spec
    if not isinstance(data, Mapping):
        raise InvalidInput(f"mapping {spec!s}: expected a YAML mapping at the top level")
    if "patients" not in data and "columns" in data:
        data = {"patients": {k: v for k, v in data.items() if k != "panels"},
                **({"panels": data["panels"]} if "panels" in data else {})}
    problems: list[Problem] = []
    unknown = sorted(set(data) - {"patients", "mutations", "panels"})
    problems += [Problem(None, f"mapping.{k}", "unknown key; expected patients, mutations, panels")
                 for k in unknown]
    if "patients" not in data:
        problems.append(Problem(None, "mapping.patients", "the patient table mapping is missing"))
    patients, p = _parse_table(data.get("patients", {}), "patients", "mapping.patients")
    problems += p
    mutations = None
    if data.get("mutations") is not None:
        mutations, p = _parse_table(data["mutations"], "mutations", "mapping.mutations")
        problems += p
    panels = None
    if data.get("panels") is not None:
        panels, p = parse_panels(data["panels"], "mapping.panels")
        problems += p
    return CohortMapping(patients, mutations, panels), problems


def load_mapping(spec: str | Path | Mapping[str, Any]) -> CohortMapping:
    """Read a mapping; raise ``ValidationFailed`` listing every problem in it."""
    mapping, problems = parse_mapping(spec)
    if problems:
        raise ValidationFailed(problems, source=f"mapping {spec if isinstance(spec, str | Path) else ''}".strip())
    return mapping


def _convert(text: pd.Series, factor: float) -> pd.Series:
    """Numbers scaled by ``factor``; values that are not numbers are kept for validation to report."""
    num = pd.to_numeric(text, errors="coerce").astype("Float64")
    vals = num.to_numpy(dtype=float, na_value=np.nan)
    # dividing by an integer-like reciprocal (10, 12, 1000) is exact where multiplying is not
    scaled = vals / (1.0 / factor) if factor < 1 else vals * factor
    bad = np.isnan(vals) & text.notna().to_numpy(dtype=bool)
    if not bad.any():
        return pd.Series(scaled, index=text.index).astype("Float64")
    mixed = pd.Series(scaled, index=text.index, dtype=object)
    mixed[bad] = text[bad].to_numpy(dtype=object)
    mixed[np.isnan(vals) & ~bad] = None
    return mixed


def apply_mapping(raw: pd.DataFrame, table: TableMapping, *, where: str = "patients"
                  ) -> tuple[pd.DataFrame, list[Problem]]:
    """Rename, convert and recode ``raw`` by ``table``; report unmapped and absent columns."""
    problems: list[Problem] = []
    mapped = {r.source for r in table.rules}
    for c in raw.columns:
        if c not in mapped and c not in table.ignore and c not in table.broken:
            problems.append(Problem(None, str(c),
                                    f"{where} column is not mapped; map it to a field or list it "
                                    "under 'ignore:'"))
    out: dict[str, pd.Series] = {}
    for r in table.rules:
        if r.source not in raw.columns:
            problems.append(Problem(None, r.source, f"mapped {where} column is absent from the file"))
            continue
        col = raw[r.source]
        if r.values:
            text = col.astype("string").str.strip()
            col = text.replace(dict(r.values))  # type: ignore[arg-type]
        if r.unit is not None:
            col = _convert(col.astype("string").str.strip().replace("", pd.NA), r.factor)
        out[r.target] = col
    for name, value in table.constants.items():
        out[name] = pd.Series([value] * len(raw), index=raw.index, dtype="string")
    return pd.DataFrame(out, index=raw.index), problems


def panels_from_genes(patients: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, tuple[str, ...]],
                                                       list[Problem]]:
    """Turn a ``sequenced_genes`` column into a ``panel`` column plus declared panels.

    Each distinct gene set becomes a panel; with a ``panel`` column the set is named by it (one
    name with two gene sets is an error), otherwise sets are named ``genes-1``, ``genes-2`` ... in
    order of first appearance.
    """
    genes = patients[SEQUENCED_GENES].astype("string").str.strip()
    sets = [None if pd.isna(g) or not g else tuple(dict.fromkeys(x for x in _GENE_SPLIT.split(g) if x))
            for g in genes]
    problems: list[Problem] = []
    panels: dict[str, tuple[str, ...]] = {}
    names: list[str | None] = []
    given = patients[PANEL_COLUMN].astype("string") if PANEL_COLUMN in patients else None
    by_set: dict[tuple[str, ...], str] = {}
    for i, s in enumerate(sets):
        if s is None:
            names.append(None if given is None or pd.isna(given.iloc[i]) else str(given.iloc[i]))
            continue
        if given is not None and not pd.isna(given.iloc[i]):
            name = str(given.iloc[i])
            if name in panels and panels[name] != s:
                problems.append(Problem(i + 1, SEQUENCED_GENES,
                                        f"panel {name!r} lists other genes on an earlier row"))
            panels.setdefault(name, s)
        else:
            name = by_set.setdefault(s, f"genes-{len(by_set) + 1}")
            panels.setdefault(name, s)
        names.append(name)
    out = patients.drop(columns=[SEQUENCED_GENES])
    out[PANEL_COLUMN] = pd.Series(names, index=patients.index, dtype="string")
    return out, panels, problems


__all__ = [
    "SEQUENCED_GENES",
    "CohortMapping",
    "ColumnRule",
    "TableMapping",
    "accepted_units",
    "apply_mapping",
    "load_mapping",
    "panels_from_genes",
    "parse_mapping",
    "parse_panels",
]
