"""One registration per analysis kind: what a study spec may ask, what the sites permit, how
the hub runs it, its pooled reference and how the report draws it.

An :class:`AnalysisKind` is the single place that knows one analysis kind. The tables the rest
of hemafed used to keep by hand are views of this registry: the spec's options
(``hemafed.study.spec.KINDS``), the plan's queries and caps (``hemafed.study.plan.KIND_QUERIES``,
``KIND_CAPS``, ``KIND_DEFAULT_COLUMNS``, ``KIND_TIME_MAPPINGS``), the policy's query list
(``hemafed.study.queries.QUERIES_OF_KIND``), the hub steps (``hemafed.study.runner.RUNNERS``),
the pooled references (``hemafed.study.pooled``) and the report pages
(``hemafed.study.report.RENDERERS``). So what the plan permits and what a site
officer is told to allow cannot disagree.

This module imports nothing else from hemafed (layer 0): registrations sit beside their
estimators, at whatever layer those live. :mod:`hemafed.study.kinds` imports every module that
registers a built-in kind (its ``CATALOGUE``).

>>> k = AnalysisKind("demo_kind", required={"column"}, queries={"numeric_summary"})
>>> k.options, sorted(k.sends)
(frozenset({'column'}), ['numeric_summary'])
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

__all__ = ["COARSER_LATTICES", "LMM_CAP", "NEWTON_CAP", "OWN_TABLE_LATTICES", "AnalysisKind",
           "KindTable", "get_kind", "register_kind", "registered_kinds"]

NEWTON_CAP = 60
"""Distinct Newton rounds per Cox or logistic analysis (the estimators stop at 35-50)."""

LMM_CAP = 400
"""Distinct REML evaluations per mixed model (the optimiser stops at 200 iterations)."""

COARSER_LATTICES = frozenset({365.25, 52.0, 12.0, 4.0, 1.0})
"""Public ``steps_per_unit`` a time histogram or a spec's ``lattice`` may use: days, weeks,
months, quarters, years (a coarser lattice reveals no finer timing than the daily one)."""

OWN_TABLE_LATTICES = COARSER_LATTICES | frozenset({2.0})
"""Public ``steps_per_unit`` of the time lattice of a site's own long table (a pinned
lattice, ``AnalysisKind.pins``), in that table's time unit: the follow-up lattices of
:data:`COARSER_LATTICES` and half-units (R's ``survival::heart`` counts days and puts a
transplant and a death on the same day half a day apart)."""

Runner = Callable[[Any, Any, Any], dict[str, Any]]
"""``run(federation, analysis, spec) -> result document`` (plain JSON)."""
Pooled = Callable[..., dict[str, Any]]
"""``pooled(analysis, document, cohorts, holdout=None) -> comparison rows`` (validation only;
``holdout``: real patients the federation never saw, or ``None``)."""
Renderer = Callable[[Any, Mapping[str, Any], Mapping[str, Any]], None]
"""``render(section, document, results)``: draws the analysis in the report."""
Caps = Mapping[str, int] | Callable[[Any], Mapping[str, int]]
Requests = Callable[[Any], Iterable[tuple[str, Mapping[str, Any]]]]
"""``requests(analysis) -> [(query, params), ...]``: the exact requests a spec entry fixes."""
Pins = Callable[[Any], Iterable[tuple[str, Mapping[str, Any]]]]
"""``pins(analysis) -> [(query, pinned), ...]``: the fixed part of an iterated request."""


def _frozen(values: Iterable[str] | None) -> frozenset[str]:
    return frozenset(values or ())


@dataclass(frozen=True)
class AnalysisKind:
    """Everything hemafed knows about one analysis kind.

    * ``required`` / ``optional``: the spec options (besides ``id``, ``kind``, ``title``);
    * ``queries``: the site queries the study's plan permits for an analysis of this kind;
    * ``sends``: the queries its hub step sends in a plain run, which a site's policy must
      allow (``hemafed study queries``); defaults to ``queries`` (a synthesis sends the real
      KM sums too, which only a Kaplan-Meier analysis of the same study permits);
    * ``caps``: distinct requests per query and analysis: a fixed mapping, or a function of
      the analysis (its spec entry) for caps that depend on it (Newton rounds, columns ...);
    * ``default_columns``: columns the hub step uses when the spec leaves them at defaults;
    * ``time_mappings``: ``time_mapping`` values its hub steps use besides ``exact``;
    * ``run``: ``run(federation, analysis, spec)`` -> the plain-JSON result document;
    * ``pooled``: ``pooled(analysis, document, cohorts, holdout=None)`` -> rows comparing
      with a pooled reference (the demo and the tests only; sites never pool);
    * ``render``: ``render(section, document, results)`` draws it in the report (``None``:
      the generic table page, :func:`hemafed.report.drawing.generic_page`);
    * ``requests``: ``requests(analysis)`` -> the exact ``(query, params)`` its hub step sends,
      when the spec entry fixes them all (e.g. a lattice): the plan then answers those
      parameter sets of these queries only, and permits the columns they name;
    * ``pins``: ``pins(analysis)`` -> ``(query, pinned)``: the plan answers ``query`` only
      when every key of ``pinned`` is sent with exactly its value, except ``"iterated"`` (the
      keys that may vary, e.g. Newton's ``beta``; no other key may be sent) and ``"lattice"``
      (``[steps_per_unit, max_time]`` in the time unit of the site's own table: a sent
      ``grid`` holds points ``k / steps_per_unit`` in ``[0, max_time]``; the plan admits the
      lattices of :data:`OWN_TABLE_LATTICES` and permits nothing else).
    * ``exact_option`` / ``exact_queries``: the spec option by which the officer approves an
      exact (non-DP) release of ``exact_queries`` (e.g. a boosting analysis's
      ``exact_histograms``); those queries are DP-only unless every analysis of the kind in
      the spec sets the option to ``true``. ``None``: the kind has no such rule.
    """

    name: str
    required: AbstractSet[str] = frozenset()
    optional: AbstractSet[str] = frozenset()
    queries: AbstractSet[str] = frozenset()
    sends: tuple[str, ...] | None = None
    caps: Caps = field(default_factory=dict)
    default_columns: AbstractSet[str] = frozenset()
    time_mappings: AbstractSet[str] = frozenset()
    run: Runner | None = field(default=None, compare=False)
    pooled: Pooled | None = field(default=None, compare=False)
    render: Renderer | None = field(default=None, compare=False)
    requests: Requests | None = field(default=None, compare=False)
    pins: Pins | None = field(default=None, compare=False)
    exact_option: str | None = None
    exact_queries: AbstractSet[str] = frozenset()

    def __post_init__(self) -> None:
        for name in ("required", "optional", "queries", "default_columns", "time_mappings",
                     "exact_queries"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))
        if self.sends is None:
            object.__setattr__(self, "sends", tuple(sorted(self.queries)))
        else:
            object.__setattr__(self, "sends", tuple(self.sends))
        clash = self.required & self.optional
        if clash:
            raise ValueError(f"kind {self.name!r}: options both required and optional: "
                             f"{sorted(clash)}")
        if (self.exact_option is None) != (not self.exact_queries) or (
                self.exact_option is not None and self.exact_option not in self.optional):
            raise ValueError(f"kind {self.name!r}: exact_option must be one of its optional "
                             f"options and come with exact_queries (or neither)")

    @property
    def options(self) -> frozenset[str]:
        """Every option the spec may give (required and optional)."""
        return frozenset(self.required) | frozenset(self.optional)

    def caps_for(self, analysis: Any) -> Mapping[str, int]:
        """The caps of one analysis of this kind."""
        return self.caps(analysis) if callable(self.caps) else self.caps


_KINDS: dict[str, AnalysisKind] = {}


def register_kind(kind: AnalysisKind) -> AnalysisKind:
    """Add a kind; registering the same name twice with a different definition fails."""
    old = _KINDS.get(kind.name)
    if old is not None and old != kind:
        raise ValueError(f"analysis kind {kind.name!r} is already registered differently")
    if old is None:
        _KINDS[kind.name] = kind
    return _KINDS[kind.name]


def get_kind(name: str) -> AnalysisKind:
    """The registered kind ``name`` (``KeyError`` names the known kinds)."""
    try:
        return _KINDS[name]
    except KeyError:
        raise KeyError(f"unknown analysis kind {name!r}; registered: "
                       f"{', '.join(_KINDS)}") from None


def registered_kinds() -> tuple[AnalysisKind, ...]:
    """Every registered kind, in registration order."""
    return tuple(_KINDS.values())


T = TypeVar("T")


class KindTable(Mapping[str, T], Generic[T]):
    """A read-only ``kind -> value`` table computed from the registrations when asked (the
    old per-module tables, e.g. ``RUNNERS``, are such views: they cannot drift).

    >>> table = KindTable(lambda k: k.run)
    >>> "no_such_kind" in table
    False
    """

    def __init__(self, value: Callable[[AnalysisKind], T | None]) -> None:
        self._value = value

    def __getitem__(self, name: str) -> T:
        kind = _KINDS.get(name)
        value = None if kind is None else self._value(kind)
        if value is None:
            raise KeyError(name)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter([k.name for k in _KINDS.values() if self._value(k) is not None])

    def __len__(self) -> int:
        return sum(1 for k in _KINDS.values() if self._value(k) is not None)
