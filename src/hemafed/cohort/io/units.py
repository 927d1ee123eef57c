"""Unit conversion into the canonical units of the cohort schema, and their UCUM spellings.

Every importer (mapped tables, FHIR, Phenopackets) converts through :func:`conversion_factor`, so
one table decides which source units are accepted for which field. A unit not listed for a field is
refused, never guessed.

>>> conversion_factor("hb", "g/L")
0.1
>>> conversion_factor("os_time", "months") == 1 / 12
True
"""

from __future__ import annotations

from hemafed.cohort.schema import FIELDS
from hemafed.errors import InvalidInput

DAYS_PER_YEAR = 365.25
HB_G_PER_DL_PER_MMOL_L = 1.6114
"""g/dL of haemoglobin per mmol/L (monomer molar mass 16,114 g/mol)."""

# canonical schema unit -> {accepted source unit spelling: factor to multiply by}
_BY_UNIT: dict[str, dict[str, float]] = {
    "g/dL": {"g/dL": 1.0, "g/dl": 1.0, "g/L": 0.1, "g/l": 0.1},
    "10^9/L": {"10^9/L": 1.0, "10*9/L": 1.0, "G/L": 1.0, "10^3/uL": 1.0, "10*3/uL": 1.0,
               "10^3/µL": 1.0, "K/uL": 1.0, "/uL": 1e-3, "cells/uL": 1e-3, "/µL": 1e-3,
               "/mm3": 1e-3, "10*3/mm3": 1.0},
    "years": {"years": 1.0, "year": 1.0, "y": 1.0, "a": 1.0, "yr": 1.0,
              "months": 1 / 12, "month": 1 / 12, "mo": 1 / 12,
              "weeks": 7 / DAYS_PER_YEAR, "wk": 7 / DAYS_PER_YEAR,
              "days": 1 / DAYS_PER_YEAR, "day": 1 / DAYS_PER_YEAR, "d": 1 / DAYS_PER_YEAR},
    "%": {"%": 1.0, "percent": 1.0, "fraction": 100.0, "1": 100.0},
    "mg/L": {"mg/L": 1.0, "mg/l": 1.0, "mg/dL": 10.0, "mg/dl": 10.0},
    "U/L": {"U/L": 1.0, "IU/L": 1.0, "[IU]/L": 1.0},
    "cm/s": {"cm/s": 1.0},
    "m/s": {"m/s": 1.0, "cm/s": 0.01},
    "pg/mL": {"pg/mL": 1.0, "ng/L": 1.0},
    "mg/g": {"mg/g": 1.0, "mg/g{creat}": 1.0},
}

# field-specific extras (a molar unit only makes sense for one analyte)
_BY_FIELD: dict[str, dict[str, float]] = {
    "hb": {"mmol/L": HB_G_PER_DL_PER_MMOL_L, "mmol/l": HB_G_PER_DL_PER_MMOL_L},
}

VAF_UNITS: dict[str, float] = {"fraction": 1.0, "1": 1.0, "percent": 0.01, "%": 0.01}
"""Accepted units of the mutation table's ``vaf`` column (canonical: a fraction 0-1)."""

UCUM: dict[str, str] = {
    "g/dL": "g/dL", "10^9/L": "10*9/L", "years": "a", "%": "%", "mg/L": "mg/L", "U/L": "U/L",
    "cm/s": "cm/s", "m/s": "m/s", "pg/mL": "pg/mL", "mg/g": "mg/g",
}
"""UCUM code of each canonical schema unit (used by the FHIR and Phenopackets exporters)."""

UCUM_SYSTEM = "http://unitsofmeasure.org"


def accepted_units(field: str) -> dict[str, float]:
    """Source unit -> factor into the canonical unit of ``field`` ({} for unitless fields)."""
    if field == "vaf":
        return dict(VAF_UNITS)
    f = FIELDS.get(field)
    if f is None:
        raise InvalidInput(f"unknown schema field {field!r}")
    if f.unit is None:
        return {}
    return {**_BY_UNIT.get(f.unit, {f.unit: 1.0}), **_BY_FIELD.get(field, {})}


def conversion_factor(field: str, unit: str) -> float:
    """Factor that turns a value of ``field`` in ``unit`` into the schema's canonical unit.

    Raises ``InvalidInput`` naming the accepted units when ``unit`` is unknown for the field.
    """
    units = accepted_units(field)
    if unit in units:
        return units[unit]
    if not units:
        raise InvalidInput(f"field {field!r} has no unit; remove unit {unit!r} from its mapping")
    raise InvalidInput(f"unit {unit!r} is not known for field {field!r}; "
                       f"accepted: {', '.join(sorted(units))}")


def ucum_of(field: str) -> str | None:
    """The UCUM code of a field's canonical unit (None for unitless fields)."""
    f = FIELDS[field]
    return None if f.unit is None else UCUM.get(f.unit, f.unit)
