"""The study specification model: parsing and validating a spec, with no estimator imported.

A spec is a YAML file. Its SHA-256 (over canonical JSON of the parsed spec, so formatting and
comments do not change it) is what every site approves in its policy: a changed analysis is a
different study.

This module sits below the site (layer ``site`` in ``tests/test_layers.py``) so that a site
can read the spec it approved without importing the estimators. What the validation needs from
above is *registered* into it at run time, never imported:

* the analysis kinds and their options: :func:`hemafed.kinds.register_kind`, beside each
  estimator;
* the :class:`SpecRules`: the columns sites derive (the scores), the genes hemafed knows, the
  checks of an analysis that need an estimator's model (a formula's design, a long table's
  lattice) and the checkers of a spec's sections (``imaging``): :func:`register_rules`.

:mod:`hemafed.study.kinds` registers the built-in ones; :mod:`hemafed.study.spec`, the public
import path, imports it and re-exports this module. A spec checked while nothing is registered
is refused with a clear error (:func:`require_registered`), never accepted by a blank
vocabulary.

>>> from hemafed.study.spec import StudySpec
>>> spec = StudySpec.from_mapping({"study_id": "s1", "analyses": [
...     {"id": "size", "kind": "describe", "columns": ["age"]}]})
>>> len(spec.sha256)
64
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hemafed.cohort.study_fields import StudyVariable, parse_variables
from hemafed.errors import InvalidInput
from hemafed.kinds import COARSER_LATTICES, registered_kinds

__all__ = ["FORMULA_LEVEL_KINDS", "KINDS", "OWN_LATTICE_MAX_POINTS", "OWN_TABLE_KINDS",
           "Analysis", "AnalysisCheck", "SectionCheck", "SpecRules", "StudySpec", "check_names",
           "known_genes", "register_rules", "registered_rules", "require_registered",
           "spec_sha256", "valid_columns"]


class _KindOptions(Mapping[str, tuple[set[str], set[str]]]):
    """kind -> (required keys, optional keys), read from the registrations when asked."""

    def __getitem__(self, name: str) -> tuple[set[str], set[str]]:
        k = next((k for k in registered_kinds() if k.name == name), None)
        if k is None:
            raise KeyError(name)
        return set(k.required), set(k.optional)

    def __iter__(self) -> Iterator[str]:
        return iter([k.name for k in registered_kinds()])

    def __len__(self) -> int:
        return len(registered_kinds())


KINDS: Mapping[str, tuple[set[str], set[str]]] = _KindOptions()
"""kind -> (required keys, optional keys) besides id/kind/title: a live view of the
registrations (:class:`hemafed.kinds.AnalysisKind`, :mod:`hemafed.study.kinds`); an option
is added in the kind's registration."""

_TOP_REQUIRED = {"study_id", "analyses"}
_TOP_OPTIONAL = {"title", "disease", "requester", "min_cell", "epsilon", "delta", "description",
                 "imaging", "variables"}


@dataclass(frozen=True)
class Analysis:
    """One analysis of a study: ``kind`` names the estimator, ``options`` its parameters."""

    id: str
    kind: str
    title: str
    options: Mapping[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.options.get(key, default)


AnalysisCheck = Callable[[Analysis], list[str]]
"""``check(analysis) -> problems`` (empty: fine); a check ignores the kinds it is not about."""
SectionCheck = Callable[[Any, Any], list[str]]
"""``check(section, analyses) -> problems`` of one top-level section of a spec (its raw value
and the raw ``analyses`` list)."""


@dataclass(frozen=True)
class SpecRules:
    """What the validation of a spec needs from the layers above the site, registered into it.

    * ``columns``: columns the sites derive from their cohorts (the clinical scores), valid in
      any study besides the schema's;
    * ``genes``: gene symbols a formula may name (``gene:SYMBOL``);
    * ``checks``: checks of one analysis that need an estimator's model, run in order after
      the names (e.g. a formula's declared levels make a design);
    * ``sections``: top-level spec key -> its checker (the ``imaging`` section); a spec with a
      section no rules check is refused.
    """

    columns: tuple[str, ...] = ()
    genes: frozenset[str] = frozenset()
    checks: tuple[AnalysisCheck, ...] = ()
    sections: Mapping[str, SectionCheck] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", tuple(self.columns))
        object.__setattr__(self, "genes", frozenset(self.genes))
        object.__setattr__(self, "checks", tuple(self.checks))
        unknown = set(self.sections) - _TOP_OPTIONAL
        if unknown:
            raise ValueError(f"spec rules: sections {sorted(unknown)} are not spec keys")


_RULES: list[SpecRules] = []


def register_rules(rules: SpecRules) -> SpecRules:
    """Add spec rules (registering equal rules again is a no-op)."""
    if rules not in _RULES:
        _RULES.append(rules)
    return rules


def registered_rules() -> tuple[SpecRules, ...]:
    """Every registered :class:`SpecRules`, in registration order."""
    return tuple(_RULES)


def require_registered(source: str = "study spec") -> None:
    """Refuse to check a spec while no analysis kinds or no spec rules are registered in this
    process: an empty vocabulary would refuse every kind for a wrong reason, or let a spec
    through unchecked (import :mod:`hemafed.study.spec` or :mod:`hemafed.study.kinds`, which
    register the built-in ones; the standard site handler does)."""
    missing = [what for what, have in (("analysis kinds", registered_kinds()),
                                       ("spec rules", _RULES)) if not have]
    if missing:
        raise InvalidInput(f"{source}: cannot check a study spec: no {' and no '.join(missing)} "
                           "are registered in this process (import hemafed.study.spec, which "
                           "registers the built-in ones)")


def spec_sha256(raw: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of a parsed spec's plain-JSON mapping (what
    :attr:`StudySpec.sha256` is; a site checks its stored text against the approved hash with
    it before it reads anything else of it)."""
    canon = json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class StudySpec:
    """A validated study specification."""

    study_id: str
    analyses: tuple[Analysis, ...]
    title: str = ""
    disease: str | None = None
    requester: str = "researcher"
    min_cell: int = 5
    epsilon: float | None = None
    delta: float = 1e-6
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def variables(self) -> tuple[StudyVariable, ...]:
        """The study-defined variables the spec declares (``variables:``, public, approved
        with the spec; :mod:`hemafed.cohort.study_fields`)."""
        return parse_variables(self.raw.get("variables"), "variables")

    @property
    def sha256(self) -> str:
        """SHA-256 (hex) of the canonical JSON of the spec: what sites approve."""
        return spec_sha256(self.raw)

    @classmethod
    def load(cls, path: str | Path) -> StudySpec:
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise InvalidInput(f"{path}: cannot read the study spec: {exc}") from exc
        except yaml.YAMLError as exc:
            raise InvalidInput(f"{path}: not valid YAML: {exc}") from exc
        return cls.from_mapping(raw, source=str(path))

    @classmethod
    def from_mapping(cls, raw: Any, source: str = "study spec") -> StudySpec:
        """Validate a parsed spec; every problem is reported at once."""
        require_registered(source)
        if not isinstance(raw, Mapping):
            raise InvalidInput(f"{source}: expected a mapping at the top level")
        raw = json.loads(json.dumps(raw, default=str))  # plain JSON values only (dates -> str)
        problems: list[str] = []
        missing = _TOP_REQUIRED - set(raw)
        unknown = set(raw) - _TOP_REQUIRED - _TOP_OPTIONAL
        problems += [f"missing key {k!r}" for k in sorted(missing)]
        problems += [f"unknown key {k!r}" for k in sorted(unknown)]
        if "imaging" in raw:  # the imaging section (hemafed.imaging.spec) checks itself
            problems += _section_problems("imaging", raw["imaging"], raw.get("analyses"))
        elif any(isinstance(a, Mapping) and a.get("kind") == "imaging"
                 for a in raw.get("analyses") or ()):
            problems.append("an analysis of kind 'imaging' needs the spec's imaging section")
        study_id = raw.get("study_id")
        if not isinstance(study_id, str) or not study_id.strip():
            problems.append("study_id must be a non-empty string")
        min_cell = raw.get("min_cell", 5)
        if not isinstance(min_cell, int) or min_cell < 1:
            problems.append(f"min_cell must be an integer >= 1, got {min_cell!r}")
        analyses: list[Analysis] = []
        items = raw.get("analyses", [])
        if not isinstance(items, list) or not items:
            problems.append("analyses must be a non-empty list")
            items = []
        seen: set[str] = set()
        for i, item in enumerate(items, start=1):
            where = f"analyses[{i}]"
            if not isinstance(item, Mapping):
                problems.append(f"{where}: expected a mapping")
                continue
            kind, aid = item.get("kind"), item.get("id", f"a{i}")
            if kind not in KINDS:
                problems.append(f"{where}: unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
                continue
            if not isinstance(aid, str) or aid in seen:
                problems.append(f"{where}: id must be a unique string, got {aid!r}")
            seen.add(str(aid))
            required, optional = KINDS[str(kind)]
            opts = {k: v for k, v in item.items() if k not in ("id", "kind", "title")}
            if "group_col" in opts and "group" in required | optional:  # Python API name
                opts["group"] = opts.pop("group_col")
            problems += [f"{where} ({kind}): missing {k!r}" for k in sorted(required - set(opts))]
            problems += [f"{where} ({kind}): unknown option {k!r}"
                         for k in sorted(set(opts) - required - optional)]
            analyses.append(Analysis(str(aid), str(kind), str(item.get("title", aid)), opts))
        disease = raw.get("disease")
        if disease is not None:
            problems += _check_disease(disease)
        declared: tuple[str, ...] = ()
        try:
            declared = tuple(v.name for v in parse_variables(raw.get("variables"), "variables"))
        except InvalidInput as exc:
            problems.append(str(exc).replace("\n  - ", "; "))
        checks = [c for rules in _RULES for c in rules.checks]
        for a in analyses:
            problems += [f"analysis {a.id!r} ({a.kind}): {p}" for p in check_names(a, declared)]
            for check in checks:
                problems += [f"analysis {a.id!r} ({a.kind}): {p}" for p in check(a)]
            problems += [f"analysis {a.id!r} ({a.kind}): {p}" for p in _check_lattice(a)]
        eps = raw.get("epsilon")
        if eps is not None and (not isinstance(eps, int | float) or eps <= 0):
            problems.append(f"epsilon must be > 0, got {eps!r}")
        if problems:
            raise InvalidInput(f"{source}: {len(problems)} problem(s):\n  - " + "\n  - ".join(problems))
        return cls(study_id=str(study_id), analyses=tuple(analyses), title=str(raw.get("title", "")),
                   disease=raw.get("disease"), requester=str(raw.get("requester", "researcher")),
                   min_cell=int(min_cell), epsilon=None if eps is None else float(eps),
                   delta=float(raw.get("delta", 1e-6)), raw=raw)

    def to_yaml(self) -> str:
        return yaml.safe_dump(dict(self.raw), sort_keys=False)


def _section_problems(name: str, section: Any, analyses: Any) -> list[str]:
    """The problems of a top-level section, by the checkers registered for it."""
    checkers = [rules.sections[name] for rules in _RULES if name in rules.sections]
    if not checkers:
        return [f"no checker of the spec's {name} section is registered in this process"]
    return [p for check in checkers for p in check(section, analyses)]


# --------------------------------------------------------------------------- names in a spec

# options that name one column, and options that name several
_COLUMN_OPTIONS = ("duration", "event", "group", "row", "col", "outcome", "anchor")
_COLUMN_LIST_OPTIONS = ("columns", "strata")
_TERM_OPTIONS = ("formula", "features")
_KEYED_OPTIONS = ("levels", "bounds")


def _nearest(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    if not close:
        close = [c for c in choices if c.lower() == name.lower()]
    return f"; did you mean {close[0]!r}?" if close else ""


def _check_disease(disease: Any) -> list[str]:
    from hemafed.cohort.schema import DISEASES

    if disease in DISEASES:
        return []
    return [f"unknown disease {disease!r}{_nearest(str(disease), list(DISEASES))} "
            f"(hemafed knows {', '.join(DISEASES)})"]


def valid_columns() -> list[str]:
    """Column names a study may use: the cohort schema and the scores sites derive (the
    registered :attr:`SpecRules.columns`)."""
    from hemafed.cohort.schema import FIELDS

    require_registered("the study columns")
    return [*FIELDS, *_unique(c for rules in _RULES for c in rules.columns)]


def known_genes() -> list[str]:
    """Gene symbols hemafed knows: the registered ones (the IPSS-M and ELN genes) and those
    of the demo cohorts."""
    from hemafed.cohort.demo import (
        AML_GENE_FREQUENCIES,
        MDS_GENE_FREQUENCIES,
        MM_GENE_FREQUENCIES,
    )

    genes = {*(g for rules in _RULES for g in rules.genes), *MDS_GENE_FREQUENCIES,
             *AML_GENE_FREQUENCIES, *MM_GENE_FREQUENCIES, "TP53"}
    return sorted(genes)


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _names_of(analysis: Analysis) -> list[tuple[str, str]]:
    """(option, name) of every column or gene an analysis names."""
    out: list[tuple[str, str]] = []
    for key in _COLUMN_OPTIONS:
        value = analysis.get(key)
        if isinstance(value, str):
            out.append((key, value))
    for key in _COLUMN_LIST_OPTIONS:
        value = analysis.get(key)
        values = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        out += [(key, str(v)) for v in values]
    for key in _TERM_OPTIONS:
        value = analysis.get(key)
        terms = (re.split(r"\s*\+\s*", value.strip()) if isinstance(value, str)
                 else [str(v) for v in value] if isinstance(value, list) else [])
        out += [(key, t) for t in terms if t]
    for key in _KEYED_OPTIONS:
        value = analysis.get(key)
        if isinstance(value, dict):
            out += [(key, str(k)) for k in value]
    causes = analysis.get("causes")
    if isinstance(causes, list):
        out += [("causes", str(c)) for pair in causes if isinstance(pair, list) for c in pair]
    return out


OWN_TABLE_KINDS = frozenset({"lmm", "cox_long"})
"""Kinds whose columns are in a site table of their own (repeated measurements, start-stop
rows), not the patient schema."""


FORMULA_LEVEL_KINDS = frozenset({"cox", "logistic", "finegray", "cox_tv"})
"""Kinds whose ``levels`` declare a formula's categorical levels (``{column: [reference, ...]}``)."""


def _check_lattice(analysis: Analysis) -> list[str]:
    """A ``lattice`` option is one of the public lattices (steps per time unit)."""
    value = analysis.get("lattice")
    if value is None:
        return []
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or float(value) not in COARSER_LATTICES:
        return [f"lattice must be one of the public lattices (steps per year) "
                f"{sorted(COARSER_LATTICES)}, got {value!r}"]
    return []


OWN_LATTICE_MAX_POINTS = 21_916
"""Most points of a long table's own time lattice (one per day of the 60-year horizon, as
:data:`hemafed.study.plan.MAX_GRID_POINTS`)."""


def check_names(analysis: Analysis, declared: Sequence[str] = ()) -> list[str]:
    """Problems with the columns and genes an analysis names, each with the nearest valid name
    (``declared``: the spec's study variables, valid columns of this study)."""
    if analysis.kind in OWN_TABLE_KINDS:
        return []  # their columns live in the site's own table, checked when the site loads it
    # "site" stratifies by the answering site (the site supplies it; no cohort column)
    columns, genes = [*valid_columns(), *declared, "site"], known_genes()
    problems = []
    for option, name in _names_of(analysis):
        if name.startswith("gene:"):
            gene = name[len("gene:"):]
            if gene not in genes:
                hint = _nearest(gene, genes).replace("'", "'gene:", 1)
                problems.append(f"{option}: unknown gene {gene!r}{hint} (hemafed knows the "
                                "IPSS-M and ELN genes; name them as gene:SYMBOL)")
        elif name not in columns:
            problems.append(f"{option}: unknown column {name!r}{_nearest(name, columns)} "
                            "(`hemafed schema` lists the columns)")
    return problems
