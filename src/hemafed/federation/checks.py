"""Named checks of site-query parameters, shared by every query (one rule, one message each).

A query's typed parameters (:class:`QueryParams`, built once by ``from_mapping``) read the hub's
mapping through these, so a parameter means the same thing and has the same default in every
query, and a bad value gets the same clear error naming the parameter (the site refuses it as
``invalid_parameter``). A message names the parameter and what was expected; it shows the value
the hub sent (never anything from the site's cohort).

This module imports nothing from hemafed but :mod:`hemafed.errors`.

>>> max_patients({})
1000000
>>> column({"duration": "os_time"}, "duration")
'os_time'
>>> bounds({"low": 0, "high": 110})
(0.0, 110.0)
>>> bounds({"low": 5, "high": 1})
Traceback (most recent call last):
...
hemafed.errors.InvalidInput: parameters 'low' < 'high' must bound the column's values (public bounds)
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Collection, Mapping
from typing import Any, ClassVar, Self

from hemafed.errors import InvalidInput

Params = Mapping[str, Any]

__all__ = ["MAX_BOUND", "MAX_PATIENTS", "MAX_PATIENTS_LIMIT", "Params", "QueryParams", "bounds",
           "choice", "column", "delta", "epsilon", "flag", "known_keys", "levels", "max_patients",
           "names", "number", "numbers", "positive_int", "resolution"]

MAX_PATIENTS = 1_000_000
"""Default public bound on one site's cohort size, the one default of every query's
``max_patients`` (it equals :data:`hemafed.study.plan.MAX_PATIENTS`, the only value an approved
study's plan lets a request carry; a test pins the two together)."""

MAX_PATIENTS_LIMIT = 10**9
"""Largest ``max_patients`` a request may declare."""

MAX_BOUND = 1e100
"""Largest magnitude of a public bound (``low``, ``high``): squares of the bounds times
``max_patients`` stay finite floats, so every declared sensitivity and range is a number."""

_NUMBER = (int, float)


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, _NUMBER)


def known_keys(params: Params, allowed: Collection[str], query: str = "") -> None:
    """Refuse a parameter the query does not read (a typo would otherwise be a silent default)."""
    unknown = sorted(str(k) for k in params if k not in allowed)
    if unknown:
        where = f"query {query}: " if query else ""
        raise InvalidInput(f"{where}unknown parameter {unknown[0]!r}; expected some of "
                           f"{', '.join(sorted(allowed))}")


def max_patients(params: Params, default: int = MAX_PATIENTS) -> int:
    """``params['max_patients']``: the public bound on a site's patient count, an int >= 1."""
    return positive_int(params, "max_patients", default, MAX_PATIENTS_LIMIT)


def positive_int(params: Params, key: str, default: int | None = None, cap: int = 10**9,
                 low: int = 1) -> int:
    """``params[key]``: a whole number in ``low..cap`` (a float equal to one is accepted)."""
    value = params.get(key, default)
    if not _is_number(value) or not math.isfinite(value) or value != int(value) \
            or not low <= value <= cap:
        raise InvalidInput(f"parameter {key!r} must be a whole number in {low}...{cap}, "
                           f"got {value!r}")
    return int(value)


def number(params: Params, key: str, default: float | None = None, *,
           low: float = -math.inf, high: float = math.inf, open_low: bool = False) -> float:
    """``params[key]``: a finite number in ``[low, high]`` (``(low, high]`` if ``open_low``)."""
    value = params.get(key, default)
    if not _is_number(value) or not math.isfinite(value) or not low <= value <= high \
            or (open_low and value == low):
        span = f"{'(' if open_low else '['}{low:g}, {high:g}]"
        raise InvalidInput(f"parameter {key!r} must be a finite number in {span}, got {value!r}")
    return float(value)


def numbers(params: Params, key: str, *, length: int | None = None, allow_empty: bool = False,
            low: float = -math.inf, high: float = math.inf, increasing: bool = False,
            default: Any = None) -> tuple[float, ...]:
    """``params[key]``: a list of finite numbers in ``[low, high]`` (the coefficients, grids and
    thresholds a request carries), of exactly ``length`` items when given, non-empty unless
    ``allow_empty``, strictly increasing when ``increasing``.

    >>> numbers({"grid": [1, 2.5]}, "grid", increasing=True)
    (1.0, 2.5)
    """
    value = params.get(key, default)
    ok = isinstance(value, list | tuple) and (bool(value) or allow_empty) \
        and all(_is_number(v) and math.isfinite(v) and low <= v <= high for v in value)
    if ok and length is not None and len(value) != length:
        raise InvalidInput(f"parameter {key!r} must be a list of {length} numbers, "
                           f"got {len(value)}")
    if ok and increasing:
        ok = all(a < b for a, b in itertools.pairwise(value))
    if not ok:
        span = "" if (low, high) == (-math.inf, math.inf) else f" in [{low:g}, {high:g}]"
        order = ", strictly increasing" if increasing else ""
        raise InvalidInput(f"parameter {key!r} must be a {'' if allow_empty else 'non-empty '}"
                           f"list of finite numbers{span}{order}")
    return tuple(float(v) for v in value)


def resolution(params: Params, key: str = "resolution", default: float | None = 1e-6) -> float:
    """``params[key]``: the fixed-point step requested for a released sum, a number > 0."""
    value = params.get(key, default)
    if not _is_number(value) or not math.isfinite(value) or not value > 0:
        raise InvalidInput(f"parameter {key!r} must be a finite number > 0, got {value!r}")
    return float(value)


def epsilon(params: Params, key: str = "epsilon", default: float | None = None) -> float:
    """``params[key]``: a DP privacy-loss parameter, a finite number > 0."""
    return resolution(params, key, default)


def delta(params: Params, key: str = "delta", default: float | None = None) -> float:
    """``params[key]``: a DP failure probability in ``[0, 1)``."""
    value = params.get(key, default)
    if not _is_number(value) or not 0 <= value < 1:
        raise InvalidInput(f"parameter {key!r} must be a number in [0, 1), got {value!r}")
    return float(value)


def column(params: Params, key: str, default: str | None = None) -> str:
    """``params[key]``: the name of a cohort column (a non-empty string)."""
    col = params.get(key, default)
    if not isinstance(col, str) or not col:
        raise InvalidInput(f"parameter {key!r} must name a cohort column, got {col!r}")
    return col


def bounds(params: Params, low: str = "low", high: str = "high",
           default: tuple[float, float] | None = None) -> tuple[float, float]:
    """``(params[low], params[high])``: finite public bounds, ``low < high``, each within
    :data:`MAX_BOUND` in magnitude."""
    lo = params.get(low, None if default is None else default[0])
    hi = params.get(high, None if default is None else default[1])
    if not _is_number(lo) or not _is_number(hi) or not lo < hi:
        raise InvalidInput(f"parameters {low!r} < {high!r} must bound the column's values "
                           "(public bounds)")
    if not (math.isfinite(lo) and math.isfinite(hi)) or max(abs(lo), abs(hi)) > MAX_BOUND:
        raise InvalidInput(f"parameters {low!r} and {high!r} must be finite, at most "
                           f"{MAX_BOUND:g} in magnitude")
    return float(lo), float(hi)


def levels(params: Params, key: str = "levels") -> tuple[str, ...]:
    """``params[key]``: a non-empty list of distinct category levels, compared as strings."""
    value = params.get(key)
    if not isinstance(value, list | tuple) or not value \
            or not all(isinstance(v, str | int | float | bool) for v in value) \
            or len({str(v) for v in value}) != len(value):
        raise InvalidInput(f"parameter {key!r} must be a non-empty list of distinct category "
                           "levels")
    return tuple(str(v) for v in value)


def names(params: Params, key: str, *, allow_empty: bool = False) -> tuple[str, ...]:
    """``params[key]``: a list of distinct non-empty names (non-empty unless ``allow_empty``)."""
    value = params.get(key)
    if not isinstance(value, list | tuple) or (not value and not allow_empty) \
            or not all(isinstance(x, str) and x for x in value) or len(set(value)) != len(value):
        raise InvalidInput(f"parameter {key!r} must be a {'' if allow_empty else 'non-empty '}"
                           "list of distinct names")
    return tuple(value)


def choice(params: Params, key: str, options: Collection[str], default: str | None = None) -> str:
    """``params[key]``: one of ``options``."""
    value = params.get(key, default)
    if not isinstance(value, str) or value not in options:
        raise InvalidInput(f"parameter {key!r} must be one of {', '.join(sorted(options))}, "
                           f"got {value!r}")
    return value


def flag(params: Params, key: str, default: bool = False) -> bool:
    """``params[key]``: a boolean."""
    value = params.get(key, default)
    if not isinstance(value, bool):
        raise InvalidInput(f"parameter {key!r} must be true or false, got {value!r}")
    return value


class QueryParams:
    """Base of a query's typed parameters: a frozen dataclass built once from the hub's mapping.

    A subclass is a ``@dataclass(frozen=True)`` whose fields are the wire keys (the hub's JSON
    parameter names), with the defaults; its ``from_mapping`` refuses unknown keys
    (:meth:`known`) and runs the named checks of this module once. :meth:`to_mapping` gives the
    wire form back (lists for tuples), so ``from_mapping(p.to_mapping()) == p``.
    """

    QUERY: ClassVar[str] = ""
    """The query's name, for messages."""

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """The wire keys: the dataclass's field names."""
        return tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]

    @classmethod
    def known(cls, params: Params) -> None:
        """Refuse a key that is not one of :meth:`keys`."""
        known_keys(params, cls.keys(), cls.QUERY)

    @classmethod
    def from_mapping(cls, params: Params) -> Self:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def to_mapping(self) -> dict[str, Any]:
        """The wire form: every field, tuples as lists."""
        def wire(value: Any) -> Any:
            if isinstance(value, tuple):
                return [wire(v) for v in value]
            return value
        return {f.name: wire(getattr(self, f.name))
                for f in dataclasses.fields(self)}  # type: ignore[arg-type]
