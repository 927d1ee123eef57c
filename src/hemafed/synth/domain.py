"""Public discretisation of cohort columns for marginal-based synthesis, and decoding back.

Marginal-based generators (MST, AIM) work on a finite domain: every column is a set of levels.
The levels must be *public* (chosen from the schema and clinical cut points, never from the
data), so that sites can compute contingency tables without revealing anything beyond them.

* numeric columns are cut at public edges (IPSS-R cut points for haemoglobin, platelets,
  neutrophils and blasts; 5-year age bands; a public grid for survival times);
* categorical and boolean columns keep their schema levels;
* every column has an explicit last level for *missing* (NA).

Values beyond the outer edges (possible within the schema's plausible range) go into the end
bins. Decoding draws a value uniformly within its bin, rounded to the column's usual precision,
and :func:`enforce_constraints` restores clinical consistency (blasts in 0-100, no negative
times, AML transformation not after death or last contact, statuses only where times are).

>>> d = SynthDomain.for_columns(["sex", "hb"])
>>> d.sizes
(3, 12)
>>> d.encode(pd.DataFrame({"sex": ["F", None], "hb": [9.5, 30.0]})).tolist()
[[1, 4], [2, 10]]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from hemafed.cohort.schema import FIELDS, OUTCOMES
from hemafed.errors import InvalidInput

ColumnKind = Literal["numeric", "category", "bool"]

NA_LABEL = "NA"

SURVIVAL_GRID_YEARS: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0,
                                          10.0, 15.0, 60.0)
"""Public grid (years) on which survival times are binned."""

CLINICAL_EDGES: dict[str, tuple[float, ...]] = {
    # IPSS-R haemoglobin cut points 8 and 10 g/dL (Greenberg et al. 2012), finer around them.
    "hb": (2.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 16.0, 25.0),
    # IPSS-R platelet cut points 50 and 100 x10^9/L.
    "plt": (0.0, 20.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0, 450.0, 700.0, 1000.0, 3000.0),
    # IPSS-R neutrophil cut point 0.8 x10^9/L.
    "anc": (0.0, 0.5, 0.8, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 200.0),
    "wbc": (0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 10.0, 20.0, 50.0, 1000.0),
    "mono": (0.0, 0.1, 0.2, 0.5, 1.0, 2.0, 200.0),
    # IPSS-R marrow blast cut points 2, 5, 10 %; WHO 20 % for AML.
    "bm_blast": (0.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 100.0),
    "pb_blast": (0.0, 1.0, 2.0, 5.0, 20.0, 100.0),
    "ring_sideroblasts": (0.0, 1.0, 5.0, 15.0, 40.0, 100.0),
    "age": tuple(float(a) for a in range(0, 115, 5)),
    "b2m": (0.0, 2.0, 3.5, 5.5, 8.0, 15.0, 100.0),
    "albumin": (0.5, 2.5, 3.0, 3.5, 4.0, 4.5, 7.0),
    "ldh": (0.0, 150.0, 250.0, 400.0, 1000.0, 20000.0),
    "hbf": (0.0, 2.0, 5.0, 10.0, 20.0, 30.0, 100.0),
    **{t: SURVIVAL_GRID_YEARS for t, _ in OUTCOMES.values()},
}
"""Public bin edges per canonical numeric column (first and last edge: the decoding range)."""

RIGHT_CLOSED: frozenset[str] = frozenset({"bm_blast", "pb_blast"})
"""Columns binned as (a, b] (IPSS-R blasts: <=2, >2-<5, 5-10, >10); others are [a, b)."""

DECIMALS: dict[str, int] = {"age": 0, "hb": 1, "plt": 0, "anc": 2, "wbc": 1, "mono": 2,
                            "bm_blast": 0, "pb_blast": 0, "ring_sideroblasts": 0}
"""Decoded values are rounded to the precision they are usually recorded with."""


@dataclass(frozen=True)
class ColumnSpec:
    """One column's public levels: bins for ``numeric`` (``edges``), ``levels`` otherwise.

    The encoded level of a patient is an integer in ``0 .. size - 1``; the last one is NA.
    """

    name: str
    kind: ColumnKind
    edges: tuple[float, ...] = ()
    levels: tuple[str, ...] = ()
    right_closed: bool = False
    decimals: int | None = None

    def __post_init__(self) -> None:
        if self.kind == "numeric":
            e = np.asarray(self.edges, dtype=float)
            if e.size < 2 or not np.all(np.isfinite(e)) or np.any(np.diff(e) <= 0):
                raise ValueError(f"column {self.name!r}: edges must be >= 2 increasing finite "
                                 f"numbers, got {self.edges}")
            if self.levels:
                raise ValueError(f"column {self.name!r}: a numeric column takes edges, not levels")
        elif self.kind in ("category", "bool"):
            if not self.levels or len(set(self.levels)) != len(self.levels):
                raise ValueError(f"column {self.name!r}: needs distinct levels, got {self.levels}")
            if NA_LABEL in self.levels or self.edges:
                raise ValueError(f"column {self.name!r}: levels may not include {NA_LABEL!r} "
                                 "(NA is always the last level) and take no edges")
        else:
            raise ValueError(f"column {self.name!r}: unknown kind {self.kind!r}")

    @property
    def size(self) -> int:
        """Number of levels including NA."""
        n = len(self.edges) - 1 if self.kind == "numeric" else len(self.levels)
        return n + 1

    @property
    def labels(self) -> tuple[str, ...]:
        """Human-readable level labels, NA last."""
        if self.kind == "numeric":
            lo, hi = ("(", "]") if self.right_closed else ("[", ")")
            out = tuple(f"{lo}{a:g}, {b:g}{hi}" for a, b in zip(self.edges[:-1], self.edges[1:],
                                                                   strict=True))
        else:
            out = self.levels
        return (*out, NA_LABEL)

    def encode(self, values: pd.Series) -> np.ndarray:
        """Integer level of every value (NA -> last level); raises for unknown categories."""
        na = self.size - 1
        if self.kind == "numeric":
            x = pd.to_numeric(values.astype("Float64"), errors="coerce").to_numpy(
                dtype=float, na_value=np.nan)
            inner = np.asarray(self.edges[1:-1], dtype=float)
            side: Literal["left", "right"] = "left" if self.right_closed else "right"
            codes = np.searchsorted(inner, np.nan_to_num(x), side=side)
            return np.where(np.isnan(x), na, codes).astype(np.int64)
        if self.kind == "bool":
            text = values.astype("boolean").astype("string")
        else:
            text = values.astype("string")
        lookup = {lv: i for i, lv in enumerate(self.levels)}
        mapped = text.map(lookup)
        unknown = text.notna() & mapped.isna()
        if unknown.any():
            bad = sorted(set(text[unknown].astype(str)))[:5]
            raise InvalidInput(f"column {self.name!r}: values {bad} are not among the public "
                               f"levels {list(self.levels)}; add them to the synthesis domain")
        return mapped.fillna(na).to_numpy(dtype=np.int64)

    def decode(self, codes: np.ndarray, rng: np.random.Generator) -> pd.Series:
        """Values for integer levels: uniform within a numeric bin, the level otherwise."""
        codes = np.asarray(codes, dtype=np.int64)
        na = codes == self.size - 1
        if self.kind == "numeric":
            edges = np.asarray(self.edges, dtype=float)
            safe = np.where(na, 0, codes)
            lo, hi = edges[safe], edges[safe + 1]
            x = lo + rng.random(codes.size) * (hi - lo)
            if self.decimals is not None:
                # Recorded precision: draw uniformly among the grid values inside the bin (a
                # bin holding none keeps the unrounded draw).
                step = 10.0 ** -self.decimals
                k_lo = np.ceil(np.round(lo / step, 9))
                k_hi = np.floor(np.round(hi / step, 9))
                on_lo, on_hi = np.isclose(k_lo * step, lo), np.isclose(k_hi * step, hi)
                if self.right_closed:
                    k_lo = np.where(on_lo & (safe > 0), k_lo + 1, k_lo)
                else:
                    k_hi = np.where(on_hi & (safe < len(edges) - 2), k_hi - 1, k_hi)
                ok = k_hi >= k_lo
                k = rng.integers(np.where(ok, k_lo, 0).astype(np.int64),
                                 np.where(ok, k_hi, 0).astype(np.int64) + 1)
                x = np.where(ok, np.round(k * step, self.decimals), x)
            return pd.Series(np.where(na, np.nan, x), name=self.name).astype("Float64")
        labels = np.asarray(self.levels, dtype=object)
        out = labels[np.where(na, 0, codes)]
        out[na] = None
        series = pd.Series(out, name=self.name, dtype="object")
        if self.kind == "bool":
            return series.map({"True": True, "False": False}).astype("boolean")
        return series.astype("string")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.kind == "numeric":
            out.update(edges=list(self.edges), right_closed=self.right_closed,
                       decimals=self.decimals)
        else:
            out["levels"] = list(self.levels)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ColumnSpec:
        try:
            return cls(str(d["name"]), d["kind"], tuple(float(e) for e in d.get("edges", ())),
                       tuple(str(v) for v in d.get("levels", ())),
                       bool(d.get("right_closed", False)), d.get("decimals"))
        except (KeyError, TypeError) as exc:
            raise InvalidInput(f"bad column spec {dict(d)!r}: {exc}") from None

    @classmethod
    def default(cls, name: str, bins: int = 10) -> ColumnSpec:
        """The public spec of a canonical column (clinical edges, schema levels or bounds)."""
        f = FIELDS.get(name)
        if f is None:
            raise InvalidInput(f"column {name!r} is not a canonical cohort column; give its "
                               "ColumnSpec explicitly")
        if f.kind == "bool":
            return cls(name, "bool", levels=("False", "True"))
        if f.kind == "category":
            return cls(name, "category", levels=f.categories)
        if f.kind in ("float", "int"):
            edges = CLINICAL_EDGES.get(name)
            if edges is None:
                if f.low is None or f.high is None:
                    raise InvalidInput(f"column {name!r} has no public bounds; give edges")
                edges = tuple(np.linspace(f.low, f.high, bins + 1).tolist())
            return cls(name, "numeric", edges=edges, right_closed=name in RIGHT_CLOSED,
                       decimals=DECIMALS.get(name))
        raise InvalidInput(f"column {name!r} (kind {f.kind}) cannot be synthesised; "
                           "free-text and identifier columns are never released")


@dataclass(frozen=True)
class SynthDomain:
    """The public domain of a synthesis: an ordered tuple of column specs."""

    columns: tuple[ColumnSpec, ...]

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        if not names:
            raise ValueError("a synthesis domain needs at least one column")
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate columns in synthesis domain: {names}")

    @classmethod
    def for_columns(cls, columns: Iterable[str],
                    overrides: Mapping[str, ColumnSpec] | None = None) -> SynthDomain:
        """Default public specs for canonical columns (``overrides`` replace some)."""
        overrides = dict(overrides or {})
        return cls(tuple(overrides.get(c) or ColumnSpec.default(c) for c in columns))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(c.size for c in self.columns)

    def __getitem__(self, name: str) -> ColumnSpec:
        for c in self.columns:
            if c.name == name:
                return c
        raise InvalidInput(f"column {name!r} is not in the synthesis domain {list(self.names)}")

    def size_of(self, clique: Sequence[str]) -> int:
        return int(np.prod([self[c].size for c in clique], dtype=np.int64))

    def encode(self, frame: pd.DataFrame) -> np.ndarray:
        """Patients x columns integer levels; a missing column is all NA."""
        out = np.empty((len(frame), len(self.columns)), dtype=np.int64)
        for j, spec in enumerate(self.columns):
            if spec.name in frame:
                out[:, j] = spec.encode(frame[spec.name])
            else:
                out[:, j] = spec.size - 1
        return out

    def decode(self, codes: np.ndarray, seed: int) -> pd.DataFrame:
        """A frame of values for integer levels (one row per patient), constraints enforced."""
        rng = np.random.default_rng(seed)
        frame = pd.DataFrame({c.name: c.decode(codes[:, j], rng)
                              for j, c in enumerate(self.columns)})
        return enforce_constraints(frame)

    def contingency(self, codes: np.ndarray, clique: Sequence[str]) -> np.ndarray:
        """Flattened count table of a clique (C order over the clique's columns)."""
        idx = [self.names.index(c) for c in clique]
        shape = tuple(self.columns[i].size for i in idx)
        if not idx:
            return np.array([float(len(codes))])
        flat = np.ravel_multi_index(tuple(codes[:, i] for i in idx), shape)
        return np.bincount(flat, minlength=int(np.prod(shape))).astype(float)

    def to_params(self) -> dict[str, Any]:
        """JSON-able form, sent to sites as a query parameter."""
        return {"columns": [c.to_dict() for c in self.columns]}

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> SynthDomain:
        cols = params.get("columns")
        if not isinstance(cols, list | tuple) or not cols:
            raise InvalidInput("synthesis domain parameter needs a non-empty 'columns' list")
        return cls(tuple(ColumnSpec.from_dict(c) for c in cols))


def enforce_constraints(frame: pd.DataFrame) -> pd.DataFrame:
    """Clinical consistency of a synthetic frame (returns a new frame).

    Times are non-negative; percentages lie in [0, 100]; schema bounds hold; a status exists
    only with its time (status without time -> NA, time without status -> censored); AML
    transformation, LFS and relapse times are not after ``os_time`` (set to ``os_time``); a
    death (``os_status``) ends follow-up, so LFS is an event when death is.
    """
    out = frame.copy()
    for name in out.columns:
        f = FIELDS.get(name)
        bounded = f is not None and (f.low is not None or f.high is not None)
        if f is not None and bounded and f.kind in ("float", "int"):
            out[name] = out[name].astype("Float64").clip(lower=f.low, upper=f.high)
    for _stem, (tcol, scol) in OUTCOMES.items():
        if tcol in out and scol in out:
            has_time = out[tcol].notna()
            status = out[scol].astype("boolean")
            status = status.mask(~has_time, pd.NA)
            status = status.mask(has_time & status.isna(), False)
            out[scol] = status
        elif scol in out:
            out[scol] = out[scol].astype("boolean")
    if "os_time" in out:
        os_time = out["os_time"].astype("Float64")
        for stem in ("amlt", "lfs", "relapse"):
            tcol, _ = OUTCOMES[stem]
            if tcol in out:
                t = out[tcol].astype("Float64")
                later = (t > os_time).fillna(False)
                out[tcol] = t.mask(later, os_time)
        if "lfs_status" in out and "os_status" in out:
            died = out["os_status"].fillna(False).astype(bool)
            out["lfs_status"] = out["lfs_status"].mask(died & out["lfs_time"].notna(), True)
    return out
