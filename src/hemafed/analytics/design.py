"""Public covariate designs: which columns enter a model, their bounds and levels, and the site's
design matrix.

A :class:`DesignSpec` is public (it travels in query parameters, so it holds no patient data):
numeric columns with declared bounds (default: the schema's plausible range), categorical columns
with declared levels and a reference level (expanded to 0/1 dummy columns), boolean flags (0/1)
and gene terms (``gene:TP53``: 1 mutated, 0 sequenced wild-type; not sequenced is *missing*).
At a site, :func:`design_matrix` turns the cohort into a numeric matrix. Rows missing any
covariate (or any required outcome column) are dropped: the analysis is complete-case, and the
number of dropped rows is reported through :func:`complete_case_mask`.

>>> spec = parse_formula("age + sex + cyto_ipssr")
>>> spec.names[:3]
('age', 'sex[F]', 'cyto_ipssr[Good]')
>>> DesignSpec.from_params(spec.to_params()) == spec
True
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from hemafed.cohort.model import Cohort
from hemafed.cohort.schema import FIELDS
from hemafed.errors import InvalidInput

GENE_PREFIX = "gene:"


@dataclass(frozen=True)
class NumericTerm:
    """A numeric (or 0/1 flag) column entering the model as is; values must lie in [low, high]."""

    column: str
    low: float
    high: float

    def __post_init__(self) -> None:
        if not (np.isfinite(self.low) and np.isfinite(self.high)) or not self.low < self.high:
            raise InvalidInput(f"covariate {self.column!r}: bounds must be finite with low < high, "
                               f"got [{self.low}, {self.high}]")

    @property
    def names(self) -> tuple[str, ...]:
        return (self.column,)


@dataclass(frozen=True)
class CategoricalTerm:
    """A categorical column expanded to one 0/1 column per non-reference level."""

    column: str
    levels: tuple[str, ...]
    reference: str

    def __post_init__(self) -> None:
        if len(self.levels) < 2 or len(set(self.levels)) != len(self.levels):
            raise InvalidInput(f"covariate {self.column!r}: needs at least two distinct levels, "
                               f"got {list(self.levels)}")
        if self.reference not in self.levels:
            raise InvalidInput(f"covariate {self.column!r}: reference level {self.reference!r} is "
                               f"not among the levels {list(self.levels)}")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f"{self.column}[{lv}]" for lv in self.levels if lv != self.reference)


@dataclass(frozen=True)
class GeneTerm:
    """Mutation status of one gene: 1 mutated, 0 sequenced and wild-type (not sequenced: missing)."""

    gene: str

    def __post_init__(self) -> None:
        if not self.gene or not isinstance(self.gene, str):
            raise InvalidInput(f"gene term needs a gene symbol, got {self.gene!r}")

    @property
    def names(self) -> tuple[str, ...]:
        return (f"{GENE_PREFIX}{self.gene}",)


Term = NumericTerm | CategoricalTerm | GeneTerm


class LevelsRefused(InvalidInput):
    """A site holds a value of a categorical covariate outside the design's declared levels.

    The message and :attr:`refusal_name` (``levels.COLUMN``: the rule and the column, both from
    the request's public design) name no value and no count, so the refusal the hub sees says
    which rule and column do not fit, nothing of the data.
    """

    def __init__(self, column: str) -> None:
        super().__init__(f"covariate {column!r} has a value outside the declared levels of the "
                         f"approved design (rule 'levels'); declare every level the sites hold")
        self.column = column
        self.refusal_name = f"levels.{column}"


@dataclass(frozen=True)
class DesignSpec:
    """The public description of a design matrix: an ordered tuple of terms."""

    terms: tuple[Term, ...]

    def __post_init__(self) -> None:
        if not self.terms:
            raise InvalidInput("a design needs at least one covariate")
        names = self.names
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise InvalidInput(f"covariate(s) listed twice in the design: {', '.join(dup)}")

    @property
    def names(self) -> tuple[str, ...]:
        """Column names of the design matrix, in order."""
        return tuple(n for t in self.terms for n in t.names)

    @property
    def width(self) -> int:
        return len(self.names)

    @property
    def bounds(self) -> np.ndarray:
        """``(width, 2)`` array of public lower/upper bounds of each design column."""
        rows: list[tuple[float, float]] = []
        for t in self.terms:
            if isinstance(t, NumericTerm):
                rows.append((t.low, t.high))
            else:
                rows.extend([(0.0, 1.0)] * len(t.names))
        return np.array(rows, dtype=float)

    @property
    def center(self) -> np.ndarray:
        """Midpoints of the bounds: a public centring that keeps ``exp(x @ beta)`` well scaled."""
        b = self.bounds
        return (b[:, 0] + b[:, 1]) / 2.0

    @property
    def half_width(self) -> np.ndarray:
        """Half-widths of the bounds: ``|x - center| <= half_width`` for every row."""
        b = self.bounds
        return (b[:, 1] - b[:, 0]) / 2.0

    @property
    def columns(self) -> tuple[str, ...]:
        """Cohort columns the design reads (gene terms read the mutation table)."""
        return tuple(t.column for t in self.terms if not isinstance(t, GeneTerm))

    def to_params(self) -> list[dict[str, Any]]:
        """A JSON-serialisable form for query parameters."""
        out: list[dict[str, Any]] = []
        for t in self.terms:
            if isinstance(t, NumericTerm):
                out.append({"kind": "numeric", "column": t.column, "low": t.low, "high": t.high})
            elif isinstance(t, CategoricalTerm):
                out.append({"kind": "categorical", "column": t.column, "levels": list(t.levels),
                            "reference": t.reference})
            else:
                out.append({"kind": "gene", "gene": t.gene})
        return out

    @classmethod
    def from_params(cls, params: Any) -> DesignSpec:
        """Inverse of :meth:`to_params`; raises ``InvalidInput`` naming the bad entry."""
        if isinstance(params, DesignSpec):
            return params
        if not isinstance(params, list | tuple) or not params:
            raise InvalidInput("parameter 'design' must be a non-empty list of terms")
        terms: list[Term] = []
        for i, p in enumerate(params):
            if not isinstance(p, Mapping) or "kind" not in p:
                raise InvalidInput(f"design term {i}: expected a mapping with 'kind', got {p!r}")
            try:
                if p["kind"] == "numeric":
                    terms.append(NumericTerm(str(p["column"]), float(p["low"]), float(p["high"])))
                elif p["kind"] == "categorical":
                    terms.append(CategoricalTerm(str(p["column"]),
                                                 tuple(str(v) for v in p["levels"]),
                                                 str(p["reference"])))
                elif p["kind"] == "gene":
                    terms.append(GeneTerm(str(p["gene"])))
                else:
                    raise InvalidInput(f"design term {i}: unknown kind {p['kind']!r}")
            except KeyError as e:
                raise InvalidInput(f"design term {i}: missing key {e}") from None
        return cls(tuple(terms))


def term(column: str, *, low: float | None = None, high: float | None = None,
         levels: Sequence[str] | None = None, reference: str | None = None) -> Term:
    """Build one term from a schema column name, with schema defaults for bounds and levels.

    ``"gene:TP53"`` makes a gene term. Numeric fields take the schema's plausible range unless
    ``low``/``high`` are given; boolean flags become 0/1 numeric terms; category fields take the
    schema's categories (or ``levels``) with the first level (or ``reference``) as reference.
    """
    if column.startswith(GENE_PREFIX):
        return GeneTerm(column[len(GENE_PREFIX):])
    f = FIELDS.get(column)
    if f is None:
        raise InvalidInput(f"covariate {column!r} is not a cohort schema column; "
                           f"use a schema field name or 'gene:SYMBOL'")
    if f.kind in ("float", "int"):
        lo = f.low if low is None else low
        hi = f.high if high is None else high
        if lo is None or hi is None:
            raise InvalidInput(f"covariate {column!r} has no schema bounds; declare low= and high=")
        return NumericTerm(column, float(lo), float(hi))
    if f.kind == "bool":
        return NumericTerm(column, 0.0, 1.0)
    if f.kind == "category":
        lv = tuple(str(v) for v in (levels if levels is not None else f.categories))
        return CategoricalTerm(column, lv, str(reference) if reference is not None else lv[0])
    raise InvalidInput(f"covariate {column!r} is a {f.kind} column, not numeric, boolean or "
                       f"categorical; it cannot enter a model")


def parse_formula(formula: str | Iterable[str | Term] | DesignSpec,
                  bounds: Mapping[str, Sequence[float]] | None = None,
                  levels: Mapping[str, Sequence[str]] | None = None) -> DesignSpec:
    """A design from ``"age + hb + sex + gene:TP53"`` or a list of names/terms (schema defaults).

    ``bounds``: public ``{column: [low, high]}`` fixed at approval (a study spec's ``bounds``)
    replacing the schema's plausible range of those numeric columns; they set the centring
    (midpoint) and the bounds every site's values must lie in (a value outside is refused,
    never clipped). ``levels``: public ``{column: [reference, level2, ...]}`` of categorical
    columns (a study spec's ``levels``), replacing the schema's categories: the first level is
    the reference and each other level becomes a 0/1 column (R's treatment coding, in the
    declared order); a site holding a value outside the declared levels refuses (rule
    ``levels``, naming the column), a level absent at a site is a zero column there. A bound or
    level set for a column the formula does not use is an error.

    >>> parse_formula("age + cyto_ipssr", levels={"cyto_ipssr": ["Good", "Poor"]}).names
    ('age', 'cyto_ipssr[Poor]')
    """
    if bounds or levels:
        if isinstance(formula, DesignSpec):
            raise InvalidInput("bounds and levels apply to a formula string or list, "
                               "not a DesignSpec")
        given = ([s.strip() for s in formula.split("+")] if isinstance(formula, str)
                 else list(formula))
        used = {i for i in given if isinstance(i, str)}
        for what, keyed in (("bounds", bounds), ("levels", levels)):
            unknown = sorted(set(keyed or {}) - used)
            if unknown:
                raise InvalidInput(f"{what} given for {unknown}, which the formula does not use")
        out: list[str | Term] = []
        for i in given:
            if isinstance(i, str) and bounds and i in bounds:
                b = bounds[i]
                if not isinstance(b, Sequence) or len(b) != 2:
                    raise InvalidInput(f"bounds of {i!r} must be [low, high], got {b!r}")
                out.append(term(i, low=float(b[0]), high=float(b[1])))
            elif isinstance(i, str) and levels and i in levels:
                out.append(_declared_levels(i, levels[i]))
            else:
                out.append(i)
        return parse_formula(out)
    if isinstance(formula, DesignSpec):
        return formula
    if isinstance(formula, str):
        items: list[str | Term] = [s.strip() for s in formula.split("+")]
        if any(not s for s in items):
            raise InvalidInput(f"formula {formula!r} has an empty term; write e.g. 'age + hb'")
    else:
        items = list(formula)
    return DesignSpec(tuple(term(s) if isinstance(s, str) else s for s in items))


def _declared_levels(column: str, levels: Any) -> CategoricalTerm:
    """The categorical term of ``column`` with the declared public ``levels`` (first: reference)."""
    if (not isinstance(levels, Sequence) or isinstance(levels, str)
            or not all(isinstance(v, str | int) and not isinstance(v, bool) for v in levels)):
        raise InvalidInput(f"levels of {column!r} must be a list of level names, "
                           f"reference first")
    f = FIELDS.get(column)
    if f is None or f.kind not in ("category", "str"):
        raise InvalidInput(f"levels given for {column!r}, which is not a categorical column "
                           f"(levels apply to category fields)")
    lv = tuple(str(v) for v in levels)
    return CategoricalTerm(column, lv, lv[0] if lv else "")


def _column(cohort: Cohort, column: str) -> pd.Series:
    if column not in cohort.patients.columns:
        raise InvalidInput(f"covariate column {column!r} is not in the site's cohort")
    return cohort.patients[column]


def _gene_values(cohort: Cohort, genes: Sequence[str]) -> dict[str, np.ndarray]:
    """Float columns (NaN: not sequenced) of the listed genes, from one gene matrix."""
    frame = cohort.gene_matrix(list(dict.fromkeys(genes)))
    values = frame.astype("Float64").to_numpy(dtype=float, na_value=np.nan)
    return {str(g): values[:, j] for j, g in enumerate(frame.columns)}


def _term_values(cohort: Cohort, t: Term,
                 genes: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
    """``(n, len(t.names))`` float array; NaN marks missing. ``genes``: prebuilt gene columns."""
    if isinstance(t, GeneTerm):
        values = genes if genes is not None else _gene_values(cohort, [t.gene])
        return values[t.gene][:, None]
    col = _column(cohort, t.column)
    if isinstance(t, NumericTerm):
        if not (pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col)):
            raise InvalidInput(f"covariate {t.column!r} is not numeric (dtype {col.dtype}); "
                               f"declare it as categorical with levels")
        return col.astype("Float64").to_numpy(dtype=float, na_value=np.nan)[:, None]
    text = col.astype("string")
    known = text.isna() | text.isin(list(t.levels))
    if not known.all():
        raise LevelsRefused(t.column)
    out = np.stack([(text == lv).fillna(False).to_numpy(dtype=float)
                    for lv in t.levels if lv != t.reference], axis=1)
    out[text.isna().to_numpy(), :] = np.nan
    return out


def design_values(cohort: Cohort, spec: DesignSpec) -> np.ndarray:
    """All ``(n_patients, width)`` design columns of the cohort, NaN where missing.

    Every gene term comes from one :meth:`Cohort.gene_matrix` call (building it is the costly
    part); nothing is checked against the bounds here (see :func:`design_matrix`).
    """
    gene_names = [t.gene for t in spec.terms if isinstance(t, GeneTerm)]
    genes = _gene_values(cohort, gene_names) if gene_names else None
    blocks = [_term_values(cohort, t, genes) for t in spec.terms]
    return np.concatenate(blocks, axis=1)


def complete_case_mask(cohort: Cohort, spec: DesignSpec | None,
                       required: Sequence[str] = (), *,
                       values: np.ndarray | None = None) -> np.ndarray:
    """Rows with every design covariate and every ``required`` column present.

    ``values``: the cohort's :func:`design_values`, if already computed.
    """
    mask = np.ones(len(cohort), dtype=bool)
    for c in required:
        mask &= _column(cohort, c).notna().to_numpy(dtype=bool)
    if spec is not None:
        x = design_values(cohort, spec) if values is None else values
        mask &= ~np.isnan(x).any(axis=1)
    return mask


MAX_LP_TERM = 200.0
"""Largest ``|beta_j| x half-width_j`` an iterated coefficient vector may hold.

Two patients whose values of covariate j differ by a fraction ``f`` of its public half-width
then differ in weight (``exp(x beta)``) by at most ``e^(200 f)``: within 1 % of the half-range
by at most e^2, so a hub cannot zoom a risk-set or Newton sum onto the one patient with the
largest value unless that patient stands apart from all others by several per cent of the
public range. Why not 20-30: public bounds are plausible ranges, far wider than one cohort's
values, and legitimate fits reach ``|beta_j| x half-width_j`` of about 130 (R reference fits
on lung/colon/pbc with schema bounds, tests/analytics/test_r_reference.py); tighter spec
``bounds`` make the same rule tighter in data units, and DP is the complete answer."""


def check_coefficients(beta: Any, half_width: Sequence[float] | np.ndarray,
                       names: Sequence[str] = (), key: str = "beta") -> np.ndarray:
    """``beta`` as a float array, refused (``InvalidInput`` naming ``key``) when an entry is
    not finite or ``|beta_j| x half_width_j`` exceeds :data:`MAX_LP_TERM`.

    Decided from the parameters and public bounds alone, so the refusal says nothing about
    any site's data.

    >>> check_coefficients([0.1, 300.0], [60.0, 0.5]).tolist()
    [0.1, 300.0]
    >>> check_coefficients([5.0], [60.0], ["age"])
    Traceback (most recent call last):
    hemafed.errors.InvalidInput: parameter 'beta': coefficient 'age' x the half-width 60 of its public bounds is 300, above 200 (MAX_LP_TERM)
    """
    try:
        b = np.asarray(beta, dtype=float).ravel()
    except (TypeError, ValueError):
        raise InvalidInput(f"parameter {key!r} must be a list of numbers") from None
    hw = np.asarray(half_width, dtype=float).ravel()
    if b.size != hw.size:
        raise InvalidInput(f"parameter {key!r} must list {hw.size} coefficients, got {b.size}")
    if not np.all(np.isfinite(b)):
        raise InvalidInput(f"parameter {key!r} must hold finite numbers")
    span = np.abs(b) * hw
    over = np.flatnonzero(span > MAX_LP_TERM)
    if over.size:
        j = int(over[0])
        name = names[j] if j < len(names) else f"#{j}"
        raise InvalidInput(f"parameter {key!r}: coefficient {name!r} x the half-width "
                           f"{hw[j]:g} of its public bounds is {span[j]:g}, above "
                           f"{MAX_LP_TERM:g} (MAX_LP_TERM)")
    return b


def beyond_coefficient_bound(beta: Any, half_width: Sequence[float] | np.ndarray) -> int | None:
    """The first coefficient the sites would refuse (:func:`check_coefficients`), or ``None``:
    the hub stops a diverging fit with a clear error before sending it."""
    span = np.abs(np.asarray(beta, dtype=float).ravel()) * np.asarray(half_width, dtype=float)
    over = np.flatnonzero(~(span <= MAX_LP_TERM))
    return int(over[0]) if over.size else None


def check_bounds(spec: DesignSpec, x: np.ndarray) -> None:
    """Refuse (never clip) design values outside the terms' declared bounds."""
    b = spec.bounds
    outside = (x < b[:, 0]) | (x > b[:, 1])
    if outside.any():
        j = int(np.flatnonzero(outside.any(axis=0))[0])
        raise InvalidInput(f"covariate {spec.names[j]!r} has values outside its declared bounds "
                           f"[{b[j, 0]:g}, {b[j, 1]:g}]; widen the bounds (nothing is clipped)")


def design_matrix(cohort: Cohort, spec: DesignSpec, rows: np.ndarray | None = None, *,
                  values: np.ndarray | None = None) -> tuple[np.ndarray, list[str]]:
    """The site's ``(n_rows, width)`` design matrix and its column names.

    ``rows`` (a boolean mask) selects rows; by default the complete cases of the design. Raises
    ``InvalidInput`` for an unknown or non-numeric column, a missing value in a selected row, or a
    value outside its declared public bounds (never clipped). ``values``: the cohort's
    :func:`design_values`, if already computed.
    """
    all_values = design_values(cohort, spec) if values is None else values
    if rows is None:
        rows = complete_case_mask(cohort, spec, values=all_values)
    x = all_values[rows]
    if np.isnan(x).any():
        j = int(np.flatnonzero(np.isnan(x).any(axis=0))[0])
        raise InvalidInput(f"covariate {spec.names[j]!r} is missing in selected rows; "
                           f"select complete cases with complete_case_mask")
    check_bounds(spec, x)
    return x, list(spec.names)
