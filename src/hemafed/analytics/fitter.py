"""The one base of every federated fitter: ``fit`` returns the fitter, and a fitted fitter is
plain numbers that keep no federation, print, plot and round-trip through JSON exactly.

What a subclass writes: ``fit(federation, ...)`` (which may keep the federation in
``self._federation`` while it runs: the base drops it when ``fit`` returns or raises), a
``summary`` DataFrame, and optionally ``_payload()``, the readable part of its JSON (what it
reports: estimates, counts, the sites a result covers). :meth:`FederatedFitter.to_json` writes
that payload and, under ``"state"``, every attribute of the fitted object in a typed encoding
(:func:`encode_state`) that :meth:`FederatedFitter.from_json` reads back bit for bit (floats are
written with ``repr``, which round-trips), without any federation. ``from_json`` rebuilds only
plain values and hemafed's own classes (named in the document), never runs code of any other
module.

Renamed attributes stay readable under their old names through :func:`deprecated_alias`
(a property that warns once per name).

>>> class Mean(FederatedFitter):
...     _fitted_attribute = "mean_"
...     def fit(self, federation, values):
...         self._federation = federation
...         self.n_, self.mean_ = len(values), float(np.mean(values))
...         return self
>>> m = Mean().fit("a federation", [1.0, 2.0, 4.0])
>>> m._federation is None, round(m.mean_, 4)
(True, 2.3333)
>>> again = Mean.from_json(m.to_json())
>>> again.mean_ == m.mean_, again
(True, <Mean: fitted, n_=3>)
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import importlib
import json
import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

import numpy as np
import pandas as pd

from hemafed.analytics import results
from hemafed.analytics.design import DesignSpec, complete_case_mask, design_matrix
from hemafed.cohort.model import Cohort
from hemafed.cohort.schema import FIELDS
from hemafed.cohort.validate import validate_cohort
from hemafed.errors import InvalidInput

F = TypeVar("F", bound="FederatedFitter")

NOT_KEPT: frozenset[str] = frozenset({"_federation"})
"""Attributes a fitter may hold while fitting and never after (the connection)."""

_TAGS = ("__float__", "__np__", "__ndarray__", "__series__", "__frame__", "__index__",
         "__range__", "__multi__", "__tuple__", "__dict__", "__dataclass__", "__object__",
         "__enum__", "__set__", "__dtype__")


def _class_name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _hemafed_class(name: str) -> type:
    """The hemafed class a state document names; refuses any other module."""
    module, _, qualname = name.partition(":")
    if not (module == "hemafed" or module.startswith("hemafed.")) or not qualname:
        raise InvalidInput(f"a fitted-model document may name hemafed classes only, got {name!r}")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise InvalidInput(f"class {name!r} named in the document does not exist")
    if not isinstance(obj, type):
        raise InvalidInput(f"{name!r} named in the document is not a class")
    return obj


def _encode_index(index: pd.Index) -> Any:
    if isinstance(index, pd.RangeIndex):
        return {"__range__": [index.start, index.stop, index.step], "name": encode_state(index.name)}
    if isinstance(index, pd.MultiIndex):
        return {"__multi__": encode_state(list(index)), "names": encode_state(list(index.names))}
    return {"__index__": encode_state(index.to_numpy()), "dtype": str(index.dtype),
            "name": encode_state(index.name)}


def _decode_index(doc: Mapping[str, Any]) -> pd.Index:
    if "__range__" in doc:
        start, stop, step = doc["__range__"]
        return pd.RangeIndex(start, stop, step, name=decode_state(doc["name"]))
    if "__multi__" in doc:
        return pd.MultiIndex.from_tuples(decode_state(doc["__multi__"]),
                                         names=decode_state(doc["names"]))
    return pd.Index(decode_state(doc["__index__"]), dtype=doc["dtype"],
                    name=decode_state(doc["name"]))


def encode_state(value: Any) -> Any:
    """A JSON-able, typed image of ``value`` that :func:`decode_state` turns back into an equal
    value of the same type (numpy arrays and scalars with their dtype, pandas objects with their
    index, tuples, dataclasses and hemafed objects by class). Raises ``TypeError`` for what it
    cannot keep (functions, connections)."""
    if value is None or (isinstance(value, bool | int | str) and not isinstance(value, enum.Enum)):
        return value
    if isinstance(value, float) and type(value) is float:
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if isinstance(value, np.generic):
        return {"__np__": value.dtype.str, "value": encode_state(value.item())}
    if isinstance(value, np.dtype):
        return {"__dtype__": value.str}
    if isinstance(value, np.ndarray):
        flat = [encode_state(v) for v in value.ravel().tolist()] if value.dtype != object else [
            encode_state(v) for v in value.ravel()]
        return {"__ndarray__": flat, "dtype": value.dtype.str, "shape": list(value.shape)}
    if isinstance(value, pd.Series):
        return {"__series__": encode_state(value.to_numpy()), "dtype": str(value.dtype),
                "index": _encode_index(value.index), "name": encode_state(value.name)}
    if isinstance(value, pd.DataFrame):
        return {"__frame__": [encode_state(value.iloc[:, j]) for j in range(value.shape[1])],
                "columns": _encode_index(value.columns), "index": _encode_index(value.index)}
    if isinstance(value, pd.Index):
        return _encode_index(value)
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return {"__tuple__": [encode_state(v) for v in value]}
    if isinstance(value, list):
        return [encode_state(v) for v in value]
    if isinstance(value, set | frozenset):
        return {"__set__": [encode_state(v) for v in sorted(value, key=repr)],
                "frozen": isinstance(value, frozenset)}
    if isinstance(value, dict) and type(value) is dict:
        if all(isinstance(k, str) for k in value) and not any(k in _TAGS for k in value):
            return {k: encode_state(v) for k, v in value.items()}
        return {"__dict__": [[encode_state(k), encode_state(v)] for k, v in value.items()]}
    cls = type(value)
    if not cls.__module__.startswith("hemafed"):
        raise TypeError(f"a fitted model cannot keep a {cls.__module__}.{cls.__qualname__} "
                        f"in its JSON state")
    if isinstance(value, enum.Enum):
        return {"__enum__": _class_name(cls), "value": encode_state(value.value)}
    if dataclasses.is_dataclass(value):
        return {"__dataclass__": _class_name(cls),
                "fields": {f.name: encode_state(getattr(value, f.name))
                           for f in dataclasses.fields(value)}}
    if hasattr(value, "secure_sum"):
        raise TypeError(f"a fitted model keeps no federation ({cls.__qualname__})")
    if hasattr(value, "__dict__"):
        return {"__object__": _class_name(cls), "state": encode_state(dict(vars(value)))}
    raise TypeError(f"a fitted model cannot keep a {cls.__qualname__} in its JSON state")


def decode_state(doc: Any) -> Any:
    """The value :func:`encode_state` encoded."""
    if isinstance(doc, list):
        return [decode_state(v) for v in doc]
    if not isinstance(doc, dict):
        return doc
    if "__float__" in doc:
        return float(doc["__float__"])
    if "__np__" in doc:
        return np.dtype(doc["__np__"]).type(decode_state(doc["value"]))
    if "__dtype__" in doc:
        return np.dtype(doc["__dtype__"])
    if "__ndarray__" in doc:
        items = [decode_state(v) for v in doc["__ndarray__"]]
        dtype = np.dtype(doc["dtype"])
        if dtype.kind == "O":
            out = np.empty(len(items), dtype=object)
            out[:] = items
        else:
            out = np.array(items, dtype=dtype)
        return out.reshape(doc["shape"])
    if "__series__" in doc:
        values = decode_state(doc["__series__"])
        return pd.Series(values, index=_decode_index(doc["index"]),
                         name=decode_state(doc["name"])).astype(doc["dtype"])
    if "__frame__" in doc:
        columns = _decode_index(doc["columns"])
        index = _decode_index(doc["index"])
        parts = [decode_state(c).set_axis(index) for c in doc["__frame__"]]
        frame = pd.concat(parts, axis=1) if parts else pd.DataFrame(index=index)
        frame.columns = columns
        return frame
    if "__range__" in doc or "__multi__" in doc or "__index__" in doc:
        return _decode_index(doc)
    if "__tuple__" in doc:
        return tuple(decode_state(v) for v in doc["__tuple__"])
    if "__set__" in doc:
        items = [decode_state(v) for v in doc["__set__"]]
        return frozenset(items) if doc["frozen"] else set(items)
    if "__dict__" in doc:
        return {_hashable(decode_state(k)): decode_state(v) for k, v in doc["__dict__"]}
    if "__enum__" in doc:
        return _hemafed_class(doc["__enum__"])(decode_state(doc["value"]))
    if "__dataclass__" in doc:
        cls = _hemafed_class(doc["__dataclass__"])
        obj: Any = object.__new__(cls)
        for name, v in doc["fields"].items():
            object.__setattr__(obj, name, decode_state(v))
        return obj
    if "__object__" in doc:
        cls = _hemafed_class(doc["__object__"])
        obj = object.__new__(cls)
        obj.__dict__.update(decode_state(doc["state"]))
        return obj
    return {k: decode_state(v) for k, v in doc.items()}


def _hashable(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key


def deprecated_alias(new: str, old: str) -> property:
    """A read-only property ``old`` returning attribute ``new``, with one DeprecationWarning per
    class and name (the renames of issue 14: every fitter spells a thing the same way); a
    document :meth:`FederatedFitter.from_json` reads with a value under ``old`` loads it as
    ``new``."""
    return _Alias(new, old)


def new_rows_design(data: pd.DataFrame | Cohort, spec: DesignSpec, source: str
                    ) -> tuple[np.ndarray, np.ndarray]:
    """The design matrix of new rows to predict for (a cohort, or a frame of schema columns;
    ``patient_id`` and ``disease`` may be left out) and the mask of its complete rows: the
    uncentred ``(complete rows, width)`` matrix and the ``(rows,)`` mask."""
    if isinstance(data, Cohort):
        cohort = data
    else:
        frame = data.reset_index(drop=True).copy()
        if "patient_id" not in frame:
            frame["patient_id"] = [f"row{i}" for i in range(len(frame))]
        if "disease" not in frame:
            frame["disease"] = "MDS"
        cohort = validate_cohort(frame[[c for c in frame.columns if c in FIELDS]], source=source)
    rows = complete_case_mask(cohort, spec)
    x, _ = design_matrix(cohort, spec, rows)
    return x, rows


def renamed_argument(fitter: str, new: str, value: Any, old: str, old_value: Any,
                     default: Any = None) -> Any:
    """The value of an argument renamed from ``old`` to ``new`` (the old keyword still works,
    with a DeprecationWarning); giving both is an error, giving neither takes ``default``
    (an error when there is none)."""
    if old_value is not None:
        if value is not None:
            raise InvalidInput(f"{fitter}: give {new}=, not both {new}= and {old}=")
        warnings.warn(f"{fitter}: {old}= is deprecated; use {new}=", DeprecationWarning,
                      stacklevel=3)
        return old_value
    if value is None:
        if default is None:
            raise InvalidInput(f"{fitter}: give {new}=")
        return default
    return value


def _dropping_federation(fit: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fit)
    def wrapped(self: FederatedFitter, *args: Any, **kwargs: Any) -> Any:
        try:
            return fit(self, *args, **kwargs)
        finally:
            for name in NOT_KEPT:
                if name in vars(self):
                    setattr(self, name, None)

    wrapped.__wrapped_fit__ = True  # type: ignore[attr-defined]
    return wrapped


class FederatedFitter:
    """Base of the federated fitters (see the module docstring).

    ``_fitted_attribute``: an attribute set only by a successful ``fit`` (``params_`` unless a
    subclass names another); ``__repr__`` and ``to_json`` use it to tell fitted from not."""

    _fitted_attribute: ClassVar[str] = "params_"
    _repr_attributes: ClassVar[tuple[str, ...]] = ("n_", "events_", "sites_")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        fit = cls.__dict__.get("fit")
        if fit is not None and not getattr(fit, "__wrapped_fit__", False):
            cls.fit = _dropping_federation(fit)  # type: ignore[attr-defined]

    @property
    def is_fitted(self) -> bool:
        value = getattr(self, self._fitted_attribute, None)
        return value is not None and not (isinstance(value, dict | list) and not value)

    def _payload(self) -> dict[str, Any]:
        """The readable part of the JSON document (a subclass's report of its fit)."""
        return {}

    def _state(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k not in NOT_KEPT}

    def to_json(self) -> str:
        """The fitted model as a JSON string: the readable payload and, under ``"state"``, all
        of its attributes, which :meth:`from_json` restores exactly."""
        if not self.is_fitted:
            raise InvalidInput(f"{type(self).__name__} is not fitted; call fit(...) first")
        payload = self._payload()
        doc = {**results.jsonable(payload), "fitter": _class_name(type(self)),
               "state": encode_state(self._state())}
        return json.dumps(doc, indent=2, allow_nan=False)

    @classmethod
    def from_json(cls: type[F], text: str) -> F:
        """The fitted model :meth:`to_json` wrote (no federation needed, none attached)."""
        try:
            doc = json.loads(text)
        except (TypeError, json.JSONDecodeError) as e:
            raise InvalidInput(f"not a fitted-model JSON document: {e}") from None
        if not isinstance(doc, dict) or "state" not in doc or "fitter" not in doc:
            raise InvalidInput("not a fitted-model JSON document (written by to_json()): "
                               "'fitter' or 'state' is missing")
        named = cls if doc["fitter"] == _class_name(cls) else _hemafed_class(str(doc["fitter"]))
        if not issubclass(named, cls):
            raise InvalidInput(f"the document holds a {named.__name__}, not a {cls.__name__}")
        obj = object.__new__(named)
        obj.__dict__.update(decode_state(doc["state"]))
        for alias in (v for k in named.__mro__ for v in vars(k).values() if isinstance(v, _Alias)):
            if alias.old in obj.__dict__:  # saved before the rename
                obj.__dict__.setdefault(alias.new, obj.__dict__.pop(alias.old))
        return obj  # type: ignore[return-value]

    def plot(self, ax: Any = None) -> Any:
        """Coefficients with their confidence intervals (lifelines' ``plot``), for fitters whose
        summary has a coefficient and its confidence limits."""
        summary = getattr(self, "summary", None)
        lower = [c for c in getattr(summary, "columns", []) if str(c).startswith("coef lower")]
        upper = [c for c in getattr(summary, "columns", []) if str(c).startswith("coef upper")]
        if not isinstance(summary, pd.DataFrame) or not lower or not upper:
            raise InvalidInput(f"{type(self).__name__} has no coefficient plot")
        return results.coefficient_plot(summary["coef"], summary[lower[0]], summary[upper[0]],
                                        ax=ax, xlabel=f"coef ({lower[0][len('coef lower '):]} CI)")

    def __repr__(self) -> str:
        name = type(self).__name__
        if not self.is_fitted:
            return f"<{name}: not fitted>"
        parts = []
        for attr in self._repr_attributes:
            value = vars(self).get(attr)
            if isinstance(value, tuple | list):
                parts.append(f"{len(value)} {attr.rstrip('_')}")
            elif isinstance(value, int | float | np.integer | np.floating):
                parts.append(f"{attr}={value:g}")
        params = vars(self).get("params_")
        if isinstance(params, pd.Series):
            parts.append(f"{len(params)} coefficients")
        return f"<{name}: fitted" + "".join(f", {p}" for p in parts) + ">"


_warned: set[tuple[str, str]] = set()


class _Alias(property):
    """The old name of a renamed attribute (:func:`deprecated_alias`): reading it warns once per
    class and name and gives the new attribute; ``from_json`` knows the pair by this class."""

    def __init__(self, new: str, old: str) -> None:
        self.new, self.old = new, old

        def get(obj: Any) -> Any:
            key = (type(obj).__qualname__, old)
            if key not in _warned:
                _warned.add(key)
                warnings.warn(f"{type(obj).__name__}.{old} is deprecated; use .{new}",
                              DeprecationWarning, stacklevel=2)
            return getattr(obj, new)

        super().__init__(get, doc=f"Deprecated alias of ``{new}``.")
