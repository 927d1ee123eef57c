"""Model features for federated learning: the site's feature matrix (missing kept as NaN) and
public bin edges for histogram-based boosting.

Features are described by a public :class:`~hemafed.analytics.design.DesignSpec` (numeric columns
with declared bounds, categorical dummies, gene terms). Unlike regression designs, boosting keeps
incomplete rows: a missing value (a gene not on the site's panel, a lab not measured) stays NaN
and each split learns where missing values go.

Bin edges ("cuts") are public. Either *declared* (:func:`declared_bins`: equal-width on the public
bounds) or a *quantile sketch* (:func:`federated_bins`): each site returns counts of its values on
a fine public grid over the declared bounds (query ``learn_feature_histogram``); the hub reads the
pooled quantiles off the summed counts. The fine grid is the resolution of the released cut points.

>>> spec = feature_spec(["age", "gene:TP53"])
>>> declared_bins(spec, max_bins=4).cuts
((27.5, 55.0, 82.5), (0.5,))
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hemafed.analytics.design import DesignSpec, NumericTerm, Term, design_values, parse_formula
from hemafed.cohort.model import Cohort
from hemafed.errors import InvalidInput
from hemafed.federation import checks
from hemafed.federation.api import Federation
from hemafed.federation.queries import Params, Query, QueryParams, Statistic, register


def feature_spec(features: str | Iterable[str | Term] | DesignSpec) -> DesignSpec:
    """The public feature design from ``"age + hb + gene:TP53"``, a list, or a DesignSpec."""
    if isinstance(features, str | list | tuple) and not features:
        raise InvalidInput("give at least one feature, e.g. ['age', 'hb', 'gene:TP53']")
    return parse_formula(features)


_CACHE: dict[int, tuple[weakref.ref[Cohort], dict[str, Any]]] = {}


def site_cached(cohort: Cohort, key: str, make: Callable[[], Any]) -> Any:
    """Memoise a pure function of an (immutable) cohort and public parameters ``key``.

    Boosting asks a site for histograms many times with the same features; the site builds its
    feature matrix once. Entries die with the cohort object.
    """
    entry = _CACHE.get(id(cohort))
    if entry is None or entry[0]() is not cohort:
        ident = id(cohort)
        entry = (weakref.ref(cohort, lambda _ref: _CACHE.pop(ident, None)), {})
        _CACHE[ident] = entry
    store = entry[1]
    if key not in store:
        store[key] = make()
    return store[key]


def feature_matrix(cohort: Cohort, spec: DesignSpec,
                   rows: np.ndarray | None = None) -> np.ndarray:
    """``(n_rows, width)`` float matrix of the features, NaN where missing (never imputed).

    Raises ``InvalidInput`` naming the feature for an unknown column or a value outside its
    declared public bounds (nothing is clipped). The result is read-only.
    """
    mask = np.ones(len(cohort), dtype=bool) if rows is None else np.asarray(rows, dtype=bool)
    key = "x:" + json.dumps(spec.to_params()) + ":" + hashlib.sha1(mask.tobytes()).hexdigest()
    return site_cached(cohort, key, lambda: _feature_matrix(cohort, spec, mask))


def _feature_matrix(cohort: Cohort, spec: DesignSpec, mask: np.ndarray) -> np.ndarray:
    x = design_values(cohort, spec)[mask]
    b = spec.bounds
    with np.errstate(invalid="ignore"):
        outside = (x < b[:, 0]) | (x > b[:, 1])
    if outside.any():
        j = int(np.flatnonzero(outside.any(axis=0))[0])
        raise InvalidInput(f"feature {spec.names[j]!r} has values outside its declared bounds "
                           f"[{b[j, 0]:g}, {b[j, 1]:g}]; widen the bounds (nothing is clipped)")
    x.setflags(write=False)
    return x


def _binary_columns(spec: DesignSpec) -> list[bool]:
    """Which design columns are 0/1 indicators (gene terms, categorical dummies)."""
    out: list[bool] = []
    for t in spec.terms:
        out.extend([not isinstance(t, NumericTerm)] * len(t.names))
    return out


@dataclass(frozen=True)
class BinEdges:
    """Public cut points per feature: bin ``b`` of a value holds ``cuts[b-1] <= x < cuts[b]``.

    A split "at bin k" sends ``x < cuts[k]`` left. Missing values have their own bin,
    :attr:`missing_bin` (the last slot of every feature's histogram).
    """

    names: tuple[str, ...]
    cuts: tuple[tuple[float, ...], ...]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.cuts) or not self.names:
            raise InvalidInput("BinEdges: one tuple of cuts per feature name is needed")
        for name, c in zip(self.names, self.cuts, strict=True):
            if not all(math.isfinite(v) for v in c) or any(
                    b <= a for a, b in itertools.pairwise(c)):
                raise InvalidInput(f"BinEdges: cuts of feature {name!r} must be finite and "
                                   f"strictly increasing, got {list(c)}")

    @property
    def n_bins(self) -> tuple[int, ...]:
        """Number of non-missing bins of each feature (cuts + 1)."""
        return tuple(len(c) + 1 for c in self.cuts)

    @property
    def missing_bin(self) -> int:
        return max(self.n_bins)

    def bin(self, x: np.ndarray) -> np.ndarray:
        """Bin index of every value (``missing_bin`` for NaN)."""
        if x.ndim != 2 or x.shape[1] != len(self.cuts):
            raise InvalidInput(f"BinEdges: expected a matrix with {len(self.cuts)} feature "
                               f"columns, got shape {x.shape}")
        out = np.empty(x.shape, dtype=np.int64)
        for j, c in enumerate(self.cuts):
            col = x[:, j]
            out[:, j] = np.searchsorted(np.asarray(c, dtype=float), col, side="right")
            out[np.isnan(col), j] = self.missing_bin
        return out

    def to_params(self) -> dict[str, Any]:
        return {"names": list(self.names), "cuts": [list(c) for c in self.cuts]}

    @classmethod
    def from_params(cls, params: Any) -> BinEdges:
        if isinstance(params, BinEdges):
            return params
        try:
            return cls(tuple(str(n) for n in params["names"]),
                       tuple(tuple(float(v) for v in c) for c in params["cuts"]))
        except (KeyError, TypeError, ValueError):
            raise InvalidInput("parameter 'edges' must be {'names': [...], 'cuts': [[...]]}") \
                from None


def declared_bins(spec: DesignSpec, max_bins: int = 32) -> BinEdges:
    """Equal-width bins on each feature's public bounds (0/1 indicators get the single cut 0.5)."""
    _check_max_bins(max_bins)
    cuts: list[tuple[float, ...]] = []
    for (lo, hi), binary in zip(spec.bounds, _binary_columns(spec), strict=True):
        if binary:
            cuts.append((0.5,))
        else:
            cuts.append(tuple(float(v) for v in np.linspace(lo, hi, max_bins + 1)[1:-1]))
    return BinEdges(spec.names, tuple(cuts))


def _check_max_bins(max_bins: int) -> None:
    if isinstance(max_bins, bool) or not isinstance(max_bins, int) or not 2 <= max_bins <= 1024:
        raise InvalidInput(f"max_bins must be an int in [2, 1024], got {max_bins!r}")


# --- quantile sketch through a secure histogram ---------------------------------------------

MAX_FINE_BINS = 100_000
"""Most cells of the fine public grid of ``learn_feature_histogram``."""


@dataclass(frozen=True)
class FeatureHistogramParams(QueryParams):
    """``learn_feature_histogram``: the public design and the fine grid's number of cells."""

    QUERY = "learn_feature_histogram"
    design: DesignSpec
    fine_bins: int
    max_patients: int = checks.MAX_PATIENTS

    @classmethod
    def from_mapping(cls, params: Params) -> FeatureHistogramParams:
        cls.known(params)
        design = DesignSpec.from_params(params.get("design"))
        fine = params.get("fine_bins")
        if isinstance(fine, bool) or not isinstance(fine, int) or not 2 <= fine <= MAX_FINE_BINS:
            raise InvalidInput("parameter 'fine_bins' must be an int in [2, 100000]")
        return cls(design, fine, checks.max_patients(params))

    def to_mapping(self) -> dict[str, Any]:
        return {**super().to_mapping(), "design": self.design.to_params()}


def fine_cell(x: np.ndarray, low: float, high: float, fine_bins: int) -> np.ndarray:
    """Index of the fine public grid cell of each (non-missing) value."""
    pos = np.floor((x - low) / (high - low) * fine_bins)
    return np.clip(pos, 0, fine_bins - 1).astype(np.int64)


def _hist_compute(cohort: Cohort, params: FeatureHistogramParams) -> dict[str, np.ndarray]:
    spec, fine = params.design, params.fine_bins
    x = feature_matrix(cohort, spec)
    counts = np.zeros((spec.width, fine))
    for j, (lo, hi) in enumerate(spec.bounds):
        col = x[:, j]
        col = col[~np.isnan(col)]
        counts[j] = np.bincount(fine_cell(col, lo, hi, fine), minlength=fine)
    return {"counts": counts, "missing": np.isnan(x).sum(axis=0).astype(float)}


def _hist_declare(params: FeatureHistogramParams) -> dict[str, Statistic]:
    mp, p, fine = params.max_patients, params.design.width, params.fine_bins
    # p histograms (one per feature; a patient in one cell of each): frequency tables
    return {"counts": Statistic((p, fine), 0, mp, sensitivity=math.sqrt(p), is_count=True,
                                cells=True),
            "missing": Statistic((p,), 0, mp, sensitivity=math.sqrt(p), is_count=True,
                                 cells=True)}


FEATURE_HISTOGRAM = register(Query(
    "learn_feature_histogram", "1", compute=_hist_compute, declare=_hist_declare,
    params_type=FeatureHistogramParams,
    description="counts of each feature on a fine public grid over its bounds, and missing"))


def quantile_cuts(counts: np.ndarray, low: float, high: float, max_bins: int) -> tuple[float, ...]:
    """Cut points at the pooled quantiles ``k / max_bins`` read off fine-grid counts (pure).

    Cuts fall on fine-grid edges; a cut with no observation on one side is dropped.
    """
    fine = counts.size
    total = float(counts.sum())
    if total <= 0:
        return ()
    cum = np.cumsum(counts)
    edges = np.linspace(low, high, fine + 1)
    cuts: list[float] = []
    for k in range(1, max_bins):
        cell = int(np.searchsorted(cum, k / max_bins * total, side="left"))
        if cell >= fine - 1 or cum[cell] >= total:
            continue
        cut = float(edges[cell + 1])
        if not cuts or cut > cuts[-1]:
            cuts.append(cut)
    return tuple(cuts)


def federated_bins(federation: Federation, spec: DesignSpec, max_bins: int = 32,
                   fine_bins: int = 1024, study: str = "default") -> BinEdges:
    """Quantile bin edges from a secure histogram of every feature on a fine public grid."""
    _check_max_bins(max_bins)
    agg = federation.secure_sum("learn_feature_histogram",
                                {"design": spec.to_params(), "fine_bins": int(fine_bins)},
                                study=study)
    cuts: list[tuple[float, ...]] = []
    for j, ((lo, hi), binary) in enumerate(zip(spec.bounds, _binary_columns(spec), strict=True)):
        cuts.append((0.5,) if binary else quantile_cuts(agg["counts"][j], lo, hi, max_bins))
    return BinEdges(spec.names, tuple(cuts))


def fixed_bins(spec: DesignSpec, max_bins: int = 32) -> BinEdges:
    """Public bin edges from the design alone: ``max_bins`` equal-width bins over each
    feature's public bounds (one cut at 0.5 for a 0/1 indicator).

    These are the edges an approved boosting study fixes (:mod:`hemafed.study.plan`): unlike
    :func:`federated_bins`, nothing about them is chosen by the hub or read from the data.

    >>> fixed_bins(parse_formula("age"), 4).cuts
    ((27.5, 55.0, 82.5),)
    """
    _check_max_bins(max_bins)
    cuts: list[tuple[float, ...]] = []
    for (lo, hi), binary in zip(spec.bounds, _binary_columns(spec), strict=True):
        inner = np.linspace(float(lo), float(hi), max_bins + 1)[1:-1]
        cuts.append((0.5,) if binary else tuple(float(round(v, 12)) for v in inner))
    return BinEdges(spec.names, tuple(cuts))


def check_names(spec: DesignSpec, names: Sequence[str]) -> None:
    """The edges were made for this design (same feature names, same order)."""
    if tuple(names) != spec.names:
        raise InvalidInput(f"bin edges are for features {list(names)}, the model uses "
                           f"{list(spec.names)}")
