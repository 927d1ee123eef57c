"""Study-defined variables: extra patient-table fields a study (or a site's mapping) declares.

Real studies carry their own variables (a trial arm, a trial-specific lab value, a questionnaire
score). A :class:`StudyVariable` declares one, like a schema :class:`~hemafed.cohort.schema.Field`:
name, type, unit, plausible range, levels and codes. :func:`register_variables` adds the
declarations to the schema's field table, so that validation (range and level checks, typing),
column mappings, the FHIR/Phenopackets readers (through a LOINC code) and every analysis (a
design term takes the declared range and levels) treat them like built-in fields. Names carry the
prefix ``x_`` so a study variable can never shadow or be mistaken for a built-in field;
registering the same declaration twice is a no-op, a conflicting one is refused.

Both sides must register the same declarations: the hub before it builds requests, each site
before it imports or loads its cohort (a study's declarations are public, part of its spec).

>>> v = parse_variables([{"name": "x_arm", "type": "category", "levels": ["A", "B"]}])
>>> v[0].field().categories
('A', 'B')
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hemafed.cohort.model import Cohort
from hemafed.cohort.schema import FIELDS, LOINC_TO_FIELD, Field, Kind
from hemafed.errors import InvalidInput

PREFIX = "x_"
_NAME = re.compile(r"^x_[a-z][a-z0-9_]{0,62}$")
_KINDS: tuple[Kind, ...] = ("float", "int", "bool", "category", "str")
_KEYS = {"name", "type", "description", "unit", "low", "high", "levels", "codes"}


@dataclass(frozen=True)
class StudyVariable:
    """One study-defined patient-table field; invariants checked at construction.

    ``codes`` maps a code system to the variable's code there (``loinc`` makes FHIR
    Observations and Phenopackets measurements with that code land in this field; other
    systems, e.g. the eCRF item, are kept for provenance).
    """

    name: str
    kind: Kind
    description: str = ""
    unit: str | None = None
    low: float | None = None
    high: float | None = None
    levels: tuple[str, ...] = ()
    codes: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"study variable {self.name!r}"
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise InvalidInput(f"{where}: names must be 'x_' followed by lower-case letters, "
                               "digits or '_' (at most 64 characters), e.g. x_trial_arm")
        if self.kind not in _KINDS:
            raise InvalidInput(f"{where}: type must be one of {list(_KINDS)}, got {self.kind!r}")
        numeric = self.kind in ("float", "int")
        if numeric and (self.low is None or self.high is None):
            raise InvalidInput(f"{where}: a numeric variable needs a plausible range: low and "
                               "high (public bounds; values outside are validation errors)")
        if numeric and not float(self.low) < float(self.high):  # type: ignore[arg-type]
            raise InvalidInput(f"{where}: low must be below high, got {self.low} and {self.high}")
        if not numeric and (self.low is not None or self.high is not None):
            raise InvalidInput(f"{where}: only numeric variables take low/high")
        if self.kind == "category":
            if len(self.levels) < 2 or len(set(self.levels)) != len(self.levels):
                raise InvalidInput(f"{where}: a category needs at least two distinct levels")
        elif self.levels:
            raise InvalidInput(f"{where}: only category variables take levels")
        if not all(isinstance(k, str) and isinstance(v, str) and v for k, v in self.codes.items()):
            raise InvalidInput(f"{where}: codes must map a code system to a non-empty code")

    def field(self) -> Field:
        """The schema field this variable becomes."""
        return Field(self.name, self.kind, self.description or f"study variable {self.name}",
                     unit=self.unit, low=None if self.low is None else float(self.low),
                     high=None if self.high is None else float(self.high),
                     categories=tuple(self.levels), loinc=self.codes.get("loinc"),
                     group="study")


def parse_variables(spec: Sequence[Mapping[str, Any]] | None, where: str = "variables"
                    ) -> tuple[StudyVariable, ...]:
    """Declarations from a spec's or mapping's ``variables:`` list; every problem at once."""
    if spec is None:
        return ()
    if not isinstance(spec, Sequence) or isinstance(spec, str):
        raise InvalidInput(f"{where}: expected a list of variable declarations")
    out: list[StudyVariable] = []
    problems: list[str] = []
    for i, item in enumerate(spec, start=1):
        at = f"{where}[{i}]"
        if not isinstance(item, Mapping):
            problems.append(f"{at}: expected a mapping")
            continue
        unknown = sorted(set(item) - _KEYS)
        if unknown:
            problems.append(f"{at}: unknown key(s) {unknown}; expected {sorted(_KEYS)}")
            continue
        try:
            out.append(StudyVariable(
                name=item.get("name"), kind=item.get("type"),  # type: ignore[arg-type]
                description=str(item.get("description", "")), unit=item.get("unit"),
                low=item.get("low"), high=item.get("high"),
                levels=tuple(str(v) for v in item.get("levels", ())),
                codes={str(k): str(v) for k, v in dict(item.get("codes", {})).items()}))
        except InvalidInput as exc:
            problems.append(f"{at}: {exc}")
    names = [v.name for v in out]
    problems += [f"{where}: variable {n!r} is declared twice"
                 for n in sorted({n for n in names if names.count(n) > 1})]
    if problems:
        raise InvalidInput(f"{len(problems)} problem(s) in the study variables:\n  - "
                           + "\n  - ".join(problems))
    return tuple(out)


def register_variables(variables: Sequence[StudyVariable]) -> list[Field]:
    """Add the declarations to the schema's field table (idempotent; conflicts refused)."""
    fields = [v.field() for v in variables]
    for f in fields:
        current = FIELDS.get(f.name)
        if current is not None and current != f:
            raise InvalidInput(f"study variable {f.name!r} is already declared differently "
                               "in this process; one name, one definition")
        if f.loinc and LOINC_TO_FIELD.get(f.loinc, f.name) != f.name:
            raise InvalidInput(f"study variable {f.name!r}: LOINC {f.loinc} already belongs to "
                               f"field {LOINC_TO_FIELD[f.loinc]!r}")
    for f in fields:
        FIELDS[f.name] = f
        if f.loinc:
            LOINC_TO_FIELD[f.loinc] = f.name
    return fields


def unregister_variables(names: Sequence[str]) -> None:
    """Remove study variables (never a built-in field) from the field table."""
    for name in names:
        if not name.startswith(PREFIX):
            raise InvalidInput(f"{name!r} is a built-in field, not a study variable")
        f = FIELDS.pop(name, None)
        if f is not None and f.loinc and LOINC_TO_FIELD.get(f.loinc) == name:
            del LOINC_TO_FIELD[f.loinc]


def split_mapping(mapping: str | Path | Mapping[str, Any]
                  ) -> tuple[tuple[StudyVariable, ...], dict[str, Any]]:
    """A site mapping with a ``variables:`` section -> (declarations, the plain mapping).

    The site's mapping declares its study variables beside the column rules that fill them::

        variables:
          - {name: x_arm, type: category, levels: [control, experimental]}
        patients:
          columns: {Arm: x_arm, ...}
    """
    from hemafed.cohort.io.mapping import load_yaml

    data = load_yaml(mapping) if isinstance(mapping, str | Path) else mapping
    if not isinstance(data, Mapping):
        raise InvalidInput("a mapping must be a mapping (YAML dict)")
    rest = {k: v for k, v in data.items() if k != "variables"}
    return parse_variables(data.get("variables"), "mapping.variables"), rest


def read_with_variables(path: str | Path, mapping: str | Path | Mapping[str, Any], **kw: Any
                        ) -> Cohort:
    """:func:`hemafed.cohort.io.read_cohort` for a mapping that declares study variables:
    the declarations are registered first (idempotent), then the export is read and validated."""
    from hemafed.cohort.io import read_cohort

    variables, plain = split_mapping(mapping)
    register_variables(variables)
    return read_cohort(path, mapping=plain, **kw)


@contextmanager
def study_variables(variables: Sequence[StudyVariable]) -> Iterator[list[Field]]:
    """Register the variables for the duration of a ``with`` block (tests, one-off runs)."""
    new = [v.name for v in variables if v.name not in FIELDS]
    fields = register_variables(variables)
    try:
        yield fields
    finally:
        unregister_variables(new)
